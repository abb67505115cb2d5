//! The writer of one object file and its staging file (`Staged`): the
//! states of the state machine write.rs drives, and what a writer knows
//! without asking Cloud Storage (its size, its time, whether its bytes are
//! staged, whether its upload is streaming), and how many writers hold
//! bytes not yet uploaded (`pending_uploads`).
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ciofs_backends::gcs::{ObjectMeta, Upload, Written};
use ciofs_backends::sync::lock;
use ciofs_backends::{BackendResult, ErrorKind};
use ciofs_frontends::VfsError;
use tokio::sync::Mutex as AsyncMutex;

use super::unattended::{JournalFiles, Retry};
use crate::core::node::Node;

/// How many contents of failed attempts a writer remembers
/// (`Staged::unconfirmed`).
pub(super) const UNCONFIRMED_KEPT: usize = 16;

/// How much a sequential writer stages before its upload starts: small
/// files go up whole at close, in one request either way.
pub const STREAM_AFTER: u64 = 8 << 20;

/// An upload that runs while a sequential writer writes.
pub(super) struct Streaming {
    /// What it uploads; a commit that would upload anything else (the file
    /// was renamed, or its metadata changed) abandons it.
    pub(super) upload: Upload,
    pub(super) progress: tokio::sync::watch::Sender<Written>,
    pub(super) task: tokio::task::JoinHandle<BackendResult<ObjectMeta>>,
}

impl Drop for Streaming {
    /// Abandons the request if it is still running: nothing is stored.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a writer's upload replaces.
#[derive(Clone)]
pub enum Base {
    /// Nothing: a new object.
    New,
    /// This object (its metadata goes with the upload).
    Object(Arc<ObjectMeta>),
    /// The generation a journal record names (writes left by an earlier
    /// run); its metadata is fetched before the upload.
    Generation(i64),
}

impl Base {
    pub fn generation(&self) -> i64 {
        match self {
            Base::New => 0,
            Base::Object(meta) => meta.generation,
            Base::Generation(generation) => *generation,
        }
    }
}

/// The local state of an object open for write.
pub struct Staged {
    pub bucket: String,
    pub name: String,
    pub file: Arc<std::fs::File>,
    pub size: u64,
    pub base: Base,
    /// The staging file does not yet hold the base's bytes.
    pub(super) needs_fill: bool,
    /// Those bytes can no longer be had (the file was removed or replaced
    /// before they were fetched): a read or write that needs them is
    /// ESTALE rather than zeros.
    pub(super) base_gone: bool,
    /// The object must be uploaded (written, truncated or created since the
    /// last upload).
    pub dirty: bool,
    /// Bytes were written, or the size grew, since the last upload: a
    /// close uploads them, and another open for write waits for that
    /// (EBUSY).
    pub written: bool,
    /// The file was removed while open: nothing is uploaded any more.
    pub unlinked: bool,
    pub mtime: SystemTime,
    /// Writes without a handle (NFS): the staging file's name and its
    /// journal record's, so that a restart uploads what a crash left.
    pub journal: Option<JournalFiles>,
    /// The journal record is on disk and names the current base.
    pub journaled: bool,
    /// Every byte so far was written in order from the start of an empty
    /// file: the staging file can be streamed as it grows.
    pub(super) sequential: bool,
    pub(super) streaming: Option<Streaming>,
    /// The writer left the writers' table: a write that waited for this
    /// lock goes to the table's current writer instead.
    pub retired: bool,
    /// A write into the staging file failed (why): its content is not what
    /// was written, and it is never uploaded.
    pub(super) broken: Option<String>,
    /// A flush or fsync reported this content's upload as failed (how):
    /// later closes report it again without trying (an fsync tries), and
    /// the last release does not try behind the user's back.
    pub(super) failure_reported: Option<VfsError>,
    /// Without a handle: when the upload may be tried again.
    pub retry: Retry,
    /// What earlier attempts may have stored although they failed (an
    /// answer lost on the way back), as (size, CRC32C), newest last; also
    /// what a journal taken back holds (the run that left it may have
    /// uploaded it before it went). An object found at a newer generation
    /// that is one of these is this writer's own: the upload goes over it.
    pub unconfirmed: Vec<(u64, u32)>,
}

impl Staged {
    pub fn is_busy(&self) -> bool {
        self.written && !self.unlinked
    }

