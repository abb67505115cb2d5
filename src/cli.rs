//! The command line: one clap struct per command, turned once into the
//! layers' own options.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use ciofs_backends::retry::RetryPolicy;

use crate::core::context::{CacheOptions, DiskTier};
use crate::namespace::Options;

#[derive(Parser, Debug)]
#[command(name = "ciofs", version, about = "A Google Cloud project as a filesystem")]
pub struct Cli {
    /// A TOML file of options (docs/CONFIGURATION.md); default:
    /// $XDG_CONFIG_HOME/ciofs/config.toml, else ~/.config/ciofs/config.toml,
    /// if present. Flags and environment variables win over it.
    #[arg(long, global = true, value_name = "FILE", env = "CIOFS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount projects with FUSE (or NFS with --nfs); returns once the mount is ready.
    Mount(MountArgs),
    /// Flush and unmount a mount made by `ciofs mount`.
    Unmount {
        mountpoint: PathBuf,
        /// The state directory the mount was made with (its pid file).
        #[arg(long, env = "CIOFS_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Serve projects over NFSv3 (on loopback; another address needs --allow-remote).
    ServeNfs(ServeNfsArgs),
    /// The privileged half of an unprivileged mount (a Kubernetes sidecar's
    /// helper): mounts /dev/fuse at MOUNTPOINT for each `ciofs mount
    /// --fuse-socket` that connects to SOCKET, passes it the descriptor,
    /// and unmounts once that ciofs ends.
    FuseHelper(FuseHelperArgs),
    /// Write a project as a tar archive (FILE.tar, or .tar.gz/.tgz compressed), as `tar c` of the mount would.
    Export(ExportArgs),
    /// Recreate an archive's resources in a project: prints a plan, then applies it.
    Import(ImportArgs),
    /// The configuration file: `ciofs config show [COMMAND] [FLAGS]`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mount a sample project (demo-project) served from memory: no Google
    /// account, no emulator. Its data lives in this process's memory only
    /// and is gone when the demo ends.
    ///
    /// Stays in the foreground until Ctrl-C or SIGTERM, then unmounts.
    /// Without /dev/fuse, `--nfs` serves it over NFS on loopback.
    Demo(crate::demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the options COMMAND would run with, as TOML, each with where
    /// its value comes from (flag, environment, file, default).
    Show {
        /// mount, serve-nfs, export, import or unmount.
        #[arg(default_value = "mount", allow_hyphen_values = true)]
        command: String,
        /// The command's flags, as it would be given them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The archive (tar, or gzip-compressed tar).
    pub file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long, help_heading = "Import")]
    pub dry_run: bool,
    /// What to do with a resource that exists and differs.
    #[arg(long, help_heading = "Import", value_enum, default_value = "skip")]
    pub on_conflict: crate::archive::import::OnConflict,
    /// Import bucket OLD as NEW (bucket names are global); repeatable.
    #[arg(long, help_heading = "Import", value_name = "OLD=NEW", value_parser = bucket_mapping)]
    pub map_bucket: Vec<(String, String)>,
}

fn bucket_mapping(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => Ok((old.to_string(), new.to_string())),
        _ => Err(format!("{text:?} is not OLD=NEW")),
    }
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The archive to write; it appears only once complete.
    pub file: PathBuf,
    /// Leave out the objects' contents, keep their `.meta/` documents: the
    /// project's configuration only.
    #[arg(long, help_heading = "Export")]
    pub config_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TreeArgs {
    /// A project to show at the mount root (repeat for several).
    #[arg(long = "project", required = true, env = "CIOFS_PROJECT", value_delimiter = ',')]
    pub projects: Vec<String>,
    #[command(flatten)]
    pub backend: crate::demo::BackendArgs,
    /// Owner shown for every file (default: the user running ciofs).
    #[arg(long, help_heading = "Files")]
    pub uid: Option<u32>,
    /// Group shown for every file (default: the user's group).
    #[arg(long, help_heading = "Files")]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, help_heading = "Files", default_value = "644", value_parser = octal)]
    pub file_mode: u16,
    /// Permission bits of directories, in octal.
    #[arg(long, help_heading = "Files", default_value = "755", value_parser = octal)]
    pub dir_mode: u16,
    /// Seconds that listed metadata is trusted (0: ask Google every time).
    #[arg(long, help_heading = "Metadata", default_value_t = 60)]
    pub metadata_ttl: u64,
    /// Seconds that a name found absent is remembered (at most the
    /// metadata TTL). `touch DIR` forgets it at once.
    #[arg(long, help_heading = "Metadata", default_value_t = 5)]
    pub negative_ttl: u64,
    /// How many Cloud Storage names' metadata is cached at most; past it,
    /// expired names go, then all.
    #[arg(long, help_heading = "Metadata", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub stat_cache_entries: u64,
    /// How many entries (objects and prefixes) the directory listings kept
    /// for the metadata TTL hold together at most; past it, the oldest
    /// listings go, and a larger listing is not kept.
    #[arg(long, help_heading = "Metadata", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_cache_entries: u64,
    /// Entries per list call to Google (at most 1000).
    #[arg(long, help_heading = "Google", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// How many objects `mv` of a directory moves server-side at most; past
    /// it, rename answers EXDEV and mv copies by itself.
    #[arg(long, help_heading = "Google", default_value_t = 1000)]
    pub rename_limit: usize,
    /// Where ciofs keeps its state (NFS handles, staging files, logs, pid
    /// files); made 0700. Default: $XDG_STATE_HOME/ciofs, else
    /// ~/.local/state/ciofs, else $XDG_RUNTIME_DIR/ciofs.
    #[arg(long, env = "CIOFS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a call to Google may go without progress (a request body
    /// not read, an answer not coming) before it is tried again or fails;
    /// a call that stalls fails within a minute more.
    #[arg(long, help_heading = "Google", value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Where read object content is cached on disk, kept across restarts;
    /// one mount at a time. Default: a directory of the state directory
    /// for each mount point (and NFS server); export and import cache in
    /// memory only.
    #[arg(long, help_heading = "Cache")]
    pub cache_dir: Option<PathBuf>,
    /// Memory for cached object content (K, M, G suffixes: powers of 1024).
    #[arg(long, help_heading = "Cache", value_name = "BYTES", default_value = "256M", value_parser = byte_size)]
    pub cache_memory: u64,
    /// Disk for cached object content, at most; less if the disk would be
    /// left with under 10 % free. 0: memory only.
    #[arg(long, help_heading = "Cache", value_name = "BYTES", default_value = "10G", value_parser = byte_size)]
    pub cache_size: u64,
    /// Send macOS's metadata files (`._*`, `.DS_Store`, `.Trashes`,
    /// `.Spotlight-V100`, `.fseventsd` ...) to Google like any other file.
    /// Without it they stay local to the mount, in memory, until it ends.
    #[arg(long, help_heading = "Files")]
    pub upload_macos_files: bool,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Options may also be given as mount(8) gives them: -o ro,allow_other,uid=1000,metadata_ttl=5 \
    (each is the flag of that name; ro is --read-only; _netdev, noauto, x-systemd.* and the like are ignored). \
    Linked as mount.ciofs, ciofs mounts the lines of /etc/fstab of type ciofs: \
    `PROJECT /mnt/gcp ciofs rw,_netdev,allow_other 0 0`.")]
#[command(group(clap::ArgGroup::new("target").required(true).args(["mountpoint", "fuse_socket"])))]
pub struct MountArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Where to mount; or `/dev/fd/N`, a /dev/fuse descriptor that a
    /// privileged helper opened, mounted and passed on: ciofs then serves
    /// it without privileges and leaves the unmount to the helper.
    pub mountpoint: Option<PathBuf>,
    /// Take the mount from `ciofs fuse-helper` listening on this Unix
    /// socket (instead of a MOUNTPOINT): it mounts /dev/fuse and passes
    /// the descriptor, which ciofs serves without privileges; the helper
    /// unmounts when ciofs ends. Waits up to 60 s for the helper.
    #[arg(long, help_heading = "Mount", value_name = "SOCKET", conflicts_with = "nfs")]
    pub fuse_socket: Option<PathBuf>,
    /// Stay attached and log to stderr.
    #[arg(long, help_heading = "Mount")]
    pub foreground: bool,
    /// Serve over NFS on loopback and mount that with the OS's NFS client.
    #[arg(long, help_heading = "Mount")]
    pub nfs: bool,
    /// Let other users than the one mounting see the files (FUSE allow_other).
    #[arg(long, help_heading = "Mount")]
    pub allow_other: bool,
    /// Create the mount point if it is missing (as mount(8)'s
    /// X-mount.mkdir), such as a directory in a pod's fresh emptyDir.
    #[arg(long, help_heading = "Mount")]
    pub mkdir: bool,
    /// Log file of a background mount (default: in the state directory).
    #[arg(long, help_heading = "Mount")]
    pub log_file: Option<PathBuf>,
    #[command(flatten)]
    pub view: ViewArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Internal: the file descriptor on which a re-executed daemon reports readiness.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// What a mount or server shows and takes.
#[derive(Args, Debug, Clone, Copy, Default)]
#[command(next_help_heading = "View")]
pub struct ViewArgs {
    /// Show the configuration only: no object files, their `.meta/`
    /// documents kept (`tar c` of it is a configuration-only export).
    #[arg(long)]
    pub config_only: bool,
    /// Refuse every change with EROFS: nothing but reads is sent to
    /// Google (reading a subscription's `_stream`, which acknowledges what
    /// it reads, is refused too; so is `touch DIR`).
    #[arg(long)]
    pub read_only: bool,
}

/// `--watch`: changes made elsewhere seen within seconds
/// (src/storage/watch.rs).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Watch")]
pub struct WatchArgs {
    /// Subscribe to Cloud Storage's Pub/Sub notifications of the mounted
    /// buckets: what other mounts and writers change shows within
    /// seconds, not after the metadata TTL. ciofs makes a subscription of
    /// its own (deleted at unmount) and, without --watch-topic, a
    /// notification config to the topic `ciofs-watch` for each bucket
    /// that has none publishing every change.
    #[arg(long)]
    pub watch: bool,
    /// The topic the buckets already publish their changes to
    /// (`projects/P/topics/T`, or `T` of the first project): no
    /// notification config is read or made.
    #[arg(long, value_name = "TOPIC", requires = "watch")]
    pub watch_topic: Option<String>,
    /// Hours a subscription lives unused, should the mount die without
    /// deleting it (24 at least: Pub/Sub's minimum).
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(24..=744))]
    pub watch_expiration: u64,
}

