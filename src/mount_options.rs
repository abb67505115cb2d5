//! mount(8)'s conventions, turned into ciofs's own command line before it
//! is parsed:
//!
//! - `ciofs mount -o ro,allow_other,uid=1000,metadata_ttl=5 ...`: each
//!   option is the flag of the same name (`_` or `-` alike; `ro` is
//!   `--read-only`, `rw` nothing), and the options mount(8) and fstab use
//!   for themselves (`_netdev`, `noauto`, `x-systemd.*` ...) are ignored;
//! - the helper form mount(8) runs for an fstab line of type `ciofs` (or
//!   `fuse.ciofs`): `mount.ciofs SPEC DIR [-sfnv] [-o OPTIONS]`, where SPEC
//!   is `PROJECT[,PROJECT...]`, optionally as `ciofs#PROJECT`. `ciofs`
//!   installed (or linked) as `mount.ciofs` or `mount.fuse.ciofs` takes
//!   it, and so does `ciofs SPEC DIR -o ...`, which is how fuse's own
//!   `mount.fuse` starts a `fuse.ciofs` or `ciofs#PROJECT` line.

use std::ffi::{OsStr, OsString};

use clap::{Arg, Command};

/// Options mount(8), fstab and systemd give every filesystem, which ciofs
/// has nothing to do with (FUSE mounts are nodev and nosuid always).
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "async",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "diratime",
    "nodiratime",
    "loud",
    "silent",
    "default_permissions",
];

/// Prefixes of options meant for other programs (`x-systemd.automount`,
/// `comment=...`).
const IGNORED_PREFIXES: &[&str] = &["x-", "comment="];

/// The command line clap is to parse: the helper form becomes `ciofs mount
/// --project ... DIR`, and the `-o` options of `mount` become flags of
/// `cli`'s `mount`. An option that is no flag is refused (ignored with
/// `-s`, as mount(8)'s sloppy mode asks). None: nothing to do (`-f`,
/// mount(8)'s fake mode).
pub fn normalize(args: Vec<OsString>, cli: &Command) -> Result<Option<Vec<OsString>>, String> {
    let mount = cli.find_subcommand("mount").ok_or("ciofs has no mount command")?;
    let program = args.first().cloned().unwrap_or_else(|| OsString::from("ciofs"));
    let called_as_helper = std::path::Path::new(&program)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name == "mount.ciofs" || name == "mount.fuse.ciofs");
    if called_as_helper || is_helper_form(&args, cli) {
        return helper_command(&args[1..], mount);
    }
    let command_at = after_global_options(&args, cli);
    if args.get(command_at).and_then(|a| a.to_str()) != Some("mount") {
        return Ok(Some(args));
    }
    let mut out = args[..=command_at].to_vec();
    let mut rest = args[command_at + 1..].iter();
    while let Some(arg) = rest.next() {
        match option_list(arg, &mut rest)? {
            Some(options) => out.extend(expand(&options, mount, false)?),
            None => out.push(arg.clone()),
        }
    }
    Ok(Some(out))
}

/// Where the subcommand is: after the program and the options of `ciofs`
/// itself (its global args: `--config FILE`).
fn after_global_options(args: &[OsString], cli: &Command) -> usize {
    let globals: Vec<&Arg> = cli.get_arguments().filter(|arg| arg.is_global_set()).collect();
    let mut at = 1;
    while let Some(arg) = args.get(at).and_then(|a| a.to_str()) {
        let Some(long) = arg.strip_prefix("--") else { break };
        let (name, inline_value) = match long.split_once('=') {
            Some((name, _)) => (name, true),
            None => (long, false),
        };
        let Some(global) = globals.iter().find(|g| g.get_long() == Some(name)) else { break };
        let separate_value = !inline_value && global.get_action().takes_values();
        at += if separate_value { 2 } else { 1 };
    }
    at
}

/// `ciofs SPEC DIR ...` as fuse's `mount.fuse` runs it: a first argument
/// that is no subcommand or flag, and an absolute directory after it.
fn is_helper_form(args: &[OsString], cli: &Command) -> bool {
    let is_command = |name: &str| name == "help" || cli.find_subcommand(name).is_some();
    match (args.get(1).and_then(|a| a.to_str()), args.get(2)) {
        (Some(first), Some(dir)) => {
            !first.starts_with('-')
                && !is_command(first)
                && std::path::Path::new(dir).is_absolute()
                && std::path::Path::new(dir).is_dir()
        }
        _ => false,
    }
}

