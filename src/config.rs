//! The configuration file (docs/CONFIGURATION.md) and `ciofs config show`:
//! a TOML file with a key for every flag of the commands.
//!
//! No key is listed here: they are read off clap's `Command`, so a new flag
//! has its key at once. The flag `--metadata-ttl` under the help heading
//! "Metadata" is the key `metadata_ttl` of the section `[metadata]`; a
//! flag with no heading (clap's "Options") is a key at the top of the file.
//!
//! Precedence: flags, then environment variables, then the file, then the
//! defaults. The file's values reach clap as arguments added to the command
//! line, only for the args the command line and environment left at their
//! default, so each value goes through its flag's own parser, and every
//! file value is checked that way at start, with the command's parser, so a
//! mistake names the file, line and key.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};

use crate::cli::Cli;

/// Subcommands whose flags have no keys: `config` is about the file
/// itself; `fuse-helper` runs privileged and takes its options from its
/// command line only, never from a file the unprivileged side may write.
const NOT_CONFIGURED: &[&str] = &["config", "help", "fuse-helper"];

/// The command a bare `ciofs config show` shows.
const DEFAULT_SHOWN: &str = "mount";

/// A key of the file: the section its flag's help heading names, and the
/// long flag's name with `_` for `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    section: Option<String>,
    name: String,
}

impl Key {
    /// The key of `arg`, if it has one: positional, hidden (internal),
    /// global (`--config` itself) and help or version args have none.
    fn of(arg: &Arg) -> Option<Key> {
        let long = arg.get_long()?;
        let shown = !arg.is_hide_set() && !arg.is_global_set();
        let about_the_program = matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        );
        (shown && !about_the_program)
            .then(|| Key { section: arg.get_help_heading().map(section_name), name: long.replace('-', "_") })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.section {
            Some(section) => write!(f, "[{section}] {}", self.name),
            None => write!(f, "{} (at the top, before any section)", self.name),
        }
    }
}

/// The section of a help heading: "NFS server" is `[nfs_server]`.
fn section_name(heading: &str) -> String {
    heading.to_lowercase().replace([' ', '-'], "_")
}

/// Where in the file, counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    line: usize,
    column: usize,
}

fn position(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
}

/// A value of the file, as far as a flag cares.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Bool(bool),
    /// A string or a number (its TOML type kept for messages): the flag's
    /// parser reads it as text.
    Text(String, &'static str),
    List(Vec<Value>),
    /// A table or a date: no flag takes one.
    Other(&'static str),
}

impl Value {
    fn of(value: &DeValue<'_>) -> Value {
        match value {
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::String(text) => Value::Text(text.to_string(), "a string"),
            DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
                .map_or(Value::Other("an integer out of range"), |n| Value::Text(n.to_string(), "a number")),
            DeValue::Float(float) => Value::Text(float.as_str().to_string(), "a number"),
            DeValue::Array(items) => Value::List(items.iter().map(|item| Value::of(item.get_ref())).collect()),
            DeValue::Datetime(_) => Value::Other("a date-time"),
            DeValue::Table(_) => Value::Other("a table"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "true or false",
            Value::Text(_, kind) => kind,
            Value::List(_) => "a list",
            Value::Other(kind) => kind,
        }
    }
}

/// One `key = value` of the file.
#[derive(Clone, Debug)]
struct Entry {
    key: Key,
    at: Position,
    value: Value,
}

/// A configuration file, read and checked.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

/// Every key of every command of `cli`, each with the first command and arg
/// that has it (the others share its parser: they are the same flattened
/// struct).
struct Catalogue<'a> {
    keys: Vec<(Key, &'a Command, &'a Arg)>,
}

impl<'a> Catalogue<'a> {
    fn of(cli: &'a Command) -> Self {
        let mut keys: Vec<(Key, &Command, &Arg)> = Vec::new();
        for command in cli.get_subcommands().filter(|c| !NOT_CONFIGURED.contains(&c.get_name())) {
            for arg in command.get_arguments() {
                if let Some(key) = Key::of(arg)
                    && !keys.iter().any(|(known, _, _)| *known == key)
                {
                    keys.push((key, command, arg));
                }
            }
        }
        Catalogue { keys }
    }

    fn find(&self, key: &Key) -> Option<(&'a Command, &'a Arg)> {
        self.keys.iter().find(|(known, _, _)| known == key).map(|(_, command, arg)| (*command, *arg))
    }

    fn is_section(&self, name: &str) -> bool {
        self.keys.iter().any(|(key, _, _)| key.section.as_deref() == Some(name))
    }

    /// The known key `key` most likely meant: the same name in another
    /// section, else the closest name.
    fn suggestion(&self, key: &Key) -> Option<String> {
        let score = |known: &Key| match known.name == key.name {
            true => 2.0,
            false => {
                strsim::jaro_winkler(&known.name, &key.name) + f64::from(u8::from(known.section == key.section)) * 0.05
            }
        };
        let (best, _, _) = self.keys.iter().max_by(|(a, _, _), (b, _, _)| score(a).total_cmp(&score(b)))?;
        (score(best) > 0.8).then(|| if best.section == key.section { best.name.clone() } else { best.to_string() })
    }

    fn section_suggestion(&self, name: &str) -> Option<String> {
        let sections = self.keys.iter().filter_map(|(key, _, _)| key.section.as_deref());
        let best = sections.max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)))?;
        (strsim::jaro_winkler(best, name) > 0.8).then(|| format!("[{best}]"))
    }

    /// Refuses a key no command has, a value of the wrong TOML type, and a
    /// value its flag's parser refuses.
    fn check(&self, entry: &Entry) -> Result<(), String> {
        let Some((command, arg)) = self.find(&entry.key) else {
            let hint = self.suggestion(&entry.key).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
            return Err(format!("{}: unknown key{hint}", entry.key.name));
        };
        let arguments = arguments(arg, &entry.value).map_err(|e| format!("{}: {e}", entry.key.name))?;
        parses(command, &arguments).map_err(|e| format!("{}: {e}", entry.key.name))
    }
}

