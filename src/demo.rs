//! `ciofs demo` and `--backend memory`: the in-memory Cloud Storage,
//! BigQuery and Pub/Sub of `ciofs_backends::memory`, served in process and
//! seeded with the sample project (project `demo-project`). The seeding
//! goes through the backend traits, so `ciofs demo --seed` (which
//! `scripts/demo --emulators` runs) makes the very same project on the
//! emulators. This module owns the backend choice, the seeding, and the
//! command line a demo runs as (`mount --foreground` or `serve-nfs`), with
//! the lines it prints once that is ready. The data of a memory backend
//! lives in the process's memory only: it is gone when the process ends.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use ciofs_backends::bigquery::{BigQuery, DatasetSettings, SchemaField, TableSettings};
use ciofs_backends::gcs::{BucketSettings, ObjectStore, Upload};
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub};
use ciofs_backends::pubsub::{CreateSubscription, PubSub, SubscriptionSettings, TopicSettings};
use ciofs_backends::{BackendResult, ErrorKind};

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
    /// Developer option (`scripts/demo --emulators`): make the sample
    /// project on the services the environment names (the emulators, by
    /// their *_EMULATOR_HOST variables) and exit, mounting nothing.
    #[arg(long, hide = true)]
    pub seed: bool,
}

/// The services `--backend` asks for when it is `memory`, seeded; None for
/// Google's (which the shell connects to).
pub async fn memory_services(args: &BackendArgs) -> Result<Option<Services>, String> {
    if args.backend != Backend::Memory {
        return Ok(None);
    }
    let services = Services {
        gcs: Arc::new(MemoryGcs::live()),
        bigquery: Arc::new(MemoryBigQuery::new()),
        pubsub: Arc::new(MemoryPubSub::new()),
    };
    seed(&services, args.seed_objects).await?;
    tracing::info!(objects = args.seed_objects, "serving the sample project {PROJECT} from memory");
    Ok(Some(services))
}

/// Makes the sample project on `services`, through the same calls whatever
/// they are: the memory backends of `ciofs demo`, or the emulators (`ciofs
/// demo --seed`, which `scripts/demo --emulators` runs). What exists
/// already is kept and the objects are written again, so a second run on
/// the same emulators succeeds. `scale_objects`: see `--seed-objects`.
pub async fn seed(services: &Services, scale_objects: u64) -> Result<(), String> {
    seed_storage(services.gcs.as_ref()).await?;
    seed_bigquery(services.bigquery.as_ref()).await?;
    seed_pubsub(services.pubsub.as_ref()).await?;
    seed_scale(services.gcs.as_ref(), scale_objects).await
}

/// A creation's outcome, where finding the thing there already is fine.
fn created<T>(what: &str, result: BackendResult<T>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {what}: {e}")),
    }
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One object of the sample project.
struct SampleObject {
    bucket: &'static str,
    name: &'static str,
    content: String,
    content_type: &'static str,
    metadata: BTreeMap<String, String>,
}

fn object(bucket: &'static str, name: &'static str, content: &str, content_type: &'static str) -> SampleObject {
    SampleObject { bucket, name, content: content.to_string(), content_type, metadata: BTreeMap::new() }
}

