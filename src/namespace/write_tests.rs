//! Streamed uploads against the in-memory Cloud Storage: when a writer's
//! upload is streamed, and that every way out of streaming still stores
//! exactly the bytes written, or nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ciofs_backends::ErrorKind;
use ciofs_backends::memory::{MemoryGcs, Op};
use ciofs_frontends::{Fh, Ino, OpenFlags, SetAttr, Vfs};

use super::Namespace;
use super::tests::{services, test_options, walk};
use crate::storage::writer::STREAM_AFTER;

const PIECE: usize = 128 * 1024;

struct Fixture {
    gcs: Arc<MemoryGcs>,
    ns: Namespace,
    ino: Ino,
    fh: Fh,
}

/// `b/f` created through the namespace and open for write.
async fn created() -> Fixture {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), test_options());
    let bucket = walk(&ns, "p/storage/b").await;
    let (attr, opened) = ns.create(bucket, "f", 0o644).await.unwrap();
    Fixture { gcs, ns, ino: attr.ino, fh: opened.fh }
}

/// Bytes that differ at every offset, so a misplaced piece shows.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

impl Fixture {
    /// Writes `bytes` at `offset` in pieces, as the kernel sends them.
    async fn write(&self, offset: usize, bytes: &[u8]) {
        for (i, piece) in bytes.chunks(PIECE).enumerate() {
            self.ns.write(self.ino, Some(self.fh), (offset + i * PIECE) as u64, piece).await.unwrap();
        }
    }

    async fn close(&self) -> Result<(), i32> {
        let flushed = self.ns.flush(self.ino, self.fh).await.map_err(|e| e.errno());
        self.ns.release(self.ino, self.fh).await.unwrap();
        flushed
    }

    fn stored(&self) -> Option<Vec<u8>> {
        self.gcs.object_data("b", "f").map(|b| b.to_vec())
    }

    fn counts(&self) -> (u64, u64) {
        let calls = &self.gcs.calls;
        (calls.streamed_uploads.load(Ordering::SeqCst), calls.upload_object.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn a_sequential_writer_streams_its_upload_and_a_small_one_does_not() {
    let f = created().await;
    let bytes = data(STREAM_AFTER as usize + 3 * PIECE + 5);
    f.write(0, &bytes).await;
    assert_eq!(f.stored(), None, "nothing shows before close");
    f.close().await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..]));
    assert_eq!(f.counts(), (1, 1), "one upload, streamed");

    let small = created().await;
    small.write(0, b"small").await;
    small.close().await.unwrap();
    assert_eq!(small.stored().as_deref(), Some(&b"small"[..]));
    assert_eq!(small.counts(), (0, 1), "one upload, whole");
}

#[tokio::test]
async fn a_write_behind_the_end_abandons_the_stream_and_the_file_goes_up_whole() {
    let f = created().await;
    let mut bytes = data(STREAM_AFTER as usize + 2 * PIECE);
    f.write(0, &bytes).await;
    // Back to the start, as a program that fills in a header last does.
    f.write(0, b"HEADER").await;
    bytes[..6].copy_from_slice(b"HEADER");
    f.close().await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..]));
    assert_eq!(f.counts(), (0, 1), "the stream stored nothing; one whole upload");
}

#[tokio::test]
async fn a_truncate_while_streaming_uploads_what_is_left() {
    let f = created().await;
    let bytes = data(STREAM_AFTER as usize + 2 * PIECE);
    f.write(0, &bytes).await;
    let keep = STREAM_AFTER as usize / 2;
    f.ns.setattr(f.ino, SetAttr { size: Some(keep as u64), ..SetAttr::default() }).await.unwrap();
    f.close().await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..keep]));
    assert_eq!(f.counts().0, 0, "the stream stored nothing");
}

#[tokio::test]
async fn a_file_removed_while_streaming_stores_nothing() {
    let f = created().await;
    f.write(0, &data(STREAM_AFTER as usize + PIECE)).await;
    let bucket = walk(&f.ns, "p/storage/b").await;
    f.ns.unlink(bucket, "f").await.unwrap();
    f.close().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(f.stored(), None);
    assert_eq!(f.counts(), (0, 0));
}

#[tokio::test]
async fn a_failed_streamed_upload_is_retried_whole_at_close() {
    let f = created().await;
    let bytes = data(STREAM_AFTER as usize + PIECE);
    f.write(0, &bytes).await;
    f.gcs.fail_next(Op::Upload, 1, ErrorKind::Unavailable);
    f.close().await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..]));
    assert_eq!(f.counts(), (1, 2), "the streamed upload failed, the whole one landed");
}

/// A streamed upload that stalled (the service stopped taking bytes) is
/// not sent again whole in the same close: that would most likely stall
/// too, and double the wait. The close fails with EIO; the bytes stay
/// staged, and the next flush or fsync sends them whole.
#[tokio::test]
async fn a_stalled_streamed_upload_fails_the_close_and_fsync_sends_it_whole() {
    let f = created().await;
    let bytes = data(STREAM_AFTER as usize + PIECE);
    f.write(0, &bytes).await;
    f.gcs.fail_next(Op::Upload, 1, ErrorKind::Stalled);
    assert_eq!(f.ns.flush(f.ino, f.fh).await.map_err(|e| e.errno()), Err(libc::EIO));
    assert_eq!(f.counts(), (1, 1), "only the streamed request was sent");
    assert_eq!(f.stored(), None);
    f.ns.fsync(f.ino, Some(f.fh)).await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..]));
    f.ns.release(f.ino, f.fh).await.unwrap();
}

