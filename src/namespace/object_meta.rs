//! `.meta/<object>.json` written through FUSE. At close, the document's
//! content type and custom metadata are applied to the object as a patch,
//! and kept for the object's next upload when that makes a new object: `tar
//! x` writes `.meta/` before the objects (ciofs lists it first), and over an
//! existing tree it unlinks each object and creates it anew. The service's fields (size, hashes, times, generations) are
//! read and ignored. `.meta/_bucket.json` writes are still ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciofs_frontends::{VfsError, VfsResult};

use super::Namespace;
use super::cache::{Known, key};
use super::node::Node;
use crate::documents::{ObjectMetadataEdit, parse_object_document};
use crate::errors::vfs_error;

/// One handle's bytes of an object's `.meta/` document.
pub(super) struct MetaEdit {
    pub node: Node,
    data: Mutex<Vec<u8>>,
    written: AtomicBool,
}

impl MetaEdit {
    /// Starting from `shown` (the document at open; empty after O_TRUNC).
    pub fn new(node: Node, shown: Vec<u8>) -> Self {
        Self { node, data: Mutex::new(shown), written: AtomicBool::new(false) }
    }

    pub fn write(&self, offset: u64, bytes: &[u8]) -> VfsResult<u32> {
        let start = usize::try_from(offset).map_err(|_| VfsError::new(libc::EFBIG, "offset too large"))?;
        // A metadata document is small; the same bound as other documents.
        if start.saturating_add(bytes.len()) > 1 << 20 {
            return Err(VfsError::new(libc::EFBIG, format!("{}: larger than 1 MiB", self.node)));
        }
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() < start + bytes.len() {
            data.resize(start + bytes.len(), 0);
        }
        data[start..start + bytes.len()].copy_from_slice(bytes);
        self.written.store(true, Ordering::SeqCst);
        Ok(bytes.len() as u32)
    }

    /// `ftruncate`, or the kernel's O_TRUNC (a SETATTR after the open).
    pub fn truncate(&self, size: u64) {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.resize(usize::try_from(size).unwrap_or(usize::MAX).min(1 << 20), 0);
        self.written.store(true, Ordering::SeqCst);
    }

