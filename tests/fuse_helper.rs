//! `ciofs fuse-helper` and `ciofs mount --fuse-socket`: the helper (root)
//! mounts /dev/fuse and hands the descriptor over a Unix socket to a ciofs
//! that runs as another user with no capabilities at all; real tools read
//! and write through the mount as a third user. The helper unmounts when
//! its ciofs ends, killed or drained, and gives a restarted one a fresh
//! mount; a user it does not allow is refused and nothing is mounted.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The unprivileged ciofs's user; the app's is 1000.
const SIDECAR_UID: u32 = 65534;

/// A scratch directory that other users can enter, with a copy of the
/// ciofs binary they can run (the build's own lies under /root).
struct Pod {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ciofs: PathBuf,
}

impl Pod {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let ciofs = root.join("ciofs");
        std::fs::copy(env!("CARGO_BIN_EXE_ciofs"), &ciofs).expect("copy ciofs");
        for sub in ["mnt", "run", "state"] {
            std::fs::create_dir(root.join(sub)).expect("dir");
        }
        // Only the sidecar writes its state.
        std::os::unix::fs::chown(root.join("state"), Some(SIDECAR_UID), Some(SIDECAR_UID)).expect("chown");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Pod { _dir: dir, root, ciofs }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn socket(&self) -> PathBuf {
        self.path("run/fuse.sock")
    }

    fn helper(&self) -> Process {
        self.helper_with(&[])
    }

    fn helper_with(&self, extra: &[&str]) -> Process {
        let mut command = Command::new(&self.ciofs);
        command.arg("fuse-helper").arg("--socket").arg(self.socket());
        command.args(["--allow-uid", &SIDECAR_UID.to_string(), "--allow-other"]).args(extra).arg(self.path("mnt"));
        Process::spawn(command, self.path("helper.log"))
    }

    /// `ciofs mount --fuse-socket` as `uid`, with every capability gone.
    fn sidecar(&self, uid: u32, log: &str) -> Process {
        let mut command = Command::new("setpriv");
        command.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"]);
        command.args(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]).arg(&self.ciofs);
        command.args(["mount", "--foreground", "--project", PROJECT, "--uid", "1000", "--gid", "1000"]);
        command.arg("--fuse-socket").arg(self.socket());
        command.env("CIOFS_STATE_DIR", self.path("state")).env("XDG_CONFIG_HOME", self.path("state"));
        Process::spawn(command, self.path(log))
    }

    fn mounted(&self) -> bool {
        is_mounted(&self.path("mnt"))
    }
}