/// The command-line arguments that say what `value` says, for `arg`.
fn arguments(arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    let with_value = |text: &str| OsString::from(format!("{flag}={text}"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, Value::Bool(true)) | (ArgAction::SetFalse, Value::Bool(false)) => {
            Ok(vec![OsString::from(&flag)])
        }
        (ArgAction::SetTrue | ArgAction::SetFalse, Value::Bool(_)) => Ok(Vec::new()),
        (ArgAction::SetTrue | ArgAction::SetFalse, other) => {
            Err(format!("expected true or false, not {}", other.kind()))
        }
        (ArgAction::Append, Value::List(items)) => items
            .iter()
            .map(|item| match item {
                Value::Text(text, _) => Ok(with_value(text)),
                Value::Bool(set) => Ok(with_value(&set.to_string())),
                other => Err(format!("expected a list of values, not of {}", other.kind())),
            })
            .collect(),
        (_, Value::Text(text, _)) => Ok(vec![with_value(text)]),
        (_, Value::Bool(set)) => Ok(vec![with_value(&set.to_string())]),
        (_, other) => Err(format!("expected a value, not {}", other.kind())),
    }
}

/// Whether `command`'s parser takes `arguments`: its first error, as clap
/// words it, if not.
fn parses(command: &Command, arguments: &[OsString]) -> Result<(), String> {
    if arguments.is_empty() {
        return Ok(());
    }
    lenient(command.clone()).no_binary_name(true).try_get_matches_from(arguments).map(drop).map_err(|e| first_line(&e))
}

/// clap's message without its "error: " and its advice to try --help.
fn first_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let message: Vec<&str> = text.lines().take_while(|line| !line.is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    message.strip_prefix("error: ").unwrap_or(&message).to_string()
}

/// `command` with nothing required: the first parse, which only asks
/// what the command line gave, and `config show`, which needs no
/// mount point.
fn lenient(command: Command) -> Command {
    let groups: Vec<clap::Id> = command.get_groups().map(|group| group.get_id().clone()).collect();
    let command = command.mut_args(|arg| arg.required(false)).mut_subcommands(lenient);
    groups.into_iter().fold(command, |command, id| command.mut_group(id, |group| group.required(false)))
}

