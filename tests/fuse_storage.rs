//! Cloud Storage read through a real FUSE mount, checked with real tools
//! (`ls`, `stat`, `cat`, `dd`, `tail`, `find`, `du`) against what curl reads
//! from the emulator directly.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;

fn stdout(command: &mut Command) -> String {
    let output = run(command);
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The tree most tests use: nested prefixes, a placeholder object, a
/// multi-megabyte object and one with custom metadata.
fn seed(bucket: &str) -> Vec<u8> {
    create_bucket(bucket);
    let big = pattern(3 * 1024 * 1024 + 123, 1);
    upload(bucket, "top.txt", b"top level\n");
    upload(bucket, "dir/a.txt", b"alpha\n");
    upload(bucket, "dir/sub/b.txt", b"bravo\n");
    upload(bucket, "dir/sub/deeper/c.txt", b"charlie\n");
    upload(bucket, "empty/", b"");
    upload(bucket, "big.bin", &big);
    patch_metadata(bucket, "top.txt", "text/plain", &[("owner", "ciofs"), ("purpose", "test")]);
    big
}

#[test]
fn ls_l_shows_buckets_and_objects_with_listing_sizes_and_mtimes() {
    let bucket = bucket_name("ls_l");
    seed(&bucket);
    let mount = FuseMount::start(&[]);

    let root = stdout(Command::new("ls").arg(mount.path("")));
    assert_eq!(root.trim(), PROJECT);
    let services = stdout(Command::new("ls").arg(mount.path(PROJECT)));
    assert_eq!(services.split_whitespace().collect::<Vec<_>>(), ["bigquery", "pubsub", "storage"]);
    let buckets = stdout(Command::new("ls").arg(mount.path(&format!("{PROJECT}/storage"))));
    assert!(buckets.lines().any(|b| b == bucket), "{bucket} not in {buckets}");

    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let listing = stdout(Command::new("ls").args(["-l", "--time-style=+%s"]).arg(&dir));
    let mut seen = Vec::new();
    for line in listing.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, size, mtime, name) = (fields[0], fields[4], fields[5], fields[6]);
        seen.push(name.to_string());
        if mode.starts_with('-') {
            let object = object_json(&bucket, name);
            assert_eq!(size, object["size"].as_str().unwrap(), "size of {name}");
            let updated = chrono::DateTime::parse_from_rfc3339(object["updated"].as_str().unwrap()).unwrap();
            assert_eq!(mtime, updated.timestamp().to_string(), "mtime of {name}");
        } else {
            assert!(mode.starts_with('d'), "{line}");
        }
    }
    assert_eq!(seen, ["big.bin", "dir", "empty", "top.txt"]);
    let all = stdout(Command::new("ls").arg("-a").arg(&dir));
    assert!(all.lines().any(|l| l == ".meta"), "{all}");
}

#[test]
fn cat_cp_dd_and_tail_read_what_the_emulator_holds() {
    let bucket = bucket_name("reads");
    let big = seed(&bucket);
    let mount = FuseMount::start(&[]);
    let file = mount.path(&format!("{PROJECT}/storage/{bucket}/big.bin"));

    let content = std::fs::read(&file).expect("read through the mount");
    assert_eq!(content.len(), big.len());
    assert!(content == read_object(&bucket, "big.bin"), "cat differs from the emulator's bytes");

    let output = run(Command::new("dd").arg(format!("if={}", file.display())).args([
        "bs=4096",
        "skip=300",
        "count=5",
        "status=none",
    ]));
    assert!(output.status.success());
    assert!(output.stdout == read_range(&bucket, "big.bin", 300 * 4096, 305 * 4096 - 1), "dd skip= differs");

    let output = run(Command::new("tail").args(["-c", "1000"]).arg(&file));
    let len = big.len() as u64;
    assert!(output.stdout == read_range(&bucket, "big.bin", len - 1000, len - 1), "tail -c differs");

    let copy = tempfile::NamedTempFile::new().unwrap();
    let output = run(Command::new("cp").arg(&file).arg(copy.path()));
    assert!(output.status.success(), "cp: {}", String::from_utf8_lossy(&output.stderr));
    assert!(std::fs::read(copy.path()).unwrap() == big, "cp copied other bytes");

    let nested = mount.path(&format!("{PROJECT}/storage/{bucket}/dir/sub/deeper/c.txt"));
    assert_eq!(std::fs::read(nested).unwrap(), read_object(&bucket, "dir/sub/deeper/c.txt"));
}

