//! `ciofs demo` and `--backend memory`: the in-memory Cloud Storage,
//! BigQuery and Pub/Sub of `ciofs_backends::memory`, served in process and
//! seeded with the sample project `scripts/demo --emulators` makes on the
//! emulators (project `demo-project`). This module owns the backend choice,
//! the seeding, and the command line a demo runs as (`mount --foreground`
//! or `serve-nfs`), with the lines it prints once that is ready. The data
//! lives in the process's memory only: it is gone when the process ends.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use ciofs_backends::bigquery::{DatasetSettings, SchemaField, TableSettings};
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub};
use ciofs_backends::pubsub::{SubscriptionSettings, TopicSettings};

use crate::namespace::Services;

/// The sample project's name.
pub const PROJECT: &str = "demo-project";
/// The buckets of the sample project (names carry a prefix, as bucket
/// names are global on Cloud Storage).
pub const WEBSITE: &str = "ciofs-demo-website";
pub const LOGS: &str = "ciofs-demo-logs";
pub const DATA: &str = "ciofs-demo-data";
/// Where `--seed-objects N` puts its objects: one directory of `DATA`.
pub const SCALE_PREFIX: &str = "scale/";

/// Which services a mount or server talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Google Cloud (or the emulators the *_EMULATOR_HOST variables name).
    #[default]
    Google,
    /// Cloud Storage, BigQuery and Pub/Sub in this process's memory,
    /// seeded with the sample project demo-project; gone when ciofs ends.
    Memory,
}

/// The backend options of `mount`, `serve-nfs`, `export` and `import`.
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// `memory`: serve Cloud Storage, BigQuery and Pub/Sub from this
    /// process's memory, seeded with the sample project demo-project (as
    /// `ciofs demo` does). Nothing is kept: the data is gone when ciofs ends.
    #[arg(long, value_enum, default_value_t = Backend::Google)]
    pub backend: Backend,
    /// Developer option (benchmarks): with `--backend memory`, also seed
    /// N empty objects in one directory, ciofs-demo-data/scale/.
    #[arg(long, hide = true, value_name = "N", default_value_t = 0)]
    pub seed_objects: u64,
}

/// `ciofs demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where to mount (created if missing).
    #[arg(default_value = "/tmp/ciofs-demo")]
    pub mountpoint: PathBuf,
    /// Serve over NFSv3 on loopback instead of FUSE, and mount that with
    /// the OS's NFS client if it has one (else print how to reach it).
    #[arg(long, help_heading = "Demo")]
    pub nfs: bool,
    /// With --nfs: the loopback address to serve on.
    #[arg(long, default_value = "127.0.0.1:12049", help_heading = "Demo")]
    pub listen: String,
    /// Where ciofs keeps its state (pid file, content cache, NFS handles).
    #[arg(long, env = "CIOFS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Developer option (benchmarks): also seed N empty objects in one
    /// directory, ciofs-demo-data/scale/.
    #[arg(long, hide = true, value_name = "N", default_value_t = 0)]
    pub seed_objects: u64,
}

