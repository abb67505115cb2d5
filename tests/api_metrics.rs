//! What ciofs asks of Google, seen by an operator through the real binary
//! against the emulators: the `ciofs_api_*`, `ciofs_pubsub_*` and
//! `ciofs_uploads_*` metrics at `--metrics-addr` follow what a workload did
//! through a FUSE mount, and `--api-log` has a line per call with its
//! resource and outcome and nothing that would let its reader act as ciofs.

mod common;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::*;

/// The Prometheus text at /metrics, once the endpoint answers.
fn scrape(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(port, "/metrics") {
            (200, text) => return text,
            answer => assert!(Instant::now() < deadline, "no metrics: {answer:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const STORAGE: &str = "service=\"storage\"";

#[test]
fn api_metrics_follow_a_workload_through_the_mount() {
    let bucket = bucket_name("apimetrics");
    create_bucket(&bucket);
    upload(&bucket, "read.bin", &pattern(3 << 20, 1));
    let topic = pubsub_name("apimetrics");
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    let port = free_port();
    let mount = FuseMount::start(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let topic_dir = mount.path(&format!("{PROJECT}/pubsub/topics/{topic}"));
    // The listing is cached before the baseline, so that what follows is
    // only the workload's.
    std::fs::read_dir(&dir).unwrap().for_each(drop);

    let before = scrape(port);
    for i in 0..10 {
        std::fs::write(dir.join(format!("new-{i}.txt")), b"counted\n").unwrap();
    }
    let missing = std::fs::File::open(dir.join("no-such-object")).expect_err("absent");
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
    ok(&format!("dd if={} of=/dev/null bs=1M status=none", dir.join("read.bin").display()));
    for message in ["one", "two", "three"] {
        assert_eq!(write_and_close_errno(&topic_dir.join("_message"), message.as_bytes()), 0);
    }
    let after = scrape(port);
    let grew = |name: &str, labels: &[&str]| metric_sample(&after, name, labels) - metric_sample(&before, name, labels);

    let uploads = [STORAGE, "method=\"upload\""];
    let ok_uploads = [STORAGE, "method=\"upload\"", "status=\"ok\""];
    assert_eq!(grew("ciofs_api_requests_total", &ok_uploads), 10.0, "{after}");
    assert_eq!(grew("ciofs_api_requests_total", &uploads), 10.0, "no upload failed: {after}");
    assert_eq!(grew("ciofs_api_request_duration_seconds_count", &uploads), 10.0, "{after}");
    assert_eq!(grew("ciofs_api_written_bytes_total", &[STORAGE]), 80.0, "10 files of 8 bytes: {after}");
    assert!(grew("ciofs_api_requests_total", &[STORAGE, "status=\"not_found\""]) >= 1.0, "{after}");
    assert_eq!(grew("ciofs_api_read_bytes_total", &[STORAGE]), (3 << 20) as f64, "{after}");
    assert_eq!(grew("ciofs_api_retries_total", &[]), 0.0, "the emulator fails nothing: {after}");
    assert_eq!(grew("ciofs_pubsub_messages_published_total", &[]), 3.0, "{after}");
    let published = ["service=\"pubsub\"", "method=\"publish\"", "status=\"ok\""];
    assert_eq!(grew("ciofs_api_requests_total", &published), 3.0, "{after}");
    assert_eq!(present_metric_sample(&after, "ciofs_uploads_in_flight", &[]), 0.0, "{after}");
    assert_eq!(present_metric_sample(&after, "ciofs_uploads_pending", &[]), 0.0, "{after}");

    // A file written and not closed is pending until its close uploads it
    // (O_DIRECT: the kernel sends the write at once rather than at close).
    let mut open = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("held-open.txt"))
        .unwrap();
    open.write_all(b"not yet\n").unwrap();
    let held = scrape(port);
    assert_eq!(present_metric_sample(&held, "ciofs_uploads_pending", &[]), 1.0, "{held}");
    drop(open);
    assert_eq!(present_metric_sample(&scrape(port), "ciofs_uploads_pending", &[]), 0.0);

    // Messages read from `_stream`: delivered by pulls; a reader that
    // closes early gives back what it did not read, and those come again.
    let stream = mount.path(&format!("{PROJECT}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream"));
    let before = scrape(port);
    let first = ok(&format!("timeout 60 head -n 1 {}", stream.display()));
    let second = ok(&format!("timeout 60 head -n 2 {}", stream.display()));
    assert_eq!(stream_data(&first).len() + stream_data(&second).len(), 3, "{first}{second}");
    let after = scrape(port);
    let grew = |name: &str| metric_sample(&after, name, &[]) - metric_sample(&before, name, &[]);
    let (delivered, given_back) =
        (grew("ciofs_pubsub_messages_delivered_total"), grew("ciofs_pubsub_messages_given_back_total"));
    assert!(given_back >= 1.0, "the first reader pulled more than it read: {after}");
    assert_eq!(delivered - given_back, 3.0, "each message read once, the rest given back and delivered again");
}

/// A token that the process is given and that must never reach the log.
const FAKE_TOKEN: &str = "ya29.fake-token-that-must-not-be-logged";

#[test]
fn api_log_has_a_line_per_call_and_no_secret() {
    let bucket = bucket_name("apilog");
    create_bucket(&bucket);
    upload(&bucket, "read.bin", &pattern(100_000, 2));
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("api.log");
    let env = [("GOOGLE_OAUTH_ACCESS_TOKEN", FAKE_TOKEN), ("CLOUDSDK_AUTH_ACCESS_TOKEN", FAKE_TOKEN)];
    let mut mount = FuseMount::start_with_env(&["--api-log", log.to_str().unwrap()], &env);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    std::fs::write(dir.join("a file.txt"), b"twelve bytes").unwrap();
    // Written in order past 8 MiB: its upload streams while it is written.
    ok(&format!("dd if=/dev/zero of='{}' bs=1M count=9 status=none", dir.join("big.bin").display()));
    ok(&format!("cat {} > /dev/null", dir.join("read.bin").display()));
    assert!(std::fs::metadata(dir.join("absent.txt")).is_err());
    mount.terminate();

    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log is the user's alone");
    let first_run = std::fs::read_to_string(&log).unwrap();
    // Another run appends to it.
    let mut again = FuseMount::start_with_env(&["--api-log", log.to_str().unwrap()], &env);
    assert!(std::fs::metadata(again.path(&format!("{PROJECT}/storage/{bucket}/absent-too.txt"))).is_err());
    again.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with(&first_run) && text.contains("absent-too.txt"), "appended: {text}");
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        let fields: Vec<&str> =
            ["time=20", " service=", " method=", " resource=\"", " status=", " bytes=", " duration=", " attempt="]
                .into_iter()
                .filter(|field| !line.contains(field))
                .collect();
        assert!(fields.is_empty() && line.starts_with("time=20"), "{line}: lacks {fields:?}");
    }
    let has = |needle: &str| lines.iter().any(|line| line.contains(needle));
    let upload = format!("service=storage method=upload resource=\"{bucket}/a file.txt\" status=ok bytes=12 ");
    assert!(has(&upload), "{text}");
    let streamed = format!("service=storage method=upload_streamed resource=\"{bucket}/big.bin\" status=ok ");
    assert!(has(&streamed), "{text}");
    assert!(has(&format!("method=read resource=\"{bucket}/read.bin\" status=ok bytes=100000 ")), "{text}");
    assert!(has(&format!("resource=\"{bucket}/absent.txt\" status=not_found ")), "{text}");
    assert!(lines.iter().all(|line| line.ends_with(" attempt=1")), "nothing retried: {text}");
    // One line per call: an upload's generation check is not logged as
    // a not_found upload of its own.
    let uploads = lines.iter().filter(|line| line.contains(" method=upload "));
    assert!(uploads.clone().all(|line| line.contains(" status=ok ")), "{text}");
    assert_eq!(uploads.filter(|line| line.contains("a file.txt")).count(), 1, "{text}");
    for secret in
        [FAKE_TOKEN, "Authorization", "Bearer", "access_token", "upload_id", "uploadId", "http://", "https://"]
    {
        assert!(!text.contains(secret), "{secret:?} in the API log:\n{text}");
    }
}