#[test]
fn find_and_du_walk_the_whole_tree() {
    let bucket = bucket_name("find");
    let big = seed(&bucket);
    let mount = FuseMount::start(&[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));

    let found = stdout(Command::new("find").arg(".").args(["-not", "-path", "*/.meta*"]).current_dir(&dir));
    let found: BTreeSet<&str> = found.lines().collect();
    let expected: BTreeSet<&str> = [
        ".",
        "./top.txt",
        "./big.bin",
        "./empty",
        "./dir",
        "./dir/a.txt",
        "./dir/sub",
        "./dir/sub/b.txt",
        "./dir/sub/deeper",
        "./dir/sub/deeper/c.txt",
    ]
    .into();
    assert_eq!(found, expected);

    let metas = stdout(Command::new("find").arg(".").args(["-path", "*/.meta/*", "-type", "f"]).current_dir(&dir));
    let metas: BTreeSet<&str> = metas.lines().collect();
    assert!(metas.contains("./.meta/_bucket.json"), "{metas:?}");
    assert!(metas.contains("./dir/sub/deeper/.meta/c.txt.json"), "{metas:?}");
    assert!(metas.contains("./.meta/big.bin.json"), "{metas:?}");

    let du = stdout(Command::new("du").args(["-s", "--apparent-size", "-B1"]).arg(dir.join("big.bin")));
    assert_eq!(du.split_whitespace().next(), Some(big.len().to_string().as_str()));
}

#[test]
fn meta_documents_have_the_seed_format_and_exact_sizes() {
    let bucket = bucket_name("meta");
    seed(&bucket);
    let mount = FuseMount::start(&[]);
    let meta_file = mount.path(&format!("{PROJECT}/storage/{bucket}/.meta/top.txt.json"));

    let stat_size = std::fs::metadata(&meta_file).unwrap().len();
    let text = std::fs::read(&meta_file).unwrap();
    assert_eq!(stat_size, text.len() as u64, "stat size is the document's exact size");
    let document: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let object = object_json(&bucket, "top.txt");
    assert_eq!(document["version"], "1");
    assert_eq!(document["type"], "gcs-object-metadata");
    assert_eq!(document["bucket"], bucket.as_str());
    assert_eq!(document["name"], "top.txt");
    assert_eq!(document["size"].as_u64().unwrap().to_string(), object["size"].as_str().unwrap());
    assert_eq!(document["generation"], object["generation"]);
    assert_eq!(document["md5_hash"], object["md5Hash"]);
    assert_eq!(document["crc32c"], object["crc32c"]);
    assert_eq!(document["content_type"], "text/plain");
    assert_eq!(document["custom_metadata"]["owner"], "ciofs");
    assert_eq!(document["custom_metadata"]["purpose"], "test");

    let bucket_file = mount.path(&format!("{PROJECT}/storage/{bucket}/.meta/_bucket.json"));
    let text = std::fs::read(&bucket_file).unwrap();
    assert_eq!(std::fs::metadata(&bucket_file).unwrap().len(), text.len() as u64);
    let document: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(document["type"], "gcs-bucket-metadata");
    assert_eq!(document["name"], bucket.as_str());

    let nested = mount.path(&format!("{PROJECT}/storage/{bucket}/dir/sub/.meta/b.txt.json"));
    let document: serde_json::Value = serde_json::from_slice(&std::fs::read(nested).unwrap()).unwrap();
    assert_eq!(document["name"], "dir/sub/b.txt");
    // Two reads of an unchanged object's document are the same bytes.
    assert_eq!(std::fs::read(&meta_file).unwrap(), std::fs::read(&meta_file).unwrap());
}

#[test]
fn missing_paths_are_enoent() {
    let bucket = bucket_name("missing");
    seed(&bucket);
    let mount = FuseMount::start(&[]);
    for missing in [
        format!("{PROJECT}/storage/{bucket}/nope.txt"),
        format!("{PROJECT}/storage/{bucket}/dir/nope/deeper"),
        format!("{PROJECT}/storage/{bucket}/.meta/nope.txt.json"),
        format!("{PROJECT}/storage/no-such-bucket-{}", std::process::id()),
        "no-such-project".to_string(),
    ] {
        let error = std::fs::metadata(mount.path(&missing)).expect_err(&missing);
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{missing}: {error}");
    }
}

