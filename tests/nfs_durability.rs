//! What NFS promises about writes, checked through `ciofs serve-nfs` with a
//! userspace NFSv3 client against a private emulator (so that it can be
//! frozen and stopped): a WRITE that was answered reaches Cloud Storage, also
//! when it arrives during an upload, races another first WRITE, or is
//! followed by a kill -9 and a restart; and a name made again after a rename
//! and a restart is a new file.

mod common;

use std::time::{Duration, Instant};

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{CREATE3args, RENAME3args, createhow3, nfs_fh3, sattr3};

const MIB: usize = 1 << 20;

/// A private emulator with bucket `durable`, for a test that freezes or
/// stops it.
fn private_gcs() -> PrivateGcs {
    let gcs = PrivateGcs::start();
    let url = gcs.url();
    curl(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", "{\"name\":\"durable\"}"]);
    gcs
}

fn server(gcs: &PrivateGcs, state: &std::path::Path) -> NfsServer {
    NfsServer::start_with_env(state, &[("STORAGE_EMULATOR_HOST", &gcs.url())])
}

/// What the private emulator holds as `durable/name` (None: no object).
fn stored(gcs: &PrivateGcs, name: &str) -> Option<Vec<u8>> {
    let url = format!("{}/storage/v1/b/durable/o/{}?alt=media", gcs.url(), encode(name));
    let output = run(std::process::Command::new("curl").args(["-sf", &url]));
    output.status.success().then_some(output.stdout)
}

