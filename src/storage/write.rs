//! Writing objects: a writer stages the object's bytes in a local file
//! (bounded memory) and uploads it whole. The object changes in Cloud
//! Storage only when an upload completes; a failed upload leaves the
//! previous version intact.
//!
//! One state machine serves both frontends. Through FUSE a writer belongs
//! to its open handles: each flush (every close, of every duplicate of the
//! descriptor) and fsync uploads what was written and reports the result;
//! the last release uploads an existing object only emptied (see
//! `commit_reported`). Over NFS (no open, no close) a writer is
//! unattended: NFS writes go into it and idle commits upload it
//! (nfs_writes.rs).
//!
//! Opening for write downloads nothing: the existing bytes are fetched into
//! the staging file at the first write, read or truncate that needs them
//! (never for a truncating open). A flush with nothing new uploads
//! nothing. While one handle has unflushed data or an upload in flight,
//! another open for write of the object is EBUSY. A read-only open of a
//! file being written reads the writer's bytes and never uploads them.
//!
//! A writer that writes a new (or emptied) file from its start, in order,
//! has its upload started once `STREAM_AFTER` bytes are staged: the request
//! sends the staging file as it grows and completes at the flush, so close
//! waits for the tail, not for the whole file (gcsfuse's streaming writes).
//! The object still appears only when the request completes. A write
//! anywhere but the end, a truncate or a removal abandons that request
//! (nothing is stored) and the flush uploads the staging file whole; so does
//! a streamed request that failed.
//!
//! Failures. A write into the staging file that fails (a full disk) breaks
//! the writer: nothing of it is ever uploaded, and its flushes say why. A
//! failed upload stays staged: a later flush or fsync of the same writer
//! tries again, but the last release does not try behind the user's back
//! once a flush reported the failure. An upload refused because the object
//! changed (412) is checked against what Cloud Storage holds: if it holds
//! exactly these bytes, an earlier attempt whose answer was lost stored
//! them, and that is a success.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ciofs_backends::gcs::{ObjectMeta, StreamedUpload, Upload, Written};
use ciofs_backends::sync::lock;
use ciofs_backends::{BackendResult, ErrorKind};
use ciofs_frontends::{VfsError, VfsResult};
use tokio::sync::OwnedMutexGuard;

use super::reader::{ObjectReader, ObjectVersion};
use super::tree::StorageTree;
use super::writer::{
    Base, Caller, STREAM_AFTER, Staged, Streaming, Writer, decode_crc32c, finish_streaming, io_error, staged_in,
    staging_crc32c,
};
use crate::core::cache::{Known, key};
use crate::core::errors::vfs_error;
use crate::core::node::Node;

impl StorageTree {
    /// A staging file for `node`, empty; `base` is the object it replaces.
    pub fn stage(&self, node: &Node, base: Option<Arc<ObjectMeta>>, truncate: bool) -> VfsResult<Staged> {
        let Node::Object { bucket, name, .. } = node else {
            return Err(VfsError::is_dir(format!("{node}: not an object")));
        };
        let dir = &self.cx.options.staging_dir;
        crate::core::private_files::private_dir(dir)
            .map_err(|e| io_error(&format!("staging directory {}", dir.display()), e))?;
        let file = tempfile::tempfile_in(dir).map_err(|e| io_error("staging file", e))?;
        let base = base.map_or(Base::New, Base::Object);
        Ok(staged_in(bucket, name, file, base, truncate, None))
    }

    /// Brings the base object's bytes into the staging file.
    pub async fn fill(&self, staged: &mut Staged) -> VfsResult<()> {
        if !staged.needs_fill {
            return Ok(());
        }
        if staged.base_gone {
            return Err(VfsError::stale(format!(
                "gs://{}/{}: the file was removed or replaced before its bytes were read",
                staged.bucket, staged.name
            )));
        }
        let Base::Object(base) = self.known_base(staged).await? else {
            staged.needs_fill = false;
            return Ok(());
        };
        let mut reader = ObjectReader::new(self.gcs.clone(), self.content_cache().await?, ObjectVersion::of(&base));
        let mut at = 0;
        while at < base.size {
            let (chunk, _) = reader.read(at, 4 << 20).await.map_err(vfs_error)?;
            if chunk.is_empty() {
                return Err(VfsError::io(format!("gs://{}/{}: short read", base.bucket, base.name)));
            }
            staged.file.write_all_at(&chunk, at).map_err(|e| io_error("staging file", e))?;
            at += chunk.len() as u64;
        }
        staged.needs_fill = false;
        Ok(())
    }

