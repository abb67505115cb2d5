//! `ciofs mount /dev/fd/N`: the mount made by someone else (here the test,
//! as the privileged helper of a Kubernetes sidecar would), and ciofs
//! serving it through the /dev/fuse descriptor it inherited. Real tools
//! read and write through it, a file reaches the emulator, SIGTERM ends
//! ciofs with status 0 leaving the mount to its helper; a descriptor that
//! is not /dev/fuse, or not open, is refused with a clear error.

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use nix::mount::{MsFlags, mount};

/// Opens /dev/fuse and mounts it at `dir` as the helper does: the
/// descriptor is the mount's connection.
fn mount_dev_fuse(dir: &Path) -> File {
    let fuse = OpenOptions::new().read(true).write(true).open("/dev/fuse").expect("open /dev/fuse");
    let data = format!("fd={},rootmode=40000,user_id=0,group_id=0,default_permissions", fuse.as_raw_fd());
    mount(Some("ciofs"), dir, Some("fuse.ciofs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(data.as_str()))
        .expect("mount the descriptor");
    fuse
}

/// What the test started, taken down whatever the test did: the ciofs
/// process, then the mount (as the helper would).
struct Cleanup<'a> {
    child: &'a mut Child,
    dir: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(self.dir) {
            let _ = nix::mount::umount2(self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `ciofs mount --foreground /dev/fd/N` with `fd` inherited as N.
fn serve(fd: RawFd, state: &Path, log: &Path) -> Child {
    let mut command = ciofs();
    command
        .args(["mount", "--foreground", "--project", PROJECT, &format!("/dev/fd/{fd}")])
        .env("CIOFS_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log"));
    // SAFETY: between fork and exec only fcntl, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || match libc::fcntl(fd, libc::F_SETFD, 0) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    command.spawn().expect("start ciofs")
}

#[test]
fn a_passed_descriptor_is_served_and_sigterm_leaves_the_mount_to_its_helper() {
    let bucket = bucket_name("descriptor");
    create_bucket(&bucket);
    upload(&bucket, "hello.txt", b"hello\n");
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("mnt");
    std::fs::create_dir(&dir).expect("mount dir");
    let fuse = mount_dev_fuse(&dir);
    let log = scratch.path().join("ciofs.log");
    let mut child = serve(fuse.as_raw_fd(), &scratch.path().join("state"), &log);
    // The helper's own copy: the sidecar's is the one that serves.
    drop(fuse);
    let cleanup = Cleanup { child: &mut child, dir: &dir };
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("ciofs serves the descriptor", Duration::from_secs(30), || logged().contains("mounted"));

    let files = dir.join(PROJECT).join("storage").join(&bucket);
    let shown = files.display();
    assert_eq!(ok(&format!("cat {shown}/hello.txt")), "hello\n");
    ok(&format!("echo written > {shown}/new.txt && ls {shown}"));
    assert_eq!(read_object(&bucket, "new.txt"), b"written\n", "closed, so uploaded:\n{}", logged());

    signal(cleanup.child, libc::SIGTERM);
    let status = exit_within(cleanup.child, Duration::from_secs(30), logged);
    assert!(status.success(), "{status}:\n{}", logged());
    // The mount is the helper's to take down; its connection is gone.
    assert!(is_mounted(&dir), "ciofs cannot unmount what it did not mount");
    let error = std::fs::read_dir(&files).err().and_then(|e| e.raw_os_error());
    assert_eq!(error, Some(libc::ENOTCONN), "served after ciofs ended");
    nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).expect("the helper unmounts");
    drop(cleanup);
}

#[test]
fn a_descriptor_that_is_not_dev_fuse_or_not_open_is_refused() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let log = scratch.path().join("ciofs.log");
    let file = File::create(scratch.path().join("plain")).expect("file");
    let mut child = serve(file.as_raw_fd(), &scratch.path().join("state"), &log);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = exit_within(&mut child, Duration::from_secs(30), logged);
    let text = logged();
    assert!(!status.success() && text.contains("not /dev/fuse"), "{status}: {text}");

    let output = ciofs()
        .args(["mount", "--foreground", "--project", PROJECT, "/dev/fd/77"])
        .env("CIOFS_STATE_DIR", scratch.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run ciofs");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && text.contains("/dev/fd/77: no such open descriptor"), "{text}");
}