impl WatchArgs {
    /// What `--watch` asks for, if it does.
    pub fn options(&self) -> Option<crate::namespace::WatchOptions> {
        self.watch.then(|| crate::namespace::WatchOptions {
            topic: self.watch_topic.clone(),
            expiration: Duration::from_secs(self.watch_expiration * 3600),
        })
    }
}

/// What an operator watches a running mount or server by, and how it stops.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Operations")]
pub struct OperatorArgs {
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on
    /// this address (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seconds a shutdown (SIGTERM, `ciofs unmount`) waits for the files
    /// being written to be uploaded; new changes are refused meanwhile.
    /// What is not uploaded by then is kept in the state directory for the
    /// next start, and the exit status is non-zero. A second signal stops
    /// waiting at once. The default stays under Kubernetes' 30 s grace.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub shutdown_timeout: u64,
    /// Append one line per attempt of each call to Google (time, service,
    /// method, resource, status, bytes, duration, attempt) to FILE, made
    /// 0600; `-` for stderr. Off by default.
    #[arg(long, value_name = "FILE")]
    pub api_log: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FuseHelperArgs {
    /// Where to mount (a directory the consumers share, such as a pod's
    /// emptyDir).
    pub mountpoint: PathBuf,
    /// The Unix socket to listen on; one left by an earlier helper is
    /// replaced.
    #[arg(long, value_name = "SOCKET")]
    pub socket: PathBuf,
    /// The user (besides root) that may be given the mount; the kernel
    /// says who connected. Without it only root may.
    #[arg(long, value_name = "UID")]
    pub allow_uid: Option<u32>,
    /// Mount with FUSE's allow_other: users other than ciofs's see the files.
    #[arg(long)]
    pub allow_other: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Create the mount point if it is missing.
    #[arg(long)]
    pub mkdir: bool,
}

impl MountArgs {
    /// What names this mount in the state directory (pid file, staging,
    /// log): its mount point, or the helper's socket it takes it from.
    pub fn place(&self) -> &Path {
        match (&self.mountpoint, &self.fuse_socket) {
            (Some(mountpoint), _) => mountpoint,
            (None, Some(socket)) => socket,
            // clap requires one of them.
            (None, None) => Path::new("."),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeNfsArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Address to listen on; port 0 picks a free one (printed at start).
    /// Loopback only (127.0.0.0/8, ::1, or a name resolving to them)
    /// unless --allow-remote is given.
    #[arg(long, help_heading = "NFS server", default_value = "127.0.0.1:2049")]
    pub listen: String,
    /// Serve on an address that is not loopback. NFS has no
    /// authentication: every host that reaches the port can read and
    /// change the projects.
    #[arg(long, help_heading = "NFS server")]
    pub allow_remote: bool,
    #[command(flatten)]
    pub view: ViewArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Internal: the file descriptor on which a re-executed server reports its port.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// A size in bytes: a number with an optional K, M, G or T (powers of
/// 1024, with or without a trailing "iB" or "B").
fn byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let unit_at = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(unit_at);
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => Some(0),
        "K" => Some(10),
        "M" => Some(20),
        "G" => Some(30),
        "T" => Some(40),
        _ => None,
    };
    shift
        .and_then(|shift| digits.parse::<u64>().ok()?.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?}: not a size (a number with K, M, G or T)"))
}

fn octal(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal permission mode"))
}

impl OperatorArgs {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}

impl ServeNfsArgs {
    /// The address `--listen` names, resolved once: an address that is not
    /// loopback (or a name resolving to one) is refused without
    /// `--allow-remote`.
    pub fn listen_address(&self) -> Result<SocketAddr, String> {
        listen_address(&self.listen, self.allow_remote)
    }
}

fn listen_address(listen: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let addresses: Vec<SocketAddr> = listen.to_socket_addrs().map_err(|e| format!("--listen {listen}: {e}"))?.collect();
    let first = *addresses.first().ok_or_else(|| format!("--listen {listen}: the name resolves to no address"))?;
    if let Some(remote) = addresses.iter().find(|address| !address.ip().is_loopback())
        && !allow_remote
    {
        return Err(format!(
            "--listen {listen}: {} is not a loopback address. NFS has no authentication: every host that \
             reaches the port could read and change the project. Listen on 127.0.0.1 or ::1, or pass \
             --allow-remote to serve other hosts anyway",
            remote.ip()
        ));
    }
    Ok(first)
}

impl TreeArgs {
    /// The layers' options; makes the state directory (see `state_dir`).
    pub fn options(&self) -> Result<Options, String> {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Options {
            uid: self.uid.unwrap_or(uid),
            gid: self.gid.unwrap_or(gid),
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
            page_size: self.page_size,
            metadata_ttl: Duration::from_secs(self.metadata_ttl),
            negative_ttl: Duration::from_secs(self.negative_ttl),
            stat_cache_entries: usize::try_from(self.stat_cache_entries).unwrap_or(usize::MAX),
            list_cache_entries: usize::try_from(self.list_cache_entries).unwrap_or(usize::MAX),
            staging_dir: self.state_dir()?.join("staging"),
            rename_limit: self.rename_limit,
            config_only: false,
            read_only: false,
            upload_macos_files: self.upload_macos_files,
            content_cache: self.cache_options(None),
        })
    }

