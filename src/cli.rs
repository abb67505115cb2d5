//! The command line: one clap struct per command, turned once into the
//! layers' own options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::namespace::Options;

#[derive(Parser, Debug)]
#[command(name = "ciofs", version, about = "A Google Cloud project as a filesystem")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount projects with FUSE (or NFS with --nfs); returns once the mount is ready.
    Mount(MountArgs),
    /// Flush and unmount a mount made by `ciofs mount`.
    Unmount { mountpoint: PathBuf },
    /// Serve projects over NFSv3 (loopback only unless --listen says otherwise).
    ServeNfs(ServeNfsArgs),
    /// Write a project as a tar archive (FILE.tar, or .tar.gz/.tgz compressed), as `tar c` of the mount would.
    Export(ExportArgs),
    /// Recreate an archive's resources in a project: prints a plan, then applies it.
    Import(ImportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The archive (tar, or gzip-compressed tar).
    pub file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// What to do with a resource that exists and differs.
    #[arg(long, value_enum, default_value = "skip")]
    pub on_conflict: crate::archive::import::OnConflict,
    /// Import bucket OLD as NEW (bucket names are global); repeatable.
    #[arg(long, value_name = "OLD=NEW", value_parser = bucket_mapping)]
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
    #[arg(long)]
    pub config_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TreeArgs {
    /// A project to show at the mount root (repeat for several).
    #[arg(long = "project", required = true, env = "CIOFS_PROJECT", value_delimiter = ',')]
    pub projects: Vec<String>,
    /// Owner shown for every file (default: the user running ciofs).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for every file (default: the user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, default_value = "644", value_parser = octal)]
    pub file_mode: u16,
    /// Permission bits of directories, in octal.
    #[arg(long, default_value = "755", value_parser = octal)]
    pub dir_mode: u16,
    /// Seconds that listed metadata is trusted.
    #[arg(long, default_value_t = 60)]
    pub metadata_ttl: u64,
    /// Entries per list call to Google (at most 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// How many objects `mv` of a directory moves server-side at most; past
    /// it, rename answers EXDEV and mv copies by itself.
    #[arg(long, default_value_t = 1000)]
    pub rename_limit: usize,
    /// Where ciofs keeps its state (NFS handles, logs, pid files).
    #[arg(long, env = "CIOFS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    pub mountpoint: PathBuf,
    /// Stay attached and log to stderr.
    #[arg(long)]
    pub foreground: bool,
    /// Serve over NFS on loopback and mount that with the OS's NFS client.
    #[arg(long)]
    pub nfs: bool,
    /// Let other users than the one mounting see the files (FUSE allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Log file of a background mount (default: in the state directory).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Show the configuration only: no object files, their `.meta/`
    /// documents kept (`tar c` of it is a configuration-only export).
    #[arg(long)]
    pub config_only: bool,
    /// Internal: the file descriptor on which a re-executed daemon reports readiness.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeNfsArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:2049")]
    pub listen: String,
    /// Show the configuration only, as `mount --config-only` does.
    #[arg(long)]
    pub config_only: bool,
    /// Internal: the file descriptor on which a re-executed server reports its port.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}

fn octal(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal permission mode"))
}

impl TreeArgs {
    pub fn options(&self) -> Options {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Options {
            uid: self.uid.unwrap_or(uid),
            gid: self.gid.unwrap_or(gid),
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
            page_size: self.page_size,
            metadata_ttl: Duration::from_secs(self.metadata_ttl),
            staging_dir: self.state_dir().join("staging"),
            rename_limit: self.rename_limit,
            config_only: false,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(Self::default_state_dir)
    }

    /// `$CIOFS_STATE_DIR`, else `$XDG_STATE_HOME/ciofs`, else `~/.local/state/ciofs`.
    pub fn default_state_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CIOFS_STATE_DIR") {
            return PathBuf::from(dir);
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("ciofs")
    }
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
    fn projects_repeat_or_comma_separate() {
        let cli = Cli::try_parse_from(["ciofs", "mount", "--project", "a,b", "--project", "c", "/mnt"]).unwrap();
        let Command::Mount(args) = cli.command else { panic!("not a mount") };
        assert_eq!(args.tree.projects, ["a", "b", "c"]);
        assert_eq!(args.tree.file_mode, 0o644);
    }
}
