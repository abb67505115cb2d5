//! What the namespace asks of every service's slice. Each of
//! `StorageTree`, `BigQueryTree` and `PubSubTree` implements it, and the
//! namespace dispatches on the service a node belongs to; what only one
//! service has (object files, `_stream`) the namespace asks that slice by
//! name.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_frontends::{Attr, DirEntry, DirPage, Fh, Ino, VfsError, VfsResult};

use super::node::Node;
use super::pending::PendingDue;

/// A service's tree. `dir` and `node` are always of the slice's service;
/// a name comes as the user gave it (the slice checks it).
#[async_trait]
pub trait Slice: Send + Sync {
    /// Finds `name` in `dir`.
    async fn lookup(&self, dir: &Node, name: &str) -> VfsResult<DirEntry>;

    /// The size and modification time of `node`, asked through inode `ino`.
    async fn stat(&self, ino: Ino, node: &Node) -> VfsResult<(u64, SystemTime)>;

    /// The entries of `dir` (inode `ino`, opened as `fh`) after the entry
    /// numbered `after` (0: from the start), at most `max`.
    async fn readdir(&self, dir: &Node, ino: Ino, fh: Fh, after: Ino, max: usize) -> VfsResult<DirPage>;

    /// `mkdir`: a bucket, prefix, dataset, table, topic or subscription.
    async fn mkdir(&self, dir: &Node, name: &str) -> VfsResult<Attr>;

    async fn rmdir(&self, dir: &Node, name: &str) -> VfsResult<()>;

    /// The current document of a file that holds one, and its time.
    async fn document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)>;

    /// Makes `data`, written to a document file, true in Google (or refuses
    /// it, saying why).
    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()>;

    /// Before a file is created in `dir`: refuses if `dir` is gone. By
    /// default there is nothing to check.
    async fn check_dir_for_create(&self, _dir: &Node) -> VfsResult<()> {
        Ok(())
    }

    /// `touch DIR`: forget what is cached about `dir` and what it holds,
    /// so that the next listing and lookups ask Google. By default nothing
    /// is cached beyond the TTL's own expiry.
    fn forget_cached(&self, _dir: &Node) {}

    /// Before an edit of `node` journaled by an earlier run is applied:
    /// makes again what it needs (a table directory made by `mkdir` waits
    /// for its schema). By default nothing is needed.
    async fn prepare_replay(&self, _node: &Node) -> VfsResult<()> {
        Ok(())
    }

    /// A document file was removed: its name is hidden (core/edits.rs),
    /// and the slice forgets what the file held for a resource not created
    /// yet. By default there is nothing to forget.
    fn document_removed(&self, _node: &Node) {}

    /// Creates what `mkdir` made and what waits for its settings, `which`
    /// of it; returns what could not be created, and why.
    async fn create_due(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)>;
}