    /// The content cache's tiers: on disk in `--cache-dir`, else in
    /// `default_dir`, else (or with `--cache-size 0`) memory only.
    pub fn cache_options(&self, default_dir: Option<PathBuf>) -> CacheOptions {
        let dir = self.cache_dir.clone().or(default_dir).filter(|_| self.cache_size > 0);
        CacheOptions {
            memory_bytes: usize::try_from(self.cache_memory).unwrap_or(usize::MAX),
            disk: dir.map(|dir| DiskTier::new(dir, self.cache_size)),
        }
    }

    /// How calls to every Google service are bounded and retried.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { stall_timeout: Duration::from_secs(self.stall_timeout), ..RetryPolicy::default() }
    }

    /// The state directory, made if missing and checked to be the user's
    /// alone (0700, not a link, not another user's): it holds staged
    /// object bytes, journals, pid files and logs.
    pub fn state_dir(&self) -> Result<PathBuf, String> {
        let dir = state_dir(self.state_dir.as_ref())?;
        crate::core::private_files::private_dir(&dir).map_err(|e| format!("state directory {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

/// `explicit` (--state-dir or $CIOFS_STATE_DIR), else `$XDG_STATE_HOME/ciofs`,
/// else `~/.local/state/ciofs`, else `$XDG_RUNTIME_DIR/ciofs`; never a
/// shared directory such as /tmp, where another user could make it first.
pub fn state_dir(explicit: Option<&PathBuf>) -> Result<PathBuf, String> {
    state_dir_from(explicit, |name| std::env::var_os(name))
}

fn state_dir_from(explicit: Option<&PathBuf>, var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    if let Some(dir) = explicit.cloned().or_else(|| absolute_var(&var, "CIOFS_STATE_DIR")) {
        return Ok(dir);
    }
    xdg_base(&var, "XDG_STATE_HOME", ".local/state")
        .or_else(|| absolute_var(&var, "XDG_RUNTIME_DIR"))
        .map(|base| base.join("ciofs"))
        .ok_or_else(|| {
            "no place for ciofs's state: none of $XDG_STATE_HOME, $HOME and $XDG_RUNTIME_DIR is set; \
             pass --state-dir DIR (or set $CIOFS_STATE_DIR) to a directory only you can enter"
                .to_string()
        })
}

/// An XDG base directory: `$name`, else `$HOME/under_home`.
pub(crate) fn xdg_base(var: &impl Fn(&str) -> Option<OsString>, name: &str, under_home: &str) -> Option<PathBuf> {
    absolute_var(var, name).or_else(|| absolute_var(var, "HOME").map(|home| home.join(under_home)))
}

/// The path the variable `name` holds; empty or relative is as unset (the
/// XDG base directory rules).
fn absolute_var(var: &impl Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    var(name).map(PathBuf::from).filter(|path| path.is_absolute())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal() {
        assert_eq!(octal("644"), Ok(0o644));
        assert!(octal("9").is_err());
        assert!(octal("77777").is_err());
    }

    #[test]
    fn only_loopback_is_served_without_allow_remote() {
        for listen in ["127.0.0.1:0", "127.1.2.3:2049", "[::1]:0", "localhost:0"] {
            let address = listen_address(listen, false).unwrap_or_else(|e| panic!("{listen}: {e}"));
            assert!(address.ip().is_loopback(), "{listen}: {address}");
        }
        for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:2049", "[fd00::2]:0"] {
            let refused = listen_address(listen, false).expect_err(listen);
            assert!(refused.contains("--allow-remote"), "{listen}: {refused}");
            assert!(listen_address(listen, true).is_ok(), "{listen} with --allow-remote");
        }
        assert!(listen_address("127.0.0.1", false).is_err(), "a port is needed");
    }

    #[test]
    fn the_state_directory_is_never_guessed_in_a_shared_place() {
        let from = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            state_dir_from(None, |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
        };
        let all = [("XDG_STATE_HOME", "/s"), ("HOME", "/h"), ("XDG_RUNTIME_DIR", "/r")];
        assert_eq!(from(&all), Ok(PathBuf::from("/s/ciofs")));
        assert_eq!(from(&all[1..]), Ok(PathBuf::from("/h/.local/state/ciofs")));
        assert_eq!(from(&all[2..]), Ok(PathBuf::from("/r/ciofs")));
        assert_eq!(from(&[("CIOFS_STATE_DIR", "/c"), all[0]]), Ok(PathBuf::from("/c")));
        assert_eq!(from(&[("XDG_STATE_HOME", ""), ("HOME", "relative"), all[2]]), Ok(PathBuf::from("/r/ciofs")));
        assert!(from(&[]).unwrap_err().contains("--state-dir"));
        let explicit = PathBuf::from("/e");
        assert_eq!(state_dir_from(Some(&explicit), |_| None), Ok(explicit));
    }

    #[test]
    fn projects_repeat_or_comma_separate() {
        let cli = Cli::try_parse_from(["ciofs", "mount", "--project", "a,b", "--project", "c", "/mnt"]).unwrap();
        let Command::Mount(args) = cli.command else { panic!("not a mount") };
        assert_eq!(args.tree.projects, ["a", "b", "c"]);
        assert_eq!(args.tree.file_mode, 0o644);
        assert_eq!(args.tree.retry_policy().stall_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_stall_timeout_is_whole_seconds_from_one() {
        let cli = Cli::try_parse_from(["ciofs", "serve-nfs", "--project", "p", "--stall-timeout", "5"]).unwrap();
        let Command::ServeNfs(args) = cli.command else { panic!("not serve-nfs") };
        assert_eq!(args.tree.retry_policy().stall_timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["ciofs", "mount", "--project", "p", "--stall-timeout", "0", "/mnt"]).is_err());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(byte_size("0"), Ok(0));
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("256M"), Ok(256 << 20));
        assert_eq!(byte_size("10GiB"), Ok(10 << 30));
        assert_eq!(byte_size("2 kb"), Ok(2048));
        assert!(byte_size("ten").is_err());
        assert!(byte_size("5X").is_err());
        assert!(byte_size("99999999999T").is_err());
    }

    #[test]
    fn the_disk_cache_is_in_cache_dir_else_the_default_and_off_at_size_zero() {
        let parse = |extra: &[&str]| {
            let args = [&["ciofs", "mount", "--project", "p"], extra, &["/mnt"]].concat();
            let Command::Mount(args) = Cli::try_parse_from(args).unwrap().command else { panic!("not a mount") };
            args.tree
        };
        let default = Some(PathBuf::from("/state/cache/m"));
        let tree = parse(&[]);
        let options = tree.cache_options(default.clone());
        assert_eq!(options.memory_bytes, 256 << 20);
        let disk = options.disk.unwrap();
        assert_eq!((disk.dir, disk.max_bytes), (PathBuf::from("/state/cache/m"), 10 << 30));
        let tree = parse(&["--cache-dir", "/c", "--cache-memory", "64M"]);
        assert_eq!(tree.cache_options(default.clone()).disk.unwrap().dir, PathBuf::from("/c"));
        assert_eq!(tree.cache_options(None).memory_bytes, 64 << 20);
        assert!(parse(&["--cache-size", "0"]).cache_options(default).disk.is_none());
        assert!(parse(&[]).cache_options(None).disk.is_none());
    }
}
