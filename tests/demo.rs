//! `ciofs demo` and `--backend memory` through the real binary, with no
//! emulator: the emulator variables are removed from every ciofs started
//! here, and the sample project is served from the process's memory. The
//! README's walkthrough runs on a FUSE mount with real tools (ls, cat, cp,
//! sed -i, echo, head, tar); `serve-nfs --backend memory` is read through
//! the userspace NFS client; SIGTERM ends the demo with status 0 and no
//! mount left.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::nfs::*;
use common::{FuseMount, NfsServer, ciofs, is_mounted, ok};

const EMULATOR_VARIABLES: [&str; 3] = ["STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"];
const P: &str = "demo-project";

/// A ciofs with no emulator to talk to, and its state in `state`.
fn ciofs_without_emulators(state: &Path) -> Command {
    let mut command = ciofs();
    for variable in EMULATOR_VARIABLES {
        command.env_remove(variable);
    }
    command.env("CIOFS_STATE_DIR", state).env("CIOFS_LOG", "info").stdin(Stdio::null());
    command
}

/// `ciofs demo MOUNTPOINT` as a mount (unmounted and stopped on drop,
/// whatever the test did), its stdout's lines gathered.
struct Demo {
    mount: FuseMount,
    stdout: mpsc::Receiver<String>,
}

impl Demo {
    fn start() -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        // Made by `ciofs demo` itself.
        let dir = scratch.path().join("not-yet/mnt");
        let mut command = ciofs_without_emulators(&scratch.path().join("state"));
        command.arg("demo").arg(&dir).stdout(Stdio::piped());
        let mut mount = FuseMount::spawn(command, dir, scratch);
        let (tx, stdout) = mpsc::channel();
        let out = mount.take_stdout().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Demo { mount, stdout }
    }

    fn dir(&self) -> &Path {
        &self.mount.dir
    }

    /// The sample project's directory, quoted for the shell.
    fn project(&self) -> String {
        format!("'{}/{P}'", self.dir().display())
    }

    /// What the demo printed once mounted, up to its last line.
    fn printed(&self) -> String {
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let last = line.contains("Ctrl-C");
            lines.push(line);
            if last {
                break;
            }
        }
        lines.join("\n")
    }
}

/// The README's walkthrough, on `ciofs demo` with no emulator: what each
/// command shows is the sample project `scripts/demo --emulators` makes.
#[test]
fn the_readme_walkthrough_works_on_the_demo_without_emulators() {
    let demo = Demo::start();
    let printed = demo.printed();
    assert!(printed.contains("memory only"), "the demo says its data is in memory only:\n{printed}");
    assert!(printed.contains(&format!("ls -l {}/{P}/storage", demo.dir().display())), "{printed}");
    let p = demo.project();

    let buckets = ok(&format!("ls {p}/storage"));
    assert_eq!(buckets, "ciofs-demo-data\nciofs-demo-logs\nciofs-demo-website\n");
    let found = ok(&format!("cd {p}/storage && find ciofs-demo-website -type f -not -path '*/.meta/*' | sort"));
    let expected = "ciofs-demo-website/css/site.css\nciofs-demo-website/docs/guide/install.md\n\
                    ciofs-demo-website/docs/guide/intro.md\nciofs-demo-website/index.html\n";
    assert_eq!(found, expected);
    let q1 = ok(&format!("cat {p}/storage/ciofs-demo-data/reports/2025/q1.csv"));
    assert_eq!(q1, "region,revenue\nemea,1200\namer,3400\napac,2100\n");
    let lines = ok(&format!("wc -l < {p}/storage/ciofs-demo-logs/web/2025/03/01/access.log"));
    assert_eq!(lines.trim(), "2000");
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&format!("cat {p}/storage/ciofs-demo-data/reports/2025/.meta/q1.csv.json")))
            .expect("object metadata JSON");
    assert_eq!(meta["content_type"], "text/csv");
    assert_eq!(meta["custom_metadata"]["classification"], "internal");
    assert!(meta["md5_hash"].is_string(), "{meta}");

    // cp into a bucket, read back; sed -i on an object's .meta JSON.
    let copied = ok(&format!(
        "printf 'copied through ciofs\\n' > /tmp/ciofs-demo-test-$$ && cp /tmp/ciofs-demo-test-$$ {p}/storage/ciofs-demo-data/copy.txt \
         && rm /tmp/ciofs-demo-test-$$ && cat {p}/storage/ciofs-demo-data/copy.txt"
    ));
    assert_eq!(copied, "copied through ciofs\n");
    ok(&format!("sed -i 's/\"finance\"/\"treasury\"/' {p}/storage/ciofs-demo-data/reports/2025/.meta/q2.csv.json"));
    let owner = ok(&format!("grep owner {p}/storage/ciofs-demo-data/reports/2025/.meta/q2.csv.json"));
    assert!(owner.contains("treasury"), "{owner}");

    // BigQuery: a column added through schema.json, one dropped refused.
    let schema = format!("{p}/bigquery/sales/orders/schema.json");
    ok(&format!("sed -i 's/\"name\": \"amount\"/\"name\": \"amount\", \"description\": \"in EUR\"/' {schema}"));
    assert!(ok(&format!("cat {schema}")).contains("in EUR"));
    let view = ok(&format!("cat {p}/bigquery/sales/big_orders/config.json"));
    assert!(view.contains("SELECT * FROM sales.orders WHERE amount > 100"), "{view}");

    // Pub/Sub: publish through _message, consume through _stream.
    let topic = format!("{p}/pubsub/topics/orders");
    ok(&format!("echo 'order 1001 paid' > {topic}/_message"));
    let consumed = ok(&format!("timeout 10 head -n 1 {topic}/subscriptions/billing/_stream"));
    assert!(consumed.trim_end().ends_with("order 1001 paid"), "{consumed}");

    // tar c of the mount holds every resource kind.
    let listed = ok(&format!("tar cf - -C '{}' {P} | tar tf -", demo.dir().display()));
    for entry in [
        "demo-project/storage/ciofs-demo-data/copy.txt",
        "demo-project/storage/ciofs-demo-website/.meta/_bucket.json",
        "demo-project/bigquery/sales/orders/schema.json",
        "demo-project/pubsub/topics/orders/subscriptions/billing/config.json",
    ] {
        assert!(listed.lines().any(|line| line == entry), "{entry} not in the archive:\n{listed}");
    }
}