/// The value of `-o OPTIONS` or `-oOPTIONS` at `arg` (taking the next
/// argument for the first), or None if `arg` is something else.
fn option_list<'a>(arg: &OsString, rest: &mut impl Iterator<Item = &'a OsString>) -> Result<Option<String>, String> {
    let Some(text) = arg.to_str() else { return Ok(None) };
    if text == "-o" {
        let value = rest.next().ok_or("-o needs a list of options")?;
        return value.to_str().map(|v| Some(v.to_string())).ok_or_else(|| "-o: options are not UTF-8".to_string());
    }
    Ok(text.strip_prefix("-o").filter(|v| !v.is_empty()).map(str::to_string))
}

/// `mount.ciofs SPEC DIR [-sfnv] [-o OPTIONS] [-t TYPE]` as `ciofs mount`.
fn helper_command(args: &[OsString], mount: &Command) -> Result<Option<Vec<OsString>>, String> {
    let (mut positional, mut options, mut sloppy, mut fake) = (Vec::new(), Vec::new(), false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if let Some(list) = option_list(arg, &mut rest)? {
            options.push(list);
            continue;
        }
        match arg.to_str() {
            Some("-t") => drop(rest.next()),
            Some("-N") => return Err("-N (another mount namespace) is not supported".to_string()),
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for flag in flags[1..].chars() {
                    match flag {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'n' | 'v' => {}
                        other => return Err(format!("-{other}: not an option of mount.ciofs")),
                    }
                }
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [spec, dir] = positional.as_slice() else {
        return Err("usage: mount.ciofs PROJECT[,PROJECT...] DIR [-o OPTIONS]".to_string());
    };
    if fake {
        return Ok(None);
    }
    let spec = spec.to_str().ok_or("the project is not UTF-8")?;
    let projects = spec.strip_prefix("ciofs#").unwrap_or(spec);
    let mut out: Vec<OsString> = ["ciofs", "mount", "--project", projects].map(OsString::from).into();
    for list in &options {
        out.extend(expand(list, mount, sloppy)?);
    }
    out.push(dir.clone());
    Ok(Some(out))
}

/// One `-o` list as flags of `mount`, each one argument (`--uid=7`,
/// `--allow-other`): a flag and its value as two would leave a stray
/// argument, or take the mount point as the value.
fn expand(list: &str, mount: &Command, sloppy: bool) -> Result<Vec<OsString>, String> {
    let mut flags = Vec::new();
    for option in list.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        if IGNORED.contains(&option) || IGNORED_PREFIXES.iter().any(|p| option.starts_with(p)) {
            continue;
        }
        let flag = if key == "ro" { "read-only".to_string() } else { key.replace('_', "-") };
        let Some(arg) = mount.get_arguments().find(|arg| arg.get_long() == Some(flag.as_str())) else {
            if sloppy {
                continue;
            }
            return Err(format!("-o {option}: not an option of ciofs mount (see ciofs mount --help)"));
        };
        flags.push(match (value, arg.get_action().takes_values()) {
            (Some(value), true) => OsString::from(format!("--{flag}={value}")),
            (None, false) => OsString::from(format!("--{flag}")),
            (Some(_), false) => return Err(format!("-o {option}: {key} takes no value")),
            (None, true) => return Err(format!("-o {option}: {key} needs a value ({key}=...)")),
        });
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::{CommandFactory, Parser};

    fn run(args: &[&str]) -> Result<Option<Vec<String>>, String> {
        let args = args.iter().map(OsString::from).collect();
        normalize(args, &crate::cli::Cli::command())
            .map(|out| out.map(|v| v.iter().map(|a| a.to_string_lossy().to_string()).collect()))
    }

    #[test]
    fn options_of_mount_become_its_flags() {
        let out =
            run(&["ciofs", "mount", "--project", "p", "-o", "ro,allow_other,uid=7,_netdev,x-systemd.automount", "/m"]);
        assert_eq!(
            out.unwrap().unwrap(),
            ["ciofs", "mount", "--project", "p", "--read-only", "--allow-other", "--uid=7", "/m"]
        );
        let out = run(&["ciofs", "mount", "-ometadata_ttl=5,file-mode=600", "/m"]);
        assert_eq!(out.unwrap().unwrap(), ["ciofs", "mount", "--metadata-ttl=5", "--file-mode=600", "/m"]);
        let out = run(&["ciofs", "--config", "c.toml", "mount", "-o", "ro", "/m"]);
        assert_eq!(out.unwrap().unwrap(), ["ciofs", "--config", "c.toml", "mount", "--read-only", "/m"]);
        let out = run(&["ciofs", "--config=c.toml", "mount", "-o", "ro", "/m"]);
        assert_eq!(out.unwrap().unwrap(), ["ciofs", "--config=c.toml", "mount", "--read-only", "/m"]);
        let refused = run(&["ciofs", "mount", "-o", "metadata_tll=5", "/m"]).unwrap_err();
        assert!(refused.contains("metadata_tll"), "{refused}");
        assert!(run(&["ciofs", "mount", "-o"]).is_err());
    }

    /// A flag and its value as two arguments left `1` of `allow_other=1`
    /// as a stray argument, and made the mount point `uid`'s value.
    #[test]
    fn each_option_is_one_argument_and_its_value_is_checked() {
        let refused = run(&["ciofs", "mount", "--project", "p", "-o", "allow_other=1", "/m"]).unwrap_err();
        assert!(refused.contains("allow_other takes no value"), "{refused}");
        let refused = run(&["ciofs", "mount", "--project", "p", "-o", "uid", "/m"]).unwrap_err();
        assert!(refused.contains("uid needs a value"), "{refused}");
        let out = run(&["ciofs", "mount", "--project", "p", "-o", "state_dir=/s t", "/m"]).unwrap().unwrap();
        assert_eq!(out, ["ciofs", "mount", "--project", "p", "--state-dir=/s t", "/m"]);
        // What clap then makes of it: the mount point stays the mount point.
        let parsed = crate::cli::Cli::try_parse_from(
            run(&["ciofs", "mount", "-o", "uid=7", "--project", "p", "/m"]).unwrap().unwrap(),
        );
        let Ok(crate::cli::Cli { command: crate::cli::Command::Mount(mount), .. }) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!((mount.tree.uid, mount.place()), (Some(7), std::path::Path::new("/m")));
    }

    #[test]
    fn the_subcommands_and_global_options_are_clap_s() {
        let cli = crate::cli::Cli::command();
        for command in cli.get_subcommands() {
            let dir = std::env::temp_dir();
            let args: Vec<OsString> = ["ciofs", command.get_name()].map(OsString::from).into();
            let args = [args, vec![dir.into_os_string()]].concat();
            assert!(!is_helper_form(&args, &cli), "{} is a command", command.get_name());
        }
        let args = ["ciofs", "--config", "c", "--config=d", "mount"].map(OsString::from);
        assert_eq!(after_global_options(&args, &cli), 4);
    }

    #[test]
    fn other_commands_are_left_alone() {
        let args = ["ciofs", "export", "--project", "p", "-o", "x"];
        assert_eq!(run(&args).unwrap().unwrap(), args);
    }

    #[test]
    fn the_helper_form_is_a_mount() {
        let dir = std::env::temp_dir().display().to_string();
        let expected = ["ciofs", "mount", "--project", "p1,p2", "--allow-other", dir.as_str()];
        for program in ["/sbin/mount.ciofs", "mount.fuse.ciofs"] {
            let out = run(&[program, "ciofs#p1,p2", &dir, "-n", "-o", "rw,allow_other"]).unwrap().unwrap();
            assert_eq!(out, expected, "{program}");
        }
        // fuse's mount.fuse runs the subtype's program itself.
        let out = run(&["ciofs", "p1,p2", &dir, "-o", "rw,allow_other"]).unwrap().unwrap();
        assert_eq!(out, expected);
        assert_eq!(run(&["mount.ciofs", "p", &dir, "-f"]).unwrap(), None, "-f: fake");
        let sloppy = run(&["mount.ciofs", "p", &dir, "-s", "-o", "unheard_of"]).unwrap().unwrap();
        assert_eq!(sloppy, ["ciofs", "mount", "--project", "p", dir.as_str()]);
        assert!(run(&["mount.ciofs", "p"]).is_err(), "no directory");
    }
}
