//! A Kubernetes pod simulated with Linux namespaces, as far as a machine
//! without a cluster goes.
//!
//! FUSE sidecar: the node is a mount namespace of the test's own; in it a
//! scratch directory bind-mounted onto itself and made a shared mount
//! plays the pod's emptyDir (the kubelet's volume directory). The
//! sidecar, ciofs, mounts into it from a mount namespace of its own whose
//! emptyDir stays shared (`mountPropagation: Bidirectional`), so the mount
//! reaches the node. `/readyz` answering 200 (a startupProbe) lets the app
//! start: another mount namespace whose mounts are slaves of the node's
//! (`HostToContainer`), reading and writing through the mount as uid 1000
//! with real tools. SIGTERM to ciofs, with a file still open for write in
//! the app, refuses new changes, waits for that file, unmounts and exits 0
//! within `--shutdown-timeout`; the app then sees the mount gone, and
//! every file it wrote is in the emulator. The scenario takes a
//! `SidecarMode` (how the sidecar is started, what is checked of it), so
//! that each way of running the sidecar is one more short test. An app
//! without propagation (Kubernetes' default) keeps a private copy of the
//! mount, which must not keep the sidecar from ending.
//!
//! NFS for pods without /dev/fuse: `serve-nfs --allow-remote` in a network
//! namespace of its own, listening on one address; a client in another
//! namespace reads and writes through that address, and a third namespace,
//! not on that path, cannot connect.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{CREATE3args, createhow3, sattr3};

/// The uid and gid of the app container, and of the files ciofs shows.
const APP_ID: u32 = 1000;

/// The sidecar's `--shutdown-timeout`: the pod's grace period, short here.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the pod

/// The node: a mount namespace of its own (private: nothing in it reaches
/// the machine's, and a namespace made elsewhere meanwhile, by another
/// test, copies none of the pod's mounts), kept by a `sleep` in it. In it,
/// the pod's emptyDir `dir`: a bind mount of itself made shared in a peer
/// group of its own, as the kubelet's volume directory, with the mount
/// point `mnt` in it. Beside it in the scratch directory, the sidecar's
/// state and logs. On drop, the emptyDir is unmounted (lazily, whatever
/// is still in it) and the node's namespace ends with its last process.
struct Node {
    holder: Child,
    scratch: tempfile::TempDir,
    dir: PathBuf,
}

impl Node {
    fn new() -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        // The app (uid 1000) walks through it to the mount.
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = scratch.path().join("emptydir");
        // The mount point is not there: the sidecar makes it (`--mkdir`),
        // as in a fresh emptyDir.
        std::fs::create_dir_all(&dir).expect("the emptyDir");
        let holder = namespace_holder(Command::new("unshare"), "private");
        let node = Node { holder, scratch, dir };
        let shown = node.dir.display();
        // Private first: a peer group of its own, not the parent mount's.
        let script =
            format!("mount --bind {shown} {shown} && mount --make-private {shown} && mount --make-shared {shown}");
        let made = run(node.command("sh").args(["-c", &script]));
        assert!(made.status.success(), "the emptyDir: {}", String::from_utf8_lossy(&made.stderr));
        node
    }

    /// `program`, to be run in the node's mount namespace (nsenter execs
    /// it: the child is `program`).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["--target", &self.holder.id().to_string(), "--mount", program]);
        command
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Whether `dir` is a mount point in the node's namespace.
    fn is_mounted(&self, dir: &Path) -> bool {
        mount_line(&self.holder.id().to_string(), dir).is_some()
    }

    /// A path in the scratch directory, outside the emptyDir.
    fn beside(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.command("umount").arg("--recursive").arg("--lazy").arg(&self.dir).status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `unshare` (or what execs it) making a mount namespace with
/// `propagation` and keeping it with a `sleep`, once that runs: unshare
/// execs it only after the namespace and its propagation are set.
fn namespace_holder(mut unshare: Command, propagation: &str) -> Child {
    let holder = unshare
        .args(["--mount", "--propagation", propagation, "sleep", "600"])
        .current_dir("/")
        .stdin(Stdio::null())
        .spawn()
        .expect("make a mount namespace");
    let comm = format!("/proc/{}/comm", holder.id());
    wait_until("the namespace is made", Duration::from_secs(10), || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    });
    holder
}

