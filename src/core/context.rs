//! What every slice is given: the mount's options and projects, the inode
//! table, local files and the error log, and how an entry's attributes are
//! made from them.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ciofs_frontends::{Attr, ClientCache, DirEntry, DirPage, FileKind, Ino, VfsError, VfsResult};

use super::edits::LocalFiles;
use super::error_log::ErrorLog;
use super::inodes::InodeTable;
use super::macos::LocalDirs;
use super::node::Node;

/// How the tree looks to users; set from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// Entries per list call (Cloud Storage allows up to 1000).
    pub page_size: u32,
    /// How long listed or fetched metadata is trusted (zero: always ask).
    pub metadata_ttl: Duration,
    /// How long a name found absent is remembered (at most `metadata_ttl`).
    pub negative_ttl: Duration,
    /// The most Cloud Storage names whose metadata is cached.
    pub stat_cache_entries: usize,
    /// The most objects and prefixes the cached directory listings hold
    /// together (a larger listing is not cached).
    pub list_cache_entries: usize,
    /// Where files open for write are staged before upload.
    pub staging_dir: PathBuf,
    /// How many objects a directory rename moves at most (each is a copy
    /// and a delete; a larger tree is refused rather than half-moved).
    pub rename_limit: usize,
    /// Show the configuration only: buckets and prefixes with their `.meta/`
    /// documents, no object files (`tar c` of such a mount is what
    /// `ciofs export --config-only` writes).
    pub config_only: bool,
    /// Refuse every change (EROFS): nothing but reads goes to Google.
    pub read_only: bool,
    /// Send macOS's metadata files (`._*`, `.DS_Store`, `.Trashes` ...) to
    /// Google as any other name, instead of keeping them local (`macos`).
    pub upload_macos_files: bool,
    /// The content cache of object blocks.
    pub content_cache: CacheOptions,
}

/// How big the content cache's tiers are and where its disk tier lives.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub memory_bytes: usize,
    /// None: memory only.
    pub disk: Option<DiskTier>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self { memory_bytes: 256 << 20, disk: None }
    }
}

#[derive(Clone, Debug)]
pub struct DiskTier {
    pub dir: PathBuf,
    /// The most bytes it holds; less if the file system would be left with
    /// under `keep_free` of its size free.
    pub max_bytes: u64,
    /// The share of the file system left free (`DiskTier::KEEP_FREE`;
    /// tests keep none, so that they do not depend on the machine's disk).
    pub keep_free: f64,
}

impl DiskTier {
    /// The share of the cache directory's file system a mount leaves free.
    pub const KEEP_FREE: f64 = 0.10;

    /// A disk tier in `dir` of at most `max_bytes`, leaving `KEEP_FREE`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        DiskTier { dir, max_bytes, keep_free: Self::KEEP_FREE }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            page_size: 1000,
            metadata_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            stat_cache_entries: 1 << 20,
            list_cache_entries: 1 << 20,
            staging_dir: std::env::temp_dir().join("ciofs-staging"),
            rename_limit: 1000,
            config_only: false,
            read_only: false,
            upload_macos_files: false,
            content_cache: CacheOptions::default(),
        }
    }
}

/// Whether a node's attributes and name change only through the mount or
/// when Cloud Storage's copy changes, so that the frontend may keep them for
/// the metadata TTL: Cloud Storage's buckets, prefixes, objects and their
/// `.meta/` documents. An editor's scratch file, BigQuery and Pub/Sub
/// (statuses, streams), `.ciofs/` and the fixed levels are kept briefly.
fn cacheable(node: &Node) -> bool {
    matches!(
        node,
        Node::Dir { .. }
            | Node::MetaDir { .. }
            | Node::Object { .. }
            | Node::ObjectMeta { .. }
            | Node::BucketMeta { .. }
    )
}

/// The state every slice shares; the namespace makes one and hands each
/// slice an `Arc` of it.
pub struct Context {
    pub projects: Vec<String>,
    pub options: Options,
    pub inodes: InodeTable,
    /// Edits of documents and scratch files (`edits`).
    pub local: LocalFiles,
    /// macOS's local directories (`macos`); their files are in `local`.
    pub local_dirs: LocalDirs,
    /// `.ciofs/errors`.
    pub error_log: Arc<ErrorLog>,
    /// The frontend's clients' caches, told of what changed by itself.
    client_cache: OnceLock<Arc<dyn ClientCache>>,
}

impl Context {
    pub fn new(projects: Vec<String>, options: Options, inodes: InodeTable) -> Self {
        let error_log = Arc::new(ErrorLog::default());
        Self {
            projects,
            local: LocalFiles::new(options.staging_dir.join("nfs-edits"), error_log.clone()),
            local_dirs: LocalDirs::default(),
            error_log,
            options,
            inodes,
            client_cache: OnceLock::new(),
        }
    }

    /// Called once, by the frontend (see `Vfs::watch_client_cache`).
    pub fn watch_client_cache(&self, cache: Arc<dyn ClientCache>) {
        let _ = self.client_cache.set(cache);
    }