    /// Whether Cloud Storage has the object (it was there, or was uploaded).
    pub fn in_gcs(&self) -> bool {
        !matches!(self.base, Base::New)
    }

    /// A staging file left by an earlier run that holds `size` bytes
    /// written and not uploaded, its journal record on disk.
    pub fn restore(&mut self, size: u64) {
        self.size = size;
        self.needs_fill = false;
        self.dirty = true;
        self.written = true;
        self.journaled = true;
        self.sequential = false;
    }

    /// The generation the staged bytes replace.
    pub fn base_generation(&self) -> i64 {
        self.base.generation()
    }

    /// The base's bytes can no longer be had: what needs them is ESTALE.
    pub fn lose_base(&mut self) {
        self.base_gone = true;
    }

    /// Whether `meta` holds what an earlier attempt of this writer may have
    /// stored (`unconfirmed`).
    pub fn may_have_stored(&self, meta: &ObjectMeta) -> bool {
        let stored = meta.crc32c.as_deref().and_then(decode_crc32c);
        self.unconfirmed.iter().any(|(size, crc)| meta.size == *size && stored == Some(*crc))
    }

    /// An upload of the staged bytes failed in a way that may have stored
    /// them: remembered, so that a later 412 over them is known as ours.
    pub(super) fn remember_unconfirmed(&mut self) {
        let Ok(crc) = staging_crc32c(&self.file, self.size) else { return };
        if self.unconfirmed.len() >= UNCONFIRMED_KEPT {
            self.unconfirmed.remove(0);
        }
        self.unconfirmed.push((self.size, crc));
    }

    /// Makes `object` (uploaded from this staging file, then renamed) the
    /// object written from now on.
    pub fn retarget(&mut self, object: Arc<ObjectMeta>) {
        self.name = object.name.clone();
        self.base = Base::Object(object);
        self.streaming = None;
        // A journal record names the old object: written again.
        self.journaled = false;
    }
}

/// What getattr, listings and other opens see of a writer, without waiting
/// for its lock.
#[derive(Clone, Copy)]
pub struct WriterState {
    pub size: u64,
    pub mtime: SystemTime,
    /// Unflushed data or an upload in flight.
    pub busy: bool,
    /// The object exists in Cloud Storage (it was there, or was uploaded).
    pub in_gcs: bool,
    /// Removed while open: only its open handles still see it.
    pub unlinked: bool,
    /// Cloud Storage does not have what was written (or made) and nobody
    /// was told it failed: what a shutdown must upload or keep.
    pub unsaved: bool,
    /// The generation the writes replace (0: a new object).
    pub base_generation: i64,
    /// The staging file holds the whole content (the base's bytes were
    /// fetched, or are not needed).
    pub staged_whole: bool,
}

impl WriterState {
    fn of(staged: &Staged) -> Self {
        WriterState {
            size: staged.size,
            mtime: staged.mtime,
            busy: staged.is_busy(),
            in_gcs: staged.in_gcs(),
            unlinked: staged.unlinked,
            unsaved: staged.dirty && !staged.unlinked && staged.broken.is_none() && staged.failure_reported.is_none(),
            base_generation: staged.base.generation(),
            staged_whole: !staged.needs_fill,
        }
    }
}

/// An object being written: the staged state, and what getattr, listings
/// and other opens need to know about it without waiting for its lock.
pub struct Writer {
    /// Which object it writes (renamed with it).
    pub(super) node: Mutex<Node>,
    /// In an `Arc` so that a lock can be held apart from the writer
    /// (`StorageTree::locked_writer`).
    pub staged: Arc<AsyncMutex<Staged>>,
    pub(super) state: Mutex<WriterState>,
    /// The staging file (`Staged::file`, which never changes), read
    /// without the lock an upload holds when a shutdown keeps it.
    pub(super) file: Arc<std::fs::File>,
    /// `Staged::unconfirmed` as last published, for the same reason.
    pub(super) unconfirmed: Mutex<Vec<(u64, u32)>>,
    /// Written without a handle (NFS): committed when idle, not at close.
    pub unattended: bool,
    pub(super) last_write: Mutex<Instant>,
    /// Open handles that write through it; the last release uploads what
    /// no flush did.
    pub handles: AtomicUsize,
    /// Writes without a handle waiting for `staged`: an idle commit keeps
    /// the writer for them rather than retire it under their feet.
    pub waiting: AtomicUsize,
    /// Woken whenever `state` changes.
    pub(super) changed: tokio::sync::Notify,
}

impl Writer {
    /// The writer for one more open handle: counted here, and uncounted by
    /// that handle's release (`release_writer` acts on the last one).
    pub fn new_handle(self: &Arc<Self>) -> Arc<Self> {
        self.handles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.clone()
    }