/// What every sidecar mode shares: the node and its emptyDir, where
/// ciofs keeps its state and log, its metrics port, and the image's ciofs
/// (a copy any user may run: the build's lies under /root).
struct Pod {
    node: Node,
    metrics_port: u16,
    ciofs: PathBuf,
}

impl Pod {
    fn new() -> Self {
        let node = Node::new();
        let ciofs = node.beside("ciofs");
        std::fs::copy(env!("CARGO_BIN_EXE_ciofs"), &ciofs).expect("copy ciofs");
        Pod { node, metrics_port: free_port(), ciofs }
    }

    fn mountpoint(&self) -> PathBuf {
        self.node.mountpoint()
    }

    /// The flags of `ciofs mount` the sidecar runs with in every mode, but
    /// the mount point (a mode may mount through a descriptor instead).
    fn mount_flags(&self) -> Vec<String> {
        let id = APP_ID.to_string();
        let metrics = format!("127.0.0.1:{}", self.metrics_port);
        let timeout = SHUTDOWN_TIMEOUT.as_secs().to_string();
        let flags =
            ["--foreground", "--mkdir", "--allow-other", "--uid", &id, "--gid", &id, "--metrics-addr", &metrics];
        let more = ["--shutdown-timeout", &timeout, "--project", PROJECT];
        flags.iter().chain(&more).map(|flag| flag.to_string()).collect()
    }

    /// Starts `command` (ciofs, or what execs it, made by `Node::command`)
    /// as a pod's container:
    /// its state in the scratch directory, stderr in `log`.
    fn spawn(&self, mut command: Command, log: &str) -> Child {
        let log = File::create(self.node.beside(log)).expect("log file");
        command
            .env("CIOFS_STATE_DIR", self.node.beside("state"))
            .env("CIOFS_LOG", "info,ciofs=debug")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command.spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"))
    }

    /// The logs of the processes `spawn` started.
    fn logs(&self) -> String {
        let logs = std::fs::read_dir(self.node.scratch.path()).into_iter().flatten().flatten();
        let logs = logs.filter(|entry| entry.path().extension().is_some_and(|e| e == "log"));
        logs.map(|entry| {
            format!("{:?}:\n{}", entry.file_name(), std::fs::read_to_string(entry.path()).unwrap_or_default())
        })
        .collect()
    }

    fn readyz(&self) -> u16 {
        http_get(self.metrics_port, "/readyz").0
    }
}

// ------------------------------------------------------------ the sidecar

/// A running sidecar: `ciofs`, the process that serves the mount and is
/// signalled (ciofs's own pid, not a wrapper's), and `helpers`, processes
/// beside it that must end by themselves once it has (a privileged helper
/// that mounted for it). What still runs is killed on drop.
struct Sidecar {
    ciofs: Child,
    helpers: Vec<Child>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.ciofs).chain(&mut self.helpers) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A way of running ciofs as a pod's sidecar. The privileged mode mounts
/// by itself. A mode where a privileged helper mounts /dev/fuse and passes
/// the descriptor starts both (the helper in `helpers`), and checks that
/// the ciofs process runs as non-root without capabilities.
trait SidecarMode {
    fn start(&self, pod: &Pod) -> Sidecar;

    /// Checks of the serving process once it is ready.
    fn check(&self, pod: &Pod, pid: u32);
}

/// Root in a mount namespace of its own that keeps the emptyDir shared
/// (`unshare --propagation unchanged`), as a privileged container with
/// `Bidirectional` propagation: its mount reaches the pod.
struct Privileged;

impl SidecarMode for Privileged {
    fn start(&self, pod: &Pod) -> Sidecar {
        let mut command = pod.node.command("unshare");
        // Without --fork, unshare execs ciofs: the child is ciofs itself.
        command.args(["--mount", "--propagation", "unchanged"]).arg(&pod.ciofs).arg("mount");
        command.args(pod.mount_flags()).arg(pod.mountpoint());
        Sidecar { ciofs: pod.spawn(command, "ciofs.log"), helpers: Vec::new() }
    }