/// With `--stat-cache-entries 2` the metadata cache empties over and over
/// while `ls -l` and `stat` walk the tree: every answer is still the
/// object's, only asked of Cloud Storage again.
#[test]
fn a_tiny_stat_cache_gives_the_same_answers() {
    let bucket = bucket_name("tinycache");
    let big = seed(&bucket);
    let mount = FuseMount::start(&["--stat-cache-entries", "2"]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let listing = stdout(Command::new("ls").arg("-lR").arg(&dir));
    for name in ["top.txt", "a.txt", "b.txt", "c.txt", "big.bin"] {
        assert!(listing.contains(name), "{name} not in {listing}");
    }
    for (path, size) in [("top.txt", 10), ("dir/a.txt", 6), ("dir/sub/deeper/c.txt", 8), ("big.bin", big.len())] {
        assert_eq!(std::fs::metadata(dir.join(path)).expect(path).len(), size as u64, "{path}");
    }
    assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), big);
}

/// A name found absent is remembered for `--negative-ttl`, so an object
/// added behind the mount's back stays hidden meanwhile; `touch` of its
/// directory forgets what is cached there, and the object shows at once.
#[test]
fn touch_of_a_directory_shows_an_object_added_behind_the_mount() {
    let bucket = bucket_name("touchdir");
    seed(&bucket);
    let mount = FuseMount::start(&["--negative-ttl", "60"]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}/dir"));
    let late = dir.join("late.txt");
    let error = std::fs::metadata(&late).expect_err("not there yet");
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
    upload(&bucket, "dir/late.txt", b"added behind the mount\n");
    let error = std::fs::metadata(&late).expect_err("the absent name is remembered");
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
    ok(&format!("touch {}", dir.display()));
    assert_eq!(std::fs::read(&late).expect("shown after touch DIR"), b"added behind the mount\n");
    assert!(stdout(Command::new("ls").arg(&dir)).lines().any(|name| name == "late.txt"));
}

#[test]
fn names_that_cannot_be_files_are_left_out_and_directories_win() {
    let bucket = bucket_name("odd");
    create_bucket(&bucket);
    let long = "l".repeat(256);
    for name in ["fine.txt", "both", "both/inner.txt", "double//slash", "dot/./x", "dotdot/../y", ".meta/x", &long] {
        upload(&bucket, name, name.as_bytes());
    }
    let mount = FuseMount::start(&[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));

    let listing = stdout(Command::new("ls").arg("-a").arg(&dir));
    let names: Vec<&str> = listing.lines().filter(|n| !matches!(*n, "." | "..")).collect();
    // `both` is an object and a prefix: the directory is shown.
    assert_eq!(names, [".meta", "both", "dot", "dotdot", "double", "fine.txt"]);
    assert!(std::fs::metadata(dir.join("both")).unwrap().is_dir());
    assert_eq!(std::fs::read(dir.join("both/inner.txt")).unwrap(), b"both/inner.txt");
    // Empty, `.` and `..` segments are not shown inside their prefixes.
    for prefix in ["double", "dot", "dotdot"] {
        let inner = stdout(Command::new("ls").arg(dir.join(prefix)));
        assert_eq!(inner.trim(), "", "{prefix} lists {inner}");
    }
    // The real object named `.meta/x` is shadowed by the metadata directory.
    assert!(!dir.join(".meta/x").exists());
    // Every valid object still reads, and the mount keeps serving.
    assert_eq!(std::fs::read(dir.join("fine.txt")).unwrap(), b"fine.txt");
}

