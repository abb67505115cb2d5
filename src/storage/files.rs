//! Object files through their handles: what an open gives (a reader of the
//! generation opened, or the file's writer), and what a read, write,
//! flush, fsync, release or truncate of an object does. The namespace keeps
//! the handle table and passes each call here with the handle it found.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::sync::lock;
use ciofs_frontends::{Ino, VfsError, VfsResult};
use tokio::sync::Mutex as AsyncMutex;

use super::tree::{SharedReader, StorageTree};
use super::writer::{Caller, Writer};
use crate::core::cache;
use crate::core::node::Node;

/// How long an open for write waits for another handle's data to be
/// uploaded before it answers EBUSY. FUSE sends RELEASE after close()
/// returned, so a change made through a closed handle's file (an ftruncate
/// on another descriptor, say) is uploaded only then: a short wait lets
/// `close(); open()` in one program see it done.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// Readers for NFS, which reads without opening: kept per inode.
const NFS_READERS: usize = 64;

/// What an open object file reads or writes.
#[derive(Clone)]
pub enum FileHandle {
    /// The generation that was current at open.
    Read(SharedReader),
    /// The file's writer (writer.rs): this handle is counted in it.
    Write(Arc<Writer>),
    /// A file being written, opened for reading: it reads the writer's
    /// bytes and never uploads them.
    ReadStaged(Arc<Writer>),
}

/// The size and time a file being written shows, and whether it was
/// removed while open (its handles still reach it; no name does).
pub struct WrittenStat {
    pub size: u64,
    pub mtime: SystemTime,
    pub unlinked: bool,
}

impl StorageTree {
    /// What stat shows of a file open for write: its writer's state.
    pub fn written_stat(&self, ino: Ino) -> Option<WrittenStat> {
        let state = self.writer(ino)?.state();
        Some(WrittenStat { size: state.size, mtime: state.mtime, unlinked: state.unlinked })
    }

    /// Opens an object for reading: the bytes being written if it is,
    /// else its current generation; and whether the kernel's cached pages
    /// (of the generation opened last time) are still good.
    pub async fn open_read(&self, ino: Ino, node: &Node) -> VfsResult<(FileHandle, bool)> {
        if let Some(writer) = self.writer(ino) {
            return Ok((FileHandle::ReadStaged(writer), false));
        }
        let reader = self.object_reader(node).await?;
        let generation = reader.version().generation;
        let mut opened = lock(&self.opened_generation);
        let keep_cache = opened.insert(ino, generation) == Some(generation);
        Ok((FileHandle::Read(Arc::new(AsyncMutex::new(reader))), keep_cache))
    }

    /// A handle's writer for an open for write of `node`: the file's
    /// writer if another handle has one (once it settled), else a new one
    /// staged from the object (empty with `truncate`).
    pub async fn open_write(&self, ino: Ino, node: &Node, truncate: bool) -> VfsResult<FileHandle> {
        if let Some(writer) = self.writer(ino) {
            if !writer.settled_within(SETTLE_WAIT).await {
                return Err(VfsError::busy(format!(
                    "{node}: another handle has unflushed data or an upload in flight"
                )));
            }
            if let Some(shared) = self.share_writer(&writer, truncate).await? {
                return Ok(FileHandle::Write(shared));
            }
        }
        let base = self.existing_object(node).await?;
        let writer = Arc::new(Writer::new(node.clone(), self.stage(node, base, truncate)?));
        lock(&self.writers).insert(ino, writer.clone());
        Ok(FileHandle::Write(writer.new_handle()))
    }

    /// `create` of an object: its handle, and the time the file shows
    /// until something changes it (the writer's own).
    pub fn create_file(&self, ino: Ino, node: &Node) -> VfsResult<(FileHandle, SystemTime)> {
        let writer = Arc::new(Writer::new(node.clone(), self.stage(node, None, true)?));
        lock(&self.writers).insert(ino, writer.clone());
        let writer = writer.new_handle();
        let mtime = writer.state().mtime;
        Ok((FileHandle::Write(writer), mtime))
    }