    fn check(&self, pod: &Pod, pid: u32) {
        let namespace = |of: u32| std::fs::read_link(format!("/proc/{of}/ns/mnt")).expect("mount namespace");
        assert_ne!(namespace(pid), namespace(pod.node.holder.id()), "the sidecar has its own mount namespace");
    }
}

/// The unprivileged sidecar: `ciofs fuse-helper`, root in a mount
/// namespace that keeps the emptyDir shared (a privileged container with
/// `Bidirectional`), mounts /dev/fuse and passes the descriptor over a
/// Unix socket in a directory the two share; ciofs runs as uid 65534 with
/// no capabilities and no mount of the emptyDir of its own, and serves it.
/// Once ciofs ends, the helper unmounts; it ends at its own SIGTERM.
struct Descriptor;

/// The unprivileged sidecar's user.
const SIDECAR_ID: u32 = 65534;

impl SidecarMode for Descriptor {
    fn start(&self, pod: &Pod) -> Sidecar {
        let (run, state) = (pod.node.beside("run"), pod.node.beside("state"));
        for dir in [&run, &state] {
            std::fs::create_dir(dir).expect("dir");
        }
        std::os::unix::fs::chown(&state, Some(SIDECAR_ID), Some(SIDECAR_ID)).expect("chown");
        let socket = run.join("fuse.sock");
        let mut helper = pod.node.command("unshare");
        helper.args(["--mount", "--propagation", "unchanged"]).arg(&pod.ciofs).arg("fuse-helper");
        helper.arg("--socket").arg(&socket).args(["--allow-uid", &SIDECAR_ID.to_string(), "--allow-other", "--mkdir"]);
        helper.arg(pod.mountpoint());
        let helper = pod.spawn(helper, "helper.log");
        let id = SIDECAR_ID.to_string();
        let mut command = pod.node.command("unshare");
        // unshare execs setpriv, which execs ciofs: the child is ciofs.
        command.args(["--mount", "--propagation", "unchanged", "setpriv", "--reuid", &id, "--regid", &id]);
        command.args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]);
        command.arg(&pod.ciofs).arg("mount").args(pod.mount_flags()).arg("--fuse-socket").arg(&socket);
        // Its own home: root's is not its to read.
        command.env("HOME", &state);
        Sidecar { ciofs: pod.spawn(command, "ciofs.log"), helpers: vec![helper] }
    }

    fn check(&self, _pod: &Pod, pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        assert_eq!(field("Uid:").and_then(|ids| ids.split_whitespace().next()), Some("65534"), "{status}");
        assert_eq!(field("CapEff:"), Some("0000000000000000"), "no capabilities: {status}");
        assert_eq!(field("CapBnd:"), Some("0000000000000000"), "none to gain: {status}");
    }
}

// ---------------------------------------------------------------- the app

/// The app container: a mount namespace of its own, kept by a `sleep` in
/// it; each of the app's commands enters it as uid 1000 with no
/// supplementary groups.
struct App {
    holder: Child,
}

/// The app's mounts as `mountPropagation: HostToContainer` makes them:
/// slaves of the pod's, which see its mounts and unmounts.
const HOST_TO_CONTAINER: &str = "slave";

/// Kubernetes' default, `None`: private copies, which see neither.
const NO_PROPAGATION: &str = "private";

impl App {
    /// Its mount namespace, made in the node's with `propagation` (as
    /// `unshare --propagation` takes it).
    fn start(pod: &Pod, propagation: &str) -> Self {
        App { holder: namespace_holder(pod.node.command("unshare"), propagation) }
    }

