//! Pub/Sub through a real FUSE mount with real tools: topics and
//! subscriptions as directories, `_message` and `_messages` publishing,
//! config edits, mkdir/rmdir; every effect checked with curl on the
//! emulator's REST API (a client that is not ciofs).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

struct Fixture {
    topic: String,
    subscription: String,
    mount: FuseMount,
}

impl Fixture {
    /// A topic with one subscription, made with curl, and a mount.
    fn new(test: &str) -> Self {
        let topic = pubsub_name(test);
        let subscription = format!("{topic}-sub");
        ps_create_topic(&topic);
        ps_create_subscription(&subscription, &topic);
        Fixture { topic, subscription, mount: FuseMount::start(&[]) }
    }

    fn topic_path(&self, relative: &str) -> PathBuf {
        self.mount.path(&format!("{PROJECT}/pubsub/topics/{}/{relative}", self.topic))
    }

    /// The topic's directory, as a shell word.
    fn dir(&self) -> String {
        self.topic_path("").display().to_string().trim_end_matches('/').to_string()
    }

    fn read_json(&self, relative: &str) -> Value {
        let text = std::fs::read(self.topic_path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }
}

#[test]
fn topics_and_subscriptions_are_directories_of_documents() {
    let f = Fixture::new("ps_read");
    let pubsub = f.mount.path(&format!("{PROJECT}/pubsub")).display().to_string();
    assert_eq!(ok(&format!("ls -f {pubsub}")), ".meta\ntopics\n");
    assert!(ok(&format!("ls {pubsub}/topics")).lines().any(|l| l == f.topic));
    assert_eq!(ok(&format!("ls -f {}", f.dir())), "config.json\n_message\n_messages\nsubscriptions\n");
    assert_eq!(ok(&format!("ls {}/subscriptions", f.dir())), format!("{}\n", f.subscription));
    let sub = format!("subscriptions/{}", f.subscription);
    assert_eq!(ok(&format!("ls -f {}/{sub}", f.dir())), "config.json\n_stream\n_stream.jsonl\n");

    let topic = f.read_json("config.json");
    assert_eq!((&topic["version"], &topic["type"]), (&"1".into(), &"pubsub-topic-config".into()));
    let config = f.read_json(&format!("{sub}/config.json"));
    assert_eq!(config["type"], "pubsub-subscription-config");
    assert_eq!(config["ack_deadline_seconds"], 10);
    assert_eq!(config["topic"], f.topic.as_str());
    let quotas: Value =
        serde_json::from_slice(&std::fs::read(format!("{pubsub}/.meta/_quotas.json")).unwrap()).unwrap();
    assert_eq!(quotas["type"], "pubsub-quotas");

    // Exact sizes; `_message` and `_stream` are empty (tar c passes them).
    for file in ["config.json".to_string(), format!("{sub}/config.json")] {
        let path = f.topic_path(&file);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), std::fs::read(&path).unwrap().len() as u64, "{file}");
    }
    assert_eq!(std::fs::metadata(f.topic_path("_message")).unwrap().len(), 0);
    // Streams are read-only; tar reads no empty file that all may read.
    let modes = ok(&format!("cd {} && stat -c %a _message {sub}/_stream {sub}/_stream.jsonl", f.dir()));
    assert_eq!(modes, "644\n444\n444\n");
    assert_eq!(std::fs::read(f.topic_path("_message")).unwrap(), b"");
    let archive = ok(&format!("timeout 20 tar cf - -C {pubsub} topics/{} | tar tf -", f.topic));
    assert!(archive.contains("_message") && archive.contains("_stream"), "{archive}");
}

#[test]
fn writing_message_publishes_exactly_the_bytes_written() {
    let f = Fixture::new("ps_publish");
    ok(&format!("/bin/echo hello > {}/_message", f.dir()));
    assert_eq!(write_and_close_errno(&f.topic_path("_message"), b"second\0binary"), 0);
    let got = ps_pull(&f.subscription, 2, Duration::from_secs(10));
    assert_eq!(got, vec![b"hello\n".to_vec(), b"second\0binary".to_vec()]);
    // An empty write publishes nothing.
    ok(&format!(": > {}/_message", f.dir()));
    assert_eq!(write_and_close_errno(&f.topic_path("_message"), b""), 0);
    ps_publish(&f.topic, &[b"marker"]);
    assert_eq!(ps_pull(&f.subscription, 1, Duration::from_secs(10)), vec![b"marker".to_vec()]);
    // The file still reads as empty.
    assert_eq!(std::fs::read(f.topic_path("_message")).unwrap(), b"");
}