#[test]
fn listing_pages_return_every_entry_once_in_order() {
    let bucket = bucket_name("pages");
    create_bucket(&bucket);
    let mut expected = Vec::new();
    for i in 0..60 {
        let name = format!("f{i:03}");
        upload(&bucket, &format!("p/{name}"), b"x");
        expected.push(name);
    }
    for sub in ["d1", "f025x", "zz"] {
        upload(&bucket, &format!("p/{sub}/inner"), b"y");
        expected.push(sub.to_string());
    }
    expected.sort();
    // 7 entries per list call: the 63 children take 9 pages or more.
    let mount = FuseMount::start(&["--page-size", "7"]);
    let listing =
        stdout(Command::new("ls").args(["-1", "-f"]).arg(mount.path(&format!("{PROJECT}/storage/{bucket}/p"))));
    let names: Vec<&str> = listing.lines().filter(|n| *n != ".meta").collect();
    assert_eq!(names, expected);
}

#[test]
fn an_outage_gives_eio_within_bounds_and_the_mount_recovers() {
    let mut gcs = PrivateGcs::start();
    let url = gcs.url();
    let bucket = "outage";
    let call = |args: &[&str]| curl(args);
    call(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", "{\"name\":\"outage\"}"]);
    call(&["-X", "POST", &format!("{url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=a.txt"), "-d", "a"]);
    call(&["-X", "POST", &format!("{url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=b.txt"), "-d", "b"]);
    // A short metadata TTL, so the outage is seen rather than the cache.
    let mount = FuseMount::start_with_env(&["--metadata-ttl", "0"], &[("STORAGE_EMULATOR_HOST", &url)]);
    let a = mount.path(&format!("{PROJECT}/storage/{bucket}/a.txt"));
    assert_eq!(std::fs::read(&a).unwrap(), b"a");

    gcs.stop();
    std::thread::sleep(Duration::from_millis(1100)); // the kernel's attribute TTL
    let started = Instant::now();
    let error = std::fs::read(mount.path(&format!("{PROJECT}/storage/{bucket}/b.txt"))).unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(waited < Duration::from_secs(30), "an outage must fail within bounds, took {waited:?}");

    gcs.resume();
    assert_eq!(std::fs::read(mount.path(&format!("{PROJECT}/storage/{bucket}/b.txt"))).unwrap(), b"b");
    assert_eq!(std::fs::read(&a).unwrap(), b"a");
}

#[test]
fn stat_shows_the_configured_owner_and_modes() {
    let bucket = bucket_name("modes");
    seed(&bucket);
    let mount = FuseMount::start(&["--uid", "1234", "--gid", "2345", "--file-mode", "640", "--dir-mode", "750"]);
    let file = std::fs::metadata(mount.path(&format!("{PROJECT}/storage/{bucket}/top.txt"))).unwrap();
    assert_eq!((file.uid(), file.gid(), file.mode() & 0o7777), (1234, 2345, 0o640));
    let dir = std::fs::metadata(mount.path(&format!("{PROJECT}/storage/{bucket}/dir"))).unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o750);
    // ctime equals mtime (tar compares both).
    assert_eq!(file.ctime(), file.mtime());
    assert!(file.modified().unwrap() > SystemTime::UNIX_EPOCH);
    let df = stdout(Command::new("df").arg(mount.path("")));
    let blocks = df.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)).and_then(|b| b.parse::<u64>().ok());
    assert!(blocks.is_some_and(|b| b > 0), "df shows a size: {df}");
}

#[test]
fn mount_returns_when_ready_and_unmount_stops_the_daemon() {
    let bucket = bucket_name("daemon");
    seed(&bucket);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let state = scratch.path().join("state");
    let output = run(ciofs().args(["mount", "--project", PROJECT]).arg(&dir).env("CIOFS_STATE_DIR", &state));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Ready on return: no wait needed before the first use.
    let guard = UnmountOnDrop(dir.clone());
    assert_eq!(std::fs::read(dir.join(format!("{PROJECT}/storage/{bucket}/dir/a.txt"))).unwrap(), b"alpha\n");
    let output = run(ciofs().arg("unmount").arg(&dir).env("CIOFS_STATE_DIR", &state));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!is_mounted(&dir));
    drop(guard);
}

#[test]
fn mount_nfs_without_a_kernel_client_fails_naming_serve_nfs() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let guard = UnmountOnDrop(dir.clone());
    let output = run(ciofs()
        .args(["mount", "--nfs", "--project", PROJECT])
        .arg(&dir)
        .env("CIOFS_STATE_DIR", scratch.path().join("state")));
    if output.status.success() {
        // A kernel with an NFS client mounted it: that is fine too.
        assert!(is_mounted(&dir));
        let _ = run(ciofs().arg("unmount").arg(&dir).env("CIOFS_STATE_DIR", scratch.path().join("state")));
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("ciofs serve-nfs --project"), "{stderr}");
    }
    drop(guard);
}

