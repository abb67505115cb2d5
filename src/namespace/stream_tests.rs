//! `_stream` logic against the in-memory Pub/Sub: what is acked when, what
//! is given back, what reads answer. That it works on Pub/Sub itself is for
//! the tests through a mount (tests/fuse_pubsub.rs, tests/nfs_pubsub.rs).

use std::sync::Arc;

use bytes::Bytes;
use ciofs_backends::memory::{MemoryPubSub, PubSubOp};
use ciofs_backends::pubsub::{OutgoingMessage, PubSub};
use ciofs_frontends::{Fh, Ino, OpenFlags, Vfs};

use super::Namespace;
use super::tests::walk;

const STREAM: &str = "p/pubsub/topics/topic/subscriptions/sub/_stream";

fn fixture() -> (Arc<MemoryPubSub>, Namespace) {
    super::tests::pubsub_namespace()
}

/// Publishes `m<i>` for each i of `numbers`.
async fn publish(pubsub: &MemoryPubSub, numbers: std::ops::Range<usize>) {
    let messages = numbers.map(|i| OutgoingMessage { data: Bytes::from(format!("m{i}")), ..Default::default() });
    pubsub.publish("p", "topic", messages.collect()).await.unwrap();
}

fn data_of(line: &[u8]) -> String {
    let line = String::from_utf8_lossy(line);
    line.rsplit(": ").next().unwrap_or_default().trim_end().to_string()
}

fn acked(pubsub: &MemoryPubSub) -> Vec<String> {
    pubsub.acked("p", "sub").iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect()
}

async fn open(ns: &Namespace, path: &str) -> (Ino, Fh) {
    let ino = walk(ns, path).await;
    let opened = ns.open(ino, OpenFlags::default()).await.unwrap();
    assert!(opened.stream, "the kernel must not read ahead of the reader");
    (ino, opened.fh)
}

#[tokio::test]
async fn each_read_is_one_line_acked_only_once_the_next_read_or_close_comes() {
    let (pubsub, ns) = fixture();
    publish(&pubsub, 0..5).await;
    let (ino, fh) = open(&ns, STREAM).await;
    assert_eq!(pubsub.calls.get(PubSubOp::Pull), 0, "open pulls nothing");
    let (first, eof) = ns.read(ino, Some(fh), 0, 128 * 1024).await.unwrap();
    assert!(!eof);
    assert_eq!(data_of(&first), "m0");
    assert!(first.starts_with(b"[") && first.ends_with(b"\n") && first.iter().filter(|b| **b == b'\n').count() == 1);
    assert!(acked(&pubsub).is_empty(), "m0 is not acked before the reader asks again");
    let (second, _) = ns.read(ino, Some(fh), 0, 128 * 1024).await.unwrap();
    assert_eq!(data_of(&second), "m1");
    let (third, _) = ns.read(ino, Some(fh), 0, 128 * 1024).await.unwrap();
    assert_eq!(data_of(&third), "m2");
    ns.release(ino, fh).await.unwrap();
    assert_eq!(acked(&pubsub), ["m0", "m1", "m2"]);
    let backlog: Vec<String> =
        pubsub.backlog("p", "sub").iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect();
    assert_eq!(backlog, ["m3", "m4"], "pulled ahead, given back at close, first in line");
    assert_eq!(pubsub.calls.get(PubSubOp::Acknowledge), 1, "acks are batched");
}

#[tokio::test]
async fn a_line_read_in_part_is_given_back_whole() {
    let (pubsub, ns) = fixture();
    publish(&pubsub, 0..1).await;
    let (ino, fh) = open(&ns, STREAM).await;
    let (start, _) = ns.read(ino, Some(fh), 0, 5).await.unwrap();
    assert_eq!(start.len(), 5);
    ns.release(ino, fh).await.unwrap();
    assert!(acked(&pubsub).is_empty());
    assert_eq!(pubsub.backlog("p", "sub").len(), 1);

    let (ino, fh) = open(&ns, STREAM).await;
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        line.extend_from_slice(&ns.read(ino, Some(fh), 0, 7).await.unwrap().0);
    }
    assert!(line.starts_with(&start), "the same line again");
    ns.release(ino, fh).await.unwrap();
    assert_eq!(acked(&pubsub), ["m0"]);
}

#[tokio::test]
async fn an_empty_subscription_answers_eintr_and_a_later_message_still_comes() {
    let (pubsub, ns) = fixture();
    let (ino, fh) = open(&ns, &format!("{STREAM}.jsonl")).await;
    let started = std::time::Instant::now();
    let error = ns.read(ino, Some(fh), 0, 4096).await.unwrap_err();
    assert_eq!(error.errno(), libc::EINTR);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    publish(&pubsub, 0..1).await;
    let (line, _) = ns.read(ino, Some(fh), 0, 4096).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(json["data"], "m0");
    ns.release(ino, fh).await.unwrap();
    assert_eq!(acked(&pubsub), ["m0"]);
}

#[tokio::test]
async fn a_deleted_subscription_fails_open_and_read() {
    let (pubsub, ns) = fixture();
    let ino = walk(&ns, STREAM).await;
    let opened = ns.open(ino, OpenFlags::default()).await.unwrap();
    pubsub.remove_subscription("p", "sub");
    assert_eq!(ns.read(ino, Some(opened.fh), 0, 4096).await.unwrap_err().errno(), libc::ENOENT);
    ns.release(ino, opened.fh).await.unwrap();
}

