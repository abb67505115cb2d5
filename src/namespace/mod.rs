//! What a project looks like as files: the `Vfs` both frontends serve.
//!
//! `Namespace` dispatches: it holds the handle table and the tree's fixed
//! upper levels (the mount root, a directory per project, `.ciofs/`), knows
//! which nodes are document files and which are object files, and asks the
//! slice that owns a node (`core::slice::Slice`: `storage`, `bigquery`,
//! `pubsub`) for the rest; object files are storage's (`storage::files`) and
//! `_stream` is Pub/Sub's.
//!
//! Document files (config.json, schema.json, `_message`, `.meta/*`) and the
//! scratch files beside them: editable ones live locally until applied
//! (`core::edits`); generated ones (`_status.json`, `_quotas.json`) accept
//! writes and ignore them, so that `tar x` of an export succeeds.
//!
//! macOS's metadata files and directories are answered by `local`, before
//! any slice is asked (`Namespace::keeps_local`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use ciofs_backends::bigquery::BigQuery;
use ciofs_backends::gcs::ObjectStore;
use ciofs_backends::pubsub::PubSub;
use ciofs_backends::sync::lock;
use ciofs_frontends::{
    Attr, ClientCache, DirCaching, DirEntry, DirPage, Fh, Ino, OpenFlags, Opened, SetAttr, Vfs, VfsError, VfsResult,
};

use crate::bigquery::BigQueryTree;

use crate::core::context::Context;
pub use crate::core::context::Options;
use crate::core::edits::{Documents, LocalHandle, is_local};
use crate::core::inodes::InodeTable;
use crate::core::node::{self, Node, Service};
use crate::core::pending::PendingDue;
use crate::core::slice::Slice;
use crate::pubsub::PubSubTree;
use crate::pubsub::stream::StreamReader;
use crate::storage::StorageTree;
use crate::storage::files::FileHandle;
pub use crate::storage::watch::WatchOptions;
use crate::storage::watch::Watcher;
use crate::storage::writer::Caller;

/// What an open file handle reads or writes.
#[derive(Clone)]
enum Handle {
    /// An object file (storage/files.rs).
    Object(FileHandle),
    /// A generated document, rendered once at open so the reader sees one
    /// consistent version.
    Document(Bytes),
    /// A generated file opened for write (`.meta/*`, `_status.json`):
    /// writes are accepted and ignored, so that `tar x` of an export
    /// succeeds; reads see the document as it was at open (empty after a
    /// truncating open or a create).
    Ignored(Bytes),
    /// A file kept locally: an edit of a document, or a scratch file
    /// (core/edits.rs).
    Local(Arc<LocalHandle>),
    /// A subscription's `_stream` open for read: each read a message
    /// (pubsub/stream.rs).
    Stream(Arc<StreamReader>),
}

/// The Google services a namespace serves.
#[derive(Clone)]
pub struct Services {
    pub gcs: Arc<dyn ObjectStore>,
    pub bigquery: Arc<dyn BigQuery>,
    pub pubsub: Arc<dyn PubSub>,
}

/// A mount's `--watch`, running.
pub struct Watching {
    watcher: Arc<Watcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Watching {
    /// Stops pulling and deletes the subscriptions (at unmount).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.watcher.stop().await;
    }
}

/// The most one read returns (FUSE asks for at most 1 MiB, NFS clients for
/// what fsinfo allows); a larger count from a client is cut to this.
const MAX_READ: u32 = 4 << 20;

pub struct Namespace {
    /// What every slice shares: options, inodes, local files, the error log.
    cx: Arc<Context>,
    storage: StorageTree,
    bigquery: BigQueryTree,
    pubsub: Arc<PubSubTree>,
    /// Pub/Sub itself, for `--watch`'s subscriptions (storage/watch.rs).
    pubsub_service: Arc<dyn PubSub>,
    handles: Mutex<HashMap<Fh, Handle>>,
    next_fh: AtomicU64,
    /// Shutting down: changes through handles already open go on (so that
    /// what is being written can be closed and uploaded), every new one is
    /// refused (`begin_draining`).
    draining: AtomicBool,
}

