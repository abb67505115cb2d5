//! Buckets made by `mkdir` and their `.meta/_bucket.json`, against the
//! in-memory Cloud Storage: when a pending bucket is created and with what.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ciofs_backends::gcs::{BucketSettings, ObjectStore};
use ciofs_backends::memory::MemoryGcs;
use ciofs_frontends::{Ino, OpenFlags, Vfs};

use super::Namespace;
use super::tests::{services, test_options, walk};

fn namespace(gcs: &Arc<MemoryGcs>) -> Namespace {
    Namespace::new(vec!["p".to_string()], services(gcs), test_options())
}

async fn names(ns: &Namespace, dir: Ino) -> Vec<String> {
    ns.readdir(dir, None, 0, 100).await.unwrap().entries.into_iter().map(|e| e.name).collect()
}

/// Writes `document` over `dir`'s `.meta/_bucket.json` and closes it.
async fn write_bucket_document(ns: &Namespace, bucket: &str, document: &str) -> Result<(), i32> {
    let ino = walk(ns, &format!("p/storage/{bucket}/.meta/_bucket.json")).await;
    let opened = ns.open(ino, OpenFlags { write: true, truncate: true, append: false }).await.unwrap();
    ns.write(ino, Some(opened.fh), 0, document.as_bytes()).await.unwrap();
    let flushed = ns.flush(ino, opened.fh).await.map_err(|e| e.errno());
    ns.release(ino, opened.fh).await.unwrap();
    flushed
}

/// Creates `name` in `dir` with `data` and closes it; close()'s result.
async fn write_new_file(ns: &Namespace, dir: Ino, name: &str, data: &[u8]) -> Result<(), i32> {
    let (attr, opened) = ns.create(dir, name, 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, data).await.unwrap();
    let flushed = ns.flush(attr.ino, opened.fh).await.map_err(|e| e.errno());
    let _ = ns.release(attr.ino, opened.fh).await;
    flushed
}

