//! The container image, run as the Kubernetes sidecar runs it.
//!
//! `scripts/image --binary` builds the image around this build's ciofs
//! (not a release build: that takes minutes) and imports it into the
//! container runtime here; `scripts/image runtime` runs it with the
//! options this machine needs, so that the test knows none of them. The
//! container gets what the `ciofs` container of
//! `deploy/kubernetes/sidecar-deployment.yaml` gets, read from the
//! manifest: its arguments (the project and the metrics address changed
//! for the emulators and a free port), its privileges and user, and its
//! volumes, each a scratch directory bind-mounted onto itself and made
//! shared, as a kubelet's emptyDir (so that `Bidirectional` propagation,
//! `rshared`, carries ciofs's mount out of the container). It shares the
//! host's network, where the emulators listen. Once `/readyz` answers 200
//! the mount is on the host, where uid 1000 reads a file uploaded to the
//! emulator and writes one with real tools; `stop` (SIGTERM) ends the
//! container with status 0 and its mount gone from the host.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::manifests::*;
use common::*;
use serde_json::Value;

/// The manifest whose ciofs container is run.
const MANIFEST: &str = "deploy/kubernetes/sidecar-deployment.yaml";

/// The app's uid and gid, which the manifest gives ciofs's files.
const APP_ID: u32 = 1000;