/// The services `--backend` asks for when it is `memory`, seeded; None for
/// Google's (which the shell connects to).
pub fn memory_services(args: &BackendArgs) -> Option<Services> {
    if args.backend != Backend::Memory {
        return None;
    }
    let gcs = MemoryGcs::live();
    let bigquery = MemoryBigQuery::new();
    let pubsub = MemoryPubSub::new();
    seed_storage(&gcs);
    seed_bigquery(&bigquery);
    seed_pubsub(&pubsub);
    seed_scale(&gcs, args.seed_objects);
    tracing::info!(objects = args.seed_objects, "serving the sample project {PROJECT} from memory");
    Some(Services { gcs: Arc::new(gcs), bigquery: Arc::new(bigquery), pubsub: Arc::new(pubsub) })
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The three buckets and their objects, as `scripts/demo --emulators`
/// uploads them (content types and custom metadata included).
fn seed_storage(gcs: &MemoryGcs) {
    for bucket in [WEBSITE, LOGS, DATA] {
        gcs.add_bucket_of(PROJECT, bucket);
    }
    let index = "<!doctype html>\n<html><head><title>ciofs demo</title><link rel=\"stylesheet\" \
                 href=\"css/site.css\"></head>\n<body><h1>Hello from a Cloud Storage bucket</h1></body></html>\n";
    gcs.put_object_with(
        WEBSITE,
        "index.html",
        index,
        "text/html",
        metadata(&[("owner", "web-team"), ("cache", "short")]),
    );
    let css = "body { font-family: sans-serif; margin: 2em; }\n";
    gcs.put_object_with(WEBSITE, "css/site.css", css, "text/css", metadata(&[]));
    let intro = "# Introduction\n\nEvery object is a file; every \"/\" in its name is a directory.\n";
    gcs.put_object_with(WEBSITE, "docs/guide/intro.md", intro, "text/markdown", metadata(&[("reviewed", "yes")]));
    gcs.put_object_with(WEBSITE, "docs/guide/install.md", "Run ciofs demo.\n", "text/markdown", metadata(&[]));

    let nginx = || metadata(&[("source", "nginx")]);
    gcs.put_object_with(LOGS, "web/2025/03/01/access.log", access_log("01/Mar/2025"), "text/plain", nginx());
    gcs.put_object_with(LOGS, "web/2025/03/02/access.log", access_log("02/Mar/2025"), "text/plain", nginx());
    let errors = "2025-03-02T10:00:00Z ERROR payment timeout (retried)\n";
    gcs.put_object_with(LOGS, "app/errors.log", errors, "text/plain", metadata(&[]));

    let q1 = "region,revenue\nemea,1200\namer,3400\napac,2100\n";
    let finance = metadata(&[("owner", "finance"), ("classification", "internal")]);
    gcs.put_object_with(DATA, "reports/2025/q1.csv", q1, "text/csv", finance);
    let q2 = "region,revenue\nemea,1500\namer,3600\napac,2500\n";
    gcs.put_object_with(DATA, "reports/2025/q2.csv", q2, "text/csv", metadata(&[("owner", "finance")]));
    let readme = "Quarterly reports, one CSV per quarter.\n";
    gcs.put_object_with(DATA, "README.txt", readme, "text/plain", metadata(&[]));
}

/// 2,000 lines of a web server's access log (about 170 KB): a file big
/// enough to read in parts.
fn access_log(day: &str) -> String {
    (0..2000u32)
        .map(|i| {
            let (a, b, h, m, s) = (i % 7, i % 251, i / 120 % 24, i / 2 % 60, i % 60);
            let (page, size) = (i % 40, 1000 + i * 7 % 9000);
            format!("10.0.{a}.{b} - - [{day}:{h:02}:{m:02}:{s:02} +0000] \"GET /docs/page-{page}.html HTTP/1.1\" 200 {size}\n")
        })
        .collect()
}

/// The dataset `sales`: the table `orders` (a nested schema) and the view
/// `big_orders`.
fn seed_bigquery(bigquery: &MemoryBigQuery) {
    let description = Some("Orders".to_string());
    bigquery.put_dataset(PROJECT, "sales", DatasetSettings { description, ..Default::default() });
    let customer = SchemaField {
        fields: vec![SchemaField::new("name", "STRING", "NULLABLE"), SchemaField::new("country", "STRING", "NULLABLE")],
        ..SchemaField::new("customer", "RECORD", "NULLABLE")
    };
    let schema = vec![
        SchemaField { description: Some("Order id".to_string()), ..SchemaField::new("id", "INTEGER", "REQUIRED") },
        customer,
        SchemaField::new("amount", "NUMERIC", "NULLABLE"),
        SchemaField::new("tags", "STRING", "REPEATED"),
    ];
    let orders = TableSettings {
        schema,
        description: Some("One row per order".to_string()),
        labels: metadata(&[("team", "sales"), ("env", "demo")]),
        ..Default::default()
    };
    bigquery.put_table(PROJECT, "sales", "orders", orders);
    let query = "SELECT * FROM sales.orders WHERE amount > 100".to_string();
    bigquery.put_table(PROJECT, "sales", "big_orders", TableSettings { view_query: Some(query), ..Default::default() });
}

/// The topic `orders` with the subscription `billing`.
fn seed_pubsub(pubsub: &MemoryPubSub) {
    pubsub.put_topic(PROJECT, "orders", TopicSettings { labels: metadata(&[("team", "sales")]), ..Default::default() });
    let billing = SubscriptionSettings { ack_deadline_seconds: 30, ..Default::default() };
    pubsub.put_subscription(PROJECT, "billing", "orders", billing);
}

/// `count` empty objects in one directory (`--seed-objects`), for
/// measuring listings at scale without an emulator's own costs.
fn seed_scale(gcs: &MemoryGcs, count: u64) {
    for i in 0..count {
        gcs.put_object_with(DATA, &format!("{SCALE_PREFIX}object-{i:07}"), "", "text/plain", BTreeMap::new());
    }
}

/// The command line `ciofs demo` runs as: a FUSE mount in the foreground,
/// or with `--nfs` an NFS mount (where the OS has an NFS client) or an NFS
/// server alone. The mount point is made if missing; what to try is
/// printed once the mount (or server) reports ready on the pipe given as
/// `--ready-fd`.
pub fn command_line(args: &DemoArgs) -> Result<Vec<OsString>, String> {
    let mut line: Vec<OsString> = vec!["ciofs".into()];
    let nfs_server_only = args.nfs && !os_mounts_nfs();
    if nfs_server_only {
        line.extend(["serve-nfs".into(), "--listen".into(), args.listen.clone().into()]);
    } else {
        if !args.nfs && !Path::new("/dev/fuse").exists() {
            return Err(no_fuse_advice());
        }
        std::fs::create_dir_all(&args.mountpoint)
            .map_err(|e| format!("cannot create the mount point {}: {e}", args.mountpoint.display()))?;
        line.extend(["mount".into(), "--foreground".into()]);
        if args.nfs {
            line.push("--nfs".into());
        }
    }
    line.extend(["--backend".into(), "memory".into(), "--project".into(), PROJECT.into()]);
    line.extend(["--seed-objects".into(), args.seed_objects.to_string().into()]);
    if let Some(dir) = &args.state_dir {
        line.extend(["--state-dir".into(), dir.clone().into()]);
    }
    let fd = announce_when_ready(args.mountpoint.clone(), nfs_server_only)?;
    line.extend(["--ready-fd".into(), fd.to_string().into()]);
    if !nfs_server_only {
        line.push(args.mountpoint.clone().into());
    }
    Ok(line)
}

/// Whether this system has an NFS mount command (`mount.nfs` on Linux,
/// from nfs-common; macOS always has one).
fn os_mounts_nfs() -> bool {
    cfg!(target_os = "macos") || ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"].iter().any(|p| Path::new(p).exists())
}

fn no_fuse_advice() -> String {
    format!(
        "there is no /dev/fuse here (a container without the device?). Serve the demo over NFS instead:\n  \
         ciofs demo --nfs\nor, to choose the address:\n  \
         ciofs serve-nfs --backend memory --project {PROJECT} --listen 127.0.0.1:12049"
    )
}

/// A pipe whose write end the mount or server reports readiness on (the
/// descriptor returned, for `--ready-fd`); a thread prints what to try
/// when it reads `ok`.
fn announce_when_ready(mountpoint: PathBuf, nfs_server_only: bool) -> Result<i32, String> {
    let (read, write) = nix::unistd::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    std::thread::spawn(move || {
        let mut line = String::new();
        if BufReader::new(std::fs::File::from(read)).read_line(&mut line).is_err() {
            return;
        }
        if let Some(detail) = line.trim_end().strip_prefix("ok ") {
            let text = if nfs_server_only { nfs_tour(detail) } else { mount_tour(&mountpoint, detail) };
            println!("{text}");
        }
    });
    Ok(write.into_raw_fd())
}

const IN_MEMORY: &str = "Everything lives in this process's memory only: it is gone when the demo ends.";

fn mount_tour(mountpoint: &Path, how: &str) -> String {
    let m = mountpoint.display();
    let p = format!("{m}/{PROJECT}");
    format!(
        "\nciofs demo: the sample project {PROJECT} is mounted at {m} ({how}).\n{IN_MEMORY}\n\n\
         Try, in another terminal:\n  \
         ls -l {p}/storage\n  \
         find {p}/storage/{WEBSITE}\n  \
         cat {p}/storage/{DATA}/reports/2025/q1.csv\n  \
         cat {p}/storage/{DATA}/reports/2025/.meta/q1.csv.json\n  \
         echo hello > {p}/storage/{DATA}/hello.txt && cat {p}/storage/{DATA}/hello.txt\n  \
         sed -i 's/\"finance\"/\"treasury\"/' {p}/storage/{DATA}/reports/2025/.meta/q2.csv.json\n  \
         cat {p}/bigquery/sales/orders/schema.json\n  \
         echo 'order 1001 paid' > {p}/pubsub/topics/orders/_message\n  \
         timeout 5 head -n 1 {p}/pubsub/topics/orders/subscriptions/billing/_stream\n  \
         tar cf /tmp/demo-project.tar -C {m} {PROJECT}\n\n\
         docs/TUTORIAL.md walks through more. Ctrl-C (or SIGTERM) unmounts and ends the demo."
    )
}

fn nfs_tour(address: &str) -> String {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "2049"));
    let query = format!("version=3&nfsport={port}&mountport={port}");
    format!(
        "\nciofs demo: the sample project {PROJECT} is served over NFSv3 on {address}.\n{IN_MEMORY}\n\
         This system has no NFS mount command (mount.nfs, from nfs-common). Where there is one:\n  \
         Linux:  mount -t nfs -o nolock,vers=3,tcp,port={port},mountport={port} {host}:/ MOUNTPOINT\n  \
         macOS:  mount_nfs -o nolocks,vers=3,tcp,port={port},mountport={port} localhost:/ MOUNTPOINT\n\
         or with libnfs's userspace client (Debian libnfs-utils):\n  \
         nfs-ls 'nfs://{host}/{PROJECT}/storage/{WEBSITE}?{query}'\n  \
         nfs-cat 'nfs://{host}//{PROJECT}/storage/{WEBSITE}/index.html?{query}'\n\n\
         Ctrl-C (or SIGTERM) ends the demo."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access logs are the script's: 2,000 lines, the same first line.
    #[test]
    fn the_access_log_is_the_scripts() {
        let log = access_log("01/Mar/2025");
        assert_eq!(log.lines().count(), 2000);
        let first = "10.0.0.0 - - [01/Mar/2025:00:00:00 +0000] \"GET /docs/page-0.html HTTP/1.1\" 200 1000";
        assert_eq!(log.lines().next(), Some(first));
        assert!(log.lines().nth(1999).is_some_and(|l| l.ends_with(" 200 5993")), "{:?}", log.lines().nth(1999));
    }
}
