//! Changing the tree of Cloud Storage: files created, directories made and
//! removed, files removed and renamed.
//!
//! A directory is a prefix; `mkdir` makes it last by writing a zero-byte
//! `prefix/` placeholder object (as gcsfuse and the console do). In
//! `storage/`, `mkdir` creates a bucket and `rmdir` deletes an empty one.
//! Generated files (`.meta/*`) accept writes and removal without changing
//! anything in Google, so `tar x` of an export and `rm -r` succeed.

use std::sync::Arc;
use std::time::SystemTime;

use ciofs_backends::ErrorKind;
use ciofs_backends::gcs::{CopyObject, ListObjects, ObjectMeta, Upload};
use ciofs_frontends::{Attr, VfsError, VfsResult};

use super::tree::StorageTree;
use crate::core::cache::{Known, key};
use crate::core::errors::vfs_error;
use crate::core::node::{META_DIR, Node, Service, check_name_length, check_new_name};

impl StorageTree {
    /// A `--config-only` tree shows no objects, and changes none (NFS names
    /// them without a lookup).
    pub fn refuse_objects_if_config_only(&self, node: &Node) -> VfsResult<()> {
        match node {
            Node::Object { .. } if self.cx.options.config_only => Err(config_only_error(&node.to_string())),
            _ => Ok(()),
        }
    }

    /// `truncate -s SIZE` of an object that is not open: staged, cut and
    /// uploaded at once.
    pub async fn truncate_object(&self, node: &Node, size: u64) -> VfsResult<()> {
        let base = self.object_meta(node).await?;
        if base.size == size {
            return Ok(());
        }
        let mut staged = self.stage(node, Some(base), size == 0)?;
        self.staged_truncate(&mut staged, size).await?;
        self.commit(&mut staged).await
    }

    pub async fn make_dir(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        check_new_name(dir, name)?;
        let node = match dir {
            Node::Service { project, service: Service::Storage } => {
                self.mkdir_bucket(project, name).await?;
                Node::Dir { project: project.clone(), bucket: name.to_string(), prefix: String::new() }
            }
            Node::Dir { project, bucket, prefix } => {
                let full = format!("{prefix}{name}");
                if !matches!(self.resolve(bucket, &full).await?, Known::Absent) {
                    return Err(VfsError::exists(format!("{dir}/{name} exists")));
                }
                self.put_placeholder(bucket, &format!("{full}/")).await?;
                self.changed(bucket, &format!("{full}/"), Known::Prefix);
                Node::Dir { project: project.clone(), bucket: bucket.clone(), prefix: format!("{full}/") }
            }
            _ => return Err(VfsError::not_permitted(format!("{dir}: directories cannot be made here"))),
        };
        let (ino, generation) = self.cx.inodes.remember(&node);
        Ok(self.cx.attr(ino, generation, &node, 0, SystemTime::UNIX_EPOCH))
    }

