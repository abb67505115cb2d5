//! `--watch`: mounts that cache metadata for a minute see what another
//! mount or writer changed within 2 s, through Cloud Storage's Pub/Sub
//! notifications (fake-gcs-server publishes them to the Pub/Sub emulator,
//! as `scripts/emulators` starts them).
//!
//! Each test watches one bucket through a mount with `--watch` and one
//! without, both with a metadata TTL of 60 s: a create, an overwrite, a
//! metadata change and a delete must show in the first within 2 s (`ls`,
//! `stat`, `cat`, `.meta/`), and must not have shown in the second, which
//! proves that the test can fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{GETATTR3args, Nfs3Result, READ3args, nfs_fh3, nfsstat3};
use serde_json::Value;

/// The topic the emulator publishes its events to (scripts/emulators).
const EVENTS_TOPIC: &str = "projects/ciofs-events/topics/gcs-events";
const EVENTS_PROJECT_URL: &str = "v1/projects/ciofs-events";
/// How soon a change made elsewhere must show.
const SOON: Duration = Duration::from_secs(2);

/// The options of every mount here: a minute of caching, for names found
/// absent too, so that only `--watch` can make a change show sooner.
fn caching(watch: bool) -> Vec<&'static str> {
    let mut args = vec!["--metadata-ttl", "60", "--negative-ttl", "60"];
    if watch {
        args.extend(["--watch", "--watch-topic", EVENTS_TOPIC]);
    }
    args
}

/// What a mount shows of the files `NAMES` of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// `ls` of the directory.
    listed: Vec<String>,
    /// Each file's size and content (`stat`, `cat`), None if absent.
    files: BTreeMap<String, Option<(u64, Vec<u8>)>>,
    /// Each file's custom metadata in its `.meta/` document.
    metadata: BTreeMap<String, Option<Value>>,
}

const NAMES: [&str; 4] = ["new.txt", "keep.txt", "tagged.txt", "gone.txt"];

/// The objects every test starts with.
fn seed(bucket: &str) {
    create_bucket(bucket);
    upload(bucket, "keep.txt", b"old");
    upload(bucket, "tagged.txt", b"tag me");
    upload(bucket, "gone.txt", b"bye");
}