    /// Tells the frontend that `node`'s attributes changed outside a request
    /// that returned them, if the kernel may hold them.
    pub fn attributes_changed(&self, node: &Node) {
        if let (Some(cache), Some((ino, _))) = (self.client_cache.get(), self.inodes.find(node)) {
            cache.attributes_changed(ino);
        }
    }

    /// Tells the frontend that the attributes of every node `wanted` picks
    /// may have changed (`touch DIR`: what is under it is asked again).
    pub fn attributes_changed_where(&self, wanted: impl Fn(&Node) -> bool) {
        if let Some(cache) = self.client_cache.get() {
            for ino in self.inodes.matching(wanted) {
                cache.attributes_changed(ino);
            }
        }
    }

    /// Tells the frontend that `node` changed behind the mount's back (its
    /// content, and maybe whether it exists): its attributes and pages go,
    /// and so does its entry in its parent.
    pub fn changed_elsewhere(&self, node: &Node) {
        let Some(cache) = self.client_cache.get() else { return };
        if let Some((ino, _)) = self.inodes.find(node) {
            cache.content_changed(ino);
        }
        if let (Some((parent, _)), Some(name)) = (self.inodes.find(&node.parent()), node.file_name()) {
            cache.entry_changed(parent, &name);
        }
    }

    /// `changed_elsewhere` for every node `wanted` picks that the
    /// frontend was given (a gap in `--watch`: anything may have changed).
    pub fn changed_elsewhere_where(&self, wanted: impl Fn(&Node) -> bool) {
        if self.client_cache.get().is_none() {
            return;
        }
        for ino in self.inodes.matching(wanted) {
            if let Some(node) = self.inodes.node(ino) {
                self.changed_elsewhere(&node);
            }
        }
    }

    /// Tells the frontend that the directory `dir` lists otherwise now:
    /// its clients' kept listing goes.
    pub fn listing_changed(&self, dir: &Node) {
        if let (Some(cache), Some((ino, _))) = (self.client_cache.get(), self.inodes.find(dir)) {
            cache.content_changed(ino);
        }
    }

    /// Whether an object's inode still names its path: a file removed or
    /// replaced by a rename answers only through its writer (its open
    /// handles); anything else asked of its inode (a stat, an NFS READ or
    /// WRITE, a truncate) is STALE, never the file now at that path.
    pub fn still_named(&self, ino: Ino, node: &Node) -> VfsResult<()> {
        match node {
            Node::Object { .. } if !self.inodes.is_attached(ino) => {
                Err(VfsError::stale(format!("{node} was removed or replaced (stale handle)")))
            }
            _ => Ok(()),
        }
    }

    /// The node `ino` names. A `--config-only` tree has no object files:
    /// an object's inode (a handle from a run that showed them, read back
    /// from the NFS journal) is stale there, whatever is asked of it.
    pub fn node(&self, ino: Ino) -> VfsResult<Node> {
        let node =
            self.inodes.node(ino).ok_or_else(|| VfsError::stale(format!("inode {ino} is not known (stale handle)")))?;
        match node {
            Node::Object { .. } if self.options.config_only => Err(VfsError::stale(format!(
                "{node}: object files are not part of a --config-only tree (stale handle)"
            ))),
            node => Ok(node),
        }
    }

    pub fn attr(&self, ino: Ino, generation: u64, node: &Node, size: u64, mtime: SystemTime) -> Attr {
        let (kind, perm, nlink) = match node {
            node if node.is_dir() => (FileKind::Directory, self.options.dir_mode, 2),
            // Read-only: writing a stream does nothing.
            node if node.is_stream() => (FileKind::File, self.options.file_mode & 0o444, 1),
            _ => (FileKind::File, self.options.file_mode, 1),
        };
        let (uid, gid) = (self.options.uid, self.options.gid);
        Attr { ino, kind, size, mtime, perm, nlink, uid, gid, generation, cacheable: cacheable(node) }
    }

    /// Numbers `node` and gives its attributes from what is already known.
    pub fn entry(&self, node: Node, size: u64, mtime: SystemTime) -> DirEntry {
        let name = node.path().rsplit('/').next().unwrap_or_default().to_string();
        let (ino, generation) = self.inodes.remember(&node);
        DirEntry { name, attr: self.attr(ino, generation, &node, size, mtime) }
    }

    pub fn dir_entry(&self, node: Node) -> DirEntry {
        self.entry(node, 0, SystemTime::UNIX_EPOCH)
    }

    /// The entries of a directory after the one numbered `after` (0: from
    /// the start), at most `max`. If that entry is gone (a table deleted
    /// between two pages), the listing goes on after its name.
    pub fn page_after(&self, entries: Vec<DirEntry>, after: Ino, max: usize) -> DirPage {
        let start = match after {
            0 => 0,
            _ => match entries.iter().position(|e| e.attr.ino == after) {
                Some(at) => at + 1,
                None => {
                    let name = self.inodes.node(after).map(|n| n.path().rsplit('/').next().unwrap_or("").to_string());
                    let name = name.unwrap_or_default();
                    entries.iter().position(|e| e.name > name).unwrap_or(entries.len())
                }
            },
        };
        let page: Vec<DirEntry> = entries.into_iter().skip(start).take(max).collect();
        let eof = page.len() < max;
        DirPage { entries: page, eof }
    }
}
