//! macOS's metadata files against the in-memory backends: they are made,
//! written, read, listed, renamed and removed in the namespace alone, and
//! no call about them reaches Cloud Storage, BigQuery or Pub/Sub.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ciofs_backends::memory::MemoryGcs;
use ciofs_frontends::{Ino, ROOT_INO, Vfs};

use super::tests::{assert_no_gcs_writes, names, read_all, services, test_options, walk};
use super::{Namespace, Options};

fn namespace(gcs: &Arc<MemoryGcs>, upload_macos_files: bool) -> Namespace {
    let options = Options { upload_macos_files, ..test_options() };
    Namespace::new(vec!["p".to_string()], services(gcs), options)
}

/// `echo DATA > dir/name`: create, write, close.
async fn write_file(ns: &Namespace, dir: Ino, name: &str, data: &[u8]) -> Ino {
    let (attr, opened) = ns.create(dir, name, 0o644).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
    ns.write(attr.ino, Some(opened.fh), 0, data).await.expect("write");
    ns.flush(attr.ino, opened.fh).await.expect("close");
    ns.fsync(attr.ino, Some(opened.fh)).await.expect("fsync");
    ns.release(attr.ino, opened.fh).await.expect("release");
    attr.ino
}

/// No call that changes Cloud Storage was made.
fn nothing_changed(gcs: &MemoryGcs) {
    assert_no_gcs_writes(gcs);
    assert_eq!(gcs.object_names("b"), Vec::<String>::new());
}

#[tokio::test]
async fn macos_files_and_directories_live_in_the_namespace_only() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let ns = namespace(&gcs, false);
    let bucket = walk(&ns, "p/storage/b").await;
    let store = write_file(&ns, bucket, ".DS_Store", b"finder").await;
    let double = write_file(&ns, bucket, "._photo.jpg", b"xattrs").await;
    let trashes = ns.mkdir(bucket, ".Trashes", 0o755).await.expect("mkdir .Trashes").ino;
    let user = ns.mkdir(trashes, "501", 0o755).await.expect("mkdir inside a local directory").ino;
    let trashed = write_file(&ns, user, "photo.jpg", b"in the trash").await;

    let listed = [".meta", ".Trashes", ".DS_Store", "._photo.jpg"];
    assert_eq!(names(&ns, bucket, 1000).await, listed, "after the bucket's own entries");
    assert_eq!(names(&ns, bucket, 1).await, listed, "paged one by one");
    let lists_before = gcs.calls.list_objects.load(Ordering::SeqCst);
    assert_eq!(names(&ns, user, 1000).await, ["photo.jpg"]);
    assert_eq!(read_all(&ns, store).await, b"finder");
    assert_eq!(read_all(&ns, trashed).await, b"in the trash");
    assert_eq!(ns.getattr(double).await.expect("stat").size, 6);
    // Over NFS: no open.
    assert_eq!(ns.write(double, None, 6, b"!").await.expect("an NFS WRITE"), 1);
    assert_eq!(&ns.read(double, None, 0, 100).await.expect("an NFS READ").0[..], b"xattrs!");
    assert_eq!(gcs.calls.list_objects.load(Ordering::SeqCst), lists_before, "a local directory lists nothing");

    ns.rename(bucket, "._photo.jpg", user, "._moved.jpg").await.expect("mv between local names");
    assert_eq!(names(&ns, user, 1000).await, ["._moved.jpg", "photo.jpg"]);
    ns.rename(bucket, ".Trashes", bucket, ".TemporaryItems").await.expect("mv of a local directory");
    let moved = walk(&ns, "p/storage/b/.TemporaryItems/501").await;
    assert_eq!(names(&ns, moved, 1000).await, ["._moved.jpg", "photo.jpg"], "what was inside moved with it");
    let error = ns.rename(bucket, ".DS_Store", bucket, "store").await.expect_err("a local name onto an object");
    assert_eq!(error.errno(), libc::EXDEV, "mv copies: that upload is asked for");

    let temporary = walk(&ns, "p/storage/b/.TemporaryItems").await;
    assert_eq!(ns.rmdir(temporary, "501").await.expect_err("not empty").errno(), libc::ENOTEMPTY);
    ns.unlink(moved, "._moved.jpg").await.expect("rm");
    ns.unlink(moved, "photo.jpg").await.expect("rm");
    ns.rmdir(temporary, "501").await.expect("rmdir");
    ns.rmdir(bucket, ".TemporaryItems").await.expect("rmdir");
    assert_eq!(names(&ns, bucket, 1000).await, [".meta", ".DS_Store"]);
    nothing_changed(&gcs);
}

#[tokio::test]
async fn macos_names_are_local_at_the_root_and_in_bigquery_and_pubsub_too() {
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs, false);
    let fseventsd = ns.mkdir(ROOT_INO, ".fseventsd", 0o755).await.expect("mkdir at the mount root").ino;
    write_file(&ns, fseventsd, "0000000000000001", b"events").await;
    write_file(&ns, ROOT_INO, ".VolumeIcon.icns", b"icon").await;
    let root = names(&ns, ROOT_INO, 1000).await;
    assert_eq!(root, ["p", ".ciofs", ".fseventsd", ".VolumeIcon.icns"]);
    for service in ["p/bigquery", "p/pubsub/topics"] {
        let dir = walk(&ns, service).await;
        ns.mkdir(dir, ".Spotlight-V100", 0o755).await.unwrap_or_else(|e| panic!("{service}: {e}"));
        write_file(&ns, dir, ".DS_Store", b"x").await;
        assert_eq!(names(&ns, dir, 1000).await, [".Spotlight-V100", ".DS_Store"], "{service}: no dataset or topic");
    }
}

#[tokio::test]
async fn with_upload_macos_files_they_are_objects() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let ns = namespace(&gcs, true);
    let bucket = walk(&ns, "p/storage/b").await;
    write_file(&ns, bucket, ".DS_Store", b"finder").await;
    let trashes = ns.mkdir(bucket, ".Trashes", 0o755).await.expect("mkdir").ino;
    write_file(&ns, trashes, "._x", b"x").await;
    assert_eq!(gcs.object_names("b"), [".DS_Store", ".Trashes/", ".Trashes/._x"]);
}

#[tokio::test]
async fn objects_under_macos_names_are_not_shown_and_local_files_end_with_the_namespace() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    gcs.put_object("b", ".DS_Store", "uploaded by another tool");
    gcs.put_object("b", ".Trashes/x", "x");
    gcs.put_object("b", "photo.jpg", "jpeg");
    let ns = namespace(&gcs, false);
    let bucket = walk(&ns, "p/storage/b").await;
    assert_eq!(names(&ns, bucket, 1).await, [".meta", "photo.jpg"], "Google's copies are left out, paged or not");
    assert_eq!(ns.lookup(bucket, ".DS_Store").await.expect_err("not local").errno(), libc::ENOENT);
    write_file(&ns, bucket, "._photo.jpg", b"xattrs").await;
    drop(ns);
    let again = namespace(&gcs, false);
    let bucket = walk(&again, "p/storage/b").await;
    assert_eq!(names(&again, bucket, 1000).await, [".meta", "photo.jpg"], "a restart forgets local files");
    assert_eq!(gcs.object_names("b"), [".DS_Store", ".Trashes/x", "photo.jpg"], "and Google's are untouched");
    let shown = namespace(&gcs, true);
    let bucket = walk(&shown, "p/storage/b").await;
    assert_eq!(
        names(&shown, bucket, 1000).await,
        [".meta", ".DS_Store", ".Trashes", "photo.jpg"],
        "--upload-macos-files"
    );
}