#[tokio::test]
async fn over_nfs_the_log_grows_and_acks_what_was_read_past() {
    let (pubsub, ns) = fixture();
    let ino = walk(&ns, STREAM).await;
    assert_eq!(ns.getattr(ino).await.unwrap().size, 0, "not followed: empty, nothing pulled");
    assert_eq!(pubsub.calls.get(PubSubOp::Pull), 0);
    publish(&pubsub, 0..3).await;
    let (first, _) = ns.read(ino, None, 0, 1 << 20).await.unwrap();
    let lines: Vec<String> = first.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(data_of).collect();
    assert_eq!(lines, ["m0", "m1", "m2"]);
    assert_eq!(ns.getattr(ino).await.unwrap().size, first.len() as u64);
    assert_eq!(acked(&pubsub), ["m0", "m1", "m2"], "acked once a reply carried them whole");
    // A re-read of the same range serves the same bytes.
    assert_eq!(ns.read(ino, None, 0, 1 << 20).await.unwrap().0, first);
    publish(&pubsub, 3..4).await;
    let size = ns.getattr(ino).await.unwrap().size;
    assert!(size > first.len() as u64, "the size grows while followed");
    let (next, _) = ns.read(ino, None, first.len() as u64, 5).await.unwrap();
    assert_eq!(next.len(), 5);
    assert_eq!(acked(&pubsub), ["m0", "m1", "m2"], "m3 is carried in part only");
    let (rest, _) = ns.read(ino, None, first.len() as u64 + 5, 1 << 20).await.unwrap();
    assert_eq!(data_of(&[next, rest].concat()), "m3");
    assert_eq!(acked(&pubsub), ["m0", "m1", "m2", "m3"]);
    assert_eq!(ns.read(ino, None, size, 4096).await.unwrap().0.len(), 0, "nothing more");
}

/// The data of the lines a READ from the middle of the log carried whole:
/// those after its first newline, or all when it starts at a line's start
/// (`[`, which only starts a line: the data here has none).
fn whole_lines_in(bytes: &[u8]) -> Vec<String> {
    let first_whole =
        if bytes.starts_with(b"[") { Some(0) } else { bytes.iter().position(|b| *b == b'\n').map(|at| at + 1) };
    let start = first_whole.unwrap_or(bytes.len());
    bytes[start..].split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(data_of).collect()
}

/// A READ that starts past lines (`tail -n`, `dd skip=`, readahead, a
/// second reader) acks none of them: a line is acked once the replies
/// carried all its bytes, in one READ or several, in any order.
#[tokio::test]
async fn over_nfs_a_line_is_acked_only_once_replies_carried_all_of_it() {
    let (pubsub, ns) = fixture();
    publish(&pubsub, 0..6).await;
    let ino = walk(&ns, STREAM).await;
    let (nothing, _) = ns.read(ino, None, 1 << 40, 4096).await.unwrap();
    assert!(nothing.is_empty(), "a READ past the end starts the log and carries nothing");
    let size = ns.getattr(ino).await.unwrap().size;
    let (tail, _) = ns.read(ino, None, size / 2, 1 << 20).await.unwrap();
    let carried = whole_lines_in(&tail);
    assert!(!carried.is_empty() && carried.len() < 6, "{carried:?}");
    assert_eq!(acked(&pubsub), carried, "only the lines the reply carried whole");
    // The first half, in two READs: every line is then carried whole.
    ns.read(ino, None, 0, 10).await.unwrap();
    ns.read(ino, None, 10, (size / 2 - 10) as u32).await.unwrap();
    let mut all = acked(&pubsub);
    all.sort();
    assert_eq!(all, ["m0", "m1", "m2", "m3", "m4", "m5"]);
}

/// Lines a reader skipped stay unacked and go back to the subscription at
/// once (deadline 0) when the log resets.
#[tokio::test]
async fn over_nfs_skipped_lines_go_back_when_the_log_resets() {
    let (pubsub, ns) = fixture();
    publish(&pubsub, 0..6).await;
    let ino = walk(&ns, STREAM).await;
    ns.read(ino, None, 1 << 40, 4096).await.unwrap();
    let size = ns.getattr(ino).await.unwrap().size;
    let (tail, _) = ns.read(ino, None, size / 2, 1 << 20).await.unwrap();
    let carried = whole_lines_in(&tail);
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(31)).await;
    ns.pubsub.tend_stream_logs().await;
    let back: Vec<String> =
        pubsub.backlog("p", "sub").iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect();
    let mut all: Vec<String> = back.iter().chain(&carried).cloned().collect();
    all.sort();
    assert_eq!(all, ["m0", "m1", "m2", "m3", "m4", "m5"], "given back: {back:?}, carried: {carried:?}");
    assert_eq!(acked(&pubsub), carried);
}

#[tokio::test]
async fn over_nfs_an_idle_log_gives_back_its_unread_lines() {
    let (pubsub, ns) = fixture();
    publish(&pubsub, 0..2).await;
    let ino = walk(&ns, STREAM).await;
    let (first, _) = ns.read(ino, None, 0, 30).await.unwrap();
    assert_eq!(first.len(), 30, "a part of the first line");
    assert!(ns.getattr(ino).await.unwrap().size > 30, "followed: both lines held");
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(31)).await;
    ns.pubsub.tend_stream_logs().await;
    assert_eq!(pubsub.backlog("p", "sub").len(), 2, "both back in the queue");
    assert!(acked(&pubsub).is_empty());
    assert_eq!(ns.getattr(ino).await.unwrap().size, 0, "the log starts afresh");
}