/// A child process with its log, killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(mut command: Command, log: PathBuf) -> Self {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(&log).expect("log"));
        Process { child: command.spawn().expect("start"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        common::signal(&self.child, signal);
    }

    fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let log = self.log.clone();
        common::exit_within(&mut self.child, limit, || std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// A line of /proc/PID/status, such as `Uid:` or `CapEff:`.
    fn status_field(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let line = status.lines().find(|line| line.starts_with(field)).expect("field");
        line[field.len()..].trim().to_string()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` as the app's user (1000).
fn as_app(script: &str) -> String {
    ok(&format!("setpriv --reuid=1000 --regid=1000 --clear-groups sh -c '{script}'"))
}

/// The sidecar logs `ciofs: mounted` once it serves (after "the helper
/// mounted", which it logs when it is given the descriptor).
fn serving(pod: &Pod, sidecar: &Process) -> bool {
    sidecar.log().contains("ciofs: mounted") && pod.mounted()
}

#[test]
fn an_unprivileged_ciofs_serves_the_helpers_mount_and_the_helper_unmounts_when_it_ends() {
    let bucket = bucket_name("fuse-helper");
    create_bucket(&bucket);
    upload(&bucket, "hello.txt", b"hello\n");
    let pod = Pod::new();
    let _unmount = UnmountOnDrop(pod.path("mnt"));
    // The sidecar may start first: it waits for the helper's socket.
    let mut sidecar = pod.sidecar(SIDECAR_UID, "sidecar.log");
    std::thread::sleep(Duration::from_millis(500));
    let mut helper = pod.helper();
    wait_until("the sidecar serves", Duration::from_secs(30), || serving(&pod, &sidecar));
    assert_eq!(sidecar.status_field("Uid:").split_whitespace().next(), Some("65534"), "not root");
    assert_eq!(sidecar.status_field("CapEff:"), "0000000000000000", "no capabilities");

    let files = pod.path("mnt").join(PROJECT).join("storage").join(&bucket);
    let shown = files.display();
    assert_eq!(as_app(&format!("cat {shown}/hello.txt")), "hello\n");
    as_app(&format!("echo written > {shown}/new.txt && ls -l {shown}"));
    assert_eq!(read_object(&bucket, "new.txt"), b"written\n", "closed, so uploaded:\n{}", sidecar.log());

    // Killed (an OOM kill, say): the helper takes its mount down, and the
    // restarted sidecar gets a fresh one.
    sidecar.signal(libc::SIGKILL);
    sidecar.exit_within(Duration::from_secs(10));
    wait_until("the helper unmounts", Duration::from_secs(10), || !pod.mounted());
    let mut sidecar = pod.sidecar(SIDECAR_UID, "restarted.log");
    wait_until("the restarted sidecar serves", Duration::from_secs(30), || serving(&pod, &sidecar));
    assert_eq!(as_app(&format!("cat {shown}/new.txt")), "written\n");

    // SIGTERM: drained, exit 0; the helper unmounts; then the helper ends.
    sidecar.signal(libc::SIGTERM);
    let status = sidecar.exit_within(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", sidecar.log());
    wait_until("the helper unmounts", Duration::from_secs(10), || !pod.mounted());
    helper.signal(libc::SIGTERM);
    let status = helper.exit_within(Duration::from_secs(10));
    assert!(status.success() && !pod.socket().exists(), "{status}:\n{}", helper.log());
}

#[test]
fn a_user_the_helper_does_not_allow_is_refused_and_nothing_is_mounted() {
    let pod = Pod::new();
    let _unmount = UnmountOnDrop(pod.path("mnt"));
    let helper = pod.helper();
    std::fs::set_permissions(pod.path("state"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    wait_until("the helper listens", Duration::from_secs(10), || helper.log().contains("listening"));
    // Anyone may connect (the socket is 0666): who connected decides.
    let mut stranger = pod.sidecar(SIDECAR_UID - 1, "stranger.log");
    let status = stranger.exit_within(Duration::from_secs(30));
    let log = stranger.log();
    assert!(!status.success() && log.contains("refused: uid 65533 may not mount"), "{status}: {log}");
    assert!(!pod.mounted(), "mounted for a stranger");
}

#[test]
fn a_socket_path_held_by_something_else_is_refused() {
    let pod = Pod::new();
    std::fs::write(pod.socket(), b"not a socket").expect("file");
    let mut helper = pod.helper();
    let status = helper.exit_within(Duration::from_secs(10));
    let log = helper.log();
    assert!(!status.success() && log.contains("exists and is not a socket"), "{status}: {log}");
    assert_eq!(std::fs::read(pod.socket()).expect("kept"), b"not a socket");
}

/// Between two ciofs, whoever may write the mount point's parent (a
/// pod's app, in an emptyDir) can put a symlink where the mount point
/// was: the helper, root, refuses to mount through it.
#[test]
fn the_helper_does_not_mount_through_a_symlink_put_at_its_mount_point() {
    let pod = Pod::new();
    let _unmount = UnmountOnDrop(pod.path("mnt"));
    let elsewhere = pod.path("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    let _elsewhere = UnmountOnDrop(elsewhere.clone());
    let helper = pod.helper();
    wait_until("the helper listens", Duration::from_secs(10), || helper.log().contains("listening"));
    std::fs::remove_dir(pod.path("mnt")).expect("rmdir");
    std::os::unix::fs::symlink(&elsewhere, pod.path("mnt")).expect("symlink");
    let mut sidecar = pod.sidecar(SIDECAR_UID, "sidecar.log");
    let status = sidecar.exit_within(Duration::from_secs(30));
    let log = sidecar.log();
    assert!(!status.success() && log.contains("a symlink?): refused"), "{status}: {log}");
    assert!(!is_mounted(&elsewhere), "mounted through the symlink");
}

/// A pod deleted before its helper ever listened: ciofs, waiting for the
/// helper, ends at SIGTERM at once rather than after its 60 s wait.
#[test]
fn sigterm_while_waiting_for_the_helper_ends_ciofs_at_once() {
    let pod = Pod::new();
    let mut sidecar = pod.sidecar(SIDECAR_UID, "sidecar.log");
    wait_until("ciofs waits for its helper", Duration::from_secs(20), || {
        sidecar.log().contains("waiting for the fuse-helper to listen")
    });
    sidecar.signal(libc::SIGTERM);
    let status = sidecar.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", sidecar.log());
    assert!(!pod.mounted());
}

/// A helper that mounts read-only: the kernel refuses writes, and the
/// ciofs it hands the mount to takes the same view, so that a read that
/// would change something (a `_stream`'s, which acknowledges) is refused
/// too and the message stays.
#[test]
fn a_read_only_helper_mount_makes_the_ciofs_it_serves_read_only() {
    let bucket = bucket_name("fuse-helper-ro");
    create_bucket(&bucket);
    upload(&bucket, "kept.txt", b"kept\n");
    let topic = pubsub_name("fuse-helper-ro");
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    ps_publish(&topic, &[b"unread"]);
    let pod = Pod::new();
    let _unmount = UnmountOnDrop(pod.path("mnt"));
    let _helper = pod.helper_with(&["--read-only"]);
    let sidecar = pod.sidecar(SIDECAR_UID, "sidecar.log");
    wait_until("the sidecar serves", Duration::from_secs(30), || serving(&pod, &sidecar));

    let root = pod.path("mnt").join(PROJECT);
    let files = root.join("storage").join(&bucket);
    assert_eq!(as_app(&format!("cat {}/kept.txt", files.display())), "kept\n");
    let stream = root.join(format!("pubsub/topics/{topic}/subscriptions/{subscription}/_stream"));
    for script in
        [format!("echo new > {}/new.txt", files.display()), format!("timeout 20 head -n 1 {}", stream.display())]
    {
        let output = sh(&format!("setpriv --reuid=1000 --regid=1000 --clear-groups sh -c '{script}'"));
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && said.contains("Read-only file system"), "{script}: {said}");
    }
    assert_eq!(ps_pull(&subscription, 1, Duration::from_secs(15)), vec![b"unread".to_vec()], "not acknowledged");
}