    /// The base with its metadata: a generation named by a journal record
    /// is looked up (the object must still be at it).
    pub async fn known_base(&self, staged: &mut Staged) -> VfsResult<Base> {
        let Base::Generation(generation) = staged.base else {
            return Ok(staged.base.clone());
        };
        let node_key = key(&staged.bucket, &staged.name);
        let current = match self.gcs.get_object(&staged.bucket, &staged.name).await {
            Ok(meta) => Some(Arc::new(meta)),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(vfs_error(e)),
        };
        self.cache.forget(&node_key);
        match current {
            Some(meta) if meta.generation == generation => staged.base = Base::Object(meta),
            // The run that left the journal uploaded it before it went:
            // what was written since goes over that upload.
            Some(meta) if staged.may_have_stored(&meta) => staged.base = Base::Object(meta),
            None if generation == 0 => staged.base = Base::New,
            // Changed since the writes began: the upload's precondition
            // fails and says so (or finds its own bytes there).
            _ => return Ok(Base::Generation(generation)),
        }
        Ok(staged.base.clone())
    }

    /// Writes `data` at `offset` of the staging file. A write that fails
    /// once it touched the file breaks a handle's writer (its content is no
    /// longer what was written); one without a handle (NFS) reports the
    /// failure and stays usable, the client rewriting that range.
    pub async fn staged_write(&self, staged: &mut Staged, offset: u64, data: &[u8], attended: bool) -> VfsResult<u32> {
        self.fill(staged).await?;
        if let Err(e) = staged.file.write_all_at(data, offset) {
            let error = io_error("staging file", e);
            if attended {
                staged.broken = Some(error.message().to_string());
            }
            return Err(error);
        }
        let appended = offset == staged.size;
        staged.size = staged.size.max(offset + data.len() as u64);
        staged.dirty = true;
        staged.written = true;
        staged.failure_reported = None;
        staged.mtime = SystemTime::now();
        // Only a handle's writes are streamed: a close waits for the stream
        // and reports it. Without a handle (NFS) the idle commit uploads
        // the file whole.
        self.stream_writes(staged, appended && attended);
        Ok(data.len() as u32)
    }

    /// Keeps a streamed upload in step with the writes: starts one once a
    /// sequential writer staged enough, tells it of appended bytes, and
    /// abandons it (nothing is stored) when a write lands anywhere but the
    /// end, or comes without a handle.
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
            None if staged.size >= STREAM_AFTER => {
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

    pub async fn staged_read(&self, staged: &mut Staged, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        self.fill(staged).await?;
        let end = staged.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok((Bytes::new(), true));
        }
        let mut buffer = vec![0; (end - offset) as usize];
        staged.file.read_exact_at(&mut buffer, offset).map_err(|e| io_error("staging file", e))?;
        Ok((buffer.into(), end == staged.size))
    }

    pub async fn staged_truncate(&self, staged: &mut Staged, size: u64) -> VfsResult<()> {
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
        staged.written = staged.written || size > 0;
        staged.failure_reported = None;
        staged.mtime = SystemTime::now();
        Ok(())
    }

    /// Uploads the staged bytes if anything changed. On success the object
    /// is the new base; on failure the previous version is untouched, the
    /// bytes stay staged, and the error says why. Every backend call it
    /// makes is bounded by progress (a stall fails within the retry window
    /// and one stall timeout), so it never cuts an upload that keeps moving.
    pub async fn commit(&self, staged: &mut Staged) -> VfsResult<()> {
        if !staged.dirty || staged.unlinked {
            return Ok(());
        }
        if let Some(why) = &staged.broken {
            return Err(VfsError::io(format!(
                "gs://{}/{}: not uploaded: a write failed earlier ({why})",
                staged.bucket, staged.name
            )));
        }
        self.fill(staged).await?;
        // (Only a base just fetched says what Cloud Storage holds now.)
        let taken_back = matches!(staged.base, Base::Generation(_));
        if let Base::Object(meta) = self.known_base(staged).await?
            && taken_back
            && self.holds_staged_bytes(&meta, staged)
        {
            // Taken back from a journal whose bytes Cloud Storage has
            // already (uploaded by the run that left it, or never changed):
            // nothing to send.
            self.uploaded(staged, (*meta).clone());
            return Ok(());
        }
        self.ensure_bucket(&staged.bucket).await?;
        // A 412 over an object this writer may have stored itself (an
        // attempt whose answer was lost) is followed by one more attempt
        // over that object.
        let mut over_our_own = false;
        loop {
            let upload = self.upload_for(staged);
            let error = match self.send_upload(staged.streaming.take(), &upload).await {
                Ok(meta) => {
                    self.uploaded(staged, meta);
                    return Ok(());
                }
                Err(e) => e,
            };
            if error.kind != ErrorKind::PreconditionFailed {
                if error.kind.is_transient() || error.kind == ErrorKind::Other {
                    staged.remember_unconfirmed();
                }
                tracing::warn!(bucket = %staged.bucket, name = %staged.name, error = %error, "upload failed");
                return Err(vfs_error(error));
            }
            let current = self.gcs.get_object(&staged.bucket, &staged.name).await.ok();
            match current {
                Some(current) if current.generation != staged.base.generation() => {
                    if self.holds_staged_bytes(&current, staged) {
                        tracing::info!(bucket = %staged.bucket, name = %staged.name, "an upload whose answer was lost had stored these bytes");
                        self.uploaded(staged, current);
                        return Ok(());
                    }
                    if !over_our_own && staged.may_have_stored(&current) {
                        tracing::info!(bucket = %staged.bucket, name = %staged.name, "an earlier upload whose answer was lost stored an older version: uploading over it");
                        staged.base = Base::Object(Arc::new(current));
                        over_our_own = true;
                        continue;
                    }
                }
                _ => {}
            }
            self.cache.forget(&key(&staged.bucket, &staged.name));
            return Err(VfsError::stale(format!(
                "gs://{}/{} changed in Cloud Storage since it was opened; not overwritten",
                staged.bucket, staged.name
            )));
        }
    }

