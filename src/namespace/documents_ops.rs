//! The file operations on the document files of BigQuery and Pub/Sub: what
//! an open gives, where a create, write, truncate, unlink or rename goes.
//! Editable files (config.json, schema.json, `_message`) and scratch files
//! live locally until applied (core/edits.rs); generated files (`_status.json`,
//! `.meta/*`, `_stream`) accept writes and ignore them, so that `tar x` of
//! an export succeeds.

use std::time::SystemTime;

use async_trait::async_trait;
use ciofs_frontends::{Attr, OpenFlags, Opened, VfsError, VfsResult};

use crate::core::edits::{Documents, is_local};
use crate::core::slice::Slice;
use bytes::Bytes;

use super::{Handle, Namespace};
use crate::core::node::{
    DATASET_META, Node, QUOTAS_FILE, Service, SubscriptionFile, TableFile, TopicFile, check_name_length,
};

/// The documents of every service, each asked of the slice that owns it.
#[async_trait]
impl Documents for Namespace {
    async fn current(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        self.slice_of(node)?.document(node).await
    }

    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()> {
        self.slice_of(node)?.apply(node, data).await
    }

    async fn prepare_replay(&self, node: &Node) -> VfsResult<()> {
        self.bigquery.pending_again(node).await
    }
}

impl Namespace {
    /// The slice that owns `node` (never one of the fixed upper levels,
    /// which hold no documents).
    fn slice_of(&self, node: &Node) -> VfsResult<&dyn Slice> {
        let service = node.service().ok_or_else(|| VfsError::new(libc::EINVAL, format!("{node}: not a document")))?;
        Ok(self.slice(service))
    }

