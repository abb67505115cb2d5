//! Writes without a handle (NFS) and what happens to them when an upload
//! fails, is refused, or its answer is lost, against the in-memory store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ciofs_backends::ErrorKind;
use ciofs_backends::memory::{MemoryGcs, Op};
use ciofs_frontends::Vfs;

use super::Namespace;
use super::tests::{services, test_options, walk};

fn namespace(gcs: &Arc<MemoryGcs>) -> (Namespace, std::path::PathBuf) {
    let options = test_options();
    let state = options.staging_dir.clone();
    (Namespace::new(vec!["p".to_string()], services(gcs), options), state)
}

fn errors(ns: &Namespace) -> String {
    String::from_utf8_lossy(&ns.cx.error_log.render().0).into_owned()
}

/// Another writer's version stays; the NFS bytes, which cannot go over
/// it, are kept in `conflicts/` and `.ciofs/errors` says where.
#[tokio::test]
async fn a_changed_object_keeps_the_nfs_bytes_as_a_conflict() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "old");
    let (ns, state) = namespace(&gcs);
    let f = walk(&ns, "p/storage/b/f").await;
    ns.write(f, None, 0, b"mine").await.unwrap();
    gcs.put_object("b", "f", "theirs");
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"theirs"[..]), "the other version stays");
    let kept: Vec<_> = std::fs::read_dir(state.join("nfs/conflicts/b")).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b"mine");
    assert!(errors(&ns).contains("conflicts"), "{}", errors(&ns));
}

/// An upload applied by Cloud Storage whose answer was lost: the retry
/// finds the object changed (412), and the object holds exactly the bytes
/// written, so that is a success, not ESTALE.
#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_a_success() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let (ns, _) = namespace(&gcs);
    let bucket = walk(&ns, "p/storage/b").await;
    let (attr, opened) = ns.create(bucket, "f", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"written once").await.unwrap();
    // What the lost attempt stored.
    gcs.put_object("b", "f", "written once");
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"written once"[..]));

    // Other bytes there are a real conflict.
    let (attr, opened) = ns.create(bucket, "g", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"mine").await.unwrap();
    gcs.put_object("b", "g", "xxxx");
    assert_eq!(ns.flush(attr.ino, opened.fh).await.unwrap_err().errno(), libc::ESTALE);
}

/// A failed upload is tried again after a backoff, not at every tick, and
/// goes up once the service answers.
#[tokio::test]
async fn a_failed_nfs_upload_waits_before_it_is_tried_again() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let (ns, _) = namespace(&gcs);
    let bucket = walk(&ns, "p/storage/b").await;
    let (attr, opened) = ns.create(bucket, "f", 0o644).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    ns.write(attr.ino, None, 0, b"kept").await.unwrap();
    let uploads = || gcs.calls.upload_object.load(Ordering::SeqCst);
    gcs.fail_next(Op::Upload, 1, ErrorKind::Unavailable);
    let tick = Duration::from_millis(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = uploads();
    ns.commit_idle(tick).await;
    assert_eq!(uploads(), before + 1);
    ns.commit_idle(tick).await;
    assert_eq!(uploads(), before + 1, "not again at once");
    assert!(errors(&ns).contains("will retry"), "{}", errors(&ns));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ns.commit_idle(tick).await;
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"kept"[..]));
}

/// A write that fails in the staging file (a full disk) breaks the
/// handle's writer: its close says so and nothing is uploaded, so a
/// truncated file never replaces the object.
#[tokio::test]
async fn a_failed_write_uploads_nothing() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "previous");
    let (ns, _) = namespace(&gcs);
    let f = walk(&ns, "p/storage/b/f").await;
    let flags = ciofs_frontends::OpenFlags { write: true, truncate: true, append: false };
    let fh = ns.open(f, flags).await.unwrap().fh;
    ns.write(f, Some(fh), 0, b"first part").await.unwrap();
    // A write past what a file may hold fails in the staging file.
    let failed = ns.write(f, Some(fh), u64::MAX - 4, b"more").await.unwrap_err();
    assert_ne!(failed.errno(), 0);
    assert_eq!(ns.flush(f, fh).await.unwrap_err().errno(), libc::EIO);
    ns.release(f, fh).await.unwrap();
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"previous"[..]));
}

/// A delete that finds the object gone (its first attempt's answer was
/// lost, or another client removed it) is what `rm` asked for: not ENOENT.
#[tokio::test]
async fn a_delete_that_finds_the_object_gone_succeeds() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "x");
    let (ns, _) = namespace(&gcs);
    let bucket = walk(&ns, "p/storage/b").await;
    ns.lookup(bucket, "f").await.unwrap();
    gcs.remove_object("b", "f");
    ns.unlink(bucket, "f").await.unwrap();
}

/// An object's handle from a run that showed objects (the NFS inode
/// journal is per project) is stale in a `--config-only` tree: no WRITE,
/// SETATTR or read gets through it.
#[tokio::test]
async fn a_config_only_tree_refuses_object_handles_from_an_earlier_run() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "kept");
    let options = test_options();
    let journal = options.staging_dir.join("inodes.jsonl");
    let f = {
        let ns = Namespace::persistent(vec!["p".to_string()], services(&gcs), options.clone(), &journal).unwrap();
        walk(&ns, "p/storage/b/f").await
    };
    let options = super::Options { config_only: true, ..options };
    let ns = Namespace::persistent(vec!["p".to_string()], services(&gcs), options, &journal).unwrap();
    assert_eq!(ns.write(f, None, 0, b"no").await.unwrap_err().errno(), libc::ESTALE);
    let truncate = ciofs_frontends::SetAttr { size: Some(0), ..Default::default() };
    assert_eq!(ns.setattr(f, truncate).await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(ns.read(f, None, 0, 10).await.unwrap_err().errno(), libc::ESTALE);
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"kept"[..]));
}

/// Writes without a handle are never streamed: nothing would wait for the
/// stream or report it; the idle commit uploads the file whole.
#[tokio::test]
async fn nfs_writes_are_not_streamed() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let (ns, _) = namespace(&gcs);
    let bucket = walk(&ns, "p/storage/b").await;
    let (attr, opened) = ns.create(bucket, "big", 0o644).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    let piece = vec![7u8; 1 << 20];
    let pieces = (crate::storage::writer::STREAM_AFTER >> 20) + 2;
    for i in 0..pieces {
        ns.write(attr.ino, None, i << 20, &piece).await.unwrap();
    }
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(gcs.calls.streamed_uploads.load(Ordering::SeqCst), 0);
    assert_eq!(gcs.object_data("b", "big").map(|d| d.len() as u64), Some(pieces << 20));
}
