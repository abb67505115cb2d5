//! `.meta/<object>.json` written: kept locally by core/edits.rs like any edited
//! document; at close (over NFS once idle) its content type and custom
//! metadata are applied to the object as a patch, and kept for the object's
//! next upload when that makes a new object: `tar x` writes `.meta/` before
//! the objects (ciofs lists it first), and over an existing tree it unlinks
//! each object and creates it anew. The service's fields (size, hashes,
//! times, generations) are read and ignored.

use super::tree::StorageTree;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciofs_backends::gcs::PatchObjectMetadata;
use ciofs_backends::sync::lock;
use ciofs_frontends::VfsResult;

use super::documents::{ObjectMetadataEdit, parse_object_document};
use crate::core::cache::{Known, key};
use crate::core::errors::vfs_error;

/// How long metadata written for an object waits for the object's upload:
/// `tar x` uploads a directory's objects after all of their documents, so
/// this is long; a much later new object of that name does not take it.
const PENDING_META_TTL: Duration = Duration::from_secs(3600);

/// Metadata written, kept for the object's next upload, by (bucket, name),
/// with when it was written.
pub struct PendingObjectMeta {
    edits: Mutex<HashMap<(String, String), (ObjectMetadataEdit, Instant)>>,
    ttl: Duration,
}

impl Default for PendingObjectMeta {
    fn default() -> Self {
        Self { edits: Mutex::default(), ttl: PENDING_META_TTL }
    }
}

impl PendingObjectMeta {
    pub fn get(&self, bucket: &str, name: &str) -> Option<ObjectMetadataEdit> {
        let edits = lock(&self.edits);
        let (edit, written) = edits.get(&(bucket.to_string(), name.to_string()))?;
        (written.elapsed() < self.ttl).then(|| edit.clone())
    }

    pub fn remove(&self, bucket: &str, name: &str) {
        lock(&self.edits).remove(&(bucket.to_string(), name.to_string()));
    }

    fn put(&self, bucket: &str, name: &str, edit: ObjectMetadataEdit) {
        let mut edits = lock(&self.edits);
        if edits.len() % 1024 == 1023 {
            // Now and then, what waited too long goes.
            edits.retain(|_, (_, written)| written.elapsed() < self.ttl);
        }
        edits.insert((bucket.to_string(), name.to_string()), (edit, Instant::now()));
    }
}

impl StorageTree {
    /// A `.meta/OBJECT.json` written (edits.rs keeps it locally until
    /// close, or until idle over NFS, then calls this).
    pub async fn apply_object_meta(&self, bucket: &str, name: &str, data: &[u8]) -> VfsResult<()> {
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
        let changed = map_change(&meta.custom_metadata, &wanted);
        if content_type.is_none() && changed.is_empty() {
            return Ok(());
        }
        let patch = PatchObjectMetadata {
            bucket: bucket.to_string(),
            name: name.to_string(),
            content_type,
            custom_metadata: changed,
            if_metageneration_match: Some(meta.metageneration),
        };
        let patched = self.gcs.patch_object_metadata(&patch).await.map_err(vfs_error)?;
        tracing::info!(bucket, name, "object metadata set");
        self.cache.put(key(bucket, name), Known::Object(Arc::new(patched)));
        Ok(())
    }
}

/// What turns `current` into `wanted`: keys to set (`Some`) and to remove
/// (`None`); empty when they are the same.
pub fn map_change(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let removed = current.keys().filter(|k| !wanted.contains_key(*k)).map(|k| (k.clone(), None));
    let set = wanted.iter().filter(|(k, v)| current.get(*k) != Some(v)).map(|(k, v)| (k.clone(), Some(v.clone())));
    removed.chain(set).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_waits_for_its_object_a_while_only() {
        let pending = PendingObjectMeta { ttl: Duration::from_millis(50), ..PendingObjectMeta::default() };
        let edit = ObjectMetadataEdit { content_type: Some("text/csv".into()), custom_metadata: None };
        pending.put("b", "old", edit.clone());
        assert_eq!(pending.get("b", "old"), Some(edit));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(pending.get("b", "old"), None, "too old to be given to a new object");
        for i in 0..1024 {
            pending.put("b", &format!("n{i}"), ObjectMetadataEdit::default());
        }
        let kept = pending.edits.lock().unwrap();
        assert!(!kept.contains_key(&("b".to_string(), "old".to_string())), "dropped in time");
    }
}