impl Namespace {
    pub fn new(projects: Vec<String>, services: Services, options: Options) -> Self {
        Self::with_inodes(projects, services, options, InodeTable::new())
    }

    /// A namespace whose inode numbers survive a restart (for NFS).
    pub fn persistent(
        projects: Vec<String>,
        services: Services,
        options: Options,
        journal: &Path,
    ) -> std::io::Result<Self> {
        let inodes = InodeTable::persistent(journal)?;
        Ok(Self::with_inodes(projects, services, options, inodes))
    }

    fn with_inodes(projects: Vec<String>, services: Services, options: Options, inodes: InodeTable) -> Self {
        let cx = Arc::new(Context::new(projects, options, inodes));
        Self {
            bigquery: BigQueryTree::new(cx.clone(), services.bigquery),
            pubsub_service: services.pubsub.clone(),
            pubsub: Arc::new(PubSubTree::new(cx.clone(), services.pubsub)),
            storage: StorageTree::new(cx.clone(), services.gcs),
            cx,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        }
    }

    /// Opens the content cache now, so that an unusable cache directory
    /// (another mount's, say) stops the start with the reason.
    pub async fn open_content_cache(&self) -> Result<(), String> {
        self.storage.content_cache().await.map(drop).map_err(|e| e.to_string())
    }

    /// Lets cached blocks on their way to disk get there (at unmount).
    pub async fn close_content_cache(&self) {
        self.storage.close_content_cache().await;
    }

    /// The entry of one of the tree's fixed nodes.
    fn fixed_entry(&self, node: Node) -> DirEntry {
        match node {
            Node::ErrorLog => {
                let (text, mtime) = self.cx.error_log.render();
                self.cx.entry(node, text.len() as u64, mtime)
            }
            _ => self.cx.dir_entry(node),
        }
    }

    fn new_handle(&self, handle: Handle) -> Fh {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    /// The slice that owns `service`'s tree.
    fn slice(&self, service: Service) -> &dyn Slice {
        match service {
            Service::Storage => &self.storage,
            Service::BigQuery => &self.bigquery,
            Service::PubSub => &*self.pubsub,
        }
    }

    /// The fixed children of the tree's upper levels, or None for a
    /// directory whose children come from Google.
    fn fixed_children(&self, node: &Node) -> Option<Vec<Node>> {
        match node {
            Node::Root => {
                let projects = self.cx.projects.iter().map(|p| Node::Project { project: p.clone() });
                Some(projects.chain([Node::Control]).collect())
            }
            Node::Project { project } => Some(
                Service::ALL.into_iter().map(|service| Node::Service { project: project.clone(), service }).collect(),
            ),
            Node::Control => Some(vec![Node::ErrorLog]),
            _ => None,
        }
    }
}

#[async_trait]
impl Vfs for Namespace {
    async fn lookup(&self, parent: Ino, name: &str) -> VfsResult<Attr> {
        let attr = self.find(parent, name).await?;
        self.cx.inodes.count_lookup(attr.ino);
        Ok(attr)
    }

    async fn getattr(&self, ino: Ino) -> VfsResult<Attr> {
        let node = self.cx.node(ino)?;
        let generation = self.cx.inodes.generation(ino).unwrap_or(0);
        let (size, mtime) = match (self.storage.written_stat(ino), node.service()) {
            (Some(written), _) => {
                if written.unlinked {
                    // Removed while open: its handles still read and write
                    // it, and no name links to it.
                    return Ok(Attr { nlink: 0, ..self.cx.attr(ino, generation, &node, written.size, written.mtime) });
                }
                (written.size, written.mtime)
            }
            (None, _) if let Some(local) = self.local_stat(&node) => local?,
            (None, Some(service)) => self.slice(service).stat(ino, &node).await?,
            (None, None) if node == Node::ErrorLog => {
                let (text, mtime) = self.cx.error_log.render();
                (text.len() as u64, mtime)
            }
            (None, None) => (0, SystemTime::UNIX_EPOCH),
        };
        Ok(self.cx.attr(ino, generation, &node, size, mtime))
    }