    /// Makes the uploaded object the writer's new base.
    fn uploaded(&self, staged: &mut Staged, meta: ObjectMeta) {
        self.pending_object_meta.remove(&staged.bucket, &staged.name);
        // From now on stat shows the object's own time, whether it comes
        // from this handle or from Cloud Storage: an editor that compares
        // times before saving must see no change.
        staged.mtime = meta.updated.or(meta.created).unwrap_or(staged.mtime);
        let meta = Arc::new(meta);
        self.changed(&staged.bucket, &staged.name, Known::Object(meta.clone()));
        self.cache.forget(&key(&staged.bucket, &format!("{}/", staged.name)));
        staged.base = Base::Object(meta);
        staged.dirty = false;
        staged.written = false;
        staged.failure_reported = None;
        staged.unconfirmed.clear();
        // Nothing is left to replay: a journal record goes (the staging
        // file stays for the writes to come; the next one writes a record
        // with this new base).
        if let Some(files) = &staged.journal {
            let _ = std::fs::remove_file(&files.record);
        }
        staged.journaled = false;
        tracing::debug!(bucket = %staged.bucket, name = %staged.name, size = staged.size, "uploaded");
    }

    /// Whether `meta` is exactly the staged bytes (size and CRC32C).
    fn holds_staged_bytes(&self, meta: &ObjectMeta, staged: &Staged) -> bool {
        let stored = meta.crc32c.as_deref().and_then(decode_crc32c);
        meta.size == staged.size && stored.is_some() && staging_crc32c(&staged.file, staged.size).ok() == stored
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
            // The whole file would be refused the same way; and a service
            // that stopped taking bytes would most likely stall it again,
            // which would double how long the close waits. The bytes stay
            // staged for the next flush or fsync.
            Some(Err(e)) if matches!(e.kind, ErrorKind::PreconditionFailed | ErrorKind::Stalled) => Err(e),
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
        let base = match &staged.base {
            Base::Object(meta) => Some(meta.as_ref()),
            _ => None,
        };
        let pending = match staged.base {
            Base::New => self.pending_object_meta.get(&staged.bucket, &staged.name).unwrap_or_default(),
            _ => Default::default(),
        };
        Upload {
            bucket: staged.bucket.clone(),
            name: staged.name.clone(),
            source: staged.file.clone(),
            size: staged.size,
            content_type: base.and_then(|b| b.content_type.clone()).or(pending.content_type),
            custom_metadata: base.map(|b| b.custom_metadata.clone()).or(pending.custom_metadata).unwrap_or_default(),
            // A careful overwrite: only the version this writer started from.
            if_generation_match: Some(staged.base.generation()),
        }
    }

    /// Uploads a handle's changes for close() (`Caller::Close`) or fsync()
    /// (`Caller::Fsync`). A close uploads bytes written, and a new file
    /// only created (`touch`: it exists once close returns, as gcsfuse
    /// does); an existing object only emptied by an O_TRUNC open or a
    /// truncate to 0, with nothing written, waits for the last release:
    /// `cmd > file` and `dd of=file` close a duplicate of the descriptor
    /// before writing, and uploading the empty file then would replace the
    /// previous version before the new one exists, and leave it empty if
    /// the upload of the new one fails.
    ///
    /// A failure is reported to the caller and the bytes stay staged: an
    /// fsync tries again, while a close after a reported failure, with
    /// nothing written since, reports it again at once (a program that
    /// exits after a failed fsync must not wait for a second stall in its
    /// close). The last release does not try behind the user's back.
    pub async fn commit_reported(&self, writer: &Writer, caller: Caller) -> VfsResult<()> {
        let mut staged = writer.staged.lock().await;
        if caller == Caller::Close {
            if let Some(reported) = &staged.failure_reported {
                return Err(reported.clone());
            }
            if !staged.written && staged.in_gcs() {
                return Ok(());
            }
        }
        let committed = self.commit(&mut staged).await;
        staged.failure_reported = committed.as_ref().err().cloned();
        self.publish(writer, &staged);
        committed
    }