/// Waits until `durable/name` holds `expected`; fails after `limit`.
async fn eventually_stored(gcs: &PrivateGcs, name: &str, expected: &[u8], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = stored(gcs, name);
        if now.as_deref() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never held the {} bytes written; it holds {:?} bytes",
            expected.len(),
            now.map(|n| n.len())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(conn: &mut Conn, dir: &nfs_fh3, name: &str) -> nfs_fh3 {
    let args = CREATE3args { where_: dirop(dir, name), how: createhow3::UNCHECKED(sattr3::default()) };
    conn.create(&args).await.unwrap().unwrap().obj.unwrap()
}

async fn bucket_dir(conn: &mut Conn) -> nfs_fh3 {
    walk(conn, &format!("{PROJECT}/storage/durable")).await
}

/// The server uploads a file once its writes were idle for a second: long
/// enough past that for the upload to have started.
const PAST_IDLE: Duration = Duration::from_millis(1800);

/// Writes `first` to a new file `name`, lets its idle upload start against
/// the frozen service, sends a WRITE of `second` after it (which waits for
/// the upload), and thaws the service; returns once that WRITE is answered.
async fn write_during_an_idle_upload(gcs: &PrivateGcs, server: &NfsServer, name: &str, first: &[u8], second: &[u8]) {
    let mut conn = connect(server.port).await;
    let dir = bucket_dir(&mut conn).await;
    let file = create(&mut conn, &dir, name).await;
    write(&mut conn, &file, 0, first).await;
    gcs.freeze();
    tokio::time::sleep(PAST_IDLE).await;
    let mut other = connect(server.port).await;
    let (late, at) = (second.to_vec(), first.len() as u64);
    let writing = tokio::spawn(async move { write(&mut other, &file, at, &late).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    gcs.thaw();
    writing.await.unwrap();
}

#[tokio::test]
async fn a_write_that_waits_for_an_idle_upload_is_not_lost() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    let server = server(&gcs, state.path());
    let (first, second) = (pattern(MIB, 1), pattern(MIB, 2));
    write_during_an_idle_upload(&gcs, &server, "during.bin", &first, &second).await;
    eventually_stored(&gcs, "during.bin", &[first, second].concat(), Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_write_during_an_idle_upload_survives_a_kill() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    let (first, second) = (pattern(MIB, 3), pattern(MIB, 4));
    {
        let server = server(&gcs, state.path());
        write_during_an_idle_upload(&gcs, &server, "killed.bin", &first, &second).await;
        // kill -9 before the second write's idle upload: only the journal
        // has it.
        drop(server);
    }
    let _server = server(&gcs, state.path());
    eventually_stored(&gcs, "killed.bin", &[first, second].concat(), Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_name_made_again_after_a_rename_and_a_restart_is_a_new_file() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    {
        let server = server(&gcs, state.path());
        let mut conn = connect(server.port).await;
        let dir = bucket_dir(&mut conn).await;
        let a = create(&mut conn, &dir, "a").await;
        write(&mut conn, &a, 0, b"first written as a").await;
        eventually_stored(&gcs, "a", b"first written as a", Duration::from_secs(10)).await;
        conn.rename(&RENAME3args { from: dirop(&dir, "a"), to: dirop(&dir, "b") }).await.unwrap().unwrap();
    }
    let server = server(&gcs, state.path());
    let mut conn = connect(server.port).await;
    let dir = bucket_dir(&mut conn).await;
    let a = create(&mut conn, &dir, "a").await;
    let b = lookup(&mut conn, &dir, "b").await.unwrap();
    assert_ne!(a.data, b.data, "a new `a` must not get b's handle");
    write(&mut conn, &a, 0, b"a new a").await;
    eventually_stored(&gcs, "a", b"a new a", Duration::from_secs(10)).await;
    assert_eq!(stored(&gcs, "b").as_deref(), Some(&b"first written as a"[..]), "b is intact");
}

#[tokio::test]
async fn concurrent_first_writes_to_one_file_both_land() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    // Nothing cached: each first WRITE asks Cloud Storage for the object,
    // which widens the race to milliseconds.
    let env = [("STORAGE_EMULATOR_HOST", &gcs.url()[..])];
    let server = NfsServer::start_with_args(state.path(), &env, &["--metadata-ttl", "0"]);
    let mut one = connect(server.port).await;
    let mut two = connect(server.port).await;
    let dir = bucket_dir(&mut one).await;
    const HALF: usize = 64 * 1024;
    let (head, tail) = (pattern(HALF, 5), pattern(HALF, 6));
    let names: Vec<String> = (0..100).map(|i| format!("race-{i:02}.bin")).collect();
    for name in &names {
        let file = create(&mut one, &dir, name).await;
        // nfsserve answers each call as its own task: these two race.
        tokio::join!(write(&mut one, &file, 0, &head), write(&mut two, &file, HALF as u64, &tail));
    }
    let whole = [head, tail].concat();
    for name in &names {
        eventually_stored(&gcs, name, &whole, Duration::from_secs(20)).await;
    }
}

#[tokio::test]
async fn writes_kept_at_a_start_without_the_service_go_up_once_it_is_back() {
    let mut gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    {
        let server = server(&gcs, state.path());
        let mut conn = connect(server.port).await;
        let dir = bucket_dir(&mut conn).await;
        let file = create(&mut conn, &dir, "kept.bin").await;
        write(&mut conn, &file, 0, b"written before the kill").await;
        drop(server);
    }
    // The next start cannot reach Cloud Storage; the service comes back
    // while it runs.
    gcs.stop();
    let _server = server(&gcs, state.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    gcs.resume();
    eventually_stored(&gcs, "kept.bin", b"written before the kill", Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_file_left_half_written_goes_up_once_its_writes_stop() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    let chunks: Vec<Vec<u8>> = (0..4).map(|i| pattern(MIB, 10 + i)).collect();
    let file = {
        let server = server(&gcs, state.path());
        let mut conn = connect(server.port).await;
        let dir = bucket_dir(&mut conn).await;
        let file = create(&mut conn, &dir, "half.bin").await;
        for (i, chunk) in chunks[..2].iter().enumerate() {
            write(&mut conn, &file, (i * MIB) as u64, chunk).await;
        }
        drop(server);
        file
    };
    // The client goes on where it was once the server is back; the half
    // file is not uploaded as if it were done.
    let server = server(&gcs, state.path());
    assert_eq!(stored(&gcs, "half.bin").as_deref(), Some(&b""[..]), "only CREATE's empty object so far");
    let mut conn = connect(server.port).await;
    for (i, chunk) in chunks.iter().enumerate().skip(2) {
        write(&mut conn, &file, (i * MIB) as u64, chunk).await;
    }
    eventually_stored(&gcs, "half.bin", &chunks.concat(), Duration::from_secs(20)).await;
}

/// FILE_SYNC: each WRITE is answered once its bytes are on disk, so a
/// crash of the machine (not only of ciofs) loses no acknowledged write.
#[tokio::test]
async fn every_write_is_synced_to_disk_before_it_is_answered() {
    let gcs = private_gcs();
    let state = tempfile::tempdir().unwrap();
    let server = server(&gcs, state.path());
    let mut conn = connect(server.port).await;
    let dir = bucket_dir(&mut conn).await;
    let file = create(&mut conn, &dir, "synced.bin").await;
    let trace = state.path().join("strace.txt");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range", "-o"])
        .arg(&trace)
        .args(["-p", &server.pid().to_string()])
        .spawn()
        .expect("strace (apt-get install strace)");
    // strace prints nothing when it has attached, and attaching to every
    // thread takes a while on a loaded machine: write probes (past the
    // counted range) until one of their syncs shows, then count from there.
    let count_syncs = |trace: &std::path::Path| {
        let text = std::fs::read_to_string(trace).unwrap_or_default();
        text.lines().filter(|l| l.contains("fdatasync(") || l.contains("fsync(")).count()
    };
    let writes = 6;
    let probe_at = (writes * 4096) as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let baseline = loop {
        write(&mut conn, &file, probe_at, b"probe").await;
        let seen = count_syncs(&trace);
        if seen > 0 {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "strace traced no sync of a probe write in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for i in 0..writes {
        write(&mut conn, &file, (i * 4096) as u64, &pattern(4096, i as u8)).await;
    }
    signal(&strace, libc::SIGINT);
    strace.wait().unwrap();
    let syncs = std::fs::read_to_string(&trace).unwrap();
    let count = count_syncs(&trace) - baseline;
    assert!(count >= writes, "{writes} WRITEs answered FILE_SYNC, {count} syncs:\n{syncs}");
}
