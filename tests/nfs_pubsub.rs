//! Pub/Sub through `ciofs serve-nfs` and a userspace NFSv3 client:
//! `_message` publishes what was written once the writes have been idle
//! (NFS has no close), a topic's config.json reads with its exact size,
//! MKDIR makes a subscription, `_stream` is a log that grows while it is
//! read. Checked with curl on the emulator.

mod common;

use std::time::Duration;

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{GETATTR3args, MKDIR3args, sattr3};

/// A topic with a subscription (made with curl) and an NFS server.
struct Served {
    topic: String,
    subscription: String,
    // Stopped before its state directory goes.
    _server: NfsServer,
    _state: tempfile::TempDir,
}

/// `Served`, and a client connected to the server.
async fn serve(test: &str) -> (Served, Conn) {
    let topic = pubsub_name(test);
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let conn = connect(server.port).await;
    (Served { topic, subscription, _server: server, _state: state }, conn)
}

#[tokio::test]
async fn message_written_over_nfs_is_published_after_idle() {
    let (served, mut conn) = serve("nfs_ps").await;
    let (topic, subscription) = (served.topic.clone(), served.subscription.clone());

    let topic_fh = walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}")).await;
    let (names, _) = list(&mut conn, &topic_fh, 8192).await;
    assert_eq!(names, ["config.json", "_message", "_messages", "subscriptions"]);
    let config = lookup(&mut conn, &topic_fh, "config.json").await.unwrap();
    let attr = conn.getattr(&GETATTR3args { object: config.clone() }).await.unwrap().unwrap().obj_attributes;
    let (document, eof) = read(&mut conn, &config, 0, 1 << 20).await;
    assert!(eof);
    assert_eq!(attr.size as usize, document.len());

    let message = lookup(&mut conn, &topic_fh, "_message").await.unwrap();
    write(&mut conn, &message, 0, b"over nfs").await;
    let got = tokio::task::spawn_blocking(move || ps_pull(&subscription, 1, Duration::from_secs(15))).await.unwrap();
    assert_eq!(got, vec![b"over nfs".to_vec()]);

    let subscriptions = lookup(&mut conn, &topic_fh, "subscriptions").await.unwrap();
    let made = format!("{topic}-made");
    let mkdir = MKDIR3args { where_: dirop(&subscriptions, &made), attributes: sattr3::default() };
    conn.mkdir(&mkdir).await.expect("mkdir call").unwrap();
    let path = format!("/subscriptions/{made}");
    let created = tokio::task::spawn_blocking(move || ps_get_soon(&path)).await.unwrap();
    assert_eq!(created["topic"], format!("projects/{PROJECT}/topics/{topic}"));
}

async fn size(conn: &mut Conn, fh: &nfs3_client::nfs3_types::nfs3::nfs_fh3) -> u64 {
    conn.getattr(&GETATTR3args { object: fh.clone() }).await.unwrap().unwrap().obj_attributes.size
}

#[tokio::test]
async fn stream_over_nfs_is_a_log_that_grows_while_it_is_read() {
    let (served, mut conn) = serve("nfs_stream").await;
    let (topic, subscription) = (served.topic.clone(), served.subscription.clone());
    let stream =
        walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream")).await;
    assert_eq!(size(&mut conn, &stream).await, 0, "not read yet: empty, nothing consumed");

    ps_publish(&topic, &[b"one", b"two", b"three"]);
    let (first, _) = read(&mut conn, &stream, 0, 1 << 20).await;
    assert_eq!(stream_data(&String::from_utf8_lossy(&first)), ["one", "two", "three"]);
    assert_eq!(size(&mut conn, &stream).await, first.len() as u64);
    let held = tokio::task::spawn_blocking({
        let subscription = subscription.clone();
        move || ps_pull(&subscription, 1, Duration::from_secs(1))
    });
    assert!(held.await.unwrap().is_empty(), "what the log holds is not delivered to others");

    // Like `tail -f`: poll the size, read what was added.
    ps_publish(&topic, &[b"four", b"five"]);
    let mut grown = first.len() as u64;
    for _ in 0..50 {
        grown = size(&mut conn, &stream).await;
        if grown > first.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grown > first.len() as u64, "the size grew");
    let mut rest = Vec::new();
    let mut offset = first.len() as u64;
    while rest.len() < 2 {
        let (bytes, _) = read(&mut conn, &stream, offset, 1 << 20).await;
        offset += bytes.len() as u64;
        rest.extend(stream_data(&String::from_utf8_lossy(&bytes)));
    }
    assert_eq!(rest, ["four", "five"]);
    // Reading the same range again gives the same bytes.
    assert_eq!(read(&mut conn, &stream, 0, first.len() as u32).await.0, first);
    let (end, eof) = read(&mut conn, &stream, offset, 4096).await;
    assert!(end.is_empty() && eof, "nothing more for now");
}

/// Over NFS (no close) `_message` publishes what was written once the
/// writes have been idle: each write publishes once, and a client that goes
/// on writing the same file (the next bytes at the next offset) publishes
/// only those, not again what came before (nor zeros in its place).
#[tokio::test]
async fn over_nfs_each_idle_publish_sends_only_the_new_bytes() {
    let (served, mut conn) = serve("nfs_ps_once").await;
    let (topic, subscription) = (served.topic.clone(), served.subscription.clone());
    let topic_fh = walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}")).await;
    let pull = |want: usize| {
        let subscription = subscription.clone();
        tokio::task::spawn_blocking(move || ps_pull(&subscription, want, Duration::from_secs(6)))
    };
    let message = lookup(&mut conn, &topic_fh, "_message").await.unwrap();
    write(&mut conn, &message, 0, b"first\n").await;
    assert_eq!(pull(2).await.unwrap(), [b"first\n".to_vec()]);
    write(&mut conn, &message, 6, b"second\n").await;
    assert_eq!(pull(2).await.unwrap(), [b"second\n".to_vec()], "only the bytes written since");

    let messages = lookup(&mut conn, &topic_fh, "_messages").await.unwrap();
    write(&mut conn, &messages, 0, b"a\nb\n").await;
    let mut got = pull(3).await.unwrap();
    got.sort();
    assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    write(&mut conn, &messages, 4, b"c\n").await;
    assert_eq!(pull(3).await.unwrap(), [b"c".to_vec()], "each line once");
}