    /// Writes the zero-byte object that keeps an empty directory.
    async fn put_placeholder(&self, bucket: &str, name: &str) -> VfsResult<()> {
        self.ensure_bucket(bucket).await?;
        let empty = tempfile::tempfile_in(&self.cx.options.staging_dir)
            .or_else(|_| tempfile::tempfile())
            .map_err(|e| VfsError::io(format!("staging file: {e}")))?;
        let upload = Upload {
            bucket: bucket.to_string(),
            name: name.to_string(),
            source: Arc::new(empty),
            size: 0,
            content_type: None,
            custom_metadata: Default::default(),
            if_generation_match: Some(0),
        };
        match self.gcs.upload_object(&upload).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::PreconditionFailed => {
                Err(VfsError::exists(format!("gs://{bucket}/{name} exists")))
            }
            Err(e) => Err(vfs_error(e)),
        }
    }

    pub async fn remove_file(&self, dir: &Node, name: &str) -> VfsResult<()> {
        check_name_length(name)?;
        match dir {
            Node::Dir { project, bucket, prefix } => {
                let full = format!("{prefix}{name}");
                let node = Node::Object { project: project.clone(), bucket: bucket.clone(), name: full.clone() };
                self.refuse_objects_if_config_only(&node)?;
                let ino = self.cx.inodes.find(&node).map(|(ino, _)| ino);
                // A file open for write: held while the object goes, so that
                // nothing is uploaded meanwhile; marked removed only once it
                // is gone (a refused delete leaves the file as it was, its
                // writer's bytes still to be uploaded).
                let mut writer = match ino {
                    Some(ino) => self.locked_writer(ino).await,
                    None => None,
                };
                if let Some((_, staged)) = writer.as_mut() {
                    // Its handles keep the file's bytes: fetched while the
                    // object is still there. Gone already (another client
                    // removed it): the handles get ESTALE for them.
                    match self.fill(staged).await {
                        Ok(()) => {}
                        Err(e) if e.errno() == libc::ENOENT => staged.lose_base(),
                        Err(e) => return Err(e),
                    }
                }
                match self.resolve(bucket, &full).await? {
                    Known::Object(meta) => {
                        match self.gcs.delete_object(bucket, &full, None).await {
                            // Gone already: a retried delete whose first
                            // answer was lost, or another client's. Either
                            // way what `rm` asked for holds.
                            Ok(()) | Err(ciofs_backends::BackendError { kind: ErrorKind::NotFound, .. }) => {}
                            Err(e) => return Err(vfs_error(e)),
                        }
                        self.changed(bucket, &full, Known::Absent);
                        tracing::debug!(bucket, name = %full, generation = meta.generation, "deleted");
                    }
                    Known::Prefix => return Err(VfsError::is_dir(format!("{dir}/{name} is a directory"))),
                    // A file being written that was never uploaded.
                    _ if writer.is_some() => {}
                    _ => return Err(VfsError::not_found(format!("{dir}/{name}"))),
                }
                if let Some((writer, mut staged)) = writer {
                    // The handles keep their bytes; nothing is uploaded any
                    // more.
                    self.unlink_staged(&mut staged).await;
                    writer.record(&staged);
                }
                // The name's inode stays for open handles (and NFS handles),
                // which now answer for a removed file; a new file of the
                // name gets a new inode, so a WRITE through an old handle
                // cannot make the file again.
                if let Some(ino) = ino {
                    self.cx.inodes.detach(ino);
                }
                Ok(())
            }
            // Generated documents: removing one deletes nothing in Google;
            // the name is hidden until it is created again (`tar x`
            // unlinks a file that exists, then creates it with O_EXCL).
            Node::MetaDir { .. } => {
                let node = Node::file_in(dir, name)?;
                let version = self.described_version(&node).await?;
                self.cx.local.unlink_at(&node, version)
            }
            _ => Err(VfsError::not_permitted(format!("{dir}/{name} cannot be removed"))),
        }
    }

    pub async fn remove_dir(&self, dir: &Node, name: &str) -> VfsResult<()> {
        check_name_length(name)?;
        match dir {
            Node::Service { project, service: Service::Storage } => {
                if self.has_local_files(name, "") {
                    return Err(VfsError::not_empty(format!("bucket {name} holds files being written")));
                }
                // NFS names the bucket without a lookup: only this project's.
                if !self.is_bucket_of(project, name).await? {
                    return Err(VfsError::not_found(format!("{dir}/{name}")));
                }
                if self.forget_pending_bucket(name) {
                    return Ok(());
                }
                let probe = ListObjects { bucket: name.to_string(), page_size: 1, ..Default::default() };
                let listed = self.gcs.list_objects(&probe).await.map_err(vfs_error)?;
                if !listed.objects.is_empty() {
                    return Err(VfsError::not_empty(format!("bucket {name} is not empty")));
                }
                self.gcs.delete_bucket(name).await.map_err(vfs_error)?;
                // Its listings go with it.
                self.cache.forget_under(name, "");
                self.cache.put(key(name, ""), Known::Absent);
                self.project_buckets.forget(project);
                Ok(())
            }
            // `rm -r` removes `.meta` after its (generated) files: nothing to do.
            Node::Dir { .. } if name == META_DIR => Ok(()),
            Node::Dir { bucket, prefix, .. } => {
                let full = format!("{prefix}{name}/");
                if self.has_local_files(bucket, &full) {
                    return Err(VfsError::not_empty(format!("{dir}/{name} holds files being written")));
                }
                let probe =
                    ListObjects { bucket: bucket.clone(), prefix: full.clone(), page_size: 2, ..Default::default() };
                let listed = self.gcs.list_objects(&probe).await.map_err(vfs_error)?;
                if listed.objects.iter().any(|o| o.name != full) {
                    // Perhaps written behind the mount after the listing
                    // `rm -r` read: the next listing asks again.
                    self.cache.forget_under(bucket, &full);
                    return Err(VfsError::not_empty(format!("{dir}/{name} is not empty")));
                }
                // With no object left (an implicit directory whose last file
                // went) there is nothing to delete, and the directory is gone.
                match self.gcs.delete_object(bucket, &full, None).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => return Err(vfs_error(e)),
                }
                self.changed(bucket, &full, Known::Absent);
                self.cache.forget(&key(bucket, &format!("{prefix}{name}")));
                Ok(())
            }
            _ => Err(VfsError::not_permitted(format!("{dir}/{name} cannot be removed"))),
        }
    }

    /// Renames a file (a server-side copy, then a delete of the source) or a
    /// directory of up to `Options::rename_limit` objects, within a bucket.
    pub async fn rename_entry(&self, from: &Node, name: &str, to: &Node, new_name: &str) -> VfsResult<()> {
        check_name_length(name)?;
        check_new_name(to, new_name)?;
        match (from, to) {
            (Node::Dir { project, bucket, prefix }, Node::Dir { bucket: to_bucket, prefix: to_prefix, .. })
                if bucket == to_bucket =>
            {
                let source = format!("{prefix}{name}");
                let target = format!("{to_prefix}{new_name}");
                if source == target {
                    return Ok(());
                }
                if self.cx.options.config_only {
                    return Err(config_only_error(&format!("{from}/{name}")));
                }
                // A file open for write goes up first, so that what was
                // written moves with it (held locked until its handles
                // write to the new name).
                let object =
                    |name: &str| Node::Object { project: project.clone(), bucket: bucket.clone(), name: name.into() };
                let (writer, mut staged) = match self.cx.inodes.find(&object(&source)) {
                    Some((ino, _)) => match self.locked_writer(ino).await {
                        Some((writer, staged)) => (Some(writer), Some(staged)),
                        None => (None, None),
                    },
                    None => (None, None),
                };
                if let (Some(writer), Some(staged)) = (&writer, staged.as_deref_mut()) {
                    let committed = self.commit(staged).await;
                    writer.record(staged);
                    committed?;
                }
                let (from_kind, to_kind) = (self.resolve(bucket, &source).await?, self.resolve(bucket, &target).await?);
                match (from_kind, to_kind) {
                    (Known::Object(_), Known::Prefix) => {
                        Err(VfsError::is_dir(format!("{to}/{new_name} is a directory")))
                    }
                    (Known::Object(meta), _) => {
                        // An open file moves only as its handles see it: if
                        // another client changed it since, the copy's
                        // precondition fails (ESTALE) rather than move
                        // bytes the handles do not hold.
                        let generation = staged.as_deref().map_or(meta.generation, |s| s.base_generation());
                        let moved = self.move_object(bucket, &source, &target, Some(generation)).await?;
                        let replaced = self.rekey(bucket, &source, &target, false);
                        if let (Some(writer), Some(staged)) = (&writer, staged.as_deref_mut()) {
                            // Uploaded first, so nothing is left to journal:
                            // NFS writes to come journal the new name.
                            writer.retarget(object(&target), staged, moved);
                        }
                        drop(staged);
                        for ino in replaced {
                            self.drop_replaced_writer(ino).await;
                        }
                        Ok(())
                    }
                    (Known::Prefix, Known::Object(_)) => {
                        Err(VfsError::not_dir(format!("{to}/{new_name} is not a directory")))
                    }
                    (Known::Prefix, _) if target.starts_with(&format!("{source}/")) => {
                        Err(VfsError::invalid(format!("{from}/{name} cannot move into itself")))
                    }
                    (Known::Prefix, _) if self.has_local_files(bucket, &format!("{source}/")) => {
                        Err(VfsError::busy(format!("{from}/{name} holds files open for write; close them first")))
                    }
                    // Files being written under the target are in it, as
                    // `ls` shows them, even when Cloud Storage has none yet
                    // (or no longer has them): it is not empty.
                    (Known::Prefix, _) if self.has_local_files(bucket, &format!("{target}/")) => {
                        Err(VfsError::not_empty(format!("{to}/{new_name} holds files being written")))
                    }
                    (Known::Prefix, to_kind) => {
                        if matches!(to_kind, Known::Prefix) {
                            // Replacing a directory: only an empty one.
                            self.remove_dir(to, new_name).await?;
                        }
                        self.move_prefix(bucket, &format!("{source}/"), &format!("{target}/")).await?;
                        for ino in self.rekey(bucket, &source, &target, true) {
                            self.drop_replaced_writer(ino).await;
                        }
                        Ok(())
                    }
                    _ => Err(VfsError::not_found(format!("{from}/{name}"))),
                }
            }
            (Node::Dir { .. }, Node::Dir { .. }) => {
                Err(VfsError::cross_device("rename across buckets: copy and delete instead"))
            }
            _ => Err(VfsError::cross_device(format!("{from}/{name} cannot be renamed to {to}/{new_name}"))),
        }
    }

    /// The writer of a file a rename replaced, as an rm leaves it: its
    /// handles keep their bytes (what they could still fetch), which are
    /// never uploaded. It stays under its inode, which is detached (no new
    /// file gets its number), until its last handle goes. Taken after the
    /// rename's own writer is let go, so that two renames never hold two
    /// writers' locks.
    async fn drop_replaced_writer(&self, replaced: ciofs_frontends::Ino) {
        if let Some((writer, mut staged)) = self.locked_writer(replaced).await {
            self.unlink_staged(&mut staged).await;
            writer.record(&staged);
        }
    }

    /// Copies `source` to `target` server-side, then deletes `source` (only
    /// the generation that was copied); the copy's metadata.
    async fn move_object(
        &self,
        bucket: &str,
        source: &str,
        target: &str,
        generation: Option<i64>,
    ) -> VfsResult<Arc<ObjectMeta>> {
        let copy = CopyObject {
            bucket: bucket.to_string(),
            source: source.to_string(),
            destination: target.to_string(),
            if_source_generation_match: generation,
        };
        let copied = Arc::new(self.gcs.copy_object(&copy).await.map_err(vfs_error)?);
        self.changed(bucket, target, Known::Object(copied.clone()));
        match self.gcs.delete_object(bucket, source, generation).await {
            Ok(()) | Err(ciofs_backends::BackendError { kind: ErrorKind::NotFound, .. }) => {}
            Err(e) => return Err(vfs_error(e)),
        }
        self.changed(bucket, source, Known::Absent);
        Ok(copied)
    }

    /// Moves every object under `source` (a prefix) to `target`.
    async fn move_prefix(&self, bucket: &str, source: &str, target: &str) -> VfsResult<()> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let request = ListObjects {
                bucket: bucket.to_string(),
                prefix: source.to_string(),
                page_token: token,
                page_size: 1000,
                ..Default::default()
            };
            let page = self.gcs.list_objects(&request).await.map_err(vfs_error)?;
            names.extend(page.objects.into_iter().map(|o| (o.name, o.generation)));
            let limit = self.cx.options.rename_limit;
            if names.len() > limit {
                let message = format!("gs://{bucket}/{source} holds more than {limit} objects (--rename-limit)");
                return Err(VfsError::cross_device(format!("{message}; mv copies them instead")));
            }
            token = page.next_page_token;
            if token.is_none() {
                break;
            }
        }
        for (name, generation) in names {
            let moved = format!("{target}{}", &name[source.len()..]);
            let _ = self.move_object(bucket, &name, &moved, Some(generation)).await?;
        }
        self.changed(bucket, source, Known::Absent);
        self.changed(bucket, target, Known::Prefix);
        Ok(())
    }

    /// Moves the inodes of a renamed entry (and, for a directory, of all
    /// below it) to their new names, so the kernel's handles keep working.
    /// The inodes of the files it replaced are detached: their writers are
    /// dropped once the caller let go of its own (`drop_replaced_writer`).
    fn rekey(&self, bucket: &str, source: &str, target: &str, is_dir: bool) -> Vec<ciofs_frontends::Ino> {
        if is_dir {
            let (from, to) = (format!("{source}/"), format!("{target}/"));
            self.cx.inodes.rekey(|node| node.moved(bucket, &from, &to))
        } else {
            self.cx.inodes.rekey(|node| match node {
                Node::Object { name, .. } | Node::ObjectMeta { name, .. } if name == source => {
                    node.moved(bucket, source, target)
                }
                _ => None,
            })
        }
    }
}

fn config_only_error(path: &str) -> VfsError {
    VfsError::new(libc::EROFS, format!("{path}: this mount shows configuration only (--config-only)"))
}
