//! Running in the background: `ciofs mount` re-executes itself with
//! `--foreground` (never forking once tokio or tracing threads exist) and
//! waits on a pipe until the child reports the mount ready or failed.
//! `ciofs unmount` signals the daemon through its pid file, so it can drain
//! before it unmounts; the pid file records the daemon's start time too, so
//! a stale one never gets another process signalled.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, setsid};

use crate::core::private_files::{self, Open, private_dir};

/// How long `ciofs unmount` waits for the daemon to finish.
const UNMOUNT_WAIT: Duration = Duration::from_secs(60);

/// The write end of the readiness pipe, in the daemon.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// The pipe named by `--ready-fd`, if any.
    pub fn from_fd(fd: Option<i32>) -> Self {
        // SAFETY: the parent passed this descriptor open to us and nothing
        // else in this process owns it.
        Self(fd.map(|fd| File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    pub fn ready(&mut self, detail: &str) {
        self.send(&format!("ok {detail}\n"));
    }

    pub fn failed(&mut self, message: &str) {
        self.send(&format!("error {message}\n"));
    }

    fn send(&mut self, line: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// Opens a background mount's log for appending: 0600, never through a
/// link. A log in the state directory (`in_state_dir`) has its directory
/// made private; one the user named gets its missing directories made.
pub fn open_log(log: &Path, in_state_dir: bool) -> Result<File, String> {
    if let Some(dir) = log.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let made = if in_state_dir { private_dir(dir) } else { std::fs::create_dir_all(dir) };
        made.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    private_files::open(log, Open::Append).map_err(|e| format!("cannot open the log {}: {e}", log.display()))
}

/// Starts this binary again with `args` and `extra` arguments after them
/// and a readiness pipe, detached from the terminal with output in
/// `log_file` (at `log`). Returns what the child reported as ready (after
/// `ok `), or its error.
pub fn spawn_and_wait(args: &[OsString], extra: &[&str], log_file: File, log: &Path) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ciofs binary: {e}"))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
    let mut args = args.to_vec();
    args.extend(extra.iter().map(OsString::from));
    args.extend([OsString::from("--ready-fd"), OsString::from(write_fd.to_string())]);
    let mut command = Command::new(exe);
    command.args(&args).stdin(Stdio::null()).stdout(log_file).stderr(log_err);
    // SAFETY: setsid is async-signal-safe (nix's only calls it and reads
    // errno); it detaches the daemon from the terminal's session so a
    // closing shell does not kill it.
    unsafe {
        command.pre_exec(|| {
            let _ = setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| format!("cannot start the daemon: {e}"))?;
    drop(write_end);
    let mut report = String::new();
    let _ = File::from(read_end).read_to_string(&mut report);
    match report.trim_end().split_once(' ') {
        Some(("ok", detail)) => Ok(detail.to_string()),
        Some(("error", message)) => Err(message.to_string()),
        _ => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("the daemon exited ({status}) before it was ready; see {}", log.display()))
        }
    }
}

/// A pipe whose write end stays open across exec (the read end does not).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe()?;
    let _ = fcntl(&read, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Ok((read, write))
}

/// Where a mount's pid file lives.
pub fn pid_file(state_dir: &Path, mountpoint: &Path) -> PathBuf {
    mount_state(&state_dir.join("mounts"), mountpoint).with_extension("pid")
}

/// The name in `dir` of what belongs to the mount at `mountpoint` alone.
pub fn mount_state(dir: &Path, mountpoint: &Path) -> PathBuf {
    let canonical = mountpoint.canonicalize().unwrap_or_else(|_| mountpoint.to_path_buf());
    let hash = crate::core::inodes::path_hash(&canonical.to_string_lossy());
    dir.join(format!("{hash:016x}"))
}

/// Records this process as the daemon of `mountpoint`; removed on drop.
/// It holds the pid and the process's start time: a pid alone may name
/// another process once the daemon is gone and the pid reused.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid file (0600, in a private directory, whole or not at all).
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let pid = std::process::id();
        let start = start_time(pid).map_or_else(|| "-".to_string(), |start| start.to_string());
        private_files::replace(&path, format!("{pid} {start}\n").as_bytes())?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// /proc/PID/stat): with the pid, it names one process for good. None
/// where there is no /proc, or no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name, is in parentheses and may hold spaces
    // and parentheses itself: count from after the last `)` (field 3).
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What a mount's pid file says of its daemon.
#[derive(Debug, PartialEq, Eq)]
enum Daemon {
    /// No pid file, or its process is gone.
    Gone,
    /// The process that wrote the pid file, still running.
    Running(i32),
    /// The pid file names a process that cannot be shown to be the daemon
    /// (another process with a reused pid, an unreadable file): never
    /// signalled. The reason, for the user.
    Unproven(String),
}

/// Reads the pid file at `path` and checks the process it names.
fn daemon_of(path: &Path) -> Daemon {
    let text = match private_files::open(path, Open::Read).and_then(std::io::read_to_string) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Daemon::Gone,
        Err(e) => return Daemon::Unproven(format!("cannot read the pid file {}: {e}", path.display())),
    };
    let mut fields = text.split_whitespace();
    let Some(pid) = fields.next().and_then(|pid| pid.parse::<i32>().ok()).filter(|pid| *pid > 0) else {
        return Daemon::Unproven(format!("the pid file {} is not one ciofs wrote", path.display()));
    };
    let recorded = fields.next().and_then(|start| start.parse::<u64>().ok());
    match (start_time(pid.unsigned_abs()), recorded) {
        _ if !alive(pid) => Daemon::Gone,
        (Some(now), Some(then)) if now == then => Daemon::Running(pid),
        (Some(_), Some(_)) => Daemon::Unproven(format!(
            "process {pid}, named by the stale pid file {}, is not the daemon of this mount (another \
             process has its pid now): not signalled",
            path.display()
        )),
        _ => Daemon::Unproven(format!(
            "process {pid}, named by the pid file {}, cannot be shown to be the daemon of this mount: not \
             signalled",
            path.display()
        )),
    }
}

/// Asks the daemon of `mountpoint` to drain and unmount, and waits for it.
/// Without a daemon (or with a pid file naming a process that is not it,
/// which is never signalled: `tell` says so), unmounts directly.
pub fn unmount(state_dir: &Path, mountpoint: &Path, tell: &mut dyn FnMut(&str)) -> Result<(), String> {
    let pid_path = pid_file(state_dir, mountpoint);
    let pid = match daemon_of(&pid_path) {
        Daemon::Running(pid) => pid,
        Daemon::Gone => return umount(mountpoint),
        Daemon::Unproven(why) => {
            tell(&why);
            return umount(mountpoint);
        }
    };
    // The pid of the process that wrote our pid file, checked by its start
    // time just now.
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + UNMOUNT_WAIT;
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(format!("the daemon (pid {pid}) did not stop within {UNMOUNT_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_mounted(mountpoint) {
        return umount(mountpoint);
    }
    Ok(())
}

fn alive(pid: i32) -> bool {
    // No signal: only checks that the process exists.
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Unmounts `mountpoint` with umount(2).
pub fn umount(mountpoint: &Path) -> Result<(), String> {
    umount_with(mountpoint, MntFlags::empty())
}

/// Detaches the mount at `mountpoint` (MNT_DETACH): gone from the tree
/// now, and from the system once nothing holds it open.
pub fn detach(mountpoint: &Path) -> Result<(), String> {
    umount_with(mountpoint, MntFlags::MNT_DETACH)
}

/// umount2(2) of `mountpoint` with `flags`.
fn umount_with(mountpoint: &Path, flags: MntFlags) -> Result<(), String> {
    if mountpoint.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("mount point contains a NUL byte".to_string());
    }
    let what = if flags.contains(MntFlags::MNT_DETACH) { "detach" } else { "unmount" };
    umount2(mountpoint, flags).map_err(|errno| {
        let error = std::io::Error::from(errno);
        format!("cannot {what} {}: {error}", mountpoint.display())
    })
}

/// Whether something is mounted at `mountpoint` (Linux: /proc/self/mountinfo).
pub fn is_mounted(mountpoint: &Path) -> bool {
    mountpoint.canonicalize().is_ok_and(|canonical| is_mounted_at(&canonical))
}

/// Like `is_mounted`, for a path already made canonical: no stat, so the
/// daemon can ask about its own mount point.
pub fn is_mounted_at(canonical: &Path) -> bool {
    crate::mount_point::top_mount(canonical).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_process_that_wrote_the_pid_file_is_its_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pid");
        assert_eq!(daemon_of(&path), Daemon::Gone, "no pid file");
        let written = PidFile::create(path.clone()).unwrap();
        assert_eq!(daemon_of(&path), Daemon::Running(std::process::id() as i32));
        drop(written);
        assert!(!path.exists(), "removed with its daemon");

        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        let start = start_time(other.id()).unwrap();
        for text in [format!("{}\n", other.id()), format!("{} {}\n", other.id(), start + 1), "x".to_string()] {
            std::fs::write(&path, &text).unwrap();
            assert!(matches!(daemon_of(&path), Daemon::Unproven(_)), "{text:?}");
        }
        other.kill().unwrap();
        other.wait().unwrap();
        std::fs::write(&path, format!("{} {start}\n", other.id())).unwrap();
        assert_eq!(daemon_of(&path), Daemon::Gone, "its process ended");
    }

    #[test]
    fn start_times_survive_odd_command_names() {
        // The command name may hold `) `; the fields after it are counted
        // from the last `)`.
        let dir = tempfile::tempdir().unwrap();
        let odd_name = dir.path().join("x) 1 2 3");
        std::os::unix::fs::symlink("/bin/sleep", &odd_name).unwrap();
        let mut odd = Command::new(&odd_name).arg("30").spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", odd.id())).unwrap();
        assert!(stat.contains("(x) 1 2 3)"), "{stat}");
        let start = start_time(odd.id());
        let mine = start_time(std::process::id());
        odd.kill().unwrap();
        odd.wait().unwrap();
        assert!(start.is_some() && mine.is_some() && start >= mine, "{start:?} {mine:?}");
    }
}