    fn generation(&self, ino: Ino) -> Option<u64> {
        self.cx.inodes.generation(ino)
    }

    fn watch_client_cache(&self, cache: Arc<dyn ClientCache>) {
        self.cx.watch_client_cache(cache);
    }

    fn count_lookup(&self, ino: Ino) {
        self.cx.inodes.count_lookup(ino);
    }

    fn forget(&self, ino: Ino, count: u64) {
        self.cx.inodes.forget(ino, count);
    }

    async fn opendir(&self, ino: Ino) -> VfsResult<Fh> {
        let node = self.cx.node(ino)?;
        if !node.is_dir() {
            return Err(VfsError::not_dir(format!("{node}: not a directory")));
        }
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    fn read_only(&self) -> bool {
        self.cx.options.read_only
    }

    fn dir_caching(&self, dir: Ino) -> DirCaching {
        match self.cx.node(dir) {
            Ok(node) if node.service() == Some(Service::Storage) => self.storage.dir_caching(dir, &node),
            _ => DirCaching::default(),
        }
    }

    async fn releasedir(&self, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.storage.streams.close(ino, fh);
        Ok(())
    }

    async fn readdir(&self, dir: Ino, fh: Option<Fh>, after: Ino, max: usize) -> VfsResult<DirPage> {
        let node = self.cx.node(dir)?;
        self.readdir_with_local(&node, dir, fh, after, max).await
    }

    async fn open(&self, ino: Ino, flags: OpenFlags) -> VfsResult<Opened> {
        let node = self.cx.node(ino)?;
        // Reading a `_stream` acknowledges the messages it reads.
        if flags.write || flags.truncate || flags.append || node.is_stream() {
            self.refuse_change(|| &node, None)?;
        }
        if node.holds_documents() {
            return self.doc_open(&node, flags).await;
        }
        if node == Node::ErrorLog {
            if flags.write || flags.truncate || flags.append {
                return Err(VfsError::new(libc::EACCES, format!("{node} is read-only")));
            }
            let handle = Handle::Document(self.cx.error_log.render().0);
            return Ok(Opened { fh: self.new_handle(handle), ..Opened::default() });
        }
        if flags.write || flags.truncate || flags.append {
            return self.open_for_write(ino, &node, flags.truncate).await;
        }
        match &node {
            Node::Object { .. } => {
                let (handle, keep_cache) = self.storage.open_read(ino, &node).await?;
                Ok(Opened { fh: self.new_handle(Handle::Object(handle)), keep_cache, ..Opened::default() })
            }
            Node::ObjectMeta { .. } | Node::BucketMeta { .. } => {
                let document = self.storage.render_document(&node).await?;
                Ok(Opened { fh: self.new_handle(Handle::Document(document)), ..Opened::default() })
            }
            _ => Err(VfsError::is_dir(format!("{node}: is a directory"))),
        }
    }

    async fn create(&self, parent: Ino, name: &str, _mode: u32) -> VfsResult<(Attr, Opened)> {
        let dir = self.cx.node(parent)?;
        self.refuse_change(|| format!("{dir}/{name}"), None)?;
        if self.keeps_local(&dir, name) {
            return self.local_create(&dir, name);
        }
        if matches!(dir.service(), Some(Service::BigQuery | Service::PubSub)) {
            return self.doc_create(&dir, name).await;
        }
        let node = Node::file_in(&dir, name)?;
        if node.holds_documents() {
            return self.doc_create(&dir, name).await;
        }
        self.storage.refuse_objects_if_config_only(&node)?;
        let (ino, generation) = self.cx.inodes.remember(&node);
        self.cx.inodes.count_lookup(ino);
        // The reply shows what getattr will show until something changes
        // the file: the writer's own time (the kernel caches the reply; a
        // clock read of its own would differ, and the file's ctime would
        // move when the kernel asks again).
        let (handle, mtime) = match node {
            Node::Object { .. } => {
                let (handle, mtime) = self.storage.create_file(ino, &node)?;
                (Handle::Object(handle), mtime)
            }
            _ => {
                self.cx.local.unhide(&node);
                (Handle::Ignored(Bytes::new()), SystemTime::now())
            }
        };
        let attr = self.cx.attr(ino, generation, &node, 0, mtime);
        Ok((attr, Opened { fh: self.new_handle(handle), ..Opened::default() }))
    }

    async fn write(&self, ino: Ino, fh: Option<Fh>, offset: u64, data: &[u8]) -> VfsResult<u32> {
        self.refuse_change(|| format!("inode {ino}"), fh)?;
        match self.handle(fh) {
            Some(Handle::Object(handle)) => self.storage.write(ino, &handle, offset, data).await,
            Some(Handle::Ignored(_)) => Ok(data.len() as u32),
            Some(Handle::Local(handle)) => self.cx.local.handle_write(&handle, offset, data),
            Some(_) => Err(VfsError::bad_handle(format!("inode {ino}: not open for write"))),
            None => {
                let node = self.cx.node(ino)?;
                if node.holds_documents() {
                    return self.doc_write(&node, offset, data).await;
                }
                self.storage.unattended_write(ino, offset, data).await
            }
        }
    }

    async fn flush(&self, _ino: Ino, fh: Fh) -> VfsResult<()> {
        match self.handle(Some(fh)) {
            Some(Handle::Object(handle)) => self.storage.flush(&handle, Caller::Close).await,
            Some(Handle::Local(handle)) => self.cx.local.flush(self, &handle).await,
            _ => Ok(()),
        }
    }

    async fn fsync(&self, ino: Ino, fh: Option<Fh>) -> VfsResult<()> {
        match self.handle(fh) {
            Some(Handle::Object(handle)) => self.storage.flush(&handle, Caller::Fsync).await,
            Some(Handle::Local(handle)) => self.cx.local.fsync(self, &handle).await,
            Some(_) => Ok(()),
            // NFS's COMMIT has no handle.
            None => match self.cx.node(ino)? {
                node if node.holds_documents() => self.cx.local.fsync_node(self, &node).await,
                _ => Ok(()),
            },
        }
    }

    async fn release(&self, ino: Ino, fh: Fh) -> VfsResult<()> {
        let handle = lock(&self.handles).remove(&fh);
        match handle {
            Some(Handle::Object(handle)) => self.storage.release(ino, handle).await,
            Some(Handle::Local(handle)) => self.cx.local.release(self, &handle).await,
            Some(Handle::Stream(reader)) => {
                reader.close().await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn setattr(&self, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        let node = self.cx.node(ino)?;
        self.refuse_change(|| &node, set.fh)?;
        if let (Some(size), true) = (set.size, node.holds_documents()) {
            self.doc_truncate(&node, size).await?;
        }
        if let (Some(size), Node::Object { .. }) = (set.size, &node) {
            let through = match self.handle(set.fh) {
                Some(Handle::Object(handle)) => Some(handle),
                _ => None,
            };
            self.storage.truncate(ino, &node, through.as_ref(), size).await?;
        }
        // `touch DIR`: what is cached about the directory is asked again.
        if (set.mtime.is_some() || set.atime.is_some())
            && node.is_dir()
            && let Some(service) = node.service()
        {
            self.slice(service).forget_cached(&node);
        }
        // Mode, owner and times: accepted (tar x and cp -p set them), not
        // kept: Cloud Storage has no place for them yet.
        self.getattr(ino).await
    }

    async fn mkdir(&self, parent: Ino, name: &str, _mode: u32) -> VfsResult<Attr> {
        let dir = self.cx.node(parent)?;
        self.refuse_change(|| format!("{dir}/{name}"), None)?;
        let made = match dir.service() {
            _ if self.keeps_local(&dir, name) => self.local_mkdir(&dir, name),
            Some(service) => self.slice(service).mkdir(&dir, name).await,
            None => node::check_new_name(&dir, name)
                .and(Err(VfsError::not_permitted(format!("{dir}: directories cannot be made here")))),
        };
        let attr = match made {
            // A fixed directory (`bigquery`, `.meta`, `subscriptions` ...):
            // there already, whatever else stands against making it. FUSE's
            // kernel finds it first; an NFS client asks.
            Err(e) if e.errno() != libc::EEXIST && self.find(parent, name).await.is_ok() => {
                return Err(VfsError::exists(format!("{dir}/{name} exists")));
            }
            made => made?,
        };
        self.cx.inodes.count_lookup(attr.ino);
        Ok(attr)
    }

    async fn unlink(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let dir = self.cx.node(parent)?;
        self.refuse_change(|| format!("{dir}/{name}"), None)?;
        match dir.service() {
            _ if self.keeps_local(&dir, name) => self.local_unlink(&dir, name),
            Some(Service::BigQuery | Service::PubSub) => self.doc_unlink(&dir, name).await,
            _ => self.storage.remove_file(&dir, name).await,
        }
    }

    async fn rmdir(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let dir = self.cx.node(parent)?;
        self.refuse_change(|| format!("{dir}/{name}"), None)?;
        match dir.service() {
            _ if self.keeps_local(&dir, name) => self.local_rmdir(&dir, name),
            Some(service) => self.slice(service).rmdir(&dir, name).await,
            None => node::check_name_length(name)
                .and(Err(VfsError::not_permitted(format!("{dir}/{name} cannot be removed")))),
        }
    }

    async fn rename(&self, parent: Ino, name: &str, new_parent: Ino, new_name: &str) -> VfsResult<()> {
        let from = self.cx.node(parent)?;
        self.refuse_change(|| format!("{from}/{name}"), None)?;
        let to = self.cx.node(new_parent)?;
        if self.keeps_local(&from, name) || self.keeps_local(&to, new_name) {
            return self.local_rename(&from, name, &to, new_name).await;
        }
        match (from.service(), to.service()) {
            (Some(Service::BigQuery | Service::PubSub), _) | (_, Some(Service::BigQuery | Service::PubSub)) => {
                self.doc_rename(&from, name, &to, new_name).await
            }
            _ if matches!(from, Node::MetaDir { .. }) || matches!(to, Node::MetaDir { .. }) => {
                self.doc_rename(&from, name, &to, new_name).await
            }
            _ => self.storage.rename_entry(&from, name, &to, new_name).await,
        }
    }

    async fn read(&self, ino: Ino, fh: Option<Fh>, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        let handle = match self.handle(fh) {
            Some(handle) => handle,
            None => match self.cx.node(ino)? {
                // NFS reads an edit under way as it is now.
                node if crate::core::edits::is_local(&node) => {
                    return self.cx.local.read(self, &node, offset, len.min(MAX_READ)).await;
                }
                // NFS has no open: its reads of a `_stream` consume.
                node if node.is_stream() => {
                    self.refuse_change(|| &node, None)?;
                    return self.pubsub.stream_log_read(&node, offset, len.min(MAX_READ)).await;
                }
                _ => self.handle_without_open(ino).await?,
            },
        };
        match handle {
            Handle::Object(handle) => self.storage.read(&handle, offset, len.min(MAX_READ)).await,
            Handle::Ignored(bytes) => Ok(byte_range(&bytes, offset, len)),
            Handle::Local(handle) => Ok(self.cx.local.handle_read(&handle, offset, len.min(MAX_READ))),
            Handle::Document(bytes) => Ok(byte_range(&bytes, offset, len)),
            Handle::Stream(reader) => Ok((reader.read(len.min(MAX_READ)).await?, false)),
        }
    }
}

impl Namespace {
    /// `--read-only`, or shutting down: a change to `what` is refused
    /// here, where every frontend's call comes in, before anything is asked
    /// of Google. While draining, only changes through a handle already
    /// open go on.
    /// `through` is the handle a change comes by (a write, an ftruncate),
    /// None for anything else (an open, a create, a write without a
    /// handle). `what` names it, and is only made for a refusal: every
    /// write passes here.
    fn refuse_change<D: std::fmt::Display>(&self, what: impl FnOnce() -> D, through: Option<Fh>) -> VfsResult<()> {
        let read_only = self.cx.options.read_only;
        if !read_only && !self.draining.load(Ordering::SeqCst) {
            return Ok(());
        }
        let why = if read_only {
            "ciofs runs with --read-only"
        } else if through.is_some_and(|fh| lock(&self.handles).contains_key(&fh)) {
            return Ok(());
        } else {
            "ciofs is shutting down"
        };
        Err(VfsError::read_only(format!("{} ({why})", what())))
    }

    /// From now on, every change but those through handles already open is
    /// refused with EROFS (at SIGTERM or `ciofs unmount`, so that what is
    /// being written finishes while nothing new starts).
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The files being written whose bytes Cloud Storage does not have yet
    /// (open with unsaved writes, or uploading).
    pub fn unsaved_files(&self) -> Vec<String> {
        self.storage.unsaved_files()
    }

    /// Whether `unsaved_files` would name any.
    pub fn has_unsaved(&self) -> bool {
        self.storage.has_unsaved()
    }

    /// When a shutdown cannot wait any longer: each file of `unsaved_files`
    /// is kept in the state directory for the next start to upload (see
    /// `StorageTree::keep_unsaved`); each file's path, and where it went or
    /// why it could not be kept.
    pub fn keep_unsaved(&self) -> Vec<(String, Result<String, String>)> {
        self.storage.keep_unsaved()
    }

    /// A page of `node`'s entries from the fixed levels or from its slice
    /// (a local directory has none of either).
    async fn slice_or_fixed_page(
        &self,
        node: &Node,
        dir: Ino,
        fh: Option<Fh>,
        after: Ino,
        max: usize,
    ) -> VfsResult<DirPage> {
        if matches!(node, Node::LocalDir { .. }) {
            return Ok(DirPage { entries: Vec::new(), eof: true });
        }
        if let Some(children) = self.fixed_children(node) {
            let entries: Vec<DirEntry> = children.into_iter().map(|c| self.fixed_entry(c)).collect();
            return Ok(self.cx.page_after(entries, after, max));
        }
        let service = node.service().ok_or_else(|| VfsError::not_dir(format!("{node}: not a directory")))?;
        self.slice(service).readdir(node, dir, fh.unwrap_or(0), after, max).await
    }

    fn handle(&self, fh: Option<Fh>) -> Option<Handle> {
        let handles = lock(&self.handles);
        handles.get(&fh?).cloned()
    }

    /// What needs no close, once idle for `idle`: uploads of what was
    /// written without a handle (nfs_writes.rs), edits of documents, stream
    /// logs, and creations that waited for their settings. A failed upload
    /// is logged and tried again later.
    pub async fn commit_idle(&self, idle: Duration) {
        self.storage.commit_idle_writers(idle).await;
        self.cx.local.apply_idle(self, idle).await;
        // Failures are in `.ciofs/errors`.
        for service in [Service::PubSub, Service::Storage, Service::BigQuery] {
            self.slice(service).create_due(PendingDue::Waited).await;
        }
    }

    /// Before the process ends (unmount, NFS stop, the end of an import):
    /// what was written without a close goes up, and the buckets, datasets
    /// and subscriptions that `mkdir` made and that still wait for their
    /// settings are created with what is known. What could not be created
    /// (each path, and why).
    pub async fn settle(&self) -> Vec<(String, VfsError)> {
        self.commit_idle(Duration::ZERO).await;
        let mut failed = Vec::new();
        for service in [Service::Storage, Service::BigQuery, Service::PubSub] {
            failed.extend(self.slice(service).create_due(PendingDue::All).await);
        }
        for (path, error) in &failed {
            tracing::warn!(path, %error, "not created");
        }
        failed
    }

    /// Takes back what NFS clients wrote before a crash or a restart (see
    /// `StorageTree::resume_journaled_uploads`).
    pub async fn resume_journaled_uploads(&self) {
        self.storage.resume_journaled_uploads().await
    }

    /// Tends the `_stream` logs NFS clients follow, in a task of its own.
    pub fn spawn_stream_log_tending(&self) -> tokio::task::JoinHandle<()> {
        self.pubsub.spawn_stream_log_tending()
    }

    /// Runs `commit_idle` in the background, for a frontend without close.
    pub fn spawn_idle_commits(self: &Arc<Self>, idle: Duration) -> tokio::task::JoinHandle<()> {
        let namespace = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(idle / 4);
            loop {
                tick.tick().await;
                let Some(namespace) = namespace.upgrade() else { return };
                namespace.commit_idle(idle).await;
            }
        })
    }

    /// Starts `--watch`: subscribes to the notifications of the mounted
    /// buckets and acts on them until `Watching::stop`.
    pub async fn start_watching(self: &Arc<Self>, options: &WatchOptions) -> Result<Watching, String> {
        let watcher = Arc::new(Watcher::start(&self.storage, self.pubsub_service.clone(), options).await?);
        let namespace = Arc::downgrade(self);
        let pulling = watcher.clone();
        let task = tokio::spawn(async move {
            loop {
                let Some(namespace) = namespace.upgrade() else { return };
                let wait = pulling.pull_once(&namespace.storage).await;
                drop(namespace);
                tokio::time::sleep(wait).await;
            }
        });
        Ok(Watching { watcher, task })
    }

    async fn open_for_write(&self, ino: Ino, node: &Node, truncate: bool) -> VfsResult<Opened> {
        let handle = match node {
            Node::Object { .. } => Handle::Object(self.storage.open_write(ino, node, truncate).await?),
            Node::BucketMeta { .. } => {
                let shown = if truncate { None } else { self.storage.render_document(node).await.ok() };
                Handle::Ignored(shown.unwrap_or_default())
            }
            _ => return Err(VfsError::is_dir(format!("{node}: is a directory"))),
        };
        Ok(Opened { fh: self.new_handle(handle), ..Opened::default() })
    }

    /// Finds `name` in directory `parent`.
    async fn find(&self, parent: Ino, name: &str) -> VfsResult<Attr> {
        node::check_name_length(name)?;
        let dir = self.cx.node(parent)?;
        // NFS clients look up `.` and `..`; FUSE answers them in the kernel.
        match name {
            "." => return self.getattr(parent).await,
            ".." => {
                let (ino, _) = self.cx.inodes.remember(&dir.parent());
                return self.getattr(ino).await;
            }
            _ => {}
        }
        if self.keeps_local(&dir, name) {
            return self.local_lookup(&dir, name);
        }
        if let Some(children) = self.fixed_children(&dir) {
            let child = children
                .into_iter()
                .find(|c| c.path().rsplit('/').next() == Some(name))
                .ok_or_else(|| VfsError::not_found(format!("{dir}/{name}")))?;
            return Ok(self.fixed_entry(child).attr);
        }
        let service = dir.service().ok_or_else(|| VfsError::not_dir(format!("{dir}: not a directory")))?;
        Ok(self.slice(service).lookup(&dir, name).await?.attr)
    }

    /// What NFS reads through, having no open: an object's reader (see
    /// `StorageTree::reader_without_open`), or a document as it is now.
    async fn handle_without_open(&self, ino: Ino) -> VfsResult<Handle> {
        let node = self.cx.node(ino)?;
        match &node {
            Node::Object { .. } => Ok(Handle::Object(self.storage.reader_without_open(ino, &node).await?)),
            Node::ErrorLog => Ok(Handle::Document(self.cx.error_log.render().0)),
            node if node.holds_documents() => Ok(Handle::Document(self.editable_document(node).await?.0)),
            Node::ObjectMeta { .. } | Node::BucketMeta { .. } => {
                Ok(Handle::Document(self.storage.render_document(&node).await?))
            }
            _ => Err(VfsError::is_dir(format!("{node}: is a directory"))),
        }
    }
}

/// `len` bytes of a document from `offset`, and whether they reach its end.
fn byte_range(bytes: &Bytes, offset: u64, len: u32) -> (Bytes, bool) {
    let start = (offset as usize).min(bytes.len());
    let end = start.saturating_add(len as usize).min(bytes.len());
    (bytes.slice(start..end), end == bytes.len())
}

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
        self.slice_of(node)?.prepare_replay(node).await
    }
}

impl Namespace {
    /// The slice that owns `node` (never one of the fixed upper levels,
    /// which hold no documents).
    fn slice_of(&self, node: &Node) -> VfsResult<&dyn Slice> {
        let service = node.service().ok_or_else(|| VfsError::invalid(format!("{node}: not a document")))?;
        Ok(self.slice(service))
    }