#[test]
fn messages_publishes_one_message_per_line() {
    let f = Fixture::new("ps_bulk");
    let lines: String = (0..2500).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    assert_eq!(write_and_close_errno(&f.topic_path("_messages"), lines.as_bytes()), 0);
    let got = ps_pull(&f.subscription, 2500, Duration::from_secs(30));
    let mut numbers: Vec<u64> =
        got.iter().map(|m| serde_json::from_slice::<Value>(m).unwrap()["n"].as_u64().unwrap()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 2500, "every line once");
}

/// Sorted, for comparing what came in whatever order.
fn sorted(mut messages: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    messages.sort();
    messages
}

/// Each `/bin/echo` child closes its copy of fd 3 when it exits, so FUSE
/// sends a FLUSH per child while the shell keeps the file open: every line
/// (and every `_message` flush's new bytes) is published once, and a flush
/// with nothing new publishes nothing. The pull asks for more than may come,
/// so that a repeat would be seen.
#[test]
fn each_flush_publishes_only_what_was_written_since_the_last() {
    let f = Fixture::new("ps_flushes");
    let dir = f.dir();
    ok(&format!("exec 3>{dir}/_messages; /bin/echo a >&3; /bin/echo b >&3; exec 3>&-"));
    let got = ps_pull(&f.subscription, 4, Duration::from_secs(5));
    assert_eq!(sorted(got), [b"a".to_vec(), b"b".to_vec()], "each line once");

    // `_message`: the bytes each flush finds new are one message; `true`
    // writes nothing, so its flush publishes nothing.
    ok(&format!("exec 3>{dir}/_message; /bin/echo one >&3; /bin/true >&3; /bin/echo two >&3; exec 3>&-"));
    let got = ps_pull(&f.subscription, 4, Duration::from_secs(5));
    assert_eq!(sorted(got), [b"one\n".to_vec(), b"two\n".to_vec()]);

    // Appending (O_APPEND) from several children: the same.
    ok(&format!("exec 3>>{dir}/_messages; /bin/echo x >&3; /bin/echo y >&3; /bin/echo z >&3; exec 3>&-"));
    let got = ps_pull(&f.subscription, 6, Duration::from_secs(5));
    assert_eq!(sorted(got), [b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
}

/// A flush whose publish failed (here the emulator is down; a lost answer
/// looks the same to ciofs) fails that close with EIO, and its lines are
/// over: a later flush of the same handle does not send them again, only
/// what was written since.
#[test]
fn a_failed_publish_is_not_sent_again_by_a_later_flush() {
    use std::io::Write;
    let mut pubsub = PrivatePubSub::start();
    pubsub.create_topic_and_subscription("flaky", "flaky-sub");
    let mount = FuseMount::start_with_env(&[], &[("PUBSUB_EMULATOR_HOST", &pubsub.host())]);
    let url = pubsub.project_url();
    for file in ["_messages", "_message"] {
        // `_messages` publishes lines without their newline.
        let published =
            |line: &str| if file == "_messages" { line.as_bytes().to_vec() } else { format!("{line}\n").into_bytes() };
        let path = mount.path(&format!("{PROJECT}/pubsub/topics/flaky/{file}"));
        let mut handle = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        handle.write_all(b"before\n").unwrap();
        assert_eq!(close_a_duplicate(&handle), 0, "{file}");
        assert_eq!(ps_pull_from(&url, "flaky-sub", 2, Duration::from_secs(3)), [published("before")]);

        pubsub.stop();
        handle.write_all(b"lost\n").unwrap();
        assert_eq!(close_a_duplicate(&handle), libc::EIO, "{file}: the failed publish fails that close");
        // The emulator keeps no state: it comes back empty.
        pubsub.resume();
        pubsub.create_topic_and_subscription("flaky", "flaky-sub");

        handle.write_all(b"after\n").unwrap();
        assert_eq!(close_a_duplicate(&handle), 0, "{file}");
        drop(handle);
        let got = ps_pull_from(&url, "flaky-sub", 3, Duration::from_secs(5));
        assert_eq!(got, [published("after")], "{file}: only what came after the failed flush");
    }
}

#[test]
fn publishing_to_a_topic_deleted_behind_ciofs_fails_close() {
    let f = Fixture::new("ps_gone");
    assert!(f.topic_path("_message").exists());
    curl(&["-X", "DELETE", &format!("{}/topics/{}", pubsub_url(), f.topic)]);
    let errno = write_and_close_errno(&f.topic_path("_message"), b"into the void");
    assert_eq!(errno, libc::ENOENT);
    let errors = std::fs::read_to_string(f.mount.path(".ciofs/errors")).unwrap();
    assert!(errors.contains(&format!("{}/_message", f.topic)), "{errors}");
}

#[test]
fn mkdir_and_rmdir_make_and_delete_topics_and_subscriptions() {
    let f = Fixture::new("ps_mkdir");
    let topics = f.mount.path(&format!("{PROJECT}/pubsub/topics")).display().to_string();
    let topic = format!("{}-new", f.topic);
    ok(&format!("mkdir {topics}/{topic}"));
    // Created within a second (it waits for a config.json that does not come).
    ps_get_soon(&format!("/topics/{topic}"));
    let subscription = format!("{topic}-sub");
    // By hand: created with default settings within a second.
    ok(&format!("mkdir {topics}/{topic}/subscriptions/{subscription}"));
    let created = ps_get_soon(&format!("/subscriptions/{subscription}"));
    assert_eq!(created["topic"], format!("projects/{PROJECT}/topics/{topic}"));
    // As tar x does it: mkdir, then config.json with a setting only a
    // creation can take (a filter), made with it.
    let filtered = format!("{topic}-filtered");
    let dir = format!("{topics}/{topic}/subscriptions/{filtered}");
    ok(&format!(
        "mkdir {dir} && /bin/echo '{{\"filter\": \"attributes.k = \\\"v\\\"\", \"ack_deadline_seconds\": 20}}' > {dir}/config.json"
    ));
    let made = ps_get(&format!("/subscriptions/{filtered}")).expect("created at its config.json");
    assert_eq!((&made["filter"], &made["ackDeadlineSeconds"]), (&json!("attributes.k = \"v\""), &json!(20)));
    ok(&format!("rmdir {dir}"));
    ok(&format!("/bin/echo through-the-new-one > {topics}/{topic}/_message"));
    assert_eq!(ps_pull(&subscription, 1, Duration::from_secs(10)), vec![b"through-the-new-one\n".to_vec()]);
    ok(&format!("rmdir {topics}/{topic}/subscriptions/{subscription}"));
    assert!(ps_get(&format!("/subscriptions/{subscription}")).is_none());
    ok(&format!("rmdir {topics}/{topic}"));
    assert!(ps_get(&format!("/topics/{topic}")).is_none());
    assert!(!sh(&format!("mkdir {topics}/x")).status.success(), "a name of fewer than 3 characters is refused");
}

/// `mkdir topics/NEW` waits for the config.json `tar x` writes next: the
/// topic is created with its labels and retention (the emulator takes
/// labels only at creation); without one, within a second with defaults;
/// a publish right after `mkdir` (of the topic and a subscription) creates
/// both first, so the subscription gets the message.
#[test]
fn a_made_topic_waits_for_its_settings_and_is_created_with_them() {
    let f = Fixture::new("ps_made_topic");
    let topics = f.mount.path(&format!("{PROJECT}/pubsub/topics")).display().to_string();
    let labelled = format!("{}-labelled", f.topic);
    ok(&format!("mkdir {topics}/{labelled}"));
    let config = format!("{topics}/{labelled}/config.json");
    let settings = br#"{"labels": {"team": "data"}, "message_retention_duration": "3600s"}"#;
    assert_eq!(write_and_close_errno(&PathBuf::from(&config), settings), 0);
    let made = ps_get(&format!("/topics/{labelled}")).expect("created at its config.json");
    assert_eq!((&made["labels"], &made["messageRetentionDuration"]), (&json!({"team": "data"}), &json!("3600s")));
    let shown: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(shown["labels"], json!({"team": "data"}));

    let plain = format!("{}-plain", f.topic);
    ok(&format!("mkdir {topics}/{plain}"));
    assert!(ok(&format!("ls {topics}")).lines().any(|l| l == plain), "listed while it waits");
    ps_get_soon(&format!("/topics/{plain}"));

    let busy = format!("{}-busy", f.topic);
    let sub = format!("{busy}-sub");
    ok(&format!(
        "mkdir {topics}/{busy} {topics}/{busy}/subscriptions/{sub} && /bin/echo first > {topics}/{busy}/_message"
    ));
    assert_eq!(ps_pull(&sub, 1, Duration::from_secs(10)), [b"first\n".to_vec()]);
}

#[test]
fn subscription_config_edits_change_what_can_change() {
    let f = Fixture::new("ps_config");
    let config = format!("{}/subscriptions/{}/config.json", f.dir(), f.subscription);
    ok(&format!("sed -i 's/\"ack_deadline_seconds\": 10/\"ack_deadline_seconds\": 30/' {config}"));
    let rest = ps_get(&format!("/subscriptions/{}", f.subscription)).unwrap();
    assert_eq!(rest["ackDeadlineSeconds"], 30);
    // The filter is fixed at creation: refused, nothing changes.
    let errno = write_and_close_errno(&PathBuf::from(&config), br#"{"filter": "attributes.x = \"1\""}"#);
    assert_eq!(errno, libc::EINVAL);
    let errors = std::fs::read_to_string(f.mount.path(".ciofs/errors")).unwrap();
    assert!(errors.lines().last().unwrap_or_default().contains("filter"), "{errors}");
    let invalid = write_and_close_errno(&PathBuf::from(&config), br#"{"ack_deadline_seconds": 5000}"#);
    assert_eq!(invalid, libc::EINVAL);
    assert_eq!(ps_get(&format!("/subscriptions/{}", f.subscription)).unwrap()["ackDeadlineSeconds"], 30);
}

#[test]
fn stream_prints_each_message_as_a_line_and_a_reader_closing_early_loses_none() {
    let f = Fixture::new("ps_stream");
    let stream = format!("{}/subscriptions/{}/_stream", f.dir(), f.subscription);
    let ids = ps_publish(&f.topic, &[b"one", b"two", b"three", b"four", b"five"]);
    let head = sh(&format!("timeout 60 head -n 3 {stream}"));
    // Not even a complaint: head seeks back to what it printed at the end.
    assert!(head.status.success() && head.stderr.is_empty(), "{head:?}");
    let first = String::from_utf8_lossy(&head.stdout).to_string();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 3, "{first}");
    assert!(lines[0].starts_with("[20") && lines[0].contains(&format!("Z] {}: ", ids[0])), "{first}");
    // The two not read come to the next reader at once, none is lost.
    let started = std::time::Instant::now();
    let second = ok(&format!("timeout 60 head -n 2 {stream}"));
    assert!(started.elapsed() < Duration::from_secs(5), "given back at close: {:?}", started.elapsed());
    let mut all = stream_data(&first);
    all.extend(stream_data(&second));
    all.sort();
    assert_eq!(all, ["five", "four", "one", "three", "two"]);
    // Read means acked: curl finds nothing left.
    assert_eq!(ps_pull(&f.subscription, 1, Duration::from_secs(2)), Vec::<Vec<u8>>::new());
    // Multi-line data is base64; the JSON variant has every field.
    ps_publish(&f.topic, &[b"a\nb"]);
    let line = ok(&format!("timeout 60 head -n 1 {stream}"));
    assert!(line.trim_end().ends_with(": base64:YQpi"), "{line}");
    ps_publish(&f.topic, &[b"json"]);
    let json_line = ok(&format!("timeout 60 head -n 1 {stream}.jsonl"));
    let value: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!((&value["data"], &value["data_base64"]), (&"json".into(), &"anNvbg==".into()));
    assert!(value["message_id"].is_string() && value["publish_time"].is_string());
}

/// The issue's no-loss test: 1,000 numbered messages read by `head -n K`
/// readers in turn, each closing early: every number arrives, and what was
/// read is acked (curl finds nothing left).
#[test]
fn numbered_messages_through_readers_that_close_early_all_arrive() {
    let f = Fixture::new("ps_noloss");
    let stream = format!("{}/subscriptions/{}/_stream", f.dir(), f.subscription);
    let numbers: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    for batch in numbers.chunks(500) {
        let messages: Vec<&[u8]> = batch.iter().map(|n| n.as_bytes()).collect();
        ps_publish(&f.topic, &messages);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = 0;
    let started = std::time::Instant::now();
    let mut readers = 0;
    while seen.len() < numbers.len() {
        assert!(started.elapsed() < Duration::from_secs(120), "{} of 1000 after {readers} readers", seen.len());
        // Never more than are left unseen, or the last reader would wait.
        let take = [7, 50, 133][readers % 3].min(numbers.len() - seen.len());
        let output = ok(&format!("timeout 60 head -n {take} {stream}"));
        readers += 1;
        lines += output.lines().count();
        seen.extend(stream_data(&output));
    }
    assert!(readers > 10, "many readers took part: {readers}");
    assert_eq!(seen, numbers.into_iter().collect());
    eprintln!("{lines} lines for 1000 messages through {readers} readers in {:?}", started.elapsed());
    assert_eq!(ps_pull(&f.subscription, 1, Duration::from_secs(2)), Vec::<Vec<u8>>::new(), "all acked");
}

#[test]
fn a_reader_waits_for_the_next_message_and_ctrl_c_ends_it() {
    let f = Fixture::new("ps_wait");
    let stream = format!("{}/subscriptions/{}/_stream", f.dir(), f.subscription);
    // Nothing to read: cat waits (through EINTR retries) until SIGINT.
    let started = std::time::Instant::now();
    let interrupted = sh(&format!("timeout -s INT 3 cat {stream}"));
    assert_eq!(interrupted.status.code(), Some(124), "ended by the signal: {interrupted:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "Ctrl-C ends it at once: {:?}", started.elapsed());
    // A message published while a reader waits reaches it.
    let topic = f.topic.clone();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        ps_publish(&topic, &[b"worth the wait"])
    });
    let line = ok(&format!("timeout 30 head -n 1 {stream}"));
    publisher.join().unwrap();
    assert_eq!(stream_data(&line), ["worth the wait"]);
}

#[test]
fn two_readers_share_a_subscription_s_messages() {
    let f = Fixture::new("ps_share");
    let sub = format!("{}/subscriptions/{}", f.dir(), f.subscription);
    let numbers: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    ps_publish(&f.topic, &numbers.iter().map(|n| n.as_bytes()).collect::<Vec<_>>());
    let out = tempfile::tempdir().unwrap();
    let out = out.path().display();
    ok(&format!(
        "timeout 60 head -n 100 {sub}/_stream > {out}/a & timeout 60 head -n 100 {sub}/_stream.jsonl > {out}/b; wait"
    ));
    let a = stream_data(&std::fs::read_to_string(format!("{out}/a")).unwrap());
    let b: Vec<String> = std::fs::read_to_string(format!("{out}/b"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!((a.len(), b.len()), (100, 100));
    let all: std::collections::BTreeSet<String> = a.into_iter().chain(b).collect();
    assert_eq!(all, numbers.into_iter().collect(), "between them, every message");
}

/// The emulator going away fails close() of `_message` with EIO in bounded
/// time; once it is back, a publish succeeds.
#[test]
fn publishing_while_the_emulator_is_down_fails_close_and_works_once_it_is_back() {
    let mut pubsub = PrivatePubSub::start();
    pubsub.create_topic_and_subscription("outage", "outage-sub");
    let mount = FuseMount::start_with_env(&[], &[("PUBSUB_EMULATOR_HOST", &pubsub.host())]);
    let message = mount.path(&format!("{PROJECT}/pubsub/topics/outage/_message"));
    assert_eq!(write_and_close_errno(&message, b"before"), 0);
    assert_eq!(ps_pull_from(&pubsub.project_url(), "outage-sub", 1, Duration::from_secs(10)), [b"before".to_vec()]);

    pubsub.stop();
    let started = std::time::Instant::now();
    assert_eq!(write_and_close_errno(&message, b"during"), libc::EIO);
    assert!(started.elapsed() < Duration::from_secs(30), "bounded: {:?}", started.elapsed());
    let errors = std::fs::read_to_string(mount.path(".ciofs/errors")).unwrap();
    assert!(errors.contains("outage/_message"), "{errors}");

    // The emulator keeps no state: it comes back empty.
    pubsub.resume();
    pubsub.create_topic_and_subscription("outage", "outage-sub");
    assert_eq!(write_and_close_errno(&message, b"after"), 0);
    assert_eq!(ps_pull_from(&pubsub.project_url(), "outage-sub", 1, Duration::from_secs(10)), [b"after".to_vec()]);
}