/// The objects of the three buckets, with their content types and custom
/// metadata.
fn sample_objects() -> Vec<SampleObject> {
    let index = "<!doctype html>\n<html><head><title>ciofs demo</title><link rel=\"stylesheet\" \
                 href=\"css/site.css\"></head>\n<body><h1>Hello from a Cloud Storage bucket</h1></body></html>\n";
    let intro = "# Introduction\n\nEvery object is a file; every \"/\" in its name is a directory.\n";
    // Right on both paths: scripts/demo serves the project from memory
    // (ciofs demo) or, with --emulators, from the emulators.
    let install = "Run scripts/demo (add --emulators to use the local emulators).\n";
    let errors = "2025-03-02T10:00:00Z ERROR payment timeout (retried)\n";
    let q1 = "region,revenue\nemea,1200\namer,3400\napac,2100\n";
    let q2 = "region,revenue\nemea,1500\namer,3600\napac,2500\n";
    let nginx = [("source", "nginx")];
    vec![
        SampleObject {
            metadata: metadata(&[("owner", "web-team"), ("cache", "short")]),
            ..object(WEBSITE, "index.html", index, "text/html")
        },
        object(WEBSITE, "css/site.css", "body { font-family: sans-serif; margin: 2em; }\n", "text/css"),
        SampleObject {
            metadata: metadata(&[("reviewed", "yes")]),
            ..object(WEBSITE, "docs/guide/intro.md", intro, "text/markdown")
        },
        object(WEBSITE, "docs/guide/install.md", install, "text/markdown"),
        SampleObject {
            metadata: metadata(&nginx),
            ..object(LOGS, "web/2025/03/01/access.log", &access_log("01/Mar/2025"), "text/plain")
        },
        SampleObject {
            metadata: metadata(&nginx),
            ..object(LOGS, "web/2025/03/02/access.log", &access_log("02/Mar/2025"), "text/plain")
        },
        object(LOGS, "app/errors.log", errors, "text/plain"),
        SampleObject {
            metadata: metadata(&[("owner", "finance"), ("classification", "internal")]),
            ..object(DATA, "reports/2025/q1.csv", q1, "text/csv")
        },
        SampleObject {
            metadata: metadata(&[("owner", "finance")]),
            ..object(DATA, "reports/2025/q2.csv", q2, "text/csv")
        },
        object(DATA, "README.txt", "Quarterly reports, one CSV per quarter.\n", "text/plain"),
    ]
}

/// The three buckets and their objects.
async fn seed_storage(gcs: &dyn ObjectStore) -> Result<(), String> {
    for bucket in [WEBSITE, LOGS, DATA] {
        created(&format!("bucket {bucket}"), gcs.create_bucket(PROJECT, bucket, &BucketSettings::default()).await)?;
    }
    for sample in sample_objects() {
        let source = Arc::new(staging_file(sample.content.as_bytes())?);
        let upload = Upload {
            bucket: sample.bucket.to_string(),
            name: sample.name.to_string(),
            source,
            size: sample.content.len() as u64,
            content_type: Some(sample.content_type.to_string()),
            custom_metadata: sample.metadata,
            if_generation_match: None,
        };
        upload_one(gcs, &upload).await?;
    }
    Ok(())
}

/// An unnamed file holding `content`, as an upload reads it.
fn staging_file(content: &[u8]) -> Result<std::fs::File, String> {
    let mut file = tempfile::tempfile().map_err(|e| format!("cannot make a staging file: {e}"))?;
    file.write_all(content).map_err(|e| format!("cannot write a staging file: {e}"))?;
    Ok(file)
}