    fn command(&self, script: &str) -> Command {
        let (pid, id) = (self.holder.id().to_string(), APP_ID.to_string());
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &pid, "--mount", "setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"])
            .args(["sh", "-c", script])
            .current_dir("/");
        command
    }

    fn run(&self, script: &str) -> Output {
        run(&mut self.command(script))
    }

    /// Runs `script`, which must succeed; its standard output.
    fn ok(&self, script: &str) -> String {
        let output = self.run(script);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "the app's {script}: {said}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The line of the app's mount table that mounts `dir`, if any.
    fn mount_of(&self, dir: &Path) -> Option<String> {
        mount_line(&self.holder.id().to_string(), dir)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

// ------------------------------------------------------------ the scenario

/// Polls `/readyz` as a startupProbe does until it answers 200. Before, it
/// answers 503, or nothing while the endpoint starts; a 200 comes only
/// once the mount serves, seen here through its propagation to the pod.
fn wait_until_ready(pod: &Pod, sidecar: &mut Sidecar) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(pod.metrics_port, "/readyz") {
            (200, _) => break,
            (0 | 503, _) => {}
            (status, body) => panic!("/readyz answered {status}: {body}"),
        }
        if let Ok(Some(status)) = sidecar.ciofs.try_wait() {
            panic!("the sidecar exited ({status}) before it was ready:\n{}", pod.logs());
        }
        assert!(Instant::now() < deadline, "not ready in time:\n{}", pod.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pod.node.is_mounted(&pod.mountpoint()), "ready, but the mount did not reach the pod:\n{}", pod.logs());
}

/// An app's writer that holds `file` open across the SIGTERM: it writes a
/// first line, says so in `opened`, waits for a line on the FIFO `go`,
/// writes a second line and closes. Only shell builtins run while the
/// file is open, and no redirection copies its descriptor: the close of a
/// copy (a forked command's, or a `>&3` undone) would flush, and a flush
/// uploads what was written so far.
fn writer_in_flight(app: &App, file: &str, opened: &Path, go: &Path) -> Child {
    let (opened, go) = (opened.display(), go.display());
    let script = format!("{{ echo 'part one'; : 2> {opened}; read line < {go}; echo 'part two'; }} > {file}");
    app.command(&script).stderr(Stdio::piped()).spawn().expect("start the writer")
}

/// Lets the writer go on: one line into its FIFO, once it reads it.
fn let_go(go: &Path) {
    let mut fifo = None;
    wait_until("the writer waits on its FIFO", Duration::from_secs(10), || {
        fifo = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(go).ok();
        fifo.is_some()
    });
    fifo.expect("FIFO").write_all(b"go\n").expect("write the FIFO");
}

/// The pod's life with the sidecar `mode`: start, readiness, the app's
/// reads and writes, SIGTERM with a write in flight, the drain, the
/// unmount seen by the app, and every file in the emulator.
fn pod_lifecycle(mode: &dyn SidecarMode, test: &str) {
    let bucket = bucket_name(test);
    create_bucket(&bucket);
    upload(&bucket, "seed.txt", b"from the emulator\n");
    let pod = Pod::new();
    let mut sidecar = mode.start(&pod);
    wait_until_ready(&pod, &mut sidecar);
    let pid = sidecar.ciofs.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    assert_eq!(exe, pod.ciofs, "the process to signal is ciofs");
    mode.check(&pod, pid);

    let app = App::start(&pod, HOST_TO_CONTAINER);
    let seen = app.mount_of(&pod.mountpoint()).expect("the mount reached the app");
    assert!(seen.contains(" master:"), "HostToContainer: the app's copy is a slave: {seen}");
    let files = format!("{}/{PROJECT}/storage/{bucket}", pod.mountpoint().display());
    let listed = app.ok(&format!(
        "cd {files} && cat seed.txt && echo written > a.txt && mkdir d && cp a.txt d/b.txt && ls . d && cat d/b.txt"
    ));
    assert_eq!(listed, "from the emulator\n.:\na.txt\nd\nseed.txt\n\nd:\nb.txt\nwritten\n");
    assert_eq!(read_object(&bucket, "a.txt"), b"written\n", "closed, so uploaded");

    // The app has a file open for write when the pod is stopped.
    let signals = pod.node.beside("app");
    std::fs::create_dir(&signals).expect("the app's directory");
    std::os::unix::fs::chown(&signals, Some(APP_ID), Some(APP_ID)).expect("chown");
    let (opened, go) = (signals.join("opened"), signals.join("go"));
    ok(&format!("mkfifo -m 666 {}", go.display()));
    let writer = writer_in_flight(&app, &format!("{files}/in-flight.txt"), &opened, &go);
    wait_until("the app's file is open", Duration::from_secs(10), || opened.exists());
    signal(&sidecar.ciofs, libc::SIGTERM);
    let stopped = Instant::now();
    wait_until("the drain began", Duration::from_secs(10), || pod.logs().contains("shutting down"));
    assert!(pod.logs().contains("unsaved=1"), "the file is in flight:\n{}", pod.logs());
    assert_eq!(pod.readyz(), 503, "/readyz while draining");
    let late = app.run(&format!("echo late > {files}/late.txt"));
    let said = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success() && said.contains("Read-only file system"), "a new file while draining: {said}");
    assert!(sidecar.ciofs.try_wait().expect("wait").is_none(), "the drain waits for the open file");
    let_go(&go);
    let written = writer.wait_with_output().expect("the writer");
    assert!(written.status.success(), "the writer: {}", String::from_utf8_lossy(&written.stderr));

    let status = exit_within(&mut sidecar.ciofs, SHUTDOWN_TIMEOUT + Duration::from_secs(5), || pod.logs());
    assert!(
        status.success() && stopped.elapsed() < SHUTDOWN_TIMEOUT,
        "{status} after {:?}:\n{}",
        stopped.elapsed(),
        pod.logs()
    );
    // The unmount reaches the pod once ciofs has ended (a helper's comes
    // as it sees ciofs go), before anything else is stopped.
    wait_until("the unmount reaches the pod", Duration::from_secs(10), || !pod.node.is_mounted(&pod.mountpoint()));
    // The kubelet stops the sidecars in the reverse of their start.
    for helper in sidecar.helpers.iter_mut().rev() {
        signal(helper, libc::SIGTERM);
        let status = exit_within(helper, Duration::from_secs(10), || pod.logs());
        assert!(status.success(), "a helper: {status}:\n{}", pod.logs());
    }
    assert_eq!(app.mount_of(&pod.mountpoint()), None, "the app still has the mount");
    assert_eq!(app.ok(&format!("ls -A {}", pod.mountpoint().display())), "", "the app sees the bare directory");
    for (name, data) in [("a.txt", "written\n"), ("d/b.txt", "written\n"), ("in-flight.txt", "part one\npart two\n")] {
        assert_eq!(String::from_utf8_lossy(&read_object(&bucket, name)), data, "{name}");
    }
    let late = format!("{}/storage/v1/b/{bucket}/o/late.txt", gcs_url());
    assert_eq!(get_json(&late), None, "nothing new was taken while draining");
}

