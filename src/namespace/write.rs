//! Writing objects: a handle open for write stages the object's bytes in a
//! local file (bounded memory) and uploads it whole at flush/fsync. The
//! object changes in Cloud Storage only when an upload completes; a failed
//! upload is reported to close() and leaves the previous version intact.
//!
//! Opening for write downloads nothing: the existing bytes are fetched into
//! the staging file at the first write, read or truncate that needs them
//! (never for a truncating open). A flush with nothing written uploads
//! nothing. While one handle has unflushed data or an upload in flight,
//! another open for write of the object is EBUSY.
//!
//! A writer that writes a new (or emptied) file from its start, in order,
//! has its upload started once `STREAM_AFTER` bytes are staged: the request
//! sends the staging file as it grows and completes at the flush, so close
//! waits for the tail, not for the whole file (gcsfuse's streaming writes).
//! The object still appears only when the request completes. A write
//! anywhere but the end, a truncate or a removal abandons that request
//! (nothing is stored) and the flush uploads the staging file whole; so does
//! a streamed request that failed.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ciofs_backends::gcs::{ObjectMeta, StreamedUpload, Upload, Written};
use ciofs_backends::{BackendResult, ErrorKind};
use ciofs_frontends::{Ino, VfsError, VfsResult};
use serde::{Deserialize, Serialize};

use super::Namespace;
use super::cache::{Known, key};
use super::node::Node;
use super::reader::{ObjectReader, ObjectVersion};
use crate::errors::vfs_error;

/// How much a sequential writer stages before its upload starts: small
/// files go up whole at close, in one request either way.
pub(super) const STREAM_AFTER: u64 = 8 << 20;

/// An upload that runs while a sequential writer writes.
struct Streaming {
    /// What it uploads; a commit that would upload anything else (the file
    /// was renamed, or its metadata changed) abandons it.
    upload: Upload,
    progress: tokio::sync::watch::Sender<Written>,
    task: tokio::task::JoinHandle<BackendResult<ObjectMeta>>,
}

impl Drop for Streaming {
    /// Abandons the request if it is still running: nothing is stored.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The local state of an object open for write.
pub struct Staged {
    pub bucket: String,
    pub name: String,
    file: Arc<std::fs::File>,
    pub size: u64,
    /// The object as it was when opened (None: a new object).
    base: Option<Arc<ObjectMeta>>,
    /// The staging file does not yet hold the base's bytes.
    needs_fill: bool,
    /// The object must be uploaded (written, truncated or created since the
    /// last upload).
    pub dirty: bool,
    /// Bytes were written, or the size changed, since the last upload. A
    /// flush uploads only then; a handle that was only created or truncated
    /// at open uploads at its release, so `cmd > file` (bash closes a dup of
    /// the descriptor first) does not upload an empty object in between.
    pub written: bool,
    /// The file was removed while open: nothing is uploaded any more.
    pub unlinked: bool,
    pub mtime: SystemTime,
    /// For writes without a handle (NFS): the staging file's path and its
    /// journal record, written once the file holds the object's bytes, so
    /// that a restart uploads what a crash left behind.
    journal: Option<(PathBuf, PathBuf)>,
    journaled: bool,
    /// Every byte so far was written in order from the start of an empty
    /// file: the staging file can be streamed as it grows.
    sequential: bool,
    streaming: Option<Streaming>,
}

/// What a journal record says about a staged NFS write.
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    bucket: String,
    name: String,
    /// The generation the writes started from (None: a new object).
    base_generation: Option<i64>,
}

impl Staged {
    pub fn is_busy(&self) -> bool {
        self.written && !self.unlinked
    }

    /// Whether Cloud Storage has the object (it was there, or was uploaded).
    pub fn in_gcs(&self) -> bool {
        self.base.is_some()
    }

    /// Makes `object` (uploaded from this staging file, then renamed) the
    /// object written from now on.
    pub fn retarget(&mut self, object: Arc<ObjectMeta>) {
        self.name = object.name.clone();
        self.base = Some(object);
        self.streaming = None;
        // A journal record names the old object: written again.
        self.journaled = false;
    }
}

fn io_error(what: &str, error: std::io::Error) -> VfsError {
    let errno = error.raw_os_error().unwrap_or(libc::EIO);
    VfsError::new(errno, format!("{what}: {error}"))
}