impl ConfigFile {
    /// Reads `path` and checks every key against the commands of `cli`.
    fn load(path: &Path, cli: &Command) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ConfigFile::parse(path, &text, cli)
    }

    fn parse(path: &Path, text: &str, cli: &Command) -> Result<ConfigFile, String> {
        let located = |offset: usize, message: String| {
            let at = position(text, offset);
            format!("{}:{}:{}: {message}", path.display(), at.line, at.column)
        };
        let table = DeTable::parse(text)
            .map_err(|e| located(e.span().map_or(0, |span| span.start), e.message().trim().to_string()))?;
        let catalogue = Catalogue::of(cli);
        let mut entries = Vec::new();
        for (name, value) in table.get_ref() {
            let (name, offset) = (name.get_ref().to_string(), name.span().start);
            match value.get_ref() {
                DeValue::Table(section) if catalogue.is_section(&name) => {
                    for (key, value) in section {
                        let key_offset = key.span().start;
                        let key = Key { section: Some(name.clone()), name: key.get_ref().to_string() };
                        entries.push((
                            key_offset,
                            Entry { key, at: position(text, key_offset), value: Value::of(value.get_ref()) },
                        ));
                    }
                }
                DeValue::Table(_) if catalogue.find(&Key { section: None, name: name.clone() }).is_none() => {
                    let hint = catalogue
                        .section_suggestion(&name)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    return Err(located(offset, format!("[{name}]: unknown section{hint}")));
                }
                value => {
                    let entry =
                        Entry { key: Key { section: None, name }, at: position(text, offset), value: Value::of(value) };
                    entries.push((offset, entry));
                }
            }
        }
        // The first mistake in the file is the one reported.
        entries.sort_by_key(|(offset, _)| *offset);
        for (offset, entry) in &entries {
            catalogue.check(entry).map_err(|message| located(*offset, message))?;
        }
        Ok(ConfigFile { path: path.to_path_buf(), entries: entries.into_iter().map(|(_, entry)| entry).collect() })
    }

    /// The arguments that give `command` the file's values for the args
    /// `matches` (its command line and environment) left at their default;
    /// and the ids of those args, with where the file sets them.
    fn arguments_for(
        &self,
        command: &Command,
        matches: &ArgMatches,
    ) -> Result<(Vec<OsString>, HashMap<String, Position>), String> {
        let mut added = Vec::new();
        let mut from_file = HashMap::new();
        for arg in command.get_arguments() {
            let Some(key) = Key::of(arg) else { continue };
            let Some(entry) = self.entries.iter().find(|entry| entry.key == key) else { continue };
            let id = arg.get_id().as_str();
            if matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue)) {
                added.extend(arguments(arg, &entry.value)?);
                from_file.insert(id.to_string(), entry.at);
            }
        }
        Ok((added, from_file))
    }
}

/// The file `--config` (or `$CIOFS_CONFIG`) names, which must exist, else
/// the default place if there is a file there.
fn config_path(explicit: Option<&PathBuf>) -> Option<PathBuf> {
    explicit.cloned().or_else(|| default_path(|name| std::env::var_os(name)).filter(|path| path.exists()))
}

/// `$XDG_CONFIG_HOME/ciofs/config.toml`, else `~/.config/ciofs/config.toml`.
fn default_path(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = crate::cli::xdg_base(&var, "XDG_CONFIG_HOME", ".config")?;
    Some(base.join("ciofs").join("config.toml"))
}

fn load(explicit: Option<&PathBuf>, cli: &Command) -> Result<Option<ConfigFile>, String> {
    config_path(explicit).map(|path| ConfigFile::load(&path, cli)).transpose()
}

/// Adds the file's arguments to a command line: at its end, before a `--`.
fn with_added(mut args: Vec<OsString>, added: Vec<OsString>) -> Vec<OsString> {
    let at = args.iter().position(|arg| arg == "--").unwrap_or(args.len());
    args.splice(at..at, added);
    args
}

/// Why a command line and file were not taken.
#[derive(Debug)]
enum Refused {
    /// clap's own answer, help and version included: printed as clap would.
    Clap(clap::Error),
    /// A mistake in the configuration file.
    File(String),
}

