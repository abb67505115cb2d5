//! The same Cloud Storage tree through `ciofs serve-nfs`, driven by a
//! userspace NFSv3 client (this kernel has none): lookup, paged
//! READDIRPLUS, reads at offsets, and handles that stay valid across a
//! restart of the server.

mod common;

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, GETATTR3args, MKDIR3args, Nfs3Option, Nfs3Result, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args,
    createhow3, nfsstat3, sattr3,
};

#[tokio::test]
async fn lookup_readdirplus_and_reads_at_offsets() {
    let bucket = bucket_name("nfs_reads");
    create_bucket(&bucket);
    let big = pattern(2 * 1024 * 1024 + 7, 3);
    upload(&bucket, "data/big.bin", &big);
    let mut expected: Vec<String> = (0..300).map(|i| format!("n{i:04}")).collect();
    for name in &expected {
        upload(&bucket, &format!("many/{name}"), name.as_bytes());
    }
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;

    let file = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/data/big.bin")).await;
    let attr = conn.getattr(&GETATTR3args { object: file.clone() }).await.unwrap().unwrap().obj_attributes;
    assert_eq!(attr.size, big.len() as u64);
    for (offset, count) in [(0u64, 65_536u32), (1_000_003, 4096), (big.len() as u64 - 10, 100)] {
        let (data, eof) = read(&mut conn, &file, offset, count).await;
        let end = (offset + u64::from(count)).min(big.len() as u64);
        assert!(data == read_range(&bucket, "data/big.bin", offset, end - 1), "read at {offset}");
        assert_eq!(eof, end == big.len() as u64);
    }

    let many = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/many")).await;
    let (names, pages) = list(&mut conn, &many, 4096).await;
    expected.insert(0, ".meta".to_string());
    assert_eq!(names, expected, "every entry once, in order");
    assert!(pages > 3, "several pages expected, got {pages}");

    let root = conn.root_nfs_fh3();
    assert_eq!(lookup(&mut conn, &root, "no-such-project").await, Err(nfsstat3::NFS3ERR_NOENT));
    let meta = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/many/.meta/n0007.json")).await;
    let (document, eof) = read(&mut conn, &meta, 0, 1 << 20).await;
    assert!(eof);
    let document: serde_json::Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(document["name"], "many/n0007");
}

#[tokio::test]
async fn handles_stay_valid_across_a_server_restart() {
    let bucket = bucket_name("nfs_restart");
    create_bucket(&bucket);
    upload(&bucket, "keep/file.txt", b"survives a restart\n");
    let state = tempfile::tempdir().unwrap();

    let (file, dir) = {
        let server = NfsServer::start(state.path());
        let mut conn = connect(server.port).await;
        let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/keep")).await;
        let file = lookup(&mut conn, &dir, "file.txt").await.unwrap();
        assert_eq!(read(&mut conn, &file, 0, 100).await.0, b"survives a restart\n");
        (file, dir)
        // The server stops here.
    };

    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;
    // The old handles, never looked up on this server, still work.
    let attr = conn.getattr(&GETATTR3args { object: file.clone() }).await.unwrap().unwrap().obj_attributes;
    assert_eq!(attr.size, 19);
    assert_eq!(read(&mut conn, &file, 9, 100).await.0, b"a restart\n");
    let (names, _) = list(&mut conn, &dir, 8192).await;
    assert_eq!(names, [".meta", "file.txt"]);

    // A handle the server never issued is refused, never another file.
    let mut bogus = file.clone();
    bogus.data.0.to_mut()[0] ^= 0x5a;
    let status = match conn.getattr(&GETATTR3args { object: bogus }).await.unwrap() {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((status, _)) => status,
    };
    assert!(matches!(status, nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE), "{status:?}");
}

/// Polls the emulator until `name` holds `expected` (the idle commit).
async fn eventually(bucket: &str, name: &str, expected: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let url = format!("{}/storage/v1/b/{bucket}/o/{}?alt=media", gcs_url(), encode(name));
        let output = run(std::process::Command::new("curl").args(["-sf", &url]));
        if output.status.success() && output.stdout == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name} never became {:?}", String::from_utf8_lossy(expected));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn writes_are_uploaded_after_an_idle_time() {
    let bucket = bucket_name("nfs_writes");
    create_bucket(&bucket);
    upload(&bucket, "old.txt", b"0123456789");
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;

    // create, then writes at offsets (out of order), then the idle commit.
    let args = CREATE3args { where_: dirop(&dir, "new.txt"), how: createhow3::UNCHECKED(sattr3::default()) };
    let file = conn.create(&args).await.unwrap().unwrap().obj.unwrap();
    write(&mut conn, &file, 6, b"world").await;
    write(&mut conn, &file, 0, b"hello ").await;
    let (data, _) = read(&mut conn, &file, 0, 100).await;
    assert_eq!(data, b"hello world", "reads see the written data before the upload");
    eventually(&bucket, "new.txt", b"hello world").await;

    // A write into an existing object, then setattr size.
    let old = lookup(&mut conn, &dir, "old.txt").await.unwrap();
    write(&mut conn, &old, 2, b"ab").await;
    let set = SETATTR3args {
        object: old.clone(),
        new_attributes: sattr3 { size: Nfs3Option::Some(6), ..Default::default() },
        guard: Default::default(),
    };
    conn.setattr(&set).await.unwrap().unwrap();
    eventually(&bucket, "old.txt", b"01ab45").await;

    // rename, remove, mkdir, rmdir.
    let rename = RENAME3args { from: dirop(&dir, "new.txt"), to: dirop(&dir, "renamed.txt") };
    conn.rename(&rename).await.unwrap().unwrap();
    eventually(&bucket, "renamed.txt", b"hello world").await;
    assert!(read_object_status(&bucket, "new.txt") == 404);
    conn.remove(&REMOVE3args { object: dirop(&dir, "renamed.txt") }).await.unwrap().unwrap();
    assert!(read_object_status(&bucket, "renamed.txt") == 404);
    let mkdir = MKDIR3args { where_: dirop(&dir, "sub"), attributes: sattr3::default() };
    conn.mkdir(&mkdir).await.unwrap().unwrap();
    assert!(read_object_status(&bucket, "sub/") == 200);
    conn.rmdir(&RMDIR3args { object: dirop(&dir, "sub") }).await.unwrap().unwrap();
    assert!(read_object_status(&bucket, "sub/") == 404);
}

fn read_object_status(bucket: &str, name: &str) -> u16 {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode(name));
    let output = run(std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]));
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

#[tokio::test]
async fn writes_left_by_a_killed_server_are_uploaded_at_the_next_start() {
    let bucket = bucket_name("nfs_journal");
    create_bucket(&bucket);
    upload(&bucket, "kept.txt", b"before");
    let state = tempfile::tempdir().unwrap();
    {
        let server = NfsServer::start(state.path());
        let mut conn = connect(server.port).await;
        let file = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/kept.txt")).await;
        write(&mut conn, &file, 0, b"written before the crash").await;
        // SIGKILL well within the idle time: nothing was uploaded yet.
        drop(server);
    }
    assert_eq!(read_object(&bucket, "kept.txt"), b"before");
    let _server = NfsServer::start(state.path());
    eventually(&bucket, "kept.txt", b"written before the crash").await;
}