    pub fn bytes(&self) -> Bytes {
        Bytes::from(self.data.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Metadata written, kept for the object's next upload, by (bucket, name).
#[derive(Default)]
pub(super) struct PendingObjectMeta {
    edits: Mutex<HashMap<(String, String), ObjectMetadataEdit>>,
}

impl PendingObjectMeta {
    pub fn get(&self, bucket: &str, name: &str) -> Option<ObjectMetadataEdit> {
        let edits = self.edits.lock().unwrap_or_else(|e| e.into_inner());
        edits.get(&(bucket.to_string(), name.to_string())).cloned()
    }

    pub fn remove(&self, bucket: &str, name: &str) {
        self.edits.lock().unwrap_or_else(|e| e.into_inner()).remove(&(bucket.to_string(), name.to_string()));
    }

    fn put(&self, bucket: &str, name: &str, edit: ObjectMetadataEdit) {
        self.edits.lock().unwrap_or_else(|e| e.into_inner()).insert((bucket.to_string(), name.to_string()), edit);
    }
}

/// `.meta/` documents written over NFS (no open, no close), with the time
/// of their last write; applied once they have been idle.
#[derive(Default)]
pub(super) struct NfsMetaEdits {
    edits: Mutex<HashMap<Node, (Arc<MetaEdit>, Instant)>>,
}

impl Namespace {
    /// A WRITE without a handle to an object's `.meta/` document.
    pub(super) fn nfs_meta_write(&self, node: Node, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let mut edits = self.nfs_meta_edits.edits.lock().unwrap_or_else(|e| e.into_inner());
        let entry =
            edits.entry(node.clone()).or_insert_with(|| (Arc::new(MetaEdit::new(node, Vec::new())), Instant::now()));
        entry.1 = Instant::now();
        entry.0.write(offset, data)
    }

    /// A SETATTR of the size of a document being written over NFS.
    pub(super) fn nfs_meta_truncate(&self, node: &Node, size: u64) {
        let mut edits = self.nfs_meta_edits.edits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((edit, written)) = edits.get_mut(node) {
            edit.truncate(size);
            *written = Instant::now();
        }
    }

    /// Applies the NFS-written documents idle for `idle` (from the idle
    /// task); a refusal goes to `.ciofs/errors`.
    pub(super) async fn apply_idle_meta_edits(&self, idle: Duration) {
        let due: Vec<Arc<MetaEdit>> = {
            let mut edits = self.nfs_meta_edits.edits.lock().unwrap_or_else(|e| e.into_inner());
            let nodes: Vec<Node> =
                edits.iter().filter(|(_, (_, written))| written.elapsed() >= idle).map(|(n, _)| n.clone()).collect();
            nodes.into_iter().filter_map(|n| edits.remove(&n)).map(|(edit, _)| edit).collect()
        };
        for edit in due {
            // The error is recorded in .ciofs/errors by the flush.
            let _ = self.meta_edit_flush(&edit).await;
        }
    }

    /// Whether the `.meta/` document of an object that does not exist was
    /// written (kept for its upload) or is being written.
    pub(super) fn meta_before_object(&self, bucket: &str, name: &str) -> bool {
        if self.pending_object_meta.get(bucket, name).is_some() {
            return true;
        }
        let written_over_nfs = self
            .nfs_meta_edits
            .edits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .any(|node| matches!(node, Node::ObjectMeta { bucket: b, name: n, .. } if b == bucket && n == name));
        if written_over_nfs {
            return true;
        }
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.values().any(|handle| {
            matches!(handle, super::Handle::MetaEdit(edit)
                if matches!(&edit.node, Node::ObjectMeta { bucket: b, name: n, .. } if b == bucket && n == name))
        })
    }

    /// close() or fsync() of a `.meta/` document: applies what was written.
    pub(super) async fn meta_edit_flush(&self, edit: &MetaEdit) -> VfsResult<()> {
        if !edit.written.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let Node::ObjectMeta { bucket, name, .. } = &edit.node else { return Ok(()) };
        let result = self.apply_object_meta(bucket, name, &edit.bytes()).await;
        if let Err(e) = &result {
            self.error_log.record(&edit.node.to_string(), e.errno(), e.message());
        }
        result
    }

    async fn apply_object_meta(&self, bucket: &str, name: &str, data: &[u8]) -> VfsResult<()> {
        let file = format!("{}.json", name.rsplit('/').next().unwrap_or(name));
        let edit = parse_object_document(data, &file)?;
        // Kept for the object's next upload either way: `tar x` over an
        // existing tree writes the document, then unlinks the object and
        // creates it anew.
        self.pending_object_meta.put(bucket, name, edit.clone());
        let Known::Object(meta) = self.resolve(bucket, name).await? else {
            tracing::debug!(bucket, name, "metadata kept for the object's upload");
            return Ok(());
        };
        let content_type = edit.content_type.filter(|c| meta.content_type.as_ref() != Some(c));
        let wanted = edit.custom_metadata.unwrap_or_else(|| meta.custom_metadata.clone());
        let removed: Vec<&String> = meta.custom_metadata.keys().filter(|k| !wanted.contains_key(*k)).collect();
        if !removed.is_empty() {
            let message = format!("{file}: removing custom metadata keys ({removed:?}) is not supported yet");
            return Err(VfsError::new(libc::EINVAL, message));
        }
        let changed: BTreeMap<String, String> =
            wanted.into_iter().filter(|(k, v)| meta.custom_metadata.get(k) != Some(v)).collect();
        if content_type.is_none() && changed.is_empty() {
            return Ok(());
        }
        let patched =
            self.gcs.patch_object_metadata(bucket, name, content_type.as_deref(), &changed, Some(meta.metageneration));
        let patched = patched.await.map_err(vfs_error)?;
        tracing::info!(bucket, name, "object metadata set");
        self.cache.put(key(bucket, name), Known::Object(Arc::new(patched)));
        Ok(())
    }
}