/// The command line `args` (program name first), parsed by `cli` (Cli's
/// own command), with the configuration file's values where flags and
/// environment say nothing. Help, version and clap's own errors end the
/// process as `Cli::parse` would; a mistake in the file is the error.
pub fn parse_cli(cli: &Command, args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    match matches_with_file(cli, args.into_iter().collect()) {
        Ok(matches) => Cli::from_arg_matches(&matches).map_err(|e| e.exit()),
        Err(Refused::Clap(error)) => error.exit(),
        Err(Refused::File(message)) => Err(message),
    }
}

fn matches_with_file(cli: &Command, args: Vec<OsString>) -> Result<ArgMatches, Refused> {
    merged(cli, args, None, Strict::Yes).map(|merged| merged.matches)
}

/// Whether the last parse of `merged` asks for what the command requires.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strict {
    /// A command to run.
    Yes,
    /// `config show`, which needs no mount point.
    No,
}

/// A command line parsed with the configuration file's values added.
struct Merged {
    matches: ArgMatches,
    file: Option<ConfigFile>,
    /// The ids of the args the file gave, with where it gives them.
    from_file: HashMap<String, Position>,
}

/// `args` (program name first) parsed by `cli`, with the configuration
/// file's values for the subcommand's args the command line and
/// environment left at their default. The file is the one `--config`
/// names on the command line, else `default_file`, else `$CIOFS_CONFIG`,
/// else the default place; none is read for a subcommand that has no keys
/// (`config show` reads its own, and must not be stopped by another).
fn merged(cli: &Command, args: Vec<OsString>, default_file: Option<&Path>, strict: Strict) -> Result<Merged, Refused> {
    let parser = match strict {
        Strict::Yes => cli.clone(),
        Strict::No => lenient(cli.clone()),
    };
    // What fails without requirements fails with them: clap's own words
    // (and help with the real usage line) come from the real parse.
    let first = lenient(cli.clone())
        .try_get_matches_from(&args)
        .map_err(|lenient| Refused::Clap(parser.clone().try_get_matches_from(&args).err().unwrap_or(lenient)))?;
    let configured = first
        .subcommand()
        .filter(|(name, _)| !NOT_CONFIGURED.contains(name))
        .and_then(|(name, sub)| Some((cli.find_subcommand(name)?, sub)));
    let Some((command, sub)) = configured else {
        let matches = parser.try_get_matches_from(&args).map_err(Refused::Clap)?;
        return Ok(Merged { matches, file: None, from_file: HashMap::new() });
    };
    let explicit = match first.value_source("config") {
        Some(ValueSource::CommandLine) => first.get_one::<PathBuf>("config").cloned(),
        _ => default_file.map(Path::to_path_buf).or_else(|| first.get_one::<PathBuf>("config").cloned()),
    };
    let file = load(explicit.as_ref(), cli).map_err(Refused::File)?;
    let (added, from_file) = match &file {
        Some(file) => file.arguments_for(command, sub).map_err(Refused::File)?,
        None => Default::default(),
    };
    let matches = parser.try_get_matches_from(with_added(args, added)).map_err(Refused::Clap)?;
    Ok(Merged { matches, file, from_file })
}

/// `ciofs config show COMMAND ARGS`: the options COMMAND would run with,
/// as TOML, each with where its value comes from.
pub fn show(config: Option<&Path>, command: &str, args: &[OsString]) -> Result<String, String> {
    show_for(&Cli::command(), config, command, args)
}

fn show_for(cli: &Command, config: Option<&Path>, command: &str, args: &[OsString]) -> Result<String, String> {
    // `ciofs config show --metadata-ttl 5` shows mount with that flag.
    let (name, args) = match command.starts_with('-') {
        true => (DEFAULT_SHOWN, [&[OsString::from(command)], args].concat()),
        false => (command, args.to_vec()),
    };
    let target = cli
        .find_subcommand(name)
        .filter(|c| !NOT_CONFIGURED.contains(&c.get_name()))
        .ok_or_else(|| format!("config show: no command {name:?}"))?;
    // `--config` is global: it may come among the shown command's flags.
    let argv = [vec![OsString::from(cli.get_name()), OsString::from(name)], args].concat();
    let Merged { matches, file, from_file } =
        merged(cli, argv, config, Strict::No).map_err(|refused| match refused {
            Refused::Clap(error) => first_line(&error),
            Refused::File(message) => message,
        })?;
    let matches = matches.subcommand_matches(name).ok_or_else(|| format!("config show: no command {name:?}"))?;
    Ok(render(target, matches, &from_file, file.as_ref().map(|f| f.path.as_path())))
}