    /// Publishes `staged` as what stat shows of `writer`. An upload gives
    /// the file the object's time, after close() and release (which close
    /// does not wait for) answered the kernel, which keeps the attributes
    /// it was given before (a create, a fchmod after the last write) for
    /// its TTL: it is told to drop them, once the new ones are published.
    fn publish(&self, writer: &Writer, staged: &Staged) {
        let shown = writer.state().mtime;
        writer.record(staged);
        if staged.mtime != shown {
            self.cx.attributes_changed(&writer.node());
        }
    }

    /// The writer of `ino` in the table, locked, and still the file's
    /// writer: a lock won after the writer was retired (its last handle
    /// released, or its idle upload done and nothing waiting) is given up
    /// and the table asked again, so that a truncate, an rm or a rename
    /// never acts on bytes nobody will upload. None: no writer.
    pub async fn locked_writer(&self, ino: ciofs_frontends::Ino) -> Option<(Arc<Writer>, OwnedMutexGuard<Staged>)> {
        loop {
            let writer = self.writer(ino)?;
            writer.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let staged = writer.staged.clone().lock_owned().await;
            writer.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            if !staged.retired {
                return Some((writer, staged));
            }
        }
    }

    /// A new handle on `writer`, the file's writer, which has nothing
    /// unflushed: one writer per file, so that every handle, an ftruncate,
    /// an rm or a rename act on the same bytes (a second writer of its own
    /// saw none of the first one's). None if the writer is going (its last
    /// release retired it meanwhile): the caller makes a new one.
    pub async fn share_writer(&self, writer: &Arc<Writer>, truncate: bool) -> VfsResult<Option<Arc<Writer>>> {
        let mut staged = writer.staged.lock().await;
        if staged.retired || staged.unlinked {
            return Ok(None);
        }
        if truncate {
            self.staged_truncate(&mut staged, 0).await?;
            writer.record(&staged);
        }
        // Counted under the lock: a release deciding to retire the writer
        // takes the same lock and sees this handle.
        Ok(Some(writer.new_handle()))
    }

    /// The last release of a handle writer: what no close uploaded (an
    /// existing object only emptied) goes up, unless a flush reported this
    /// content's upload as failed; then the writer leaves the table. A
    /// handle that joined meanwhile keeps it.
    pub async fn release_writer(&self, ino: ciofs_frontends::Ino, writer: &Arc<Writer>) -> VfsResult<()> {
        let mut staged = writer.staged.lock().await;
        if writer.handles.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let committed = match staged.failure_reported.is_some() || staged.broken.is_some() {
            true => Ok(()),
            false => self.commit(&mut staged).await,
        };
        if let Err(e) = &committed {
            // No close() reports this one.
            self.cx.error_log.record(&writer.node().to_string(), e.errno(), e.message());
        }
        self.retire(ino, writer, &mut staged);
        committed
    }

    /// Takes `writer` out of the writers' table (if it is still there); a
    /// write that waited for its lock goes to a new writer.
    pub fn retire(&self, ino: ciofs_frontends::Ino, writer: &Arc<Writer>, staged: &mut Staged) {
        staged.retired = true;
        staged.streaming = None;
        self.forget_journal(staged);
        self.publish(writer, staged);
        let mut writers = lock(&self.writers);
        if writers.get(&ino).is_some_and(|w| Arc::ptr_eq(w, writer)) {
            writers.remove(&ino);
        }
    }

    /// Marks a staged file removed: it keeps its bytes for the handles that
    /// still have it open (fetched first, if they were not yet), and is never
    /// uploaded.
    pub async fn unlink_staged(&self, staged: &mut Staged) {
        if let Err(e) = self.fill(staged).await {
            tracing::debug!(error = %e, "removed file's old bytes are gone");
            staged.lose_base();
        }
        staged.unlinked = true;
        staged.streaming = None;
        self.forget_journal(staged);
    }

    /// The entry of a file open for write (perhaps not uploaded yet).
    pub fn staged_entry(&self, node: &Node) -> Option<ciofs_frontends::DirEntry> {
        let (ino, _) = self.cx.inodes.find(node)?;
        let state = self.writer(ino)?.state();
        (!state.unlinked).then(|| self.cx.entry(node.clone(), state.size, state.mtime))
    }
}