#[test]
fn diff_r_of_the_mount_matches_a_tree_downloaded_with_curl() {
    let bucket = bucket_name("diff");
    seed(&bucket);
    let mount = FuseMount::start(&[]);
    let local = tempfile::tempdir().unwrap();
    let url = format!("{}/storage/v1/b/{bucket}/o?maxResults=1000", gcs_url());
    let listing: serde_json::Value = serde_json::from_slice(&curl(&[&url])).unwrap();
    for item in listing["items"].as_array().unwrap() {
        let name = item["name"].as_str().unwrap();
        if name.ends_with('/') {
            std::fs::create_dir_all(local.path().join(name)).unwrap();
            continue;
        }
        let path = local.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, read_object(&bucket, name)).unwrap();
    }
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let output = run(Command::new("diff").args(["-r", "--exclude=.meta"]).arg(local.path()).arg(&dir));
    assert!(output.status.success(), "diff -r: {}", String::from_utf8_lossy(&output.stdout));

    // stat(1) shows the sizes and mtimes the JSON API gives.
    let stat = stdout(Command::new("stat").args(["-c", "%s %Y %F"]).arg(dir.join("dir/sub/b.txt")));
    let object = object_json(&bucket, "dir/sub/b.txt");
    let updated = chrono::DateTime::parse_from_rfc3339(object["updated"].as_str().unwrap()).unwrap();
    assert_eq!(stat.trim(), format!("{} {} regular file", object["size"].as_str().unwrap(), updated.timestamp()));
}

/// The directory listings the mount asked of Cloud Storage for `bucket`, as
/// a recording proxy saw them (a lookup's one-entry probe is not one).
fn list_calls(proxy: &common::proxy::RecordingProxy, bucket: &str) -> usize {
    proxy
        .sent()
        .lines()
        .filter(|line| line.starts_with("GET ") && line.contains(&format!("/b/{bucket}/o?")))
        .filter(|line| !line.contains("maxResults=1&") && !line.ends_with("maxResults=1 HTTP/1.1"))
        .count()
}

/// A second `ls -l` (and `find`, and the `.meta/` listing) of a directory
/// within the metadata TTL asks Cloud Storage nothing: the first listing
/// is kept whole. With `--metadata-ttl 0` every listing asks.
#[test]
fn a_second_ls_l_or_find_within_the_metadata_ttl_lists_nothing() {
    let bucket = bucket_name("listcache");
    seed(&bucket);
    for i in 0..20 {
        upload(&bucket, &format!("dir/many/f{i:02}"), b"x");
    }
    let proxy = common::proxy::RecordingProxy::start(&gcs_url());
    let mount = FuseMount::start_with_env(&[], &[("STORAGE_EMULATOR_HOST", proxy.url())]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}/dir"));
    let first = stdout(Command::new("ls").args(["-l", "--time-style=+%s"]).arg(&dir));
    let all = stdout(Command::new("find").arg(&dir));
    let lists = list_calls(&proxy, &bucket);
    assert!(lists >= 1, "the first listing asks:\n{}", proxy.sent());
    assert_eq!(stdout(Command::new("ls").args(["-l", "--time-style=+%s"]).arg(&dir)), first);
    assert_eq!(stdout(Command::new("find").arg(&dir)), all);
    let documents = stdout(Command::new("ls").arg(dir.join("many/.meta")));
    assert_eq!(documents.lines().count(), 20, "{documents}");
    assert_eq!(list_calls(&proxy, &bucket), lists, "asked again within the TTL:\n{}", proxy.sent());

    drop(mount);
    let mount = FuseMount::start_with_env(&["--metadata-ttl", "0"], &[("STORAGE_EMULATOR_HOST", proxy.url())]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}/dir"));
    let before = list_calls(&proxy, &bucket);
    stdout(Command::new("ls").arg(&dir));
    stdout(Command::new("ls").arg(&dir));
    assert_eq!(list_calls(&proxy, &bucket) - before, 2, "--metadata-ttl 0 lists every time");
}