/// Every key of `command` as TOML, grouped in sections, each line saying
/// where its value came from; an unset key is a comment.
fn render(
    command: &Command,
    matches: &ArgMatches,
    from_file: &HashMap<String, Position>,
    file: Option<&Path>,
) -> String {
    let file_name = file.map_or("no configuration file".to_string(), |path| path.display().to_string());
    let mut out = format!("# ciofs {}: flags, then environment, then {file_name}, then defaults\n", command.get_name());
    let keyed: Vec<(Key, &Arg)> =
        command.get_arguments().filter_map(|arg| Key::of(arg).map(|key| (key, arg))).collect();
    let mut sections: Vec<Option<String>> = Vec::new();
    // Keys outside any section must come before the first one.
    for (key, _) in keyed.iter().filter(|(key, _)| key.section.is_none()).chain(keyed.iter()) {
        if !sections.contains(&key.section) {
            sections.push(key.section.clone());
        }
    }
    for section in sections {
        if let Some(section) = &section {
            out.push_str(&format!("\n[{section}]\n"));
        }
        for (key, arg) in keyed.iter().filter(|(key, _)| key.section == section) {
            let id = arg.get_id().as_str();
            let source = match (from_file.get(id), file) {
                (Some(at), Some(path)) => format!("file {}:{}", path.display(), at.line),
                _ => source_of(arg, matches.value_source(id)),
            };
            match value_text(arg, matches) {
                Some(value) => out.push_str(&format!("{} = {value}  # {source}\n", key.name)),
                None => out.push_str(&format!("# {} is unset  # {source}\n", key.name)),
            }
        }
    }
    out
}

fn source_of(arg: &Arg, source: Option<ValueSource>) -> String {
    match source {
        Some(ValueSource::CommandLine) => "flag".to_string(),
        Some(ValueSource::EnvVariable) => {
            format!("env {}", arg.get_env().map(|name| name.to_string_lossy()).unwrap_or_default())
        }
        _ => "default".to_string(),
    }
}

/// The effective value of `arg` as a TOML value; None if it has none.
fn value_text(arg: &Arg, matches: &ArgMatches) -> Option<String> {
    let id = arg.get_id().as_str();
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return matches.try_get_one::<bool>(id).ok().flatten().map(bool::to_string);
    }
    let raw: Vec<String> = matches.get_raw(id)?.map(|value| value.to_string_lossy().into_owned()).collect();
    match arg.get_action() {
        ArgAction::Append => Some(format!("[{}]", raw.iter().map(|v| toml_literal(v)).collect::<Vec<_>>().join(", "))),
        _ => raw.first().map(|v| toml_literal(v)),
    }
}

