//! Buckets as the directories of `storage/`. `mkdir storage/NEW` makes a
//! pending bucket, created when its settings come (`.meta/_bucket.json`:
//! the location and storage class can only be given at creation, and `tar
//! x` of an export writes the document right after the directory), when
//! something is stored in it, or once it has waited (core/pending.rs; then
//! with Cloud Storage's defaults). Until then it lists as an empty bucket.
//! `.meta/_bucket.json` written for an existing bucket changes its labels,
//! versioning and default storage class; its location cannot change.

use std::collections::BTreeSet;
use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

use ciofs_backends::ErrorKind;
use ciofs_backends::gcs::{BucketChange, BucketMeta, BucketSettings};
use ciofs_backends::sync::lock;
use ciofs_frontends::{VfsError, VfsResult};

use super::documents::parse_bucket_document;
use super::object_meta::map_change;
use super::tree::StorageTree;
use crate::core::cache::{Known, key};
use crate::core::errors::vfs_error;
use crate::core::node::{BUCKET_META, Node};
use crate::core::pending::{PendingDue, Waiting};
use crate::core::rules::{Problems, label_problems, refuse_if_any};

/// What a bucket waiting for its settings shows: Cloud Storage's defaults.
fn pending_meta(bucket: &str, made: SystemTime) -> BucketMeta {
    BucketMeta {
        name: bucket.to_string(),
        location: "US".to_string(),
        location_type: "multi-region".to_string(),
        storage_class: "STANDARD".to_string(),
        created: Some(made),
        updated: Some(made),
        ..BucketMeta::default()
    }
}

impl StorageTree {
    /// What `bucket` shows while it waits to be created.
    pub fn pending_bucket_meta(&self, bucket: &str) -> Option<BucketMeta> {
        self.pending_buckets.get(bucket).map(|waiting| pending_meta(bucket, waiting.made))
    }

    /// The buckets of `project` that wait to be created.
    pub fn pending_buckets_of(&self, project: &str) -> Vec<BucketMeta> {
        let waiting = self.pending_buckets.filter(|_, waiting| waiting.made_in == project);
        waiting.into_iter().map(|(bucket, waiting)| pending_meta(&bucket, waiting.made)).collect()
    }