#[test]
fn a_privileged_sidecar_serves_the_app_and_drains_at_sigterm() {
    pod_lifecycle(&Privileged, "pod_privileged");
}

#[test]
fn an_unprivileged_sidecar_serves_the_helpers_mount_and_drains_at_sigterm() {
    pod_lifecycle(&Descriptor, "pod_descriptor");
}

/// An OOM kill of the privileged sidecar leaves its FUSE mount behind,
/// dead (ENOTCONN); the kubelet restarts the container in the same pod,
/// and the new ciofs detaches the dead mount and mounts again, which the
/// app, still running, sees.
#[test]
fn a_killed_privileged_sidecar_restarts_over_the_dead_mount_it_left() {
    let bucket = bucket_name("pod_restart");
    create_bucket(&bucket);
    upload(&bucket, "seed.txt", b"from the emulator\n");
    let pod = Pod::new();
    let mut sidecar = Privileged.start(&pod);
    wait_until_ready(&pod, &mut sidecar);
    let app = App::start(&pod, HOST_TO_CONTAINER);
    let files = format!("{}/{PROJECT}/storage/{bucket}", pod.mountpoint().display());
    assert_eq!(app.ok(&format!("cat {files}/seed.txt")), "from the emulator\n");

    sidecar.ciofs.kill().expect("SIGKILL");
    sidecar.ciofs.wait().expect("wait");
    let dead = app.run(&format!("ls {files}"));
    let said = String::from_utf8_lossy(&dead.stderr);
    assert!(said.contains("Transport endpoint is not connected"), "the mount left behind is dead: {said}");

    let mut restarted = Privileged.start(&pod);
    wait_until_ready(&pod, &mut restarted);
    assert!(pod.logs().contains("detached a dead ciofs mount"), "{}", pod.logs());
    assert_eq!(app.ok(&format!("cat {files}/seed.txt")), "from the emulator\n");
    app.ok(&format!("echo again > {files}/again.txt"));
    assert_eq!(read_object(&bucket, "again.txt"), b"again\n");
    signal(&restarted.ciofs, libc::SIGTERM);
    let status = exit_within(&mut restarted.ciofs, SHUTDOWN_TIMEOUT, || pod.logs());
    assert!(status.success(), "{status}:\n{}", pod.logs());
    assert!(!pod.node.is_mounted(&pod.mountpoint()), "unmounted");
}

