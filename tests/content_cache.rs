//! The content cache through a real FUSE mount and through `serve-nfs`:
//! reads that the kernel's page cache cannot serve (O_DIRECT, or any NFS
//! READ) come from ciofs's memory or disk tier while the service is frozen,
//! also after a remount with the same cache directory and with the disk
//! tier off; an object replaced behind the mount is read anew, never the
//! old bytes; two mounts cannot share a cache directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::nfs::{Conn, connect, read, walk};
use common::*;
use nfs3_client::nfs3_types::nfs3::nfs_fh3;

const BUCKET: &str = "cached";
const SIZE: usize = 3 << 20;

/// A private emulator holding `BUCKET/f.bin` (3 MiB, pattern `seed`).
fn emulator_with_object(seed: u8) -> PrivateGcs {
    let gcs = PrivateGcs::start_in_memory();
    let url = gcs.url();
    curl(&[
        "-X",
        "POST",
        &format!("{url}/storage/v1/b?project={PROJECT}"),
        "-d",
        &format!("{{\"name\":\"{BUCKET}\"}}"),
    ]);
    put(&gcs, &pattern(SIZE, seed));
    gcs
}

fn put(gcs: &PrivateGcs, data: &[u8]) {
    put_named(gcs, "f.bin", data);
}

fn put_named(gcs: &PrivateGcs, name: &str, data: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let url = format!("{}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={}", gcs.url(), encode(name));
    curl(&["-X", "POST", &url, "--data-binary", &format!("@{}", file.path().display())]);
}

fn mount(gcs: &PrivateGcs, cache_dir: &Path, extra: &[&str]) -> FuseMount {
    let cache_dir = cache_dir.display().to_string();
    let args = [&["--cache-dir", cache_dir.as_str()], extra].concat();
    let mount = FuseMount::start_with_env(&args, &[("STORAGE_EMULATOR_HOST", &gcs.url())]);
    // ciofs keeps 10 % of a disk free: on a fuller one there is no disk tier.
    assert!(
        !mount.log_text().contains("too little free disk"),
        "these tests need a disk tier: free 10 % of the disk of {} and 64 MiB more",
        std::env::temp_dir().display()
    );
    mount
}

fn object_path(mount: &FuseMount) -> String {
    mount.path(&format!("{PROJECT}/storage/{BUCKET}/f.bin")).display().to_string()
}

/// The file's bytes read with O_DIRECT, past the kernel's page cache;
/// None if dd did not finish within 20 s.
fn read_direct(path: &str) -> Option<Vec<u8>> {
    let output = Command::new("timeout")
        .args(["20", "dd", &format!("if={path}"), "iflag=direct", "bs=1M", "status=none"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    output.status.success().then_some(output.stdout)
}

/// Whether `read` is the whole file of pattern `seed` (compared without
/// printing megabytes on failure).
fn is_pattern(read: Option<Vec<u8>>, seed: u8) -> bool {
    read.is_some_and(|bytes| bytes == pattern(SIZE, seed))
}

/// Runs `read` with the emulator frozen, then lets it go on.
fn while_frozen<T>(gcs: &PrivateGcs, read: impl FnOnce() -> T) -> T {
    gcs.freeze();
    let result = read();
    gcs.thaw();
    result
}

#[test]
fn a_re_read_with_o_direct_while_the_service_is_frozen_comes_from_the_cache() {
    let gcs = emulator_with_object(1);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&gcs, cache.path(), &[]);
    read_cold_then_frozen(&gcs, &object_path(&mount), 1);
}

/// Reads `path` (pattern `seed`) with O_DIRECT, then again with the
/// service frozen: the second read must come from the content cache.
fn read_cold_then_frozen(gcs: &PrivateGcs, path: &str, seed: u8) {
    assert!(is_pattern(read_direct(path), seed), "the cold read");
    let again = while_frozen(gcs, || read_direct(path));
    assert!(is_pattern(again, seed), "the re-read with the service frozen");
}

#[test]
fn with_the_disk_tier_off_nothing_is_written_to_the_cache_dir_and_memory_serves() {
    let gcs = emulator_with_object(6);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&gcs, cache.path(), &["--cache-size", "0"]);
    read_cold_then_frozen(&gcs, &object_path(&mount), 6);
    let written: Vec<_> = walkdir(cache.path()).into_iter().filter(|(_, len)| *len > 0).collect();
    assert!(written.is_empty(), "nothing written under --cache-dir: {written:?}");
}

/// Every file under `dir`, with its length.
fn walkdir(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let (path, meta) = (entry.path(), entry.metadata().unwrap());
        if meta.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push((path, meta.len()));
        }
    }
    files
}

/// An NFS client has no page cache on ciofs's side: every READ asks
/// ciofs, and a re-read comes from the content cache.
#[tokio::test]
async fn an_nfs_re_read_while_the_service_is_frozen_comes_from_the_cache() {
    let gcs = emulator_with_object(7);
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start_with_env(state.path(), &[("STORAGE_EMULATOR_HOST", &gcs.url())]);
    let mut conn = connect(server.port).await;
    let file = walk(&mut conn, &format!("{PROJECT}/storage/{BUCKET}/f.bin")).await;
    assert!(read_whole(&mut conn, &file).await == pattern(SIZE, 7), "the cold read");
    gcs.freeze();
    let again = tokio::time::timeout(Duration::from_secs(20), read_whole(&mut conn, &file)).await;
    gcs.thaw();
    assert!(again.is_ok_and(|bytes| bytes == pattern(SIZE, 7)), "the re-read with the service frozen");
}

