//! Publishing through `_message` and `_messages` against the in-memory
//! Pub/Sub: what each flush of a handle (FUSE) and each idle apply (NFS)
//! publishes, and what a failed publish leaves. That it works on Pub/Sub
//! itself is for the tests through a mount (tests/fuse_pubsub.rs,
//! tests/nfs_pubsub.rs).

use std::sync::Arc;
use std::time::Duration;

use ciofs_backends::ErrorKind;
use ciofs_backends::memory::{MemoryPubSub, PubSubOp};
use ciofs_frontends::{Fh, Ino, OpenFlags, Vfs};

use super::Namespace;
use super::tests::walk;

const TOPIC: &str = "p/pubsub/topics/topic";

fn fixture() -> (Arc<MemoryPubSub>, Namespace) {
    super::tests::pubsub_namespace()
}

/// What the subscription holds, in order, as text.
fn published(pubsub: &MemoryPubSub) -> Vec<String> {
    pubsub.backlog("p", "sub").iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect()
}

async fn open_for_write(ns: &Namespace, file: &str) -> (Ino, Fh) {
    let ino = walk(ns, &format!("{TOPIC}/{file}")).await;
    let flags = OpenFlags { write: true, truncate: true, append: false };
    (ino, ns.open(ino, flags).await.unwrap().fh)
}

/// Writes `data` at `*offset` through the handle and moves the offset on,
/// as the kernel does for a file descriptor.
async fn write(ns: &Namespace, (ino, fh): (Ino, Fh), offset: &mut u64, data: &[u8]) {
    ns.write(ino, Some(fh), *offset, data).await.unwrap();
    *offset += data.len() as u64;
}

#[tokio::test]
async fn each_flush_of_a_handle_publishes_only_what_was_written_since_the_last() {
    for (file, want) in [("_messages", ["a", "b", "c"]), ("_message", ["a\n", "b\n", "c\n"])] {
        let (pubsub, ns) = fixture();
        let handle = open_for_write(&ns, file).await;
        let mut offset = 0;
        write(&ns, handle, &mut offset, b"a\n").await;
        ns.flush(handle.0, handle.1).await.unwrap();
        write(&ns, handle, &mut offset, b"b\n").await;
        ns.flush(handle.0, handle.1).await.unwrap();
        // Nothing new: nothing published.
        ns.flush(handle.0, handle.1).await.unwrap();
        write(&ns, handle, &mut offset, b"c\n").await;
        ns.flush(handle.0, handle.1).await.unwrap();
        ns.release(handle.0, handle.1).await.unwrap();
        assert_eq!(published(&pubsub), want, "{file}");
        assert_eq!(pubsub.calls.get(PubSubOp::Publish), 3, "{file}: one publish per flush with news");
    }
}

/// A publish that failed (or whose answer was lost: published, yet
/// answered with an error) fails that flush; its bytes are over, and a
/// later flush sends only what was written after it.
#[tokio::test]
async fn a_failed_or_lost_publish_is_not_sent_again_by_a_later_flush() {
    for lost in [false, true] {
        let (pubsub, ns) = fixture();
        let handle = open_for_write(&ns, "_messages").await;
        let mut offset = 0;
        write(&ns, handle, &mut offset, b"before\n").await;
        ns.flush(handle.0, handle.1).await.unwrap();
        match lost {
            true => pubsub.lose_next_publish_answers(1),
            false => pubsub.fail_next(PubSubOp::Publish, 1, ErrorKind::Unavailable),
        }
        write(&ns, handle, &mut offset, b"failed\n").await;
        assert_eq!(ns.flush(handle.0, handle.1).await.unwrap_err().errno(), libc::EIO);
        write(&ns, handle, &mut offset, b"after\n").await;
        ns.flush(handle.0, handle.1).await.unwrap();
        ns.release(handle.0, handle.1).await.unwrap();
        let want: &[&str] = if lost { &["before", "failed", "after"] } else { &["before", "after"] };
        assert_eq!(published(&pubsub), want, "answer lost: {lost}");
    }
}

/// Over NFS (no handle) what was written is published once idle; a client
/// that goes on writing at the next offsets publishes only the new bytes,
/// and a failed publish is not tried again at the next idle time (it may
/// have been published: its answer may have been lost).
#[tokio::test]
async fn over_nfs_each_idle_apply_publishes_only_the_new_bytes_once() {
    let (pubsub, ns) = fixture();
    let ino = walk(&ns, &format!("{TOPIC}/_messages")).await;
    ns.write(ino, None, 0, b"a\n").await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    ns.write(ino, None, 2, b"b\n").await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(published(&pubsub), ["a", "b"]);

    pubsub.lose_next_publish_answers(1);
    ns.write(ino, None, 4, b"c\n").await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    ns.commit_idle(Duration::ZERO).await;
    ns.write(ino, None, 6, b"d\n").await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(published(&pubsub), ["a", "b", "c", "d"], "c once, though its answer was lost");
    let errors = String::from_utf8_lossy(&ns.cx.error_log.render().0).to_string();
    assert!(errors.contains("topic/_messages"), "the failure is reported: {errors}");
}