/// A plain integer as a TOML integer, anything else as a TOML string.
fn toml_literal(text: &str) -> String {
    match text.parse::<i64>() {
        Ok(number) if number.to_string() == text => text.to_string(),
        _ => toml::Value::String(text.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command as Run, MountArgs};

    /// A config file in a directory of its own, removed at the end.
    struct File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn file(text: &str) -> File {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        File { _dir: dir, path }
    }

    fn argv(file: &File, command: &[&str]) -> Vec<OsString> {
        let head = ["ciofs".into(), "--config".into(), file.path.clone().into_os_string()];
        head.into_iter().chain(command.iter().map(OsString::from)).collect()
    }

    fn mount(cli: &Command, file: &File, flags: &[&str]) -> MountArgs {
        let args = argv(file, &[&["mount"], flags, &["/mnt"]].concat());
        let matches = matches_with_file(cli, args).expect("a good file");
        match Cli::from_arg_matches(&matches).expect("a mount").command {
            Run::Mount(args) => args,
            other => panic!("not a mount: {other:?}"),
        }
    }

    /// The message refusing `text` as a config file.
    fn refusal(text: &str) -> String {
        let file = file(text);
        let message = ConfigFile::load(&file.path, &Cli::command()).expect_err(text);
        let prefix = format!("{}:", file.path.display());
        message.strip_prefix(&prefix).unwrap_or_else(|| panic!("{message} does not name the file")).to_string()
    }

    const ALL_KINDS: &str = "project = [\"file-a\", \"file-b\"]\n\
                             state_dir = \"/file/state\"\n\
                             [metadata]\n\
                             metadata_ttl = 7\n\
                             [cache]\n\
                             cache_memory = \"512M\"\n\
                             [view]\n\
                             read_only = true\n";

    #[test]
    fn a_number_a_size_a_bool_a_list_and_a_path_come_from_the_file_unless_a_flag_says() {
        let cli = Cli::command();
        let config = file(ALL_KINDS);
        let from_file = mount(&cli, &config, &[]);
        assert_eq!(from_file.tree.metadata_ttl, 7);
        assert_eq!(from_file.tree.cache_memory, 512 << 20);
        assert!(from_file.view.read_only);
        assert_eq!(from_file.tree.projects, ["file-a", "file-b"]);
        assert_eq!(from_file.tree.state_dir, Some(PathBuf::from("/file/state")));
        assert_eq!(from_file.tree.negative_ttl, 5, "what the file leaves out keeps its default");

        let flags = ["--metadata-ttl", "0", "--cache-memory", "1G", "--project", "flag", "--state-dir", "/flag"];
        let from_flags = mount(&cli, &config, &flags);
        assert_eq!(from_flags.tree.metadata_ttl, 0);
        assert_eq!(from_flags.tree.cache_memory, 1 << 30);
        assert_eq!(from_flags.tree.projects, ["flag"], "a flag replaces the file's list, not adds to it");
        assert_eq!(from_flags.tree.state_dir, Some(PathBuf::from("/flag")));

        let defaults = mount(&cli, &file(""), &["--project", "p"]);
        assert_eq!(defaults.tree.metadata_ttl, 60);
        assert_eq!(defaults.tree.cache_memory, 256 << 20);
        assert!(!defaults.view.read_only);
        assert_eq!(defaults.tree.state_dir, None);
    }

    /// The environment's half (over the file, under a flag) is checked
    /// through the binary (tests/config.rs): setting variables here would
    /// race with the other tests' threads, which read the environment.
    #[test]
    fn a_flag_wins_over_the_file() {
        let cli = Cli::command();
        let config = file(ALL_KINDS);
        let from_flags = mount(&cli, &config, &["--project", "flag", "--state-dir", "/flag"]);
        assert_eq!(from_flags.tree.projects, ["flag"]);
        assert_eq!(from_flags.tree.state_dir, Some(PathBuf::from("/flag")));
        assert_eq!(from_flags.tree.metadata_ttl, 7, "the file still gives what the flags do not");
        let shown = show_for(&cli, Some(&config.path), "mount", &["--metadata-ttl".into(), "3".into()]).expect("show");
        assert!(shown.contains("metadata_ttl = 3  # flag\n"), "{shown}");
    }

    #[test]
    fn config_show_says_where_each_value_comes_from() {
        let config = file(ALL_KINDS);
        let shown = show(Some(&config.path), "mount", &["--negative-ttl".into(), "1".into()]).expect("show");
        let at = |line: usize| format!("# file {}:{line}\n", config.path.display());
        assert!(shown.contains(&format!("project = [\"file-a\", \"file-b\"]  {}", at(1))), "{shown}");
        assert!(shown.contains(&format!("\n[metadata]\nmetadata_ttl = 7  {}", at(4))), "{shown}");
        assert!(shown.contains(&format!("cache_memory = \"512M\"  {}", at(6))), "{shown}");
        assert!(shown.contains(&format!("read_only = true  {}", at(8))), "{shown}");
        assert!(shown.contains("negative_ttl = 1  # flag\n"), "{shown}");
        assert!(shown.contains("cache_size = \"10G\"  # default\n"), "{shown}");
        assert!(shown.contains("# uid is unset  # default\n"), "{shown}");
        assert!(!shown.contains("listen"), "serve-nfs's keys are not mount's: {shown}");
        let served = show(Some(&config.path), "serve-nfs", &[]).expect("show serve-nfs");
        assert!(served.contains("\n[nfs_server]\nlisten = \"127.0.0.1:2049\"  # default\n"), "{served}");
        let parsed: toml::Table = toml::from_str(&shown).expect("config show prints TOML");
        assert_eq!(parsed["metadata"]["metadata_ttl"].as_integer(), Some(7));
    }

    /// `config show`'s own `--config` is the file shown: another file (the
    /// default, or one `ciofs --config` names) is not read, broken or not.
    #[test]
    fn config_show_reads_the_file_its_own_config_names() {
        let (good, broken) = (file("[nfs_server]\nlisten = \"127.0.0.1:0\"\n"), file("nonsense = 1\n"));
        let args = ["--negative-ttl".into(), "1".into(), "--config".into(), good.path.clone().into_os_string()];
        let shown = show(Some(&broken.path), "serve-nfs", &args).expect("the good file");
        assert!(shown.contains(&format!("listen = \"127.0.0.1:0\"  # file {}:2\n", good.path.display())), "{shown}");
        let refused = show(Some(&broken.path), "serve-nfs", &[]).expect_err("the broken file");
        assert!(refused.contains("nonsense: unknown key"), "{refused}");
        let cli = Cli::command();
        let args = ["ciofs".into(), "--config".into(), broken.path.clone().into_os_string(), "config".into()];
        let args = [args.to_vec(), vec!["show".into(), "serve-nfs".into()]].concat();
        assert!(matches_with_file(&cli, args).is_ok(), "config itself has no keys: no file is read for it");
    }

    #[test]
    fn a_mistake_is_refused_with_its_line_column_and_key() {
        let cases = [
            ("[metadata]\nmetadata_ttl = \"soon\"\n", "2:1: metadata_ttl: invalid value 'soon' for '--metadata-ttl"),
            ("[cache]\n\ncache_memory = \"5X\"\n", "3:1: cache_memory: invalid value '5X'"),
            ("[view]\nread_only = \"yes\"\n", "2:1: read_only: expected true or false, not a string"),
            ("state_dir = [\"a\", \"b\"]\n", "1:1: state_dir: expected a value, not a list"),
            ("project = [{ a = 1 }]\n", "1:1: project: expected a list of values, not of a table"),
            ("[files]\nfile_mode = 999\n", "2:1: file_mode: invalid value '999'"),
            ("[google]\npage_size = 5000\n", "2:1: page_size: invalid value '5000'"),
            ("[import]\non_conflict = \"never\"\n", "2:1: on_conflict: invalid value 'never'"),
            ("[metadata]\nmetadata_ttl = 1\nmetadata_ttl = 2\n", "3:1: "),
            ("project = \n", "1:11: "),
        ];
        for (text, expected) in cases {
            let message = refusal(text);
            assert!(message.starts_with(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn an_unknown_key_or_section_is_refused_with_a_suggestion() {
        let message = refusal("project = [\"p\"]\n\n[metadata]\nmetadata_ttl = 5\n\n\nmetadata_tll = 3\n");
        assert_eq!(message, "7:1: metadata_tll: unknown key (did you mean metadata_ttl?)");
        assert_eq!(
            refusal("metadata_ttl = 5\n"),
            "1:1: metadata_ttl: unknown key (did you mean [metadata] metadata_ttl?)"
        );
        assert_eq!(
            refusal("[metdata]\nmetadata_ttl = 5\n"),
            "1:2: [metdata]: unknown section (did you mean [metadata]?)"
        );
        assert_eq!(refusal("[view]\nfrobnicate = 1\n"), "2:1: frobnicate: unknown key");
        assert!(
            refusal("[files]\nready_fd = 3\n").starts_with("2:1: ready_fd: unknown key"),
            "internal flags have no key"
        );
    }

    #[test]
    fn a_key_of_another_command_applies_to_that_command_only() {
        let config = file("[nfs_server]\nlisten = \"127.0.0.1:0\"\n[import]\ndry_run = true\n");
        assert_eq!(mount(&Cli::command(), &config, &["--project", "p"]).tree.metadata_ttl, 60);
        let matches =
            matches_with_file(&Cli::command(), argv(&config, &["serve-nfs", "--project", "p"])).expect("file");
        let Run::ServeNfs(served) = Cli::from_arg_matches(&matches).expect("cli").command else { panic!("serve-nfs") };
        assert_eq!(served.listen, "127.0.0.1:0");
    }

    #[test]
    fn every_flag_of_the_configured_commands_has_one_key_per_command() {
        let cli = Cli::command();
        for command in cli.get_subcommands().filter(|c| !NOT_CONFIGURED.contains(&c.get_name())) {
            let mut keys = Vec::new();
            for arg in command.get_arguments().filter(|arg| arg.get_long().is_some() && !arg.is_hide_set()) {
                let key = Key::of(arg).unwrap_or_else(|| panic!("--{:?} has no key", arg.get_long()));
                assert!(!keys.contains(&key), "{} twice in {}", key, command.get_name());
                keys.push(key);
            }
        }
        let catalogue = Catalogue::of(&cli);
        let metadata_ttl = Key { section: Some("metadata".into()), name: "metadata_ttl".into() };
        assert!(catalogue.find(&metadata_ttl).is_some());
    }

    /// The privileged helper is not steered by a file, even one that
    /// names its flags or is not TOML at all.
    #[test]
    fn fuse_helper_reads_no_file() {
        let cli = Cli::command();
        for text in ["allow_uid = 0\n[mount]\nread_only = false\n", "garbage = ["] {
            let file = file(text);
            let args = argv(&file, &["fuse-helper", "--socket", "/s", "/mnt"]);
            let matches = matches_with_file(&cli, args).unwrap_or_else(|_| panic!("refused for {text:?}"));
            let Run::FuseHelper(helper) = Cli::from_arg_matches(&matches).expect("parsed").command else {
                panic!("not the helper")
            };
            assert_eq!(helper.allow_uid, None, "{text:?}");
        }
    }

    /// docs/CONFIGURATION.md has a row for every flag of every command, in
    /// its key's section, with its key, environment variable and default.
    #[test]
    fn every_flag_is_in_configuration_md_under_its_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIGURATION.md"))
            .expect("docs/CONFIGURATION.md");
        let section_text = |section: &Option<String>| {
            let title = section.as_ref().map_or("At the top of the file".to_string(), |s| format!("`[{s}]`"));
            doc.split("\n### ").find(|chunk| chunk.starts_with(&title)).map(|chunk| chunk.split("\n## ").next())
        };
        let cli = Cli::command();
        let mut checked = 0;
        for command in cli.get_subcommands().filter(|c| !NOT_CONFIGURED.contains(&c.get_name())) {
            for arg in command.get_arguments() {
                let Some(key) = Key::of(arg) else { continue };
                let text = section_text(&key.section).flatten().unwrap_or_else(|| panic!("no section for {key}"));
                let row = format!("| `{}` | `--{}` |", key.name, arg.get_long().unwrap_or_default());
                let line = text.lines().find(|line| line.starts_with(&row)).unwrap_or_else(|| panic!("no row {row}"));
                let env = arg.get_env().map(|env| format!("`{}`", env.to_string_lossy()));
                let defaults = arg.get_default_values().iter().map(|value| value.to_string_lossy().into_owned());
                for wanted in env.into_iter().chain(defaults) {
                    assert!(line.contains(&wanted), "{key}: {wanted} is not in {line}");
                }
                checked += 1;
            }
        }
        assert!(checked > 40, "only {checked} flags checked");
        assert!(doc.contains("`--config` | `CIOFS_CONFIG`"), "the --config flag itself");
    }

    #[test]
    fn the_default_file_is_in_xdg_config_home_else_in_home() {
        let from = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            default_path(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
        };
        assert_eq!(from(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]), Some(PathBuf::from("/x/ciofs/config.toml")));
        assert_eq!(
            from(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.config/ciofs/config.toml"))
        );
        assert_eq!(from(&[]), None);
    }

    #[test]
    fn lines_and_columns_count_from_one() {
        let text = "a = 1\n\n  bé = 2\n";
        assert_eq!(position(text, 0), Position { line: 1, column: 1 });
        assert_eq!(position(text, text.find("bé").unwrap() + "bé".len()), Position { line: 3, column: 5 });
    }
}
