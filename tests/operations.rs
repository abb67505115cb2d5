//! The operator's endpoint through the real binary: `--metrics-addr`
//! serves `/healthz`, `/readyz` and Prometheus text whose counts follow
//! what a workload did through the mount or the NFS server.

mod common;

use std::time::{Duration, Instant};

use common::nfs::{connect, lookup, read, walk};
use common::*;

#[test]
fn metrics_count_what_a_workload_did_and_health_answers() {
    let bucket = bucket_name("metrics");
    create_bucket(&bucket);
    upload(&bucket, "read.bin", &pattern(3 << 20, 1));
    let port = free_port();
    let mount = FuseMount::start(&["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));

    assert_eq!(http_get(port, "/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never said ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(port, "/nothing").0, 404);
    // Clients that connect and send nothing hold no slot for long: the
    // endpoint still answers, and closes on them.
    let silent: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    assert_eq!(http_get(port, "/healthz").0, 200, "answers beside silent clients");
    // More silent clients than connection slots (16): the ones over the
    // limit are closed at once rather than left queued behind those that
    // hold a slot until their head timeout (10 s); and once the silent
    // ones leave, the endpoint answers at once.
    let crowd: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let started = Instant::now();
    let mut over = crowd.last().unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let closed = std::io::Read::read(&mut over, &mut [0; 16]);
    assert!(
        matches!(closed, Ok(0)) || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a client over the limit is closed on: {closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "closed at once: {:?}", started.elapsed());
    drop(crowd);
    let started = Instant::now();
    assert_eq!(http_get(port, "/healthz").0, 200, "answers once the crowd has left");
    assert!(started.elapsed() < Duration::from_secs(3), "at once: {:?}", started.elapsed());

    let (status, before) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    for i in 0..10 {
        std::fs::write(dir.join(format!("new-{i}.txt")), b"counted\n").unwrap();
    }
    let missing = std::fs::metadata(dir.join("no-such-file")).expect_err("absent");
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
    let read = dir.join("read.bin").display().to_string();
    for _ in 0..2 {
        ok(&format!("dd if={read} of=/dev/null iflag=direct bs=1M status=none"));
    }
    let (_, after) = http_get(port, "/metrics");

    let grew = |name: &str, labels: &[&str]| metric_sample(&after, name, labels) - metric_sample(&before, name, labels);
    assert_eq!(grew("ciofs_fs_ops_total", &["frontend=\"fuse\"", "op=\"create\""]), 10.0, "{after}");
    assert_eq!(grew("ciofs_fs_op_duration_seconds_count", &["op=\"create\""]), 10.0, "{after}");
    assert!(grew("ciofs_fs_errors_total", &["op=\"lookup\"", &format!("errno=\"{}\"", libc::ENOENT)]) >= 1.0);
    // 3 blocks fetched by the first read, served from memory to the second.
    assert_eq!(grew("ciofs_content_cache_misses_total", &[]), 3.0, "{after}");
    assert!(grew("ciofs_content_cache_hits_total", &["tier=\"memory\""]) >= 3.0, "{after}");
    assert_eq!(grew("ciofs_content_cache_fetched_bytes_total", &[]), (3 << 20) as f64);
    assert!(metric_sample(&after, "process_resident_memory_bytes", &[]) > 1e6, "{after}");

    let mut silent = silent.into_iter().next().unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let closed = std::io::Read::read(&mut silent, &mut [0; 16]);
    assert!(matches!(closed, Ok(0)), "a silent client is closed on: {closed:?}");
}

#[tokio::test]
async fn nfs_operations_are_counted_by_op_and_errno() {
    let bucket = bucket_name("nfsmetrics");
    create_bucket(&bucket);
    upload(&bucket, "f.txt", b"counted over NFS\n");
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start_with_args(state.path(), &[], &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    assert_eq!(http_get(port, "/readyz").0, 200, "ready once serving");
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
    let file = lookup(&mut conn, &dir, "f.txt").await.unwrap();

    let (_, before) = http_get(port, "/metrics");
    for _ in 0..5 {
        assert_eq!(read(&mut conn, &file, 0, 100).await.0, b"counted over NFS\n");
    }
    assert!(lookup(&mut conn, &dir, "no-such-file").await.is_err());
    let (_, after) = http_get(port, "/metrics");

    let grew = |name: &str, labels: &[&str]| metric_sample(&after, name, labels) - metric_sample(&before, name, labels);
    assert_eq!(grew("ciofs_fs_ops_total", &["frontend=\"nfs\"", "op=\"read\""]), 5.0, "{after}");
    let enoent = format!("errno=\"{}\"", libc::ENOENT);
    assert_eq!(grew("ciofs_fs_errors_total", &["frontend=\"nfs\"", "op=\"lookup\"", &enoent]), 1.0, "{after}");
}
