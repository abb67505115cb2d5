//! `.meta/<object>.json` written, applied: kept locally by core/edits.rs
//! like any edited document; at close (over NFS once idle) its content type
//! and custom metadata are applied to the object as a patch, and kept for
//! the object's next upload when that makes a new object (object_meta.rs).
//! The service's fields (size, hashes, times, generations) are read and
//! ignored.

use std::sync::Arc;

use ciofs_backends::gcs::PatchObjectMetadata;
use ciofs_frontends::VfsResult;

use super::documents::parse_object_document;
use super::object_meta::map_change;
use super::tree::StorageTree;
use crate::core::cache::Known;
use crate::core::errors::vfs_error;

impl StorageTree {
    /// A `.meta/OBJECT.json` written (core/edits.rs keeps it locally until
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
        self.changed(bucket, name, Known::Object(Arc::new(patched)));
        Ok(())
    }
}