    /// What NFS reads through, having no open: the bytes being written, or
    /// a reader per inode, replaced when the object's generation changed.
    /// Without a writer, a removed or replaced object's inode is stale.
    pub async fn reader_without_open(&self, ino: Ino, node: &Node) -> VfsResult<FileHandle> {
        if let Some(writer) = self.writer(ino) {
            return Ok(FileHandle::ReadStaged(writer));
        }
        self.cx.still_named(ino, node)?;
        let current = self.object_meta(node).await?.generation;
        if let Some((generation, reader)) = lock(&self.nfs_readers).get(&ino)
            && *generation == current
        {
            return Ok(FileHandle::Read(reader.clone()));
        }
        let reader = self.object_reader(node).await?;
        let generation = reader.version().generation;
        let reader = Arc::new(AsyncMutex::new(reader));
        let mut readers = lock(&self.nfs_readers);
        if readers.len() >= NFS_READERS {
            readers.clear();
        }
        readers.insert(ino, (generation, reader.clone()));
        Ok(FileHandle::Read(reader))
    }

    pub async fn read(&self, handle: &FileHandle, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        match handle {
            FileHandle::Write(writer) | FileHandle::ReadStaged(writer) => {
                let mut staged = writer.staged.lock().await;
                self.staged_read(&mut staged, offset, len).await
            }
            FileHandle::Read(reader) => {
                let mut reader = reader.lock().await;
                match reader.read(offset, len).await {
                    Ok(read) => Ok(read),
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        // The generation this handle reads was replaced or
                        // deleted: the next open sees what is there now.
                        let version = reader.version();
                        self.cache.forget(&cache::key(&version.bucket, &version.name));
                        Err(VfsError::stale(format!("{e}; the object changed since it was opened")))
                    }
                    Err(e) => Err(crate::core::errors::vfs_error(e)),
                }
            }
        }
    }

    /// A write through a handle; `ino` names the file in the error of a
    /// handle open for reading only.
    pub async fn write(&self, ino: Ino, handle: &FileHandle, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let FileHandle::Write(writer) = handle else {
            return Err(VfsError::bad_handle(format!("inode {ino}: not open for write")));
        };
        let mut staged = writer.staged.lock().await;
        let written = self.staged_write(&mut staged, offset, data, true).await;
        writer.record(&staged);
        written
    }

    /// close() (`Caller::Close`) or fsync(): what this handle's writer
    /// holds goes up, and the outcome is this call's.
    pub async fn flush(&self, handle: &FileHandle, caller: Caller) -> VfsResult<()> {
        match handle {
            FileHandle::Write(writer) => self.commit_reported(writer, caller).await,
            _ => Ok(()),
        }
    }

    /// The handle is gone. The last handle of its writer: what a flush
    /// left (a file only created or truncated) goes up. The writer stays in
    /// the table until the upload is done, so an unlink racing with this
    /// release finds it (and deletes what was uploaded).
    pub async fn release(&self, ino: Ino, handle: FileHandle) -> VfsResult<()> {
        match handle {
            FileHandle::Write(writer) if writer.handles.fetch_sub(1, Ordering::SeqCst) == 1 => {
                self.release_writer(ino, &writer).await
            }
            _ => Ok(()),
        }
    }

    /// `truncate`/`ftruncate`/SETATTR size of an object. Through a handle
    /// (`through`, ftruncate): that handle's writer, also when its file was
    /// removed or replaced since; else the file's writer if it has one;
    /// else the object itself, now.
    pub async fn truncate(&self, ino: Ino, node: &Node, through: Option<&FileHandle>, size: u64) -> VfsResult<()> {
        let writer = match through {
            Some(FileHandle::Write(writer)) => {
                let staged = writer.staged.clone().lock_owned().await;
                Some((writer.clone(), staged))
            }
            _ => self.locked_writer(ino).await,
        };
        let Some((writer, mut staged)) = writer else {
            // `truncate -s` without an open file: change the object now.
            self.cx.still_named(ino, node)?;
            return self.truncate_object(node, size).await;
        };
        if writer.unattended {
            self.before_journaled_change(&mut staged).await?;
        }
        self.staged_truncate(&mut staged, size).await?;
        if writer.unattended {
            self.after_journaled_change(&staged)?;
        } else if writer.handles.load(Ordering::SeqCst) == 0 {
            // Its last handle is gone (its release may still be on the
            // way): nobody else will upload this.
            self.commit(&mut staged).await?;
        }
        writer.record(&staged);
        writer.touch();
        Ok(())
    }
}