/// What the state after the changes looks like, against the seeded one.
fn changed(seen: &Seen, what: Change) -> bool {
    match what {
        Change::Created => {
            seen.files["new.txt"] == Some((5, b"fresh".to_vec())) && seen.listed.contains(&"new.txt".into())
        }
        Change::Overwritten => seen.files["keep.txt"] == Some((13, b"newer content".to_vec())),
        Change::Tagged => seen.metadata["tagged.txt"].as_ref().is_some_and(|m| m["team"] == "blue"),
        Change::Deleted => seen.files["gone.txt"].is_none() && !seen.listed.contains(&"gone.txt".into()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Created,
    Overwritten,
    Tagged,
    Deleted,
}

const CHANGES: [Change; 4] = [Change::Created, Change::Overwritten, Change::Tagged, Change::Deleted];

/// What a FUSE mount shows, through `ls`, `stat`, `cat` and `.meta/`.
fn seen_through_fuse(dir: &Path) -> Seen {
    let listed = ok(&format!("ls {}", dir.display())).lines().map(str::to_string).collect();
    let mut files = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for name in NAMES {
        let path = dir.join(name);
        let stat = sh(&format!("stat -c %s {}", path.display()));
        let file = stat.status.success().then(|| {
            let size = String::from_utf8_lossy(&stat.stdout).trim().parse().expect("a size");
            (size, sh(&format!("cat {}", path.display())).stdout)
        });
        files.insert(name.to_string(), file);
        let document = std::fs::read(dir.join(format!(".meta/{name}.json"))).ok();
        metadata.insert(name.to_string(), document.map(|d| custom_metadata(&d)));
    }
    Seen { listed, files, metadata }
}

fn custom_metadata(document: &[u8]) -> Value {
    let document: Value = serde_json::from_slice(document).expect("a .meta/ document");
    document["custom_metadata"].clone()
}

/// What an NFS server shows to a userspace client: READDIRPLUS, LOOKUP,
/// GETATTR and READ of the files and their `.meta/` documents.
async fn seen_through_nfs(port: u16, dir: &str) -> Seen {
    let mut conn = connect(port).await;
    let dir_fh = walk(&mut conn, dir).await;
    let (listed, _) = list(&mut conn, &dir_fh, 64 * 1024).await;
    let listed = listed.into_iter().filter(|n| n != ".meta").collect();
    let meta_fh = walk(&mut conn, &format!("{dir}/.meta")).await;
    let mut files = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for name in NAMES {
        // A file removed between the calls is absent (NOENT or STALE).
        let file = match lookup(&mut conn, &dir_fh, name).await {
            Ok(fh) => match conn.getattr(&GETATTR3args { object: fh.clone() }).await.expect("getattr") {
                Nfs3Result::Ok(attr) => read_all(&mut conn, &fh).await.map(|data| (attr.obj_attributes.size, data)),
                Nfs3Result::Err(_) => None,
            },
            Err(status) => {
                assert_eq!(status, nfsstat3::NFS3ERR_NOENT, "lookup {name}");
                None
            }
        };
        files.insert(name.to_string(), file);
        let document = match lookup(&mut conn, &meta_fh, &format!("{name}.json")).await {
            Ok(fh) => read_all(&mut conn, &fh).await.map(|data| custom_metadata(&data)),
            Err(_) => None,
        };
        metadata.insert(name.to_string(), document);
    }
    let _ = conn.unmount().await;
    Seen { listed, files, metadata }
}

/// A file's content through READ, None if it went meanwhile.
async fn read_all(conn: &mut Conn, fh: &nfs_fh3) -> Option<Vec<u8>> {
    let args = READ3args { file: fh.clone(), offset: 0, count: 1 << 20 };
    match conn.read(&args).await.expect("read call") {
        Nfs3Result::Ok(ok) => Some(ok.data.to_vec()),
        Nfs3Result::Err((status, _)) => {
            assert!(matches!(status, nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE), "READ: {status:?}");
            None
        }
    }
}

/// Waits until `seen()` shows `change`; how long that took. Fails the test
/// after 10 s, saying what was seen.
async fn shows<F, Fut>(change: Change, mut seen: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Seen>,
{
    let start = Instant::now();
    loop {
        let now = seen().await;
        if changed(&now, change) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{change:?} not seen in 10 s: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes `change` through the FUSE mount at `dir`.
fn change_through_fuse(dir: &Path, change: Change) {
    match change {
        Change::Created => std::fs::write(dir.join("new.txt"), "fresh").expect("create"),
        Change::Overwritten => std::fs::write(dir.join("keep.txt"), "newer content").expect("overwrite"),
        Change::Tagged => {
            let document = r#"{"custom_metadata": {"team": "blue"}}"#;
            assert_eq!(write_and_close_errno(&dir.join(".meta/tagged.txt.json"), document.as_bytes()), 0);
        }
        Change::Deleted => std::fs::remove_file(dir.join("gone.txt")).expect("delete"),
    }
}

/// Makes `change` with curl on the emulator, outside any mount.
fn change_with_curl(bucket: &str, change: Change) {
    match change {
        Change::Created => upload(bucket, "new.txt", b"fresh"),
        Change::Overwritten => upload(bucket, "keep.txt", b"newer content"),
        Change::Tagged => patch_metadata(bucket, "tagged.txt", "text/plain", &[("team", "blue")]),
        Change::Deleted => {
            let url = format!("{}/storage/v1/b/{bucket}/o/gone.txt", gcs_url());
            curl(&["-X", "DELETE", &url]);
        }
    }
}

#[tokio::test]
async fn changes_through_a_fuse_mount_show_in_a_watching_nfs_server_within_2_s() {
    let bucket = bucket_name("watch_fuse_to_nfs");
    seed(&bucket);
    let (watching_state, still_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let watching = NfsServer::start_with_args(watching_state.path(), &[], &caching(true));
    let still = NfsServer::start_with_args(still_state.path(), &[], &caching(false));
    let dir = format!("{PROJECT}/storage/{bucket}");
    let before = seen_through_nfs(watching.port, &dir).await;
    assert_eq!(seen_through_nfs(still.port, &dir).await, before, "both start alike");
    assert!(CHANGES.iter().all(|change| !changed(&before, *change)), "{before:?}");
    let writer = FuseMount::start(&caching(true));
    let written = writer.path(&dir);

    for change in CHANGES {
        change_through_fuse(&written, change);
        let took = shows(change, || seen_through_nfs(watching.port, &dir)).await;
        assert!(took < SOON, "{change:?} showed after {took:?}");
    }
    assert_eq!(seen_through_nfs(still.port, &dir).await, before, "without --watch, the old state for the TTL");
    // The writer watches too: its own changes come back to it as
    // notifications (five: the overwrite also deletes the old generation),
    // known already. The emulator publishes before it answers an upload,
    // so a pull may, rarely, act on one before the writer knows it.
    let own = writer.log_text();
    let notified: Vec<&str> = own.lines().filter(|l| l.contains("notification") && l.contains(&bucket)).collect();
    let count = |outcome: &str| notified.iter().filter(|l| l.contains(&format!("outcome=\"{outcome}\""))).count();
    assert!(count("known") >= 3 && count("dropped") <= 2, "{notified:#?}");
}

#[tokio::test]
async fn a_writer_outside_any_mount_shows_in_a_watching_fuse_mount_within_2_s() {
    let bucket = bucket_name("watch_curl_to_fuse");
    seed(&bucket);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let watching = FuseMount::start(&[caching(true), vec!["--metrics-addr", &metrics_addr]].concat());
    let still = FuseMount::start(&caching(false));
    let dir = format!("{PROJECT}/storage/{bucket}");
    let before = seen_through_fuse(&watching.path(&dir));
    assert_eq!(seen_through_fuse(&still.path(&dir)), before, "both start alike");
    assert!(CHANGES.iter().all(|change| !changed(&before, *change)), "{before:?}");

    for change in CHANGES {
        change_with_curl(&bucket, change);
        let took = shows(change, || async { seen_through_fuse(&watching.path(&dir)) }).await;
        assert!(took < SOON, "{change:?} showed after {took:?}\n{}", watching.log_text());
    }
    assert_eq!(seen_through_fuse(&still.path(&dir)), before, "without --watch, the old state for the TTL");
    // What was observed is measured: each change dropped what it named,
    // and how late each notification came.
    let (_, metrics) = http_get(metrics_port, "/metrics");
    // (A change a refetched listing showed first is known by the time its
    // notification comes.)
    let dropped = metric_sample(&metrics, "ciofs_watch_notifications_total", &["outcome=\"dropped\""]);
    let known = metric_sample(&metrics, "ciofs_watch_notifications_total", &["outcome=\"known\""]);
    assert!(dropped >= 1.0 && dropped + known >= 4.0, "{dropped} dropped, {known} known:\n{metrics}");
    let observed = metric_sample(&metrics, "ciofs_watch_staleness_seconds_count", &[]);
    assert!(observed >= 4.0, "{observed} staleness samples:\n{metrics}");
}

/// The subscription a mount's log names.
fn subscription_of(log: &str) -> String {
    let line = log.lines().find(|l| l.contains("watching for changes")).expect("the mount says what it watches");
    let at = line.find("subscription=").expect("a subscription") + "subscription=".len();
    line[at..].split_whitespace().next().expect("a name").to_string()
}

fn subscription_url(name: &str) -> String {
    let host = std::env::var("PUBSUB_EMULATOR_HOST").expect("PUBSUB_EMULATOR_HOST");
    format!("http://{host}/{EVENTS_PROJECT_URL}/subscriptions/{name}")
}

fn exists(url: &str) -> bool {
    sh(&format!("curl -sf -o /dev/null {url}")).status.success()
}

#[tokio::test]
async fn a_subscription_deleted_behind_the_mounts_back_is_made_again_and_the_cache_dropped_once() {
    let bucket = bucket_name("watch_gap");
    seed(&bucket);
    let mut mount = FuseMount::start(&caching(true));
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let before = seen_through_fuse(&dir);
    let subscription = subscription_of(&mount.log_text());
    let url = subscription_url(&subscription);
    assert!(exists(&url), "the mount's subscription {url}");

    // Gone, and the changes made meanwhile have no notification to come:
    // the mount is stopped while they are made, so that it cannot make its
    // subscription again before them.
    mount.pause();
    curl(&["-X", "DELETE", &url]);
    change_with_curl(&bucket, Change::Overwritten);
    change_with_curl(&bucket, Change::Deleted);
    mount.resume();
    for change in [Change::Overwritten, Change::Deleted] {
        let took = shows(change, || async { seen_through_fuse(&dir) }).await;
        assert!(took < SOON, "the gap dropped {change:?} after {took:?}\n{}", mount.log_text());
    }
    let log = mount.log_text();
    assert!(log.contains("the --watch subscription is gone: making it again"), "{log}");
    assert!(log.contains("--watch had a gap"), "{log}");
    assert!(exists(&url), "made again");
    assert_ne!(seen_through_fuse(&dir), before);

    // Watching again: the next change comes by its notification.
    change_with_curl(&bucket, Change::Created);
    let took = shows(Change::Created, || async { seen_through_fuse(&dir) }).await;
    assert!(took < SOON, "after the gap, a change showed after {took:?}");
    assert_eq!(mount.log_text().matches("--watch had a gap").count(), 1, "one gap, one drop");

    assert!(mount.terminate().success(), "{}", mount.log_text());
    assert!(!exists(&url), "the subscription is deleted at unmount");
}

#[test]
fn a_topic_that_does_not_exist_is_a_clear_error_at_mount() {
    let scratch = tempfile::tempdir().unwrap();
    let mountpoint = scratch.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let output = run(ciofs()
        .args(["mount", "--foreground", "--project", PROJECT, "--watch", "--watch-topic"])
        .arg("projects/ciofs-events/topics/no-such-topic")
        .arg(&mountpoint)
        .env("CIOFS_STATE_DIR", scratch.path().join("state")));
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--watch: no topic projects/ciofs-events/topics/no-such-topic"), "{text}");
    assert!(!is_mounted(&mountpoint), "nothing is mounted");
}

#[tokio::test]
async fn a_directory_made_or_emptied_elsewhere_shows_in_a_watching_fuse_mount_within_2_s() {
    let bucket = bucket_name("watch_dirs");
    create_bucket(&bucket);
    upload(&bucket, "top.txt", b"top");
    upload(&bucket, "old/only.txt", b"only");
    let watching = FuseMount::start(&caching(true));
    let still = FuseMount::start(&caching(false));
    let dir = format!("{PROJECT}/storage/{bucket}");
    let ls = |mount: &FuseMount, path: &str| ok(&format!("ls {}", mount.path(&format!("{dir}/{path}")).display()));
    // Both list the bucket and the directory: their listings are kept, and
    // `new/` is known absent.
    for mount in [&watching, &still] {
        assert_eq!(ls(mount, ""), "old\ntop.txt\n");
        assert_eq!(ls(mount, "old"), "only.txt\n");
        assert!(!mount.path(&format!("{dir}/new")).exists());
    }

    upload(&bucket, "new/deep/file.txt", b"deep");
    let started = Instant::now();
    wait_until("the new directory shows", Duration::from_secs(10), || {
        ls(&watching, "").contains("new\n") && ls(&watching, "new/deep") == "file.txt\n"
    });
    assert!(started.elapsed() < SOON, "a new directory showed after {:?}", started.elapsed());

    curl(&["-X", "DELETE", &format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode("old/only.txt"))]);
    let started = Instant::now();
    wait_until("the emptied directory goes", Duration::from_secs(10), || {
        !ls(&watching, "").contains("old\n") && !watching.path(&format!("{dir}/old")).exists()
    });
    assert!(started.elapsed() < SOON, "an emptied directory went after {:?}", started.elapsed());

    assert_eq!(ls(&still, ""), "old\ntop.txt\n", "without --watch, the old listing for the TTL");
    assert!(!still.path(&format!("{dir}/new")).exists(), "and the new directory still absent");
}

/// Uploads `data` as `bucket/name` with curl; its generation.
fn upload_generation(bucket: &str, name: &str, data: &[u8]) -> String {
    upload(bucket, name, data);
    object_json(bucket, name)["generation"].as_str().expect("a generation").to_string()
}

/// Waits until the mount's log says it acted on the notification of
/// `generation`.
fn acted_on(mount: &FuseMount, generation: &str) {
    wait_until(&format!("the notification of generation {generation}"), Duration::from_secs(10), || {
        mount.log_text().lines().any(|l| l.contains("notification") && l.contains(&format!("generation={generation}")))
    });
}

#[tokio::test]
async fn an_answer_fetched_before_a_change_is_not_kept_after_it() {
    use std::os::unix::fs::MetadataExt;
    let bucket = bucket_name("watch_late_answer");
    create_bucket(&bucket);
    upload(&bucket, "a.txt", b"old");
    let proxy = common::proxy::RecordingProxy::start(&gcs_url());
    let mount = FuseMount::start_with_env(&caching(true), &[("STORAGE_EMULATOR_HOST", proxy.url())]);
    let file = std::fs::File::open(mount.path(&format!("{PROJECT}/storage/{bucket}/a.txt"))).expect("open");
    assert_eq!(file.metadata().unwrap().size(), 3);

    // A change drops the kernel's attributes of the open file: the next
    // fstat asks ciofs, which asks Cloud Storage, whose answer (v2) is
    // held back while another change comes and is notified.
    let second = upload_generation(&bucket, "a.txt", b"v2");
    acted_on(&mount, &second);
    let asked = || proxy.sent().matches(&format!("/b/{bucket}/o/a.txt")).count();
    let asked_before = asked();
    proxy.hold_answers(true);
    let fstat = loop {
        let held = file.try_clone().unwrap();
        let fstat = std::thread::spawn(move || held.metadata().unwrap().size());
        wait_until("ciofs asks for the object", Duration::from_secs(10), || {
            asked() > asked_before || fstat.is_finished()
        });
        if asked() > asked_before {
            break fstat;
        }
        // The kernel answered before it was told to drop what it held
        // (that goes on a thread of its own): again.
        assert_eq!(fstat.join().unwrap(), 3);
        std::thread::sleep(Duration::from_millis(50));
    };
    let third = upload_generation(&bucket, "a.txt", b"three");
    acted_on(&mount, &third);
    proxy.hold_answers(false);
    assert_eq!(fstat.join().unwrap(), 2, "the answer from before the third");

    // Neither ciofs nor the kernel keeps what that answer said: the next
    // fstat has the third's size.
    let started = Instant::now();
    wait_until("the kernel has the third's size", Duration::from_secs(10), || file.metadata().unwrap().size() == 5);
    assert!(started.elapsed() < SOON, "the third's size after {:?}", started.elapsed());
}
