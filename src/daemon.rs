//! Running in the background: `ciofs mount` re-executes itself with
//! `--foreground` (never forking once tokio or tracing threads exist) and
//! waits on a pipe until the child reports the mount ready or failed.
//! `ciofs unmount` signals the daemon through its pid file, so it can drain
//! before it unmounts.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::private_files::{self, Open, private_dir};

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

/// Starts this binary again with `extra` arguments appended and a readiness
/// pipe, detached from the terminal with output in `log_file` (at `log`).
/// Returns what the child reported as ready (after `ok `), or its error.
pub fn spawn_and_wait(extra: &[&str], log_file: File, log: &Path) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ciofs binary: {e}"))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.extend(extra.iter().map(OsString::from));
    args.extend([OsString::from("--ready-fd"), OsString::from(write_fd.to_string())]);
    let mut command = Command::new(exe);
    command.args(&args).stdin(Stdio::null()).stdout(log_file).stderr(log_err);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the
    // terminal's session so a closing shell does not kill it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
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
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe just opened both; we own them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok((read, write))
}

/// Where a mount's pid file lives.
pub fn pid_file(state_dir: &Path, mountpoint: &Path) -> PathBuf {
    let canonical = mountpoint.canonicalize().unwrap_or_else(|_| mountpoint.to_path_buf());
    let hash = crate::namespace::path_hash(&canonical.to_string_lossy());
    state_dir.join("mounts").join(format!("{hash:016x}.pid"))
}

/// Records this process as the daemon of `mountpoint`; removed on drop.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid file (0600, in a private directory, whole or not at all).
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        private_files::replace(&path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asks the daemon of `mountpoint` to drain and unmount, and waits for it.
/// Without a daemon, unmounts directly.
pub fn unmount(state_dir: &Path, mountpoint: &Path) -> Result<(), String> {
    let pid_path = pid_file(state_dir, mountpoint);
    let pid = private_files::open(&pid_path, Open::Read)
        .and_then(std::io::read_to_string)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| alive(*pid));
    let Some(pid) = pid else {
        return umount(mountpoint);
    };
    // SAFETY: kill with a pid read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
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
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Unmounts `mountpoint` with umount(2).
pub fn umount(mountpoint: &Path) -> Result<(), String> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| "mount point contains a NUL byte".to_string())?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!("cannot unmount {}: {error}", mountpoint.display()));
    }
    Ok(())
}

/// Whether something is mounted at `mountpoint` (Linux: /proc/self/mountinfo).
pub fn is_mounted(mountpoint: &Path) -> bool {
    mountpoint.canonicalize().is_ok_and(|canonical| is_mounted_at(&canonical))
}

/// Like `is_mounted`, for a path already made canonical: no stat, so the
/// daemon can ask about its own mount point.
pub fn is_mounted_at(canonical: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = canonical.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}
