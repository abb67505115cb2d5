//! mount(8)'s and systemd's conventions through the real binary: a line
//! of an fstab of type `ciofs` mounted by the real `mount` command (with
//! `ciofs` linked as `/sbin/mount.ciofs`, where mount(8) looks for its
//! helpers) and unmounted by `umount`; `-o` options of `ciofs mount`; and
//! READY=1 / STOPPING=1 on a socket as systemd's $NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Where mount(8) finds the helper of type `ciofs`.
const HELPER: &str = "/sbin/mount.ciofs";

/// Links `ciofs` as mount(8)'s helper for the test's length; removed on
/// drop. Refuses to replace a helper that is not a link to a ciofs build.
struct Helper;

impl Helper {
    fn install() -> Self {
        let link = Path::new(HELPER);
        if let Ok(target) = std::fs::read_link(link) {
            assert!(target.ends_with("ciofs"), "{HELPER} links to {}: not replaced", target.display());
            std::fs::remove_file(link).unwrap();
        }
        assert!(!link.exists(), "{HELPER} exists and is not a link: not replaced");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ciofs"), link).unwrap();
        Helper
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
    }
}

#[test]
fn an_fstab_line_mounts_with_mount_and_goes_with_umount() {
    let bucket = bucket_name("fstab");
    create_bucket(&bucket);
    upload(&bucket, "hello.txt", b"hello from fstab\n");
    let scratch = tempfile::tempdir().unwrap();
    let (dir, state, fstab) = (scratch.path().join("mnt"), scratch.path().join("state"), scratch.path().join("fstab"));
    std::fs::create_dir(&dir).unwrap();
    let line = format!(
        "ciofs#{PROJECT} {} ciofs rw,_netdev,noauto,allow_other,ro,metadata_ttl=5,state_dir={} 0 0\n",
        dir.display(),
        state.display()
    );
    std::fs::write(&fstab, line).unwrap();
    let _helper = Helper::install();

    let mounted = run(Command::new("mount").arg("-T").arg(&fstab).arg(&dir));
    let stderr = String::from_utf8_lossy(&mounted.stderr);
    assert!(mounted.status.success(), "mount: {stderr}");
    assert!(is_mounted(&dir), "mounted when mount returns");
    let file = dir.join(format!("{PROJECT}/storage/{bucket}/hello.txt"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello from fstab\n");
    let ours = mount_line("self", &dir).unwrap();
    assert!(ours.contains("allow_other") && ours.contains(" ro,"), "allow_other and ro reached the mount: {ours}");
    let write = sh(&format!("echo x > {}", file.display()));
    assert!(String::from_utf8_lossy(&write.stderr).contains("Read-only file system"), "ro is --read-only");

    let unmounted = run(Command::new("umount").arg(&dir));
    assert!(unmounted.status.success(), "umount: {}", String::from_utf8_lossy(&unmounted.stderr));
    wait_until("the daemon is gone", Duration::from_secs(20), || daemon_pids(&dir).is_empty());
    assert!(!is_mounted(&dir));
}

/// What `ciofs mount -o OPTIONS` said, refusing them.
fn refused_options(options: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let output = run(ciofs().args(["mount", "--project", PROJECT, "-o", options]).arg(scratch.path()));
    assert!(!output.status.success(), "-o {options} was taken");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn options_that_are_not_flags_are_refused_by_name() {
    let stderr = refused_options("rw,metadata_tll=5");
    assert!(stderr.contains("-o metadata_tll=5: not an option of ciofs mount"), "{stderr}");
}

#[test]
fn an_option_without_its_value_does_not_take_the_mount_point() {
    let stderr = refused_options("ro,uid");
    assert!(stderr.contains("-o uid: uid needs a value"), "{stderr}");
    let stderr = refused_options("allow_other=1");
    assert!(stderr.contains("-o allow_other=1: allow_other takes no value"), "{stderr}");
}

/// The processes whose command line names `dir` (the mount's daemon).
fn daemon_pids(dir: &Path) -> Vec<String> {
    let output = run(Command::new("pgrep").arg("-f").arg(dir.as_os_str()));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn systemd_hears_ready_once_the_mount_serves_and_stopping_at_sigterm() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let socket_path = scratch.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = ciofs()
        .args(["mount", "--foreground", "--project", PROJECT])
        .arg(&dir)
        .env("CIOFS_STATE_DIR", scratch.path().join("state"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut message = [0u8; 256];
    let n = socket.recv(&mut message).expect("READY=1 within 30 s");
    assert_eq!(String::from_utf8_lossy(&message[..n]).trim(), "READY=1");
    assert!(is_mounted(&dir), "ready means mounted");

    signal(&child, libc::SIGTERM);
    let n = socket.recv(&mut message).expect("STOPPING=1");
    assert_eq!(String::from_utf8_lossy(&message[..n]).trim(), "STOPPING=1");
    let status = exit_within(&mut child, Duration::from_secs(30), String::new);
    assert!(status.success(), "{status}");
}