// -------------------------------------------------------------------- NFS

/// A network namespace of this test's own, named with the process id and
/// a counter (tests run in parallel); deleted on drop, its links with it.
struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    fn add(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("ciofs-{role}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ok(&format!("ip netns add {name}"));
        let file = File::open(format!("/run/netns/{name}"));
        let file = file.unwrap_or_else(|e| {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            panic!("/run/netns/{name}: {e}")
        });
        let namespace = NetNs { name, file };
        namespace.ip("link set lo up");
        namespace
    }

    fn ip(&self, args: &str) {
        ok(&format!("ip -n {} {args}", self.name));
    }

    /// Runs `f` on a thread inside this namespace (a network namespace is
    /// a thread's; the sockets made there stay in it).
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                // SAFETY: setns of this thread only, with a descriptor we own.
                let entered = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns {}: {}", self.name, std::io::Error::last_os_error());
                f()
            });
            thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// `command`, to be run inside this namespace.
    fn enter_at_exec(&self, command: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: between fork and exec only setns, a system call.
        unsafe {
            command.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A veth pair: `a_end` with address `a_address` (CIDR) in `a`, `b_end`
/// with `b_address` in `b`. Made in the namespaces directly, so its names
/// never meet another test's.
fn link(a: (&NetNs, &str, &str), b: (&NetNs, &str, &str)) {
    ok(&format!("ip link add {} netns {} type veth peer name {} netns {}", a.1, a.0.name, b.1, b.0.name));
    for (namespace, end, address) in [a, b] {
        namespace.ip(&format!("addr add {address} dev {end}"));
        namespace.ip(&format!("link set {end} up"));
    }
}

/// Makes the emulators, which listen on the host's loopback, answer at
/// the same addresses inside `namespace`: a listener made there, whose
/// connections this process carries to the host's. The server in it then
/// takes the same emulator variables as every other test.
fn forward_emulators(namespace: &NetNs) {
    for variable in ["STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"] {
        let Ok(value) = std::env::var(variable) else { continue };
        let address = value.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = namespace.within(|| TcpListener::bind(&address));
        let listener = listener.unwrap_or_else(|e| panic!("listen on {address} in {}: {e}", namespace.name));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if let Ok(server) = TcpStream::connect(&address) {
                    carry(client, server);
                }
            }
        });
    }
}