/// Writes `data` into a new file `name` of directory `dir` and closes it.
async fn put(ns: &Namespace, dir: &str, name: &str, data: &[u8]) -> ciofs_frontends::VfsResult<()> {
    let parent = walk(ns, dir).await;
    let (attr, opened) = ns.create(parent, name, 0o644).await?;
    ns.write(attr.ino, Some(opened.fh), 0, data).await?;
    let flushed = ns.flush(attr.ino, opened.fh).await;
    ns.release(attr.ino, opened.fh).await?;
    flushed
}

async fn mkdir(ns: &Namespace, dir: &str, name: &str) {
    let parent = walk(ns, dir).await;
    ns.mkdir(parent, name, 0o755).await.unwrap_or_else(|e| panic!("mkdir {dir}/{name}: {e}"));
}

/// A topic made by `mkdir` waits for its config.json and is created with
/// its settings (labels, retention), in one call; until then it lists and
/// reads like any topic.
#[tokio::test]
async fn a_made_topic_is_created_with_the_settings_of_its_config() {
    let (pubsub, ns) = fixture();
    mkdir(&ns, "p/pubsub/topics", "made").await;
    assert!(pubsub.topic("p", "made").is_none(), "not created at mkdir");
    let listed = ns.readdir(walk(&ns, "p/pubsub/topics").await, None, 0, 100).await.unwrap();
    assert!(listed.entries.iter().any(|e| e.name == "made"), "listed while pending");
    walk(&ns, "p/pubsub/topics/made/subscriptions").await;
    let config = br#"{"labels": {"team": "data"}, "message_retention_duration": "3600s"}"#;
    put(&ns, "p/pubsub/topics/made", "config.json", config).await.unwrap();
    let made = pubsub.topic("p", "made").expect("created at its config.json");
    assert_eq!(made.settings.labels, [("team".to_string(), "data".to_string())].into());
    assert_eq!(made.settings.message_retention_duration, Some(Duration::from_secs(3600)));
    assert_eq!(pubsub.calls.get(PubSubOp::UpdateTopic), 0, "created with them, not updated");
}

/// A topic nobody gives settings is created with defaults once its wait is
/// over, or when the process ends (settle); one removed while pending is
/// never created, nor are its pending subscriptions.
#[tokio::test]
async fn a_made_topic_without_settings_is_created_at_settle_and_a_removed_one_never() {
    let (pubsub, ns) = fixture();
    mkdir(&ns, "p/pubsub/topics", "plain").await;
    mkdir(&ns, "p/pubsub/topics", "gone").await;
    mkdir(&ns, "p/pubsub/topics/gone/subscriptions", "gone-sub").await;
    let topics = walk(&ns, "p/pubsub/topics").await;
    ns.rmdir(topics, "gone").await.unwrap();
    assert!(ns.settle().await.is_empty());
    assert_eq!(pubsub.topic("p", "plain").expect("created at settle").settings, Default::default());
    assert!(pubsub.topic("p", "gone").is_none() && pubsub.subscription("p", "gone-sub").is_none());
}

/// A subscription needs its topic, and so does a publish: both create a
/// pending topic first. A publish creates the topic's pending
/// subscriptions too, which would otherwise miss the message.
#[tokio::test]
async fn a_subscription_or_a_publish_creates_its_pending_topic_first() {
    let (pubsub, ns) = fixture();
    mkdir(&ns, "p/pubsub/topics", "first").await;
    mkdir(&ns, "p/pubsub/topics/first/subscriptions", "first-sub").await;
    put(&ns, "p/pubsub/topics/first/subscriptions/first-sub", "config.json", br#"{"ack_deadline_seconds": 20}"#)
        .await
        .unwrap();
    assert!(pubsub.topic("p", "first").is_some(), "made for its subscription");
    assert_eq!(pubsub.subscription("p", "first-sub").unwrap().settings.ack_deadline_seconds, 20);

    mkdir(&ns, "p/pubsub/topics", "second").await;
    mkdir(&ns, "p/pubsub/topics/second/subscriptions", "second-sub").await;
    put(&ns, "p/pubsub/topics/second", "_message", b"hello").await.unwrap();
    assert!(pubsub.topic("p", "second").is_some() && pubsub.subscription("p", "second-sub").is_some());
    let got: Vec<_> = pubsub.backlog("p", "second-sub").into_iter().map(|m| m.data).collect();
    assert_eq!(got, [bytes::Bytes::from_static(b"hello")]);
}