impl Namespace {
    /// A staging file for `node`, empty; `base` is the object it replaces.
    pub(super) fn stage(&self, node: &Node, base: Option<Arc<ObjectMeta>>, truncate: bool) -> VfsResult<Staged> {
        let Node::Object { bucket, name, .. } = node else {
            return Err(VfsError::new(libc::EISDIR, format!("{node}: not an object")));
        };
        std::fs::create_dir_all(&self.options.staging_dir)
            .map_err(|e| io_error(&format!("staging directory {}", self.options.staging_dir.display()), e))?;
        let file = tempfile::tempfile_in(&self.options.staging_dir).map_err(|e| io_error("staging file", e))?;
        Ok(self.staged_in(bucket, name, file, base, truncate, None))
    }

    /// A staging file for writes without a handle, kept under a name in
    /// the journal directory so that it survives a crash.
    pub(super) fn stage_journaled(&self, node: &Node, base: Option<Arc<ObjectMeta>>, ino: Ino) -> VfsResult<Staged> {
        let Node::Object { bucket, name, .. } = node else {
            return Err(VfsError::new(libc::EISDIR, format!("{node}: not an object")));
        };
        let dir = self.journal_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("journal directory {}", dir.display()), e))?;
        let data = dir.join(format!("{ino:016x}.data"));
        let record = dir.join(format!("{ino:016x}.json"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data)
            .map_err(|e| io_error("journaled staging file", e))?;
        Ok(self.staged_in(bucket, name, file, base, false, Some((data, record))))
    }

    fn journal_dir(&self) -> PathBuf {
        self.options.staging_dir.join("nfs")
    }

    fn staged_in(
        &self,
        bucket: &str,
        name: &str,
        file: std::fs::File,
        base: Option<Arc<ObjectMeta>>,
        truncate: bool,
        journal: Option<(PathBuf, PathBuf)>,
    ) -> Staged {
        let needs_fill = !truncate && base.as_ref().is_some_and(|b| b.size > 0);
        let size = if truncate { 0 } else { base.as_ref().map_or(0, |b| b.size) };
        Staged {
            bucket: bucket.to_string(),
            name: name.to_string(),
            file: Arc::new(file),
            size,
            base,
            needs_fill,
            // A truncating open of an existing object changes it even if
            // nothing is written (`: > file`).
            dirty: truncate,
            written: false,
            unlinked: false,
            mtime: SystemTime::now(),
            journal,
            journaled: false,
            sequential: size == 0 && !needs_fill,
            streaming: None,
        }
    }

    /// Writes the journal record of a journaled staging file, once it holds
    /// the object's bytes (after its first write).
    pub(super) fn journal(&self, staged: &mut Staged) -> VfsResult<()> {
        let Some((_, record_path)) = staged.journal.as_ref().filter(|_| !staged.journaled) else {
            return Ok(());
        };
        staged.file.sync_data().map_err(|e| io_error("journaled staging file", e))?;
        let record = JournalRecord {
            bucket: staged.bucket.clone(),
            name: staged.name.clone(),
            base_generation: staged.base.as_ref().map(|b| b.generation),
        };
        let text = serde_json::to_vec(&record).map_err(|e| VfsError::new(libc::EIO, e.to_string()))?;
        std::fs::write(record_path, text).map_err(|e| io_error("journal record", e))?;
        staged.journaled = true;
        Ok(())
    }

    /// Removes a journaled staging file once its bytes are uploaded.
    pub(super) fn forget_journal(&self, staged: &mut Staged) {
        if let Some((data, record)) = staged.journal.take() {
            let _ = std::fs::remove_file(record);
            let _ = std::fs::remove_file(data);
        }
    }

    /// Uploads what NFS clients wrote before a crash (journaled staging
    /// files), then forgets them; what fails stays for the next start.
    pub async fn resume_journaled_uploads(&self) {
        let Ok(entries) = std::fs::read_dir(self.journal_dir()) else { return };
        for entry in entries.flatten() {
            let record_path = entry.path();
            if record_path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let data_path = record_path.with_extension("data");
            let resumed = async {
                let text = std::fs::read(&record_path).map_err(|e| e.to_string())?;
                let record: JournalRecord = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
                let file = std::fs::File::open(&data_path).map_err(|e| e.to_string())?;
                let size = file.metadata().map_err(|e| e.to_string())?.len();
                let upload = Upload {
                    bucket: record.bucket.clone(),
                    name: record.name.clone(),
                    source: Arc::new(file),
                    size,
                    content_type: None,
                    custom_metadata: Default::default(),
                    if_generation_match: Some(record.base_generation.unwrap_or(0)),
                };
                self.gcs.upload_object(&upload).await.map_err(|e| e.to_string())?;
                self.cache.forget(&key(&record.bucket, &record.name));
                Ok::<_, String>(format!("gs://{}/{}", record.bucket, record.name))
            };
            match resumed.await {
                Ok(object) => {
                    tracing::info!(%object, "uploaded NFS writes left by an earlier run");
                    let _ = std::fs::remove_file(&record_path);
                    let _ = std::fs::remove_file(&data_path);
                }
                Err(e) => {
                    tracing::warn!(journal = %record_path.display(), error = %e, "cannot upload journaled NFS writes; kept")
                }
            }
        }
    }

    /// Brings the base object's bytes into the staging file.
    async fn fill(&self, staged: &mut Staged) -> VfsResult<()> {
        let Some(base) = staged.base.clone().filter(|_| staged.needs_fill) else {
            return Ok(());
        };
        let version = ObjectVersion {
            bucket: base.bucket.clone(),
            name: base.name.clone(),
            generation: base.generation,
            size: base.size,
        };
        let mut reader = ObjectReader::new(self.gcs.clone(), version);
        let mut at = 0;
        while at < base.size {
            let (chunk, _) = reader.read(at, 4 << 20).await.map_err(vfs_error)?;
            if chunk.is_empty() {
                return Err(VfsError::new(libc::EIO, format!("gs://{}/{}: short read", base.bucket, base.name)));
            }
            staged.file.write_all_at(&chunk, at).map_err(|e| io_error("staging file", e))?;
            at += chunk.len() as u64;
        }
        staged.needs_fill = false;
        Ok(())
    }

    pub(super) async fn staged_write(&self, staged: &mut Staged, offset: u64, data: &[u8]) -> VfsResult<u32> {
        self.fill(staged).await?;
        staged.file.write_all_at(data, offset).map_err(|e| io_error("staging file", e))?;
        let appended = offset == staged.size;
        staged.size = staged.size.max(offset + data.len() as u64);
        staged.dirty = true;
        staged.written = true;
        staged.mtime = SystemTime::now();
        self.stream_writes(staged, appended);
        Ok(data.len() as u32)
    }

    /// Keeps a streamed upload in step with the writes: starts one once a
    /// sequential writer staged enough, tells it of appended bytes, and
    /// abandons it when a write lands anywhere but the end. Writes without
    /// a handle (NFS, journaled) are not streamed.
    fn stream_writes(&self, staged: &mut Staged, appended: bool) {
        staged.sequential &= appended;
        if !staged.sequential {
            staged.streaming = None;
            return;
        }
        match &staged.streaming {
            Some(streaming) => {
                streaming.progress.send_replace(Written { len: staged.size, complete: false });
            }
            None if staged.size >= STREAM_AFTER && staged.journal.is_none() => {
                let upload = self.upload_for(staged);
                let (progress, receiver) = tokio::sync::watch::channel(Written { len: staged.size, complete: false });
                let streamed = StreamedUpload { upload: upload.clone(), progress: receiver };
                let gcs = self.gcs.clone();
                let task = tokio::spawn(async move { gcs.upload_streamed(streamed).await });
                tracing::debug!(bucket = %upload.bucket, name = %upload.name, "streaming the upload");
                staged.streaming = Some(Streaming { upload, progress, task });
            }
            None => {}
        }
    }

    pub(super) async fn staged_read(&self, staged: &mut Staged, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        self.fill(staged).await?;
        let end = staged.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok((Bytes::new(), true));
        }
        let mut buffer = vec![0; (end - offset) as usize];
        staged.file.read_exact_at(&mut buffer, offset).map_err(|e| io_error("staging file", e))?;
        Ok((buffer.into(), end == staged.size))
    }

    pub(super) async fn staged_truncate(&self, staged: &mut Staged, size: u64) -> VfsResult<()> {
        if size == staged.size {
            // The truncate that follows an O_TRUNC open, say: no change.
            return Ok(());
        }
        if size == 0 {
            staged.needs_fill = false;
        } else {
            self.fill(staged).await?;
        }
        staged.file.set_len(size).map_err(|e| io_error("staging file", e))?;
        staged.size = size;
        staged.streaming = None;
        staged.sequential = size == 0;
        staged.dirty = true;
        // Emptying a file nothing was written to is what an O_TRUNC open
        // does (the kernel sends it as a truncate after the open): like that
        // open, it uploads at release, not at the flush of a dup'd fd.
        staged.written = staged.written || size > 0;
        staged.mtime = SystemTime::now();
        Ok(())
    }

    /// Uploads the staged bytes if anything changed. On success the object
    /// is the new base; on failure the previous version is untouched and the
    /// error says why.
    pub(super) async fn commit(&self, staged: &mut Staged) -> VfsResult<()> {
        if !staged.dirty || staged.unlinked {
            return Ok(());
        }
        self.fill(staged).await?;
        self.ensure_bucket(&staged.bucket).await?;
        let upload = self.upload_for(staged);
        let object_key = key(&staged.bucket, &staged.name);
        match self.send_upload(staged.streaming.take(), &upload).await {
            Ok(meta) => {
                self.pending_object_meta.remove(&staged.bucket, &staged.name);
                // From now on stat shows the object's own time, whether it
                // comes from this handle or from Cloud Storage: an editor
                // that compares times before saving must see no change.
                staged.mtime = meta.updated.or(meta.created).unwrap_or(staged.mtime);
                let meta = Arc::new(meta);
                self.cache.put(object_key, Known::Object(meta.clone()));
                self.cache.forget(&key(&staged.bucket, &format!("{}/", staged.name)));
                staged.base = Some(meta);
                staged.dirty = false;
                staged.written = false;
                tracing::debug!(bucket = %staged.bucket, name = %staged.name, size = staged.size, "uploaded");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::PreconditionFailed => {
                self.cache.forget(&object_key);
                Err(VfsError::new(
                    libc::ESTALE,
                    format!(
                        "gs://{}/{} changed in Cloud Storage since it was opened; not overwritten",
                        staged.bucket, staged.name
                    ),
                ))
            }
            Err(e) => {
                tracing::warn!(bucket = %staged.bucket, name = %staged.name, error = %e, "upload failed");
                Err(vfs_error(e))
            }
        }
    }

    /// Uploads by finishing the streamed request, when there is one and it
    /// sends what `upload` says; whole otherwise, or when it failed.
    async fn send_upload(&self, streaming: Option<Streaming>, upload: &Upload) -> BackendResult<ObjectMeta> {
        let streamed = match streaming {
            Some(streaming) => finish_streaming(streaming, upload).await,
            None => None,
        };
        match streamed {
            Some(Ok(meta)) => Ok(meta),
            // The whole file would be refused the same way.
            Some(Err(e)) if e.kind == ErrorKind::PreconditionFailed => Err(e),
            Some(Err(e)) => {
                tracing::debug!(bucket = %upload.bucket, name = %upload.name, error = %e, "streamed upload failed; uploading whole");
                self.gcs.upload_object(upload).await
            }
            None => self.gcs.upload_object(upload).await,
        }
    }

    /// What uploading `staged` sends: its bytes, and the metadata of the
    /// object it replaces (a new object takes what its `.meta/` document
    /// said before it came).
    fn upload_for(&self, staged: &Staged) -> Upload {
        let base = staged.base.as_deref();
        let pending = match base {
            None => self.pending_object_meta.get(&staged.bucket, &staged.name).unwrap_or_default(),
            Some(_) => Default::default(),
        };
        Upload {
            bucket: staged.bucket.clone(),
            name: staged.name.clone(),
            source: staged.file.clone(),
            size: staged.size,
            content_type: base.and_then(|b| b.content_type.clone()).or(pending.content_type),
            custom_metadata: base.map(|b| b.custom_metadata.clone()).or(pending.custom_metadata).unwrap_or_default(),
            // A careful overwrite: only the version this handle started from.
            if_generation_match: Some(base.map_or(0, |b| b.generation)),
        }
    }

    /// Marks a staged file removed: it keeps its bytes for the handles that
    /// still have it open (fetched first, if they were not yet), and is never
    /// uploaded.
    pub(super) async fn unlink_staged(&self, staged: &mut Staged) {
        if let Err(e) = self.fill(staged).await {
            tracing::debug!(error = %e, "removed file's old bytes are gone");
            staged.needs_fill = false;
        }
        staged.unlinked = true;
        staged.streaming = None;
        self.forget_journal(staged);
    }

    /// The entry of a file open for write (perhaps not uploaded yet).
    pub(super) fn staged_entry(&self, node: &Node) -> Option<ciofs_frontends::DirEntry> {
        let (ino, _) = self.inodes.find(node)?;
        let state = self.writer(ino)?.state();
        (!state.unlinked).then(|| self.entry(node.clone(), state.size, state.mtime))
    }
}

/// Tells a streamed upload that `upload` is all and waits for it; `None`
/// when it streamed something else than `upload` now is (it is abandoned).
async fn finish_streaming(mut streaming: Streaming, upload: &Upload) -> Option<BackendResult<ObjectMeta>> {
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