/// Copies both ways between two connections until each side closes.
fn carry(client: TcpStream, server: TcpStream) {
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

/// `ciofs serve-nfs --allow-remote --listen LISTEN` inside `namespace`.
fn serve_nfs_in(namespace: &NetNs, listen: &str, state: &Path) -> NfsServer {
    let mut command = ciofs();
    command
        .args(["serve-nfs", "--project", PROJECT, "--listen", listen, "--allow-remote"])
        .env("CIOFS_STATE_DIR", state)
        .env("CIOFS_LOG", "warn");
    namespace.enter_at_exec(&mut command);
    NfsServer::spawn(command)
}

/// What a connection from inside `namespace` to `address` comes to.
fn connect_from(namespace: &NetNs, address: &str) -> std::io::Result<TcpStream> {
    let address: SocketAddr = address.parse().expect("address");
    namespace.within(|| TcpStream::connect_timeout(&address, Duration::from_secs(3)))
}

/// Reads `hello.txt` and writes `new.txt` in `bucket` through the NFS
/// server at `host:port`, from the calling thread's network namespace.
fn read_and_write_over_nfs(host: &str, port: u16, bucket: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut conn = connect_to(host, port).await;
        let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
        let hello = lookup(&mut conn, &dir, "hello.txt").await.expect("hello.txt");
        let args = CREATE3args { where_: dirop(&dir, "new.txt"), how: createhow3::UNCHECKED(sattr3::default()) };
        let file = conn.create(&args).await.expect("create call").unwrap().obj.unwrap();
        write(&mut conn, &file, 0, b"written over NFS\n").await;
        read(&mut conn, &hello, 0, 100).await.0
    })
}

#[test]
fn serve_nfs_in_its_own_network_namespace_serves_only_the_address_it_was_allowed() {
    let bucket = bucket_name("pod_nfs");
    create_bucket(&bucket);
    upload(&bucket, "hello.txt", b"hello over NFS\n");
    let (server_ns, client_ns, other_ns) = (NetNs::add("server"), NetNs::add("client"), NetNs::add("other"));
    link((&server_ns, "to-client", "10.233.1.1/30"), (&client_ns, "to-server", "10.233.1.2/30"));
    link((&server_ns, "to-other", "10.233.2.1/30"), (&other_ns, "to-server", "10.233.2.2/30"));
    forward_emulators(&server_ns);
    let state = tempfile::tempdir().expect("temp dir");
    let server = serve_nfs_in(&server_ns, "10.233.1.1:0", state.path());

    let read = client_ns.within(|| read_and_write_over_nfs("10.233.1.1", server.port, &bucket));
    assert_eq!(read, b"hello over NFS\n");
    let url = format!("{}/storage/v1/b/{bucket}/o/new.txt?alt=media", gcs_url());
    wait_until("the NFS write reaches the emulator", Duration::from_secs(15), || {
        let output = run(Command::new("curl").args(["-sf", &url]));
        output.status.success() && output.stdout == b"written over NFS\n"
    });

    // The server listens on the one address: its other addresses refuse,
    // and the allowed one is not on the third namespace's path.
    let refused = |address: &str, from: &NetNs| connect_from(from, address).map(drop).map_err(|e| e.kind());
    let (port, refused_kind) = (server.port, Err(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(refused(&format!("10.233.2.1:{port}"), &other_ns), refused_kind, "its address toward the other");
    assert_eq!(refused(&format!("127.0.0.1:{port}"), &server_ns), refused_kind, "its own loopback");
    let unreachable = refused(&format!("10.233.1.1:{port}"), &other_ns);
    assert_eq!(unreachable, Err(std::io::ErrorKind::NetworkUnreachable), "the allowed address from the other");
    drop(server);
}

/// An app container without mount propagation (Kubernetes' default) holds
/// a private copy of the mount, which the sidecar's unmount does not
/// reach: the sidecar must still end within its shutdown timeout (the
/// app's copy is the kernel's to fail), or the pod never terminates.
#[test]
fn an_app_without_mount_propagation_does_not_keep_the_sidecar_past_its_timeout() {
    let bucket = bucket_name("pod_private_app");
    create_bucket(&bucket);
    let pod = Pod::new();
    let mut sidecar = Privileged.start(&pod);
    wait_until_ready(&pod, &mut sidecar);
    let app = App::start(&pod, NO_PROPAGATION);
    let files = format!("{}/{PROJECT}/storage/{bucket}", pod.mountpoint().display());
    app.ok(&format!("echo written > {files}/a.txt"));
    signal(&sidecar.ciofs, libc::SIGTERM);
    let status = exit_within(&mut sidecar.ciofs, SHUTDOWN_TIMEOUT + Duration::from_secs(5), || pod.logs());
    assert!(status.success(), "{status}:\n{}", pod.logs());
    assert_eq!(read_object(&bucket, "a.txt"), b"written\n");
}