fn created(gcs: &MemoryGcs) -> u64 {
    gcs.calls.create_bucket.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_made_bucket_waits_for_its_settings_and_is_created_with_them() {
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    ns.mkdir(storage, "fresh", 0o755).await.unwrap();
    assert_eq!(created(&gcs), 0, "pending");
    assert_eq!(names(&ns, storage).await, ["fresh"]);
    let fresh = walk(&ns, "p/storage/fresh").await;
    assert_eq!(names(&ns, fresh).await, [".meta"], "empty, and nothing asked of Cloud Storage");
    assert_eq!(gcs.calls.list_objects.load(Ordering::SeqCst), 0);

    let document = r#"{"version": "1", "type": "gcs-bucket-metadata", "name": "exported-as-other",
        "location": "EUROPE-WEST1", "storage_class": "NEARLINE", "versioning": true, "labels": {"env": "dev"}}"#;
    write_bucket_document(&ns, "fresh", document).await.unwrap();
    assert_eq!(created(&gcs), 1);
    let made = gcs.get_bucket("fresh").await.unwrap();
    assert_eq!(
        (made.location.as_str(), made.storage_class.as_str(), made.versioning),
        ("EUROPE-WEST1", "NEARLINE", true)
    );
    assert_eq!(made.labels, BTreeMap::from([("env".to_string(), "dev".to_string())]));
    // The same document again changes nothing.
    write_bucket_document(&ns, "fresh", document).await.unwrap();
    assert_eq!(gcs.calls.update_bucket.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_made_bucket_is_created_by_its_first_file_or_after_a_second() {
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    ns.mkdir(storage, "first-file", 0o755).await.unwrap();
    let dir = walk(&ns, "p/storage/first-file").await;
    write_new_file(&ns, dir, "f", b"x").await.unwrap();
    assert_eq!(gcs.object_data("first-file", "f").as_deref(), Some(&b"x"[..]));
    assert_eq!(gcs.get_bucket("first-file").await.unwrap().location, "US", "Cloud Storage's defaults");

    ns.mkdir(storage, "waited", 0o755).await.unwrap();
    let _ = ns.storage.create_due_buckets(super::PendingDue::Waited).await;
    assert!(gcs.get_bucket("waited").await.is_err(), "not before a second");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let _ = ns.storage.create_due_buckets(super::PendingDue::Waited).await;
    assert_eq!(gcs.get_bucket("waited").await.unwrap().storage_class, "STANDARD");
}

#[tokio::test]
async fn taken_and_invalid_names_are_refused_and_a_pending_bucket_can_be_removed() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("taken");
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    assert_eq!(ns.mkdir(storage, "taken", 0o755).await.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(ns.mkdir(storage, "Bad_Name", 0o755).await.unwrap_err().errno(), libc::EINVAL);
    ns.mkdir(storage, "brief", 0o755).await.unwrap();
    assert_eq!(ns.mkdir(storage, "brief", 0o755).await.unwrap_err().errno(), libc::EEXIST);
    ns.rmdir(storage, "brief").await.unwrap();
    assert_eq!(names(&ns, storage).await, ["taken"]);
    let _ = ns.storage.create_due_buckets(super::PendingDue::Waited).await;
    assert_eq!(created(&gcs), 0);
}

#[tokio::test]
async fn a_bucket_document_changes_labels_and_versioning_but_not_the_location() {
    let gcs = Arc::new(MemoryGcs::new());
    let settings = BucketSettings {
        labels: BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]),
        ..BucketSettings::default()
    };
    gcs.create_bucket("p", "mine", &settings).await.unwrap();
    let ns = namespace(&gcs);
    write_bucket_document(&ns, "mine", r#"{"labels": {"b": "3", "c": "4"}, "versioning": true}"#).await.unwrap();
    let changed = gcs.get_bucket("mine").await.unwrap();
    let want = BTreeMap::from([("b".to_string(), "3".to_string()), ("c".to_string(), "4".to_string())]);
    assert_eq!((changed.labels, changed.versioning), (want, true));
    let moved = write_bucket_document(&ns, "mine", r#"{"location": "ASIA"}"#).await;
    assert_eq!(moved, Err(libc::EINVAL));
    let bad_label = write_bucket_document(&ns, "mine", r#"{"labels": {"Env": "x"}}"#).await;
    assert_eq!(bad_label, Err(libc::EINVAL));
    assert_eq!(gcs.calls.update_bucket.load(Ordering::SeqCst), 1, "refusals send nothing");
}

/// Bucket names are global: another project's bucket is neither seen nor
/// written nor removed through this project's `storage/` (`tar x` of an
/// export into it fails instead of writing into the source).
#[tokio::test]
async fn another_project_s_bucket_is_not_in_this_one() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket_of("other", "theirs");
    gcs.put_object("theirs", "f", "x");
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    assert_eq!(ns.lookup(storage, "theirs").await.unwrap_err().errno(), libc::ENOENT);
    assert!(names(&ns, storage).await.is_empty());
    assert_eq!(ns.mkdir(storage, "theirs", 0o755).await.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(ns.rmdir(storage, "theirs").await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(gcs.object_data("theirs", "f").as_deref(), Some(&b"x"[..]));
    // Unreadable to us (403): still not found here.
    gcs.add_bucket_of("other", "locked");
    gcs.fail_next(ciofs_backends::memory::Op::GetBucket, 1, ciofs_backends::ErrorKind::PermissionDenied);
    assert_eq!(ns.lookup(storage, "locked").await.unwrap_err().errno(), libc::ENOENT);
    gcs.add_bucket_of("p", "mine");
    assert!(ns.lookup(storage, "mine").await.is_ok(), "one of this project's, made elsewhere since");
}

#[tokio::test]
async fn settings_that_failed_to_apply_are_kept_for_the_next_try() {
    use ciofs_backends::ErrorKind;
    use ciofs_backends::memory::Op;
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    ns.mkdir(storage, "later", 0o755).await.unwrap();
    gcs.fail_next(Op::CreateBucket, 1, ErrorKind::Unavailable);
    let failed = write_bucket_document(&ns, "later", r#"{"location": "EU", "labels": {"k": "v"}}"#).await;
    assert_eq!(failed, Err(libc::EIO));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let _ = ns.storage.create_due_buckets(super::PendingDue::Waited).await;
    let made = gcs.get_bucket("later").await.unwrap();
    assert_eq!(made.location, "EU", "made with the settings that failed, not the defaults");
}

#[tokio::test]
async fn a_name_taken_meanwhile_takes_no_files_and_a_lost_answer_is_no_error() {
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs);
    let storage = walk(&ns, "p/storage").await;
    ns.mkdir(storage, "raced", 0o755).await.unwrap();
    let dir = walk(&ns, "p/storage/raced").await;
    let (attr, opened) = ns.create(dir, "f", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"mine").await.unwrap();
    gcs.add_bucket_of("other", "raced");
    assert_eq!(ns.flush(attr.ino, opened.fh).await.unwrap_err().errno(), libc::EEXIST);
    let _ = ns.release(attr.ino, opened.fh).await;
    assert_eq!(gcs.object_data("raced", "f"), None, "nothing went into the other project's bucket");

    // Our own create whose answer was lost: the retry's 409 is our bucket.
    ns.mkdir(storage, "lost", 0o755).await.unwrap();
    gcs.add_bucket_of("p", "lost");
    let lost = walk(&ns, "p/storage/lost").await;
    write_new_file(&ns, lost, "f", b"mine").await.unwrap();
    assert_eq!(gcs.object_data("lost", "f").as_deref(), Some(&b"mine"[..]));
}

/// vim's swap file or `sed -i`'s temporary file in a bucket's `.meta/` is a
/// scratch file: its fsync applies nothing, succeeds, and says nothing in
/// `.ciofs/errors` (a regression of the slices' split: it was EINVAL).
#[tokio::test]
async fn an_fsync_of_a_scratch_file_in_meta_succeeds_and_logs_nothing() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "x.txt", "x");
    let ns = namespace(&gcs);
    let meta = walk(&ns, "p/storage/b/.meta").await;
    let (attr, opened) = ns.create(meta, ".x.txt.json.swp", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"swap").await.unwrap();
    assert_eq!(ns.fsync(attr.ino, Some(opened.fh)).await, Ok(()));
    assert_eq!(ns.flush(attr.ino, opened.fh).await, Ok(()));
    ns.release(attr.ino, opened.fh).await.unwrap();
    let errors = String::from_utf8_lossy(&ns.cx.error_log.render().0).into_owned();
    assert!(errors.is_empty(), "{errors}");
}

/// A name that cannot be a file is EINVAL wherever it is made, also in the
/// tree's fixed upper levels (which refuse everything else with EPERM).
#[tokio::test]
async fn a_name_that_cannot_be_a_file_is_einval_in_the_upper_levels_too() {
    let gcs = Arc::new(MemoryGcs::new());
    let ns = namespace(&gcs);
    let project = walk(&ns, "p").await;
    let storage = walk(&ns, "p/storage").await;
    for dir in [ciofs_frontends::ROOT_INO, project, storage] {
        assert_eq!(ns.mkdir(dir, ".meta", 0o755).await.map_err(|e| e.errno()).err(), Some(libc::EINVAL));
        assert_eq!(ns.create(dir, ".meta", 0o644).await.map(|_| ()).map_err(|e| e.errno()), Err(libc::EINVAL));
    }
    assert_eq!(ns.mkdir(project, "other", 0o755).await.map_err(|e| e.errno()).err(), Some(libc::EPERM));
}