#[tokio::test]
async fn a_streamed_upload_over_a_changed_object_is_estale() {
    let f = created().await;
    f.write(0, &data(STREAM_AFTER as usize + PIECE)).await;
    f.gcs.put_object("b", "f", "theirs");
    assert_eq!(f.close().await, Err(libc::ESTALE));
    assert_eq!(f.stored().as_deref(), Some(&b"theirs"[..]));
    assert_eq!(f.counts(), (1, 1), "refused once, not retried whole");
}

#[tokio::test]
async fn an_emptying_open_of_an_existing_object_streams_the_new_bytes() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "old");
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), test_options());
    let ino = walk(&ns, "p/storage/b/f").await;
    let opened = ns.open(ino, OpenFlags { write: true, truncate: true, append: false }).await.unwrap();
    let f = Fixture { gcs, ns, ino, fh: opened.fh };
    let bytes = data(STREAM_AFTER as usize + PIECE);
    f.write(0, &bytes).await;
    f.close().await.unwrap();
    assert_eq!(f.stored().as_deref(), Some(&bytes[..]));
    assert_eq!(f.counts(), (1, 1));
}

/// logrotate's way: the file is renamed while its writer keeps writing.
#[tokio::test]
async fn a_file_renamed_while_open_for_write_keeps_its_writes_under_the_new_name() {
    let f = created().await;
    f.write(0, b"one ").await;
    let bucket = walk(&f.ns, "p/storage/b").await;
    f.ns.rename(bucket, "f", bucket, "g").await.unwrap();
    assert_eq!(f.gcs.object_data("b", "g").as_deref(), Some(&b"one "[..]), "what was written moved");
    f.write(4, b"two").await;
    f.close().await.unwrap();
    assert_eq!(f.stored(), None, "nothing comes back under the old name");
    assert_eq!(f.gcs.object_data("b", "g").as_deref(), Some(&b"one two"[..]));
    assert_eq!(f.gcs.object_names("b"), ["g"]);
}

#[tokio::test]
async fn a_directory_with_a_file_open_for_write_is_not_moved() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/old", "x");
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), test_options());
    let d = walk(&ns, "p/storage/b/d").await;
    let (attr, opened) = ns.create(d, "new", 0o644).await.unwrap();
    let f = Fixture { gcs, ns, ino: attr.ino, fh: opened.fh };
    f.write(0, b"being written").await;
    let bucket = walk(&f.ns, "p/storage/b").await;
    let refused = f.ns.rename(bucket, "d", bucket, "e").await.unwrap_err();
    assert_eq!(refused.errno(), libc::EBUSY);
    f.close().await.unwrap();
    assert_eq!(f.gcs.object_names("b"), ["d/new", "d/old"]);
    f.ns.rename(bucket, "d", bucket, "e").await.unwrap();
    assert_eq!(f.gcs.object_names("b"), ["e/new", "e/old"]);
}

/// NFS writes are journaled under the object's name. A rename uploads them
/// first (nothing is left to replay), and the writes after it are
/// journaled under the new name, so a restart resumes there.
#[tokio::test]
async fn a_rename_of_journaled_writes_journals_the_new_name() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket("b");
    let options = test_options();
    let journal = options.staging_dir.join("nfs");
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), options);
    let bucket = walk(&ns, "p/storage/b").await;
    // As the NFS adapter does: CREATE makes the file and lets go of it.
    let (attr, opened) = ns.create(bucket, ".f.tmp", 0o644).await.unwrap();
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    ns.write(attr.ino, None, 0, b"rsync's way").await.unwrap();
    let records = || -> Vec<String> {
        std::fs::read_dir(&journal)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    };
    assert_eq!(records().len(), 1);
    ns.rename(bucket, ".f.tmp", bucket, "f").await.unwrap();
    assert_eq!(gcs.object_names("b"), ["f"]);
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"rsync's way"[..]));
    assert!(records().is_empty(), "uploaded: nothing to replay");
    ns.write(attr.ino, None, 11, b"!").await.unwrap();
    let records = records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains(r#""name":"f""#), "{records:?}");
}

#[tokio::test]
async fn a_config_only_tree_changes_no_object() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "keep", "x");
    let options = super::Options { config_only: true, ..test_options() };
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), options);
    let bucket = walk(&ns, "p/storage/b").await;
    assert_eq!(ns.lookup(bucket, "keep").await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(ns.unlink(bucket, "keep").await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(ns.rename(bucket, "keep", bucket, "moved").await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(ns.create(bucket, "new", 0o644).await.err().map(|e| e.errno()), Some(libc::EROFS));
    assert_eq!(gcs.object_names("b"), ["keep"]);
    assert!(ns.lookup(walk(&ns, "p/storage/b/.meta").await, "keep.json").await.is_ok(), "its document shows");
}