    pub fn new(node: Node, staged: Staged) -> Self {
        count_pending(false, staged.is_busy());
        Writer {
            node: Mutex::new(node),
            state: Mutex::new(WriterState::of(&staged)),
            file: staged.file.clone(),
            unconfirmed: Mutex::new(staged.unconfirmed.clone()),
            staged: Arc::new(AsyncMutex::new(staged)),
            unattended: false,
            last_write: Mutex::new(Instant::now()),
            handles: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn unattended(node: Node, staged: Staged) -> Self {
        let mut writer = Writer::new(node, staged);
        writer.unattended = true;
        writer
    }

    pub fn node(&self) -> Node {
        lock(&self.node).clone()
    }

    /// After a rename of its (just uploaded) object to `node`, now `moved`:
    /// its handles write to the new name, starting from that version.
    pub fn retarget(&self, node: Node, staged: &mut Staged, moved: Arc<ObjectMeta>) {
        staged.retarget(moved);
        *lock(&self.node) = node;
        self.record(staged);
    }

    pub fn touch(&self) {
        *lock(&self.last_write) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_write).elapsed()
    }

    pub fn state(&self) -> WriterState {
        *lock(&self.state)
    }

    /// Publishes what getattr, listings and other opens see of `staged`.
    pub fn record(&self, staged: &Staged) {
        let now = WriterState::of(staged);
        let was = std::mem::replace(&mut *lock(&self.state), now);
        count_pending(was.busy, now.busy);
        let mut unconfirmed = lock(&self.unconfirmed);
        // Cloned only when it changed: after a failed upload, or a success.
        if *unconfirmed != staged.unconfirmed {
            unconfirmed.clone_from(&staged.unconfirmed);
        }
        drop(unconfirmed);
        self.changed.notify_waiters();
    }

    /// Waits up to `limit` for this writer to have no unflushed data or
    /// upload in flight; whether it has none.
    pub async fn settled_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if !self.state().busy {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return !self.state().busy;
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        count_pending(self.state().busy, false);
    }
}

/// Writers whose published state is busy: bytes staged and not yet
/// uploaded (`ciofs_uploads_pending`, read at each scrape).
static PENDING_UPLOADS: AtomicI64 = AtomicI64::new(0);

/// How many staged files hold bytes not yet uploaded now.
pub fn pending_uploads() -> i64 {
    PENDING_UPLOADS.load(Ordering::Relaxed)
}

/// A writer's published state went from `was` busy to `now` busy.
fn count_pending(was: bool, now: bool) {
    match (was, now) {
        (false, true) => PENDING_UPLOADS.fetch_add(1, Ordering::Relaxed),
        (true, false) => PENDING_UPLOADS.fetch_sub(1, Ordering::Relaxed),
        _ => 0,
    };
}

pub fn io_error(what: &str, error: std::io::Error) -> VfsError {
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    VfsError::new(errno, format!("{what}: {error}"))
}

/// What asks a handle's writer to upload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A close (FUSE flush): reports a failure already reported, without
    /// trying again, unless something was written since.
    Close,
    /// An fsync: always tries.
    Fsync,
}

/// A `Staged` over `file` for `bucket/name`, replacing `base`.
pub fn staged_in(
    bucket: &str,
    name: &str,
    file: std::fs::File,
    base: Base,
    truncate: bool,
    journal: Option<JournalFiles>,
) -> Staged {
    let base_size = match &base {
        Base::Object(meta) => meta.size,
        _ => 0,
    };
    let needs_fill = !truncate && base_size > 0;
    let size = if truncate { 0 } else { base_size };
    // Until something is written or truncated, the file shows its
    // object's time: opening it for write changes nothing.
    let mtime = match (&base, truncate) {
        (Base::Object(meta), false) => meta.updated.or(meta.created).unwrap_or_else(SystemTime::now),
        _ => SystemTime::now(),
    };
    Staged {
        bucket: bucket.to_string(),
        name: name.to_string(),
        file: Arc::new(file),
        size,
        base,
        needs_fill,
        base_gone: false,
        // A truncating open of an existing object changes it even if
        // nothing is written (`: > file`).
        dirty: truncate,
        written: false,
        unlinked: false,
        mtime,
        journal,
        journaled: false,
        sequential: size == 0 && !needs_fill,
        streaming: None,
        retired: false,
        broken: None,
        failure_reported: None,
        retry: Retry::default(),
        unconfirmed: Vec::new(),
    }
}

/// A Cloud Storage CRC32C (base64 of the big-endian value) as a number.
pub(super) fn decode_crc32c(text: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The CRC32C of the first `size` bytes of a staging file.
pub fn staging_crc32c(file: &std::fs::File, size: u64) -> std::io::Result<u32> {
    let mut crc = 0;
    walk_staging(file, size, |chunk| {
        crc = crc32c::crc32c_append(crc, chunk);
        Ok(())
    })?;
    Ok(crc)
}

/// Hands the first `size` bytes of a staging file to `each`, a MiB at a
/// time, read at offsets (an upload may be reading the same file); an
/// error if the file is shorter.
pub fn walk_staging(
    file: &std::fs::File,
    size: u64,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buffer = vec![0; 1 << 20];
    let mut at = 0;
    while at < size {
        let want = (size - at).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..want], at)?;
        each(&buffer[..want])?;
        at += want as u64;
    }
    Ok(())
}

/// Tells a streamed upload that `upload` is all and waits for it; `None`
/// when it streamed something else than `upload` now is (it is abandoned).
pub(super) async fn finish_streaming(mut streaming: Streaming, upload: &Upload) -> Option<BackendResult<ObjectMeta>> {
    let sent = &streaming.upload;
    let same = sent.bucket == upload.bucket
        && sent.name == upload.name
        && sent.content_type == upload.content_type
        && sent.custom_metadata == upload.custom_metadata
        && sent.if_generation_match == upload.if_generation_match;
    if !same {
        return None;
    }
    streaming.progress.send_replace(Written { len: upload.size, complete: true });
    Some(match (&mut streaming.task).await {
        Ok(result) => result,
        Err(e) => Err(ciofs_backends::BackendError::new(ErrorKind::Other, format!("streamed upload: {e}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_read_as_cloud_storage_writes_it() {
        // Cloud Storage's documented value for "hello world".
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(b"hello world", 0).unwrap();
        let crc = staging_crc32c(&file, 11).unwrap();
        assert_eq!(Some(crc), decode_crc32c("yZRlqg=="));
    }
}