/// SIGTERM (as Ctrl-C) unmounts and ends the demo with status 0.
#[test]
fn sigterm_ends_the_demo_with_status_zero_and_no_mount() {
    let mut demo = Demo::start();
    let status = demo.mount.terminate();
    assert!(status.success(), "{status}:\n{}", demo.mount.log_text());
    assert!(!is_mounted(demo.dir()), "the mount is gone");
}

/// `serve-nfs --backend memory` serves the sample project, a seeded
/// directory of 2,500 objects listed whole in order through paged
/// READDIRPLUS (several list pages of the memory backend).
#[tokio::test]
async fn serve_nfs_with_the_memory_backend_serves_the_sample_project() {
    let state = tempfile::tempdir().unwrap();
    let mut command = ciofs_without_emulators(state.path());
    command
        .args(["serve-nfs", "--backend", "memory", "--project", P, "--listen", "127.0.0.1:0"])
        .args(["--seed-objects", "2500"]);
    let server = NfsServer::spawn(command);
    let port = server.port;

    let mut conn = connect(port).await;
    let index = walk(&mut conn, &format!("{P}/storage/ciofs-demo-website/index.html")).await;
    let (html, eof) = read(&mut conn, &index, 0, 1 << 20).await;
    assert!(eof);
    assert!(String::from_utf8_lossy(&html).contains("Hello from a Cloud Storage bucket"));
    let subscription = walk(&mut conn, &format!("{P}/pubsub/topics/orders/subscriptions/billing/config.json")).await;
    let (config, _) = read(&mut conn, &subscription, 0, 1 << 20).await;
    assert!(String::from_utf8_lossy(&config).contains("\"ack_deadline_seconds\": 30"));

    let scale = walk(&mut conn, &format!("{P}/storage/ciofs-demo-data/scale")).await;
    // A listing that does not end (a page token that goes nowhere) fails
    // here rather than growing the server until it is killed.
    let listed = tokio::time::timeout(Duration::from_secs(60), list(&mut conn, &scale, 16 * 1024)).await;
    let (names, pages) = listed.expect("the listing ends within a minute");
    let mut expected: Vec<String> = (0..2500).map(|i| format!("object-{i:07}")).collect();
    expected.insert(0, ".meta".to_string());
    assert_eq!(names, expected, "every object once, in order");
    assert!(pages > 1, "{pages} pages");
    drop(server);
}

/// Without an NFS mount command (as here), `ciofs demo --nfs` serves the
/// sample project and prints where, and how to mount it elsewhere.
#[tokio::test]
async fn demo_nfs_serves_and_says_how_to_reach_it_without_an_nfs_client() {
    if ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"].iter().any(|p| Path::new(p).exists()) {
        eprintln!("this system has mount.nfs: `ciofs demo --nfs` mounts, which this test does not cover");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut child = ciofs_without_emulators(state.path())
        .args(["demo", "--nfs", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ciofs demo --nfs");
    let stdout = child.stdout.take().expect("stdout");
    let server = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let port = loop {
        let Some(Ok(line)) = lines.next() else { panic!("ciofs demo --nfs ended:\n{}", printed.join("\n")) };
        printed.push(line.clone());
        if let Some(address) = line.split("served over NFSv3 on ").nth(1) {
            break address.trim_end_matches('.').parse::<std::net::SocketAddr>().expect("address").port();
        }
    };
    let rest: Vec<String> = lines.map_while(Result::ok).take_while(|l| !l.contains("Ctrl-C")).collect();
    let text = rest.join("\n");
    assert!(text.contains("memory only"), "{text}");
    assert!(text.contains(&format!("mount -t nfs -o nolock,vers=3,tcp,port={port},mountport={port}")), "{text}");
    let mut conn = connect(port).await;
    let csv = walk(&mut conn, &format!("{P}/storage/ciofs-demo-data/reports/2025/q2.csv")).await;
    let (data, _) = read(&mut conn, &csv, 0, 1 << 20).await;
    assert_eq!(data, b"region,revenue\nemea,1500\namer,3600\napac,2500\n");
    drop(server);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
