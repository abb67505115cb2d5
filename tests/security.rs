//! Nobody else gets in, and input from outside cannot take ciofs down:
//! the NFS server stays on loopback unless told otherwise, the state
//! directory is the user's alone, `ciofs unmount` signals only its own
//! daemon, and archives and NFS requests are bounded. Each test runs the
//! `ciofs` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How `ciofs serve-nfs` with `args` started: `Ok(address)` once it
/// served (it is stopped then), or `Err(what it said)` when it exited.
fn serve_nfs_outcome(args: &[&str]) -> Result<String, String> {
    let state = tempfile::tempdir().unwrap();
    let mut command = ciofs();
    command.args(["serve-nfs", "--project", PROJECT]).args(args).env("CIOFS_STATE_DIR", state.path());
    outcome(command)
}

/// How a `ciofs serve-nfs` command started, as `serve_nfs_outcome` says.
fn outcome(mut command: Command) -> Result<String, String> {
    let mut child = command
        .env("CIOFS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ciofs serve-nfs");
    let said = first_lines_until_serving(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    said
}

/// Reads the server's stderr until it serves or ends.
fn first_lines_until_serving(child: &mut Child) -> Result<String, String> {
    let stderr = child.stderr.take().expect("stderr");
    let mut said = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(address) = line.strip_prefix("ciofs: serving NFSv3 on ") {
            return Ok(address.trim().to_string());
        }
        said.push_str(&line);
        said.push('\n');
    }
    Err(said)
}

/// NFS has no authentication: an address other hosts can reach is
/// refused, with a message that says why and what to pass, unless
/// `--allow-remote` is given. Loopback (all of 127.0.0.0/8, and names
/// that resolve to it) is served.
#[test]
fn serve_nfs_refuses_an_address_others_can_reach_unless_allow_remote() {
    let started = Instant::now();
    for listen in ["0.0.0.0:0", "192.0.2.200:0"] {
        let said = serve_nfs_outcome(&["--listen", listen]).expect_err(&format!("{listen} was served"));
        assert!(said.contains("--allow-remote") && said.contains("loopback"), "{listen}: {said}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the refusal should come before anything else");
    for listen in ["127.0.0.1:0", "127.0.0.2:0", "localhost:0"] {
        let address = serve_nfs_outcome(&["--listen", listen]).unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert!(address.starts_with("127."), "{listen} served on {address}");
    }
    let address = serve_nfs_outcome(&["--listen", "0.0.0.0:0", "--allow-remote"]).expect("--allow-remote serves");
    assert!(address.starts_with("0.0.0.0:"), "{address}");
}

/// `serve-nfs` on loopback with the state directory left to ciofs: the
/// variables that could name it are removed, then `env` set.
fn serve_nfs_with_default_state(env: &[(&str, &Path)]) -> Result<String, String> {
    let mut command = ciofs();
    command.args(["serve-nfs", "--project", PROJECT, "--listen", "127.0.0.1:0"]);
    for name in ["CIOFS_STATE_DIR", "XDG_STATE_HOME", "HOME", "XDG_RUNTIME_DIR"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    outcome(command)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// With nowhere to keep its state ($CIOFS_STATE_DIR, $XDG_STATE_HOME,
/// $HOME and $XDG_RUNTIME_DIR unset) ciofs refuses and says to pass
/// --state-dir; it never falls back to a directory under /tmp, whose name
/// anyone can guess and take first. $XDG_RUNTIME_DIR is the last place
/// tried; the directory made there is the user's alone (0700).
#[test]
fn without_a_state_directory_ciofs_refuses_and_never_uses_tmp() {
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let said = serve_nfs_with_default_state(&[("TMPDIR", &tmp)]).expect_err("served without a state directory");
    assert!(said.contains("--state-dir"), "{said}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing is made in the temporary directory");

    let runtime = scratch.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    serve_nfs_with_default_state(&[("TMPDIR", &tmp), ("XDG_RUNTIME_DIR", &runtime)])
        .expect("$XDG_RUNTIME_DIR/ciofs serves");
    assert_eq!(mode(&runtime.join("ciofs")), 0o700);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing is made in the temporary directory");
}

/// Unmounts `dir` when dropped, whatever the test did.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// A background mount's state directory, the directory of its pid file
/// and log, and those files are the user's alone (0700, 0600) whatever the
/// umask, and a link planted where the log goes is not followed: the mount
/// is refused and the link's target is left as it was.
#[test]
fn a_background_mount_keeps_its_state_private_and_follows_no_link() {
    let scratch = tempfile::tempdir().unwrap();
    let (state, mnt) = (scratch.path().join("state"), scratch.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(&mnt);
    let pid_file = ciofs::daemon::pid_file(&state, &mnt);
    let log = pid_file.with_extension("log");
    let mounts = log.parent().unwrap();
    std::fs::create_dir_all(mounts).unwrap();
    std::fs::set_permissions(mounts, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let mount = || {
        let script = "umask 0; exec \"$0\" \"$@\"";
        let output = run(Command::new("sh")
            .args(["-c", script, env!("CARGO_BIN_EXE_ciofs"), "mount", "--project", PROJECT])
            .arg(&mnt)
            .env("CIOFS_STATE_DIR", &state));
        (output.status.success(), String::from_utf8_lossy(&output.stderr).to_string())
    };

    let (mounted, said) = mount();
    assert!(!mounted, "mounted with a link where the log goes: {said}");
    assert!(said.contains(&log.display().to_string()), "{said}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "written through the link");

    std::fs::remove_file(&log).unwrap();
    let (mounted, said) = mount();
    assert!(mounted, "{said}");
    assert_eq!((mode(&state), mode(mounts)), (0o700, 0o700), "directories");
    assert_eq!((mode(&pid_file), mode(&log)), (0o600, 0o600), "pid file and log");
    let unmounted = run(ciofs().arg("unmount").arg(&mnt).env("CIOFS_STATE_DIR", &state));
    assert!(unmounted.status.success(), "{}", String::from_utf8_lossy(&unmounted.stderr));
    assert!(!is_mounted(&mnt));
}

/// A pid file left by a daemon that died (killed, a crash) can name a
/// process that has nothing to do with ciofs once the pid is reused:
/// `ciofs unmount` must not signal it, and says so.
#[test]
fn unmount_never_signals_a_process_a_stale_pid_file_names() {
    let scratch = tempfile::tempdir().unwrap();
    let (state, mnt) = (scratch.path().join("state"), scratch.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let mut sleep = Command::new("sleep").arg("300").spawn().expect("sleep");
    let pid_file = ciofs::daemon::pid_file(&state, &mnt);
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleep.id())).unwrap();

    let output = run(ciofs().arg("unmount").arg(&mnt).env("CIOFS_STATE_DIR", &state));
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    std::thread::sleep(Duration::from_millis(200));
    let survived = sleep.try_wait().expect("wait").is_none();
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(survived, "ciofs unmount killed an unrelated process: {said}");
    assert!(said.contains(&sleep.id().to_string()) && said.contains("not signalled"), "{said}");
}