async fn upload_one(gcs: &dyn ObjectStore, upload: &Upload) -> Result<(), String> {
    gcs.upload_object(upload)
        .await
        .map_err(|e| format!("cannot upload gs://{}/{}: {e}", upload.bucket, upload.name))?;
    Ok(())
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
async fn seed_bigquery(bigquery: &dyn BigQuery) -> Result<(), String> {
    let sales = DatasetSettings { description: Some("Orders".to_string()), ..Default::default() };
    created("the dataset sales", bigquery.create_dataset(PROJECT, "sales", &sales).await)?;
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
    created("the table sales.orders", bigquery.create_table(PROJECT, "sales", "orders", &orders).await)?;
    let query = "SELECT * FROM sales.orders WHERE amount > 100".to_string();
    let view = TableSettings { view_query: Some(query), ..Default::default() };
    created("the view sales.big_orders", bigquery.create_table(PROJECT, "sales", "big_orders", &view).await)
}

/// The topic `orders` with the subscription `billing`.
async fn seed_pubsub(pubsub: &dyn PubSub) -> Result<(), String> {
    let orders = TopicSettings { labels: metadata(&[("team", "sales")]), ..Default::default() };
    created("the topic orders", pubsub.create_topic(PROJECT, "orders", &orders).await)?;
    let billing = CreateSubscription {
        project: PROJECT.to_string(),
        subscription: "billing".to_string(),
        topic: "orders".to_string(),
        settings: SubscriptionSettings { ack_deadline_seconds: 30, ..Default::default() },
    };
    created("the subscription billing", pubsub.create_subscription(&billing).await)
}

/// `count` empty objects in one directory (`--seed-objects`), for
/// measuring listings at scale without an emulator's own costs.
async fn seed_scale(gcs: &dyn ObjectStore, count: u64) -> Result<(), String> {
    let empty = Arc::new(staging_file(b"")?);
    for i in 0..count {
        let upload = Upload {
            bucket: DATA.to_string(),
            name: format!("{SCALE_PREFIX}object-{i:07}"),
            source: empty.clone(),
            size: 0,
            content_type: Some("text/plain".to_string()),
            custom_metadata: BTreeMap::new(),
            if_generation_match: None,
        };
        upload_one(gcs, &upload).await?;
    }
    Ok(())
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

    use ciofs_backends::gcs::{ListObjects, ReadObject};
    use futures::TryStreamExt;

    fn memory() -> Services {
        Services {
            gcs: Arc::new(MemoryGcs::new()),
            bigquery: Arc::new(MemoryBigQuery::new()),
            pubsub: Arc::new(MemoryPubSub::new()),
        }
    }

    async fn names(gcs: &dyn ObjectStore, bucket: &str) -> Vec<String> {
        let request = ListObjects { bucket: bucket.to_string(), page_size: 1000, ..Default::default() };
        let page = gcs.list_objects(&request).await.expect("list");
        page.objects.into_iter().map(|o| o.name).collect()
    }

    async fn content(gcs: &dyn ObjectStore, bucket: &str, name: &str) -> String {
        let read =
            ReadObject { bucket: bucket.to_string(), name: name.to_string(), range: 0..1 << 20, ..Default::default() };
        let chunks: Vec<_> = gcs.read_object(&read).await.expect("read").bytes.try_collect().await.expect("bytes");
        String::from_utf8(chunks.concat()).expect("utf-8")
    }

    /// A second seeding (scripts/demo --emulators run again on the same
    /// emulators) finds the project there and succeeds, leaving it as one.
    #[tokio::test]
    async fn seeding_twice_makes_one_sample_project() {
        let services = memory();
        seed(&services, 3).await.expect("first seeding");
        seed(&services, 3).await.expect("second seeding");
        let gcs = services.gcs.as_ref();
        let buckets = gcs.list_buckets(PROJECT, None, 100).await.expect("buckets").buckets;
        let buckets: Vec<_> = buckets.into_iter().map(|b| b.name).collect();
        assert_eq!(buckets, [DATA, LOGS, WEBSITE]);
        assert_eq!(
            names(gcs, WEBSITE).await,
            ["css/site.css", "docs/guide/install.md", "docs/guide/intro.md", "index.html"]
        );
        assert_eq!(names(gcs, LOGS).await.len(), 3);
        assert_eq!(names(gcs, DATA).await.len(), 3 + 3, "three objects and three of scale/");
        let q1 = gcs.get_object(DATA, "reports/2025/q1.csv").await.expect("q1");
        assert_eq!(q1.content_type.as_deref(), Some("text/csv"));
        assert_eq!(q1.custom_metadata, metadata(&[("owner", "finance"), ("classification", "internal")]));
        let tables = services.bigquery.list_tables(PROJECT, "sales", None).await.expect("tables").items;
        assert_eq!(tables.iter().map(|t| t.table.as_str()).collect::<Vec<_>>(), ["big_orders", "orders"]);
        let subscription = services.pubsub.get_subscription(PROJECT, "billing").await.expect("billing");
        assert_eq!(subscription.settings.ack_deadline_seconds, 30);
    }

    /// The access logs: 2,000 lines, uploaded whole.
    #[tokio::test]
    async fn the_access_logs_are_uploaded_whole() {
        let services = memory();
        seed(&services, 0).await.expect("seeding");
        let log = content(services.gcs.as_ref(), LOGS, "web/2025/03/01/access.log").await;
        assert_eq!(log, access_log("01/Mar/2025"));
        assert_eq!(log.lines().count(), 2000);
        let first = "10.0.0.0 - - [01/Mar/2025:00:00:00 +0000] \"GET /docs/page-0.html HTTP/1.1\" 200 1000";
        assert_eq!(log.lines().next(), Some(first));
        assert!(log.lines().nth(1999).is_some_and(|l| l.ends_with(" 200 5993")), "{:?}", log.lines().nth(1999));
    }
}