/// The names `ls` prints for `path`, one per line.
fn ls(path: &std::path::Path) -> Vec<String> {
    stdout(Command::new("ls").arg(path)).lines().map(str::to_string).collect()
}

/// While a directory's listing is cached (by ciofs and by the kernel), what
/// is done through the mount shows in the next `ls` at once: a file
/// created, removed or renamed, a directory made or removed, and the
/// `.meta/` documents that follow them.
#[test]
fn changes_through_the_mount_show_at_once_in_a_cached_listing() {
    let bucket = bucket_name("listchange");
    seed(&bucket);
    let mount = FuseMount::start(&[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}/dir"));
    assert_eq!(ls(&dir), ["a.txt", "sub"]);
    assert_eq!(ls(&dir.join(".meta")), ["a.txt.json"]);
    ok(&format!("echo new > {}", dir.join("new.txt").display()));
    assert_eq!(ls(&dir), ["a.txt", "new.txt", "sub"]);
    assert_eq!(ls(&dir.join(".meta")), ["a.txt.json", "new.txt.json"]);
    ok(&format!("mv {0}/a.txt {0}/moved.txt && rm {0}/new.txt && mkdir {0}/made", dir.display()));
    assert_eq!(ls(&dir), ["made", "moved.txt", "sub"]);
    assert_eq!(ls(&dir.join(".meta")), ["moved.txt.json"]);
    ok(&format!("rmdir {}/made", dir.display()));
    assert_eq!(ls(&dir), ["moved.txt", "sub"]);
    // The size of a document follows its object's upload.
    let document = dir.join(".meta/moved.txt.json");
    let before = std::fs::metadata(&document).unwrap().len();
    ok(&format!("echo a much longer content than before > {}", dir.join("moved.txt").display()));
    let after = std::fs::read(&document).unwrap();
    assert_eq!(std::fs::metadata(&document).unwrap().len(), after.len() as u64);
    assert_ne!(after.len() as u64, before, "the document shows the new size");
    // A file being written shows before its upload.
    let mut writing = std::fs::File::create(dir.join("writing.txt")).unwrap();
    assert_eq!(ls(&dir), ["moved.txt", "sub", "writing.txt"]);
    std::io::Write::write_all(&mut writing, b"done\n").unwrap();
    drop(writing);
    assert_eq!(ls(&dir), ["moved.txt", "sub", "writing.txt"]);
}

/// An object added behind the mount's back does not show in a listing
/// cached within the metadata TTL; `touch DIR` drops the cached listing,
/// and it shows at once, in DIR and in DIR/.meta/.
#[test]
fn an_object_added_behind_a_cached_listing_shows_after_touch_dir() {
    let bucket = bucket_name("listbehind");
    seed(&bucket);
    let mount = FuseMount::start(&[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}/dir"));
    assert_eq!(ls(&dir), ["a.txt", "sub"]);
    assert_eq!(ls(&dir.join(".meta")), ["a.txt.json"]);
    upload(&bucket, "dir/behind.txt", b"added behind the mount\n");
    assert_eq!(ls(&dir), ["a.txt", "sub"], "the cached listing is kept for the TTL");
    assert_eq!(ls(&dir.join(".meta")), ["a.txt.json"]);
    ok(&format!("touch {}", dir.display()));
    assert_eq!(ls(&dir), ["a.txt", "behind.txt", "sub"]);
    assert_eq!(ls(&dir.join(".meta")), ["a.txt.json", "behind.txt.json"]);
    assert_eq!(std::fs::read(dir.join("behind.txt")).unwrap(), b"added behind the mount\n");

    // Removed behind the mount: the kernel keeps the name and attributes it
    // was given (for the TTL) until `touch DIR`.
    assert_eq!(std::fs::metadata(dir.join("behind.txt")).unwrap().len(), 23);
    let url = format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode("dir/behind.txt"));
    curl(&["-X", "DELETE", &url]);
    ok(&format!("touch {}", dir.display()));
    let error = std::fs::metadata(dir.join("behind.txt")).expect_err("gone after touch DIR");
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
    assert_eq!(ls(&dir), ["a.txt", "sub"]);
}