/// The whole file, in READs of 1 MiB.
async fn read_whole(conn: &mut Conn, file: &nfs_fh3) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let (data, eof) = read(conn, file, bytes.len() as u64, 1 << 20).await;
        bytes.extend(data);
        if eof {
            return bytes;
        }
    }
}

/// Reading a directory's files in listing order, as tar does, fetches the
/// next small ones ahead: they then read with the service frozen.
#[test]
fn files_read_in_listing_order_have_the_next_ones_fetched_ahead() {
    let gcs = emulator_with_object(8);
    let names: Vec<String> = (0..12).map(|i| format!("walk/f{i:02}")).collect();
    for name in &names {
        put_named(&gcs, name, name.as_bytes());
    }
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&gcs, cache.path(), &[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{BUCKET}/walk"));
    let cat = |name: &str| {
        let output = Command::new("timeout").arg("10").arg("cat").arg(dir.join(name)).output().unwrap();
        output.status.success().then_some(output.stdout)
    };
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 13, "the listing, with .meta");
    for name in ["f00", "f01", "f02"] {
        assert_eq!(cat(name).as_deref(), Some(format!("walk/{name}").as_bytes()));
    }
    // The fetches ahead are under way; let them land.
    std::thread::sleep(Duration::from_secs(1));
    let ahead = while_frozen(&gcs, || ["f03", "f04", "f05", "f06"].map(cat));
    for (name, read) in ["f03", "f04", "f05", "f06"].iter().zip(ahead) {
        assert_eq!(read.as_deref(), Some(format!("walk/{name}").as_bytes()), "{name} with the service frozen");
    }
}

#[test]
fn after_a_remount_with_the_same_cache_dir_a_stated_file_is_read_from_disk() {
    let gcs = emulator_with_object(2);
    // More blocks than foyer's write buffer takes at once: the unmount
    // writes the memory tier to disk in batches, none dropped.
    const BIG: usize = 16 << 20;
    put_named(&gcs, "big.bin", &pattern(BIG, 9));
    let big = |mount: &FuseMount| mount.path(&format!("{PROJECT}/storage/{BUCKET}/big.bin")).display().to_string();
    let cache = tempfile::tempdir().unwrap();
    let mut first = mount(&gcs, cache.path(), &[]);
    assert!(is_pattern(read_direct(&object_path(&first)), 2));
    assert!(read_direct(&big(&first)).is_some_and(|bytes| bytes == pattern(BIG, 9)));
    first.terminate();
    drop(first);

    let mut second = mount(&gcs, cache.path(), &[]);
    let path = object_path(&second);
    // The stat confirms the generation; the bytes then need no request.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);
    assert_eq!(std::fs::metadata(big(&second)).unwrap().len(), BIG as u64);
    let (read, read_big) = while_frozen(&gcs, || (read_direct(&path), read_direct(&big(&second))));
    assert!(is_pattern(read, 2), "read with the service frozen");
    assert!(read_big.is_some_and(|bytes| bytes == pattern(BIG, 9)), "the large one too");
    // What the cache did is in the log at unmount: nothing was fetched,
    // the blocks were read from disk.
    second.terminate();
    let log = second.log_text();
    let field = |name: &str| log.split(&format!(" {name}=")).nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
    assert_eq!(field("misses"), Some(0), "{log}");
    assert!(field("disk_read").is_some_and(|bytes| bytes >= (SIZE + BIG) as u64), "{log}");
}

#[test]
fn an_object_replaced_behind_the_mount_is_read_anew_after_the_ttl() {
    let gcs = emulator_with_object(3);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount(&gcs, cache.path(), &["--metadata-ttl", "1"]);
    let path = object_path(&mount);
    assert!(std::fs::read(&path).unwrap() == pattern(SIZE, 3));
    assert!(is_pattern(read_direct(&path), 3));
    // Same size, other bytes: only the generation tells them apart.
    put(&gcs, &pattern(SIZE, 4));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(std::fs::read(&path).unwrap() == pattern(SIZE, 4), "cat reads the new generation");
    assert!(is_pattern(read_direct(&path), 4), "so does O_DIRECT");
}

#[test]
fn a_second_mount_on_the_same_cache_dir_is_refused_with_the_reason() {
    let gcs = emulator_with_object(5);
    let cache = tempfile::tempdir().unwrap();
    let first = mount(&gcs, cache.path(), &[]);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let output = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_ciofs"))
        .args(["mount", "--foreground", "--project", PROJECT, "--cache-dir"])
        .arg(cache.path())
        .arg(&dir)
        .env("CIOFS_STATE_DIR", state.path().join("state"))
        .env("STORAGE_EMULATOR_HOST", gcs.url())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("is in use by process") && stderr.contains("--cache-dir"), "{stderr}");
    assert!(!is_mounted(&dir));
    // The first mount still reads.
    assert!(std::fs::read(object_path(&first)).unwrap() == pattern(SIZE, 5));
}