/// `scripts/image` with `args`, which must succeed; its standard output.
fn image_script(args: &[&str]) -> String {
    let output = run(Command::new(repo_root().join("scripts/image")).args(args).env("CIOFS_IMAGE", image_name()));
    assert!(output.status.success(), "scripts/image {args:?}: {}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The image's name: one per checkout (tests of two checkouts may run at
/// once), replaced by each build, so that images do not pile up.
fn image_name() -> String {
    let path: String =
        repo_root().to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let tail = &path[path.len().saturating_sub(100)..];
    format!("localhost/ciofs:test-{}", tail.trim_matches('-').to_ascii_lowercase())
}

/// Builds the image from this build's ciofs; its ID.
fn build_image() -> String {
    let started = Instant::now();
    let id = image_script(&["--binary", env!("CARGO_BIN_EXE_ciofs")]);
    eprintln!("image {id} built and imported in {:.1?}", started.elapsed());
    assert!(!id.is_empty() && !id.contains(char::is_whitespace), "scripts/image printed {id:?}");
    id
}

/// The manifest's `ciofs` container, as JSON.
fn sidecar_spec() -> Value {
    let documents = yaml_documents(&repo_root().join(MANIFEST));
    let containers = documents[0]["spec"]["template"]["spec"]["initContainers"].as_array().cloned();
    let ciofs = containers.into_iter().flatten().find(|container| container["name"] == "ciofs");
    ciofs.unwrap_or_else(|| panic!("{MANIFEST} has no init container named ciofs"))
}

/// A pod's volume: a scratch directory bind-mounted onto itself and made
/// shared in a peer group of its own, as the kubelet's volume directory;
/// unmounted on drop, whatever is still mounted in it.
struct Volume {
    dir: PathBuf,
}

impl Volume {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir(&dir).expect("volume directory");
        let shown = dir.display();
        // Private first: a peer group of its own, not the parent mount's.
        ok(&format!("mount --bind {shown} {shown} && mount --make-private {shown} && mount --make-shared {shown}"));
        Volume { dir }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--recursive").arg("--lazy").arg(&self.dir).status();
    }
}

/// A container of this test, removed (killed first if need be) on drop.
struct Container {
    name: String,
}

impl Container {
    /// `scripts/image runtime SUBCOMMAND [OPTIONS] NAME`.
    fn runtime(&self, subcommand: &[&str]) -> Output {
        let mut command = Command::new(repo_root().join("scripts/image"));
        run(command.arg("runtime").args(subcommand).arg(&self.name))
    }

    /// A field of `inspect` (a Go template, `{{.State.Running}}`).
    fn inspect(&self, template: &str) -> String {
        let output = self.runtime(&["inspect", "--format", template]);
        assert!(output.status.success(), "inspect: {}", output_text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn logs(&self) -> String {
        output_text(&self.runtime(&["logs"]))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.runtime(&["rm", "--force", "--time", "0"]);
    }
}

/// The sidecar's pod: its volumes under `scratch` and the container.
/// Fields drop in order: the container before the volumes it mounts.
struct Pod {
    container: Container,
    volumes: Vec<Volume>,
    metrics_port: u16,
    /// Where ciofs's mount point is on the host.
    mountpoint: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Pod {
    /// Starts `image` as the manifest's ciofs container, detached.
    fn start(image: &str, spec: &Value) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        // uid 1000 walks through it to the mount.
        ok(&format!("chmod 755 {}", scratch.path().display()));
        let metrics_port = free_port();
        let args = pod_args(spec, metrics_port);
        let (volumes, options) = volumes(spec, scratch.path());
        let mountpoint = on_host(args.last().expect("a mount point"), spec, scratch.path());
        let name = format!("ciofs-image-test-{}", std::process::id());
        let mut run_args = vec!["run".to_string(), "--detach".into(), "--name".into(), name.clone()];
        run_args.extend(options);
        run_args.extend(security(spec));
        // The host's network: the emulators listen on its loopback.
        run_args.extend(["--network", "host", "--env", "CIOFS_LOG=info,ciofs=debug"].map(String::from));
        for variable in ["STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"] {
            run_args.extend(["--env".to_string(), variable.to_string()]);
        }
        run_args.push(image.to_string());
        run_args.extend(args);
        let output = run(Command::new(repo_root().join("scripts/image")).arg("runtime").args(&run_args));
        let pod = Pod { container: Container { name }, volumes, metrics_port, mountpoint, _scratch: scratch };
        assert!(output.status.success(), "run {run_args:?}: {}", output_text(&output));
        pod
    }

    /// Polls `/readyz` as the manifest's startupProbe does, until 200.
    fn wait_until_ready(&self) {
        let (deadline, mut checked) = (Instant::now() + Duration::from_secs(60), Instant::now());
        while http_get(self.metrics_port, "/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "not ready in 60 s:\n{}", self.container.logs());
            if checked.elapsed() > Duration::from_secs(1) {
                let running = self.container.inspect("{{.State.Running}}");
                assert_eq!(running, "true", "the container ended before it was ready:\n{}", self.container.logs());
                checked = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The manifest's arguments, but the project (the emulators') and the
/// metrics address (a free port on the loopback, the host's network).
fn pod_args(spec: &Value, metrics_port: u16) -> Vec<String> {
    let mut args = Vec::new();
    let mut replaced = 0;
    for arg in spec["args"].as_array().expect("args") {
        let arg = arg.as_str().expect("a string");
        let replacement = match arg.split_once('=') {
            Some(("--project", _)) => Some(format!("--project={PROJECT}")),
            Some(("--metrics-addr", _)) => Some(format!("--metrics-addr=127.0.0.1:{metrics_port}")),
            _ => None,
        };
        replaced += usize::from(replacement.is_some());
        args.push(replacement.unwrap_or_else(|| arg.to_string()));
    }
    assert_eq!(replaced, 2, "{MANIFEST}: --project=... and --metrics-addr=... in {args:?}");
    assert_eq!(args.first().map(String::as_str), Some("mount"), "{args:?}");
    args
}

/// The container's volume mounts: a `Volume` in `scratch` for each, and
/// the runtime's options that mount them, `Bidirectional` as `rshared`.
fn volumes(spec: &Value, scratch: &Path) -> (Vec<Volume>, Vec<String>) {
    let mut volumes = Vec::new();
    let mut options = Vec::new();
    for mount in spec["volumeMounts"].as_array().expect("volumeMounts") {
        let volume = Volume::new(scratch.join(mount["name"].as_str().expect("name")));
        let propagation = match mount["mountPropagation"].as_str() {
            Some("Bidirectional") => ":rshared",
            Some(other) => panic!("{MANIFEST}: mountPropagation {other} is not handled here"),
            None => "",
        };
        let path = mount["mountPath"].as_str().expect("mountPath");
        options.extend(["--volume".to_string(), format!("{}:{path}{propagation}", volume.dir.display())]);
        volumes.push(volume);
    }
    (volumes, options)
}

/// The runtime's options for the container's securityContext.
fn security(spec: &Value) -> Vec<String> {
    let context = &spec["securityContext"];
    let mut options = Vec::new();
    if context["privileged"] == Value::Bool(true) {
        options.push("--privileged".to_string());
    }
    if let Some(user) = context["runAsUser"].as_u64() {
        options.extend(["--user".to_string(), user.to_string()]);
    }
    options
}

/// Where `path`, in the container, is on the host: in the volume mounted
/// at the longest prefix of it.
fn on_host(path: &str, spec: &Value, scratch: &Path) -> PathBuf {
    let mounts = spec["volumeMounts"].as_array().expect("volumeMounts");
    let inside = |mount: &&Value| Path::new(path).starts_with(mount["mountPath"].as_str().unwrap_or("-"));
    let mount = mounts.iter().filter(inside).max_by_key(|mount| mount["mountPath"].as_str().map(str::len));
    let mount = mount.unwrap_or_else(|| panic!("{path} is on no volume of {MANIFEST}"));
    let relative = Path::new(path).strip_prefix(mount["mountPath"].as_str().expect("mountPath")).expect("prefix");
    scratch.join(mount["name"].as_str().expect("name")).join(relative)
}

/// Runs `script` on the host as the app's user, which must succeed; its
/// standard output.
fn as_app(script: &str) -> String {
    let id = APP_ID.to_string();
    let mut command = Command::new("setpriv");
    command.args(["--reuid", &id, "--regid", &id, "--clear-groups", "sh", "-c", script]).current_dir("/");
    let output = run(&mut command);
    assert!(output.status.success(), "as uid {APP_ID}, {script}: {}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_image_serves_the_sidecar_manifests_mount_and_ends_at_sigterm() {
    let started = Instant::now();
    let bucket = bucket_name("image");
    create_bucket(&bucket);
    upload(&bucket, "seed.txt", b"from the emulator\n");
    let spec = sidecar_spec();
    let image = build_image();
    let pod = Pod::start(&image, &spec);
    pod.wait_until_ready();
    assert!(is_mounted(&pod.mountpoint), "ready, but the mount did not reach the host:\n{}", pod.container.logs());

    let files = format!("{}/{PROJECT}/storage/{bucket}", pod.mountpoint.display());
    let seen = as_app(&format!("cd {files} && cat seed.txt && stat -c %u:%g seed.txt && echo written > a.txt && ls"));
    assert_eq!(seen, "from the emulator\n1000:1000\na.txt\nseed.txt\n");
    assert_eq!(read_object(&bucket, "a.txt"), b"written\n", "closed, so uploaded");

    let stopping = Instant::now();
    let stopped = pod.container.runtime(&["stop", "--time", "60"]);
    assert!(stopped.status.success(), "stop: {}", output_text(&stopped));
    let logs = pod.container.logs();
    assert_eq!(pod.container.inspect("{{.State.ExitCode}}"), "0", "after {:.1?}:\n{logs}", stopping.elapsed());
    assert!(logs.contains("shutting down"), "a drain at SIGTERM:\n{logs}");
    assert!(!is_mounted(&pod.mountpoint), "the mount outlived the container:\n{logs}");
    assert!(pod.volumes.iter().all(|volume| volume.dir.exists()));
    eprintln!("stopped in {:.1?}; the whole test took {:.1?}", stopping.elapsed(), started.elapsed());
}