/// The size of a followed log once it stopped growing (all that was
/// published is in it).
async fn settled_size(conn: &mut Conn, fh: &nfs3_client::nfs3_types::nfs3::nfs_fh3) -> u64 {
    let (mut last, mut same) = (0, 0);
    for _ in 0..100 {
        let now = size(conn, fh).await;
        same = if now == last && now > 0 { same + 1 } else { 0 };
        if same == 5 {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log did not stop growing: {last}");
}

/// The data of the lines a READ from the middle of the log carried whole:
/// those after its first newline, or all when it starts at a line's start
/// (`[`, which only starts a line: the data here has none).
fn whole_lines_in(bytes: &[u8]) -> Vec<String> {
    let first_whole =
        if bytes.starts_with(b"[") { Some(0) } else { bytes.iter().position(|b| *b == b'\n').map(|at| at + 1) };
    let start = first_whole.unwrap_or(bytes.len());
    stream_data(&String::from_utf8_lossy(&bytes[start..]))
}

/// A client that reads only the second half of the log (`tail -n`, `dd
/// skip=`) acks only the lines its READ replies carried whole; when the log
/// resets (nobody read or stat'ed it for 30 s) the others go back to the
/// subscription, and another consumer (curl) gets exactly those.
#[tokio::test]
async fn over_nfs_lines_nobody_read_go_back_to_the_subscription() {
    let (served, mut conn) = serve("nfs_skip").await;
    let (topic, subscription) = (served.topic.clone(), served.subscription.clone());
    let numbers: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    ps_publish(&topic, &numbers.iter().map(|n| n.as_bytes()).collect::<Vec<_>>());
    let stream =
        walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream")).await;
    // A READ past the end starts the log and carries nothing.
    let (nothing, _) = read(&mut conn, &stream, 1 << 40, 4096).await;
    assert!(nothing.is_empty());
    let size = settled_size(&mut conn, &stream).await;
    let (tail, _) = read(&mut conn, &stream, size / 2, 1 << 20).await;
    let carried = whole_lines_in(&tail);
    assert!(!carried.is_empty() && carried.len() < numbers.len(), "{carried:?}");

    tokio::time::sleep(Duration::from_secs(33)).await;
    let got = tokio::task::spawn_blocking(move || ps_pull(&subscription, 10, Duration::from_secs(10))).await.unwrap();
    let mut got: Vec<String> = got.into_iter().map(|m| String::from_utf8(m).unwrap()).collect();
    got.sort();
    let mut unread: Vec<String> = numbers.iter().filter(|n| !carried.contains(n)).cloned().collect();
    unread.sort();
    assert_eq!(got, unread, "what was not read comes again, and only that (carried: {carried:?})");
}

/// Lease renewal does not wait behind uploads: while an upload hangs on a
/// frozen Cloud Storage emulator, the lines a followed log holds stay
/// leased past their first lease (60 s): another consumer gets none. The
/// follower stops polling at 40 s, so that the log itself does not pull
/// back what a lapsed lease would free, and is checked before the log goes
/// idle (30 s after its last use).
#[tokio::test]
async fn over_nfs_held_lines_stay_leased_while_an_upload_hangs() {
    let gcs = PrivateGcs::start();
    let bucket = format!("lease-{}", std::process::id());
    post_json(&format!("{}/storage/v1/b?project={PROJECT}", gcs.url()), serde_json::json!({"name": bucket}));
    let topic = pubsub_name("nfs_lease");
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    ps_publish(&topic, &[b"held one", b"held two"]);
    let state = tempfile::tempdir().unwrap();
    let gcs_host = gcs.url();
    let server = NfsServer::start_with_env(state.path(), &[("STORAGE_EMULATOR_HOST", &gcs_host)]);
    let mut conn = connect(server.port).await;

    let stream =
        walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream")).await;
    // Pulled and leased now.
    let leased = std::time::Instant::now();
    read(&mut conn, &stream, 1 << 40, 4096).await;
    assert!(settled_size(&mut conn, &stream).await > 0);

    // An upload that hangs: written, then the emulator frozen before the
    // idle second passes.
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
    let create = nfs3_client::nfs3_types::nfs3::CREATE3args {
        where_: dirop(&dir, "stuck.bin"),
        how: nfs3_client::nfs3_types::nfs3::createhow3::UNCHECKED(sattr3::default()),
    };
    let file = conn.create(&create).await.expect("create call").unwrap().obj.unwrap();
    write(&mut conn, &file, 0, b"an upload that will hang").await;
    gcs.freeze();

    // A follower polls the size (`tail -f`): the log is in use, not idle.
    while leased.elapsed() < Duration::from_secs(39) {
        size(&mut conn, &stream).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(62).saturating_sub(leased.elapsed())).await;
    let got = tokio::task::spawn_blocking(move || ps_pull(&subscription, 2, Duration::from_secs(3))).await.unwrap();
    assert!(got.is_empty(), "the lease lapsed: another consumer got {got:?}");
    drop(server);
}