    /// The current document of a file that holds one, and its time.
    pub(super) async fn editable_document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        Documents::current(self, node).await
    }

    /// Applies the edits an earlier run acknowledged over NFS and did not
    /// apply (see `LocalFiles::resume_journaled`).
    pub async fn resume_journaled_edits(&self) {
        self.cx.local.resume_journaled(self).await
    }

    /// The node `name` names in a directory that holds document files.
    fn doc_child(&self, dir: &Node, name: &str) -> VfsResult<Node> {
        check_name_length(name)?;
        match dir {
            Node::Table { project, dataset, table } => {
                let (project, dataset, table) = (project.clone(), dataset.clone(), table.clone());
                Ok(match TableFile::from_file_name(name) {
                    Some(file) => Node::TableFile { project, dataset, table, file },
                    None if name.contains('\0') || name == "." || name == ".." => {
                        return Err(VfsError::new(libc::EINVAL, format!("{dir}/{name}: not a file name")));
                    }
                    None => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
                })
            }
            Node::DatasetMetaDir { project, dataset } if name == DATASET_META => {
                Ok(Node::DatasetMeta { project: project.clone(), dataset: dataset.clone() })
            }
            Node::DatasetMetaDir { .. } => scratch(dir, name),
            Node::Topic { project, topic } => match TopicFile::from_file_name(name) {
                Some(file) => Ok(Node::TopicFile { project: project.clone(), topic: topic.clone(), file }),
                None => scratch(dir, name),
            },
            Node::Subscription { project, topic, subscription } => match SubscriptionFile::from_file_name(name) {
                Some(file) => Ok(Node::SubscriptionFile {
                    project: project.clone(),
                    topic: topic.clone(),
                    subscription: subscription.clone(),
                    file,
                }),
                None => scratch(dir, name),
            },
            Node::PubSubMetaDir { project } if name == QUOTAS_FILE => Ok(Node::Quotas { project: project.clone() }),
            Node::MetaDir { .. } => self.storage.child_to_create(dir, name),
            _ => Err(VfsError::new(libc::EPERM, format!("{dir}: files cannot be created here"))),
        }
    }

    pub(super) async fn doc_open(&self, node: &Node, flags: OpenFlags) -> VfsResult<Opened> {
        let handle = if flags.write || flags.truncate || flags.append {
            if is_local(node) {
                Handle::Local(self.cx.local.open(self, node, flags.truncate).await?)
            } else if !node.is_dir() {
                let shown = if flags.truncate { None } else { self.editable_document(node).await.ok() };
                Handle::Ignored(shown.map(|(document, _)| document).unwrap_or_default())
            } else {
                return Err(VfsError::new(libc::EISDIR, format!("{node}: is a directory")));
            }
        } else if let Some(reader) = self.pubsub.stream_reader(node).await? {
            // Each read a message: the kernel must not read ahead or cache.
            return Ok(Opened { fh: self.new_handle(Handle::Stream(reader)), stream: true, ..Opened::default() });
        } else if matches!(node, Node::Scratch { .. }) {
            Handle::Local(self.cx.local.open_scratch(node)?)
        } else if let Some(edit) = self.cx.local.snapshot(node) {
            // An edit under way, as it is now.
            Handle::Document(edit)
        } else {
            // The rendering the lookup sized: one consistent version.
            Handle::Document(self.editable_document(node).await?.0)
        };
        Ok(Opened { fh: self.new_handle(handle), ..Opened::default() })
    }

    pub(super) async fn doc_create(&self, dir: &Node, name: &str) -> VfsResult<(Attr, Opened)> {
        let node = self.doc_child(dir, name)?;
        if let Node::Table { project, dataset, table } = dir
            && self.bigquery.pending(project, dataset, table).is_none()
        {
            // The table must still exist for its files to be written.
            self.bigquery.table_view(project, dataset, table).await?;
        }
        let (ino, generation) = self.cx.inodes.remember(&node);
        self.cx.inodes.count_lookup(ino);
        let handle = if is_local(&node) {
            Handle::Local(self.cx.local.create(&node))
        } else {
            self.cx.local.unhide(&node);
            Handle::Ignored(Bytes::new())
        };
        let attr = self.cx.attr(ino, generation, &node, 0, SystemTime::now());
        Ok((attr, Opened { fh: self.new_handle(handle), ..Opened::default() }))
    }

    /// A write without a handle (NFS).
    pub(super) async fn doc_write(&self, node: &Node, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if is_local(node) {
            return self.cx.local.write(self, node, offset, data).await;
        }
        match node.is_dir() {
            false => Ok(data.len() as u32),
            true => Err(VfsError::new(libc::EISDIR, format!("{node}: is a directory"))),
        }
    }

    pub(super) async fn doc_truncate(&self, node: &Node, size: u64) -> VfsResult<()> {
        if is_local(node) {
            return self.cx.local.truncate(self, node, size).await;
        }
        Ok(())
    }

    pub(super) async fn doc_unlink(&self, dir: &Node, name: &str) -> VfsResult<()> {
        let node = self.doc_child(dir, name)?;
        if !matches!(node, Node::Scratch { .. }) {
            // It must be there to be removed.
            self.slice_of(dir)?.lookup(dir, name).await?;
        }
        if let Node::TableFile { project, dataset, table, file: TableFile::Config } = &node {
            // A pending table forgets the configuration written into it.
            self.bigquery.forget_pending_config(project, dataset, table);
        }
        self.cx.local.unlink(&node)
    }

    pub(super) async fn doc_rename(&self, from: &Node, name: &str, to: &Node, new_name: &str) -> VfsResult<()> {
        let holds_documents = matches!(
            from,
            Node::Table { .. }
                | Node::DatasetMetaDir { .. }
                | Node::Topic { .. }
                | Node::Subscription { .. }
                | Node::MetaDir { .. }
        );
        match from {
            _ if holds_documents && from == to => {}
            // A file moves out by copy and removal (which hides the name).
            _ if holds_documents => {
                return Err(VfsError::new(libc::EXDEV, format!("{from}/{name}: moves by copy only")));
            }
            // Not EXDEV for a table, dataset, topic or subscription: `mv`
            // would copy its documents into a new, empty one and then delete
            // the old one, rows or messages and all.
            _ if matches!(from.service(), Some(Service::BigQuery | Service::PubSub)) => {
                return Err(VfsError::new(
                    libc::EPERM,
                    format!("{from}/{name}: tables, datasets, topics and subscriptions cannot be renamed"),
                ));
            }
            _ => return Err(VfsError::new(libc::EXDEV, format!("{to}/{new_name}: moves by copy only"))),
        }
        let (source, target) = (self.doc_child(from, name)?, self.doc_child(to, new_name)?);
        self.cx.local.rename(self, &source, &target).await?;
        // The kernel now knows the source's inode by the new name.
        self.cx.inodes.rekey(|node| (*node == source).then(|| target.clone()));
        Ok(())
    }
}

/// A scratch file `name` in a directory of documents.
fn scratch(dir: &Node, name: &str) -> VfsResult<Node> {
    if name.contains('\0') || name == "." || name == ".." {
        return Err(VfsError::new(libc::EINVAL, format!("{dir}/{name}: not a file name")));
    }
    Ok(Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() })
}