    fn taken_buckets(&self) -> MutexGuard<'_, BTreeSet<String>> {
        lock(&self.taken_buckets)
    }

    /// Forgets a bucket that waits (or was found taken): `rmdir`.
    pub fn forget_pending_bucket(&self, bucket: &str) -> bool {
        let taken = self.taken_buckets().remove(bucket);
        self.pending_buckets.remove(bucket) || taken
    }

    /// `mkdir storage/NAME`: a pending bucket, unless the name is taken.
    pub async fn mkdir_bucket(&self, project: &str, name: &str) -> VfsResult<()> {
        check_bucket_name(name)?;
        let taken = self.pending_buckets.contains(name)
            || match self.gcs.get_bucket(name).await {
                Ok(_) => true,
                // Someone else's: bucket names are global.
                Err(e) if e.kind == ErrorKind::PermissionDenied => true,
                Err(e) if e.kind == ErrorKind::NotFound => false,
                Err(e) => return Err(vfs_error(e)),
            };
        if taken {
            return Err(taken_error(name));
        }
        self.pending_buckets.add(name.to_string(), project.to_string());
        self.cache.forget(&key(name, ""));
        tracing::info!(project, bucket = name, "bucket pending: created at its .meta/_bucket.json");
        Ok(())
    }

    /// Creates `bucket` now if it is pending, with the settings it has
    /// (Cloud Storage's defaults, unless a creation with its own failed for
    /// a while): something is about to be stored in it. A bucket another
    /// project took meanwhile is EEXIST: nothing goes into it.
    pub async fn ensure_bucket(&self, bucket: &str) -> VfsResult<()> {
        if self.taken_buckets().contains(bucket) {
            return Err(taken_error(bucket));
        }
        let Some(waiting) = self.pending_buckets.get(bucket) else { return Ok(()) };
        self.create_pending_bucket(bucket, &waiting.settings.unwrap_or_default()).await
    }

    /// Creates a pending bucket with `settings` (one creation at a time, so
    /// two callers do not both try). A refusal ends its pending; a
    /// transient failure leaves it pending with these settings, to try
    /// again. A name found taken is ours if our project lists it (a create
    /// whose answer was lost), else another project's.
    async fn create_pending_bucket(&self, bucket: &str, settings: &BucketSettings) -> VfsResult<()> {
        let _one_at_a_time = self.pending_buckets.creating().await;
        let Some(project) = self.pending_buckets.get(bucket).map(|w| w.made_in) else { return Ok(()) };
        let created = match self.gcs.create_bucket(&project, bucket, settings).await {
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                let ours = self.list_project_buckets(&project).await?.into_iter().find(|b| b.name == bucket);
                ours.ok_or(e)
            }
            created => created,
        };
        match created {
            Ok(meta) => {
                self.pending_buckets.remove(bucket);
                self.project_buckets.forget(&project);
                self.cache.put(key(bucket, ""), Known::Bucket(Arc::new(meta)));
                tracing::info!(project, bucket, "bucket created");
                Ok(())
            }
            Err(e) if e.kind.is_transient() => {
                self.pending_buckets.wait_again(bucket, settings);
                Err(vfs_error(e))
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.pending_buckets.remove(bucket);
                self.taken_buckets().insert(bucket.to_string());
                Err(taken_error(bucket))
            }
            Err(e) => {
                self.pending_buckets.remove(bucket);
                Err(vfs_error(e))
            }
        }
    }

    /// Creates, with Cloud Storage's defaults, the pending buckets that
    /// waited long enough for their settings (called periodically), or all.
    pub async fn create_due_buckets(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        let mut failed = Vec::new();
        for (bucket, Waiting { made_in: project, .. }) in self.pending_buckets.due(which) {
            let document = Node::BucketMeta { project: project.clone(), bucket: bucket.clone() };
            if which != PendingDue::All && self.cx.local.stat(&document).is_some() {
                // Its settings are being written (over NFS they apply after
                // a quiet second): they create it.
                continue;
            }
            if let Err(e) = self.ensure_bucket(&bucket).await {
                let dir = Node::Dir { project, bucket, prefix: String::new() }.to_string();
                self.cx.error_log.record(&dir, e.errno(), e.message());
                failed.push((dir, e));
            }
        }
        failed
    }

    /// A `.meta/_bucket.json` written (core/edits.rs calls this at close, or
    /// when idle over NFS): creates a pending bucket with its settings, or
    /// changes an existing one.
    pub async fn apply_bucket_meta(&self, bucket: &str, data: &[u8]) -> VfsResult<()> {
        let current = self.bucket_meta(bucket).await?;
        let wanted = parse_bucket_document(data, BUCKET_META, &current)?;
        let mut problems = Problems::default();
        label_problems("Cloud Storage", &wanted.labels, &mut problems);
        refuse_if_any(problems)?;
        if self.pending_buckets.contains(bucket) {
            return self.create_pending_bucket(bucket, &wanted).await;
        }
        let location = wanted.location.as_deref().unwrap_or_default();
        if !location.eq_ignore_ascii_case(&current.location) {
            let message = format!(
                "{BUCKET_META}: bucket {bucket} is in {}; a bucket's location cannot change (make a new bucket)",
                current.location
            );
            return Err(VfsError::invalid(message));
        }
        let change = BucketChange {
            labels: map_change(&current.labels, &wanted.labels),
            versioning: wanted.versioning,
            storage_class: wanted.storage_class.filter(|class| !class.eq_ignore_ascii_case(&current.storage_class)),
        };
        if change.labels.is_empty() && change.versioning == current.versioning && change.storage_class.is_none() {
            return Ok(());
        }
        let changed = self.gcs.update_bucket(bucket, &change, Some(current.metageneration)).await;
        let changed = changed.map_err(vfs_error)?;
        tracing::info!(bucket, "bucket settings changed");
        self.cache.put(key(bucket, ""), Known::Bucket(Arc::new(changed)));
        Ok(())
    }
}

fn taken_error(bucket: &str) -> VfsError {
    VfsError::exists(format!("bucket {bucket} exists (bucket names are global across all projects)"))
}

/// Cloud Storage's bucket name rules, checked before anything is sent: 3–63
/// characters (up to 222 with dots, 63 between them) of lowercase letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit,
/// not `goog` at the start.
fn check_bucket_name(name: &str) -> VfsResult<()> {
    let refuse = |why: &str| Err(VfsError::invalid(format!("bucket name {name:?}: {why}")));
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let longest = if name.contains('.') { 222 } else { 63 };
    if name.len() < 3 || name.len() > longest || name.split('.').any(|part| part.len() > 63) {
        return refuse("3 to 63 characters (222 with dots, at most 63 between them)");
    }
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        return refuse(&format!("{bad:?} is not allowed (lowercase letters, digits, `-`, `_` and `.`)"));
    }
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return refuse("must start and end with a lowercase letter or a digit");
    }
    if name.starts_with("goog") {
        return refuse("cannot start with `goog`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_bucket_name;

    #[test]
    fn bucket_names_follow_cloud_storage_rules() {
        for good in ["abc", "my-bucket_1", "a.b.c", "0bucket9"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "My-Bucket", "-abc", "abc-", "a b c", "googbucket", &"x".repeat(64), ".Trash-1000"] {
            let refused = check_bucket_name(bad).expect_err(bad);
            assert_eq!(refused.errno(), libc::EINVAL, "{bad}");
        }
    }
}