    /// The current document of a file that holds one, and its time.
    async fn editable_document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        Documents::current(self, node).await
    }

    /// Applies the edits an earlier run acknowledged over NFS and did not
    /// apply (see `LocalFiles::resume_journaled`).
    pub async fn resume_journaled_edits(&self) {
        self.cx.local.resume_journaled(self).await
    }

    async fn doc_open(&self, node: &Node, flags: OpenFlags) -> VfsResult<Opened> {
        let handle = if flags.write || flags.truncate || flags.append {
            if is_local(node) {
                Handle::Local(self.cx.local.open(self, node, flags.truncate).await?)
            } else if !node.is_dir() {
                let shown = if flags.truncate { None } else { self.editable_document(node).await.ok() };
                Handle::Ignored(shown.map(|(document, _)| document).unwrap_or_default())
            } else {
                return Err(VfsError::is_dir(format!("{node}: is a directory")));
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

    async fn doc_create(&self, dir: &Node, name: &str) -> VfsResult<(Attr, Opened)> {
        let node = Node::file_in(dir, name)?;
        self.slice_of(dir)?.check_dir_for_create(dir).await?;
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
    async fn doc_write(&self, node: &Node, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if is_local(node) {
            return self.cx.local.write(self, node, offset, data).await;
        }
        match node.is_dir() {
            false => Ok(data.len() as u32),
            true => Err(VfsError::is_dir(format!("{node}: is a directory"))),
        }
    }

    async fn doc_truncate(&self, node: &Node, size: u64) -> VfsResult<()> {
        if is_local(node) {
            return self.cx.local.truncate(self, node, size).await;
        }
        Ok(())
    }

    async fn doc_unlink(&self, dir: &Node, name: &str) -> VfsResult<()> {
        let node = Node::file_in(dir, name)?;
        if !matches!(node, Node::Scratch { .. }) {
            // It must be there to be removed.
            self.slice_of(dir)?.lookup(dir, name).await?;
        }
        self.cx.local.unlink(&node)?;
        self.slice_of(&node)?.document_removed(&node);
        Ok(())
    }

    async fn doc_rename(&self, from: &Node, name: &str, to: &Node, new_name: &str) -> VfsResult<()> {
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
                return Err(VfsError::cross_device(format!("{from}/{name}: moves by copy only")));
            }
            // Not EXDEV for a table, dataset, topic or subscription: `mv`
            // would copy its documents into a new, empty one and then delete
            // the old one, rows or messages and all.
            _ if matches!(from.service(), Some(Service::BigQuery | Service::PubSub)) => {
                return Err(VfsError::not_permitted(format!(
                    "{from}/{name}: tables, datasets, topics and subscriptions cannot be renamed"
                )));
            }
            _ => return Err(VfsError::cross_device(format!("{to}/{new_name}: moves by copy only"))),
        }
        let (source, target) = (Node::file_in(from, name)?, Node::file_in(to, new_name)?);
        self.cx.local.rename(self, &source, &target).await?;
        // The kernel now knows the source's inode by the new name.
        self.cx.inodes.rekey(|node| (*node == source).then(|| target.clone()));
        Ok(())
    }
}

mod local;

#[cfg(test)]
mod bigquery_edit_tests;
#[cfg(test)]
mod bigquery_tests;
#[cfg(test)]
mod bucket_tests;
#[cfg(test)]
mod macos_tests;
#[cfg(test)]
mod nfs_write_tests;
#[cfg(test)]
mod pubsub_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;
#[cfg(test)]
mod write_tests;
