//! Cloud Storage as files: buckets and prefixes are directories, objects are
//! files, and each directory's `.meta/` holds the metadata documents.
//!
//! Listings take attributes from the list call itself (no call per entry)
//! and fill the metadata cache, so the `stat` that follows a `readdir` costs
//! nothing. A name that is both an object and a prefix shows as the
//! directory; names that cannot be file names are left out (docs/SEMANTICS.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::gcs::{BucketMeta, ListObjects, ObjectMeta, ObjectStore};
use ciofs_backends::sync::lock;
use ciofs_frontends::{Attr, DirCaching, DirEntry, DirPage, Fh, Ino, VfsError, VfsResult};

use tokio::sync::Mutex as AsyncMutex;

use super::block_cache::{BLOCK_SIZE, BlockCache};
use super::documents;
use super::listing::{Child, Collected, DirStream, DirStreams, Next, Replay};
use super::object_meta::PendingObjectMeta;
use super::reader::{ObjectReader, ObjectVersion};
use super::walks::Walks;
use super::writer::Writer;
use crate::core::cache::{Known, Listing, MetaCache, Timed, key};
use crate::core::context::Context;
use crate::core::errors::vfs_error;
use crate::core::node::{BUCKET_META, META_DIR, META_SUFFIX, Node, Service, unusable_segment};
use crate::core::pending::Pending;
use crate::core::pending::PendingDue;
use crate::core::slice::Slice;

/// A reader NFS reads through, shared by its reads of one inode.
pub type SharedReader = Arc<AsyncMutex<ObjectReader>>;

/// What ciofs knows of Cloud Storage, and the client to ask.
pub struct StorageTree {
    pub cx: Arc<Context>,
    pub gcs: Arc<dyn ObjectStore>,
    pub cache: MetaCache,
    /// The names of each project's buckets: bucket names are global, and a
    /// bucket of another project must not show (or take writes) in this
    /// one's `storage/`.
    pub project_buckets: Timed<String, Arc<std::collections::HashSet<String>>>,
    /// (project, bucket): buckets found to be another project's.
    pub foreign_buckets: Timed<(String, String), ()>,
    pub streams: DirStreams,
    /// By inode: the generation read and its reader.
    pub nfs_readers: Mutex<HashMap<Ino, (i64, SharedReader)>>,
    /// The latest handle open for write of each inode.
    pub writers: Mutex<HashMap<Ino, Arc<Writer>>>,
    /// The object generation each inode last had when opened, so that an
    /// unchanged object keeps the kernel's page cache.
    pub opened_generation: Mutex<HashMap<Ino, i64>>,
    /// By directory inode: the cached listing that the kernel's last full
    /// read of the directory was made of (`dir_caching`).
    pub kernel_listings: Mutex<HashMap<Ino, u64>>,
    /// `.meta/` documents written, for the objects' next new upload.
    pub pending_object_meta: PendingObjectMeta,
    /// Buckets made by `mkdir`, waiting for their settings, with their
    /// projects (buckets.rs).
    pub pending_buckets: Pending<String, String, ciofs_backends::gcs::BucketSettings>,
    /// Names another project took between our `mkdir` and our create: what
    /// was written for them must not go up into that bucket.
    pub taken_buckets: Mutex<std::collections::BTreeSet<String>>,
    /// Object content by block, opened on first use (`open_content_cache`).
    blocks: tokio::sync::OnceCell<Arc<BlockCache>>,
    /// Readers walking through directories' files (`fetch_ahead_of`).
    walks: Walks,
}

impl StorageTree {
    pub fn new(cx: Arc<Context>, gcs: Arc<dyn ObjectStore>) -> Self {
        let ttl = cx.options.metadata_ttl;
        Self {
            gcs,
            cache: MetaCache::new(
                ttl,
                cx.options.negative_ttl,
                cx.options.stat_cache_entries,
                cx.options.list_cache_entries,
            ),
            project_buckets: Timed::new(ttl),
            foreign_buckets: Timed::new(ttl),
            streams: DirStreams::default(),
            nfs_readers: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            opened_generation: Mutex::new(HashMap::new()),
            kernel_listings: Mutex::new(HashMap::new()),
            pending_object_meta: Default::default(),
            pending_buckets: Default::default(),
            taken_buckets: Default::default(),
            blocks: tokio::sync::OnceCell::new(),
            walks: Walks::default(),
            cx,
        }
    }

    pub fn writer(&self, ino: Ino) -> Option<Arc<Writer>> {
        lock(&self.writers).get(&ino).cloned()
    }

    /// Whether files under `prefix` of `bucket` are open for write (not
    /// removed): Cloud Storage may not have them yet.
    pub fn has_local_files(&self, bucket: &str, prefix: &str) -> bool {
        let writers = lock(&self.writers);
        writers.values().any(|w| {
            matches!(&w.node(), Node::Object { bucket: b, name, .. } if b == bucket && name.starts_with(prefix))
                && !w.state().unlinked
        })
    }

    /// Entries for the files in `dir` being written that Cloud Storage does
    /// not have yet, so `ls` shows a file while `cp` writes it.
    pub fn unlisted_writers(&self, dir: &Node) -> Vec<DirEntry> {
        let writers: Vec<Arc<Writer>> = lock(&self.writers).values().cloned().collect();
        let mut entries: Vec<DirEntry> = writers
            .iter()
            .filter_map(|w| {
                let (node, state) = (w.node(), w.state());
                (node.parent() == *dir && !state.in_gcs && !state.unlinked)
                    .then(|| self.cx.entry(node, state.size, state.mtime))
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// `name` in `bucket` changed through the mount (uploaded, patched,
    /// removed, moved, made): the metadata cache holds what it is now and
    /// drops the listings above it (core/cache.rs `MetaCache::set`), and
    /// the frontend, which may keep an object's and its document's
    /// attributes for the metadata TTL, is told they changed.
    pub fn changed(&self, bucket: &str, name: &str, known: Known) {
        self.cache.set(key(bucket, name), known);
        if name.ends_with('/') {
            return;
        }
        self.tell_attributes(bucket, name);
    }

    /// The object a write starts from, or None for a new one.
    pub async fn existing_object(&self, node: &Node) -> VfsResult<Option<Arc<ObjectMeta>>> {
        match self.object_meta(node).await {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A bucket directory being listed: as itself or, `documents_only`, as
/// its `.meta/`.
#[derive(Clone, Copy)]
struct ListedDir<'a> {
    project: &'a str,
    bucket: &'a str,
    prefix: &'a str,
    documents_only: bool,
}

impl StorageTree {
    /// Finds `name` in a storage directory.
    pub async fn lookup_in(&self, dir: &Node, name: &str) -> VfsResult<DirEntry> {
        let missing = || VfsError::not_found(format!("{dir}/{name}"));
        match dir {
            Node::Service { project, service: Service::Storage } => {
                if !self.is_bucket_of(project, name).await? {
                    return Err(missing());
                }
                let bucket = self.bucket_meta(name).await?;
                Ok(self.bucket_entry(project, &bucket))
            }
            Node::Dir { project, bucket, prefix } => {
                if name == META_DIR {
                    return Ok(self.cx.dir_entry(Node::MetaDir {
                        project: project.clone(),
                        bucket: bucket.clone(),
                        prefix: prefix.clone(),
                    }));
                }
                if unusable_segment(name).is_some() {
                    return Err(missing());
                }
                let full = format!("{prefix}{name}");
                let object = Node::Object { project: project.clone(), bucket: bucket.clone(), name: full.clone() };
                if let Some(entry) = self.staged_entry(&object) {
                    return Ok(entry);
                }
                match self.resolve(bucket, &full).await? {
                    Known::Prefix => Ok(self.cx.dir_entry(Node::Dir {
                        project: project.clone(),
                        bucket: bucket.clone(),
                        prefix: format!("{full}/"),
                    })),
                    Known::Object(meta) if !self.cx.options.config_only => Ok(self.object_entry(project, &meta)),
                    _ => Err(missing()),
                }
            }
            Node::MetaDir { project, bucket, prefix } => {
                if prefix.is_empty() && name == BUCKET_META {
                    let meta = self.bucket_meta(bucket).await?;
                    let node = Node::BucketMeta { project: project.clone(), bucket: bucket.clone() };
                    if self.cx.local.is_hidden_at(&node, Some(&bucket_version(&meta))) {
                        return Err(missing());
                    }
                    return Ok(self.bucket_meta_entry(project, &meta));
                }
                let Some(object) = name.strip_suffix(META_SUFFIX).filter(|o| unusable_segment(o).is_none()) else {
                    // An editor's scratch file (sed -i, vim), while it lasts.
                    let scratch = Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() };
                    return match self.cx.local.stat(&scratch) {
                        Some((size, mtime)) => Ok(self.cx.entry(scratch, size, mtime)),
                        None => Err(missing()),
                    };
                };
                let full = format!("{prefix}{object}");
                let node = Node::ObjectMeta { project: project.clone(), bucket: bucket.clone(), name: full.clone() };
                if let Some((size, mtime)) = self.cx.local.stat(&node) {
                    // Being written (core/edits.rs).
                    return Ok(self.cx.entry(node, size, mtime));
                }
                match self.resolve(bucket, &full).await? {
                    // Removed (by `tar x` before it creates it again).
                    Known::Object(meta) if self.cx.local.is_hidden_at(&node, Some(&object_version(&meta))) => {
                        Err(missing())
                    }
                    Known::Object(meta) => Ok(self.object_meta_entry(project, &meta)),
                    _ if self.cx.local.is_hidden_at(&node, None) => Err(missing()),
                    // Written before its object (tar x): there until then.
                    _ if self.pending_object_meta.get(bucket, &full).is_some() => {
                        Ok(self.cx.entry(node, 0, SystemTime::now()))
                    }
                    _ => Err(missing()),
                }
            }
            _ => Err(VfsError::not_dir(format!("{dir}: not a directory"))),
        }
    }

    /// Size and mtime of a storage node, from the cache where it can.
    pub async fn stat_node(&self, node: &Node) -> VfsResult<(u64, SystemTime)> {
        match node {
            Node::Dir { bucket, prefix, .. } if prefix.is_empty() => {
                let meta = self.bucket_meta(bucket).await?;
                Ok((0, meta.created.unwrap_or(SystemTime::UNIX_EPOCH)))
            }
            Node::Object { .. } => {
                let meta = self.object_meta(node).await?;
                Ok((meta.size, modified(&meta)))
            }
            Node::ObjectMeta { bucket, name, .. } => {
                if let Some(stat) = self.cx.local.stat(node) {
                    return Ok(stat);
                }
                match self.document_of(node).await {
                    Ok((document, mtime)) => Ok((document.len() as u64, mtime)),
                    Err(e) if e.errno() == libc::ENOENT && self.pending_object_meta.get(bucket, name).is_some() => {
                        Ok((0, SystemTime::now()))
                    }
                    Err(e) => Err(e),
                }
            }
            Node::BucketMeta { .. } => {
                let (document, mtime) = self.document_of(node).await?;
                Ok((document.len() as u64, mtime))
            }
            _ => Ok((0, SystemTime::UNIX_EPOCH)),
        }
    }

    /// The current metadata of an object node.
    pub async fn object_meta(&self, node: &Node) -> VfsResult<Arc<ObjectMeta>> {
        let (Node::Object { bucket, name, .. } | Node::ObjectMeta { bucket, name, .. }) = node else {
            return Err(VfsError::is_dir(format!("{node}: not an object")));
        };
        let cache_key = key(bucket, name);
        if let Some(Known::Object(meta)) = self.cache.get(&cache_key) {
            return Ok(meta);
        }
        let started = self.cache.start();
        match self.gcs.get_object(bucket, name).await {
            Ok(meta) => {
                let meta = Arc::new(meta);
                self.cache.put_fetched(cache_key, Known::Object(meta.clone()), started);
                Ok(meta)
            }
            Err(e) => {
                if e.kind == ErrorKind::NotFound {
                    self.cache.put_fetched(cache_key, Known::Absent, started);
                }
                Err(vfs_error(e))
            }
        }
    }

    /// A reader of the object's current generation. Opening it may fetch
    /// the next small files of its directory ahead (`walks`).
    pub async fn object_reader(&self, node: &Node) -> VfsResult<ObjectReader> {
        let meta = self.object_meta(node).await?;
        let blocks = self.content_cache().await?;
        self.fetch_ahead_of(&meta, &blocks);
        Ok(ObjectReader::new(self.gcs.clone(), blocks, ObjectVersion::of(&meta)))
    }

    /// The files of `opened`'s directory that a walk through it in listing
    /// order reads next, fetched ahead.
    fn fetch_ahead_of(&self, opened: &ObjectMeta, blocks: &Arc<BlockCache>) {
        let prefix = opened.name.rfind('/').map_or("", |at| &opened.name[..=at]);
        let Some(listing) = self.cache.listings.get(&opened.bucket, prefix) else { return };
        let dir = key(&opened.bucket, prefix);
        for ahead in self.walks.opened(&dir, &listing, &opened.name, BLOCK_SIZE) {
            ObjectReader::new(self.gcs.clone(), blocks.clone(), ObjectVersion::of(&ahead)).fetch_first_block();
        }
    }

    /// The content cache, opened on first use from the options. The shell
    /// opens it before serving, so that an unusable cache directory is an
    /// error at start, not at the first read.
    pub async fn content_cache(&self) -> VfsResult<Arc<BlockCache>> {
        let open = || async { BlockCache::open(&self.cx.options.content_cache).await.map(Arc::new) };
        self.blocks.get_or_try_init(open).await.cloned().map_err(VfsError::io)
    }

    /// The content cache if it was opened.
    pub fn content_cache_if_open(&self) -> Option<Arc<BlockCache>> {
        self.blocks.get().cloned()
    }

    /// Waits for cached blocks on their way to disk (at unmount).
    pub async fn close_content_cache(&self) {
        if let Some(blocks) = self.blocks.get() {
            blocks.close().await;
        }
    }

    pub async fn render_document(&self, node: &Node) -> VfsResult<Bytes> {
        Ok(self.document_of(node).await?.0)
    }

    /// A metadata document and its mtime.
    pub async fn document_of(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        match node {
            Node::ObjectMeta { .. } => {
                let meta = self.object_meta(node).await?;
                Ok((documents::object_document(&meta).into(), modified(&meta)))
            }
            Node::BucketMeta { bucket, .. } => {
                let meta = self.bucket_meta(bucket).await?;
                let mtime = meta.updated.or(meta.created).unwrap_or(SystemTime::UNIX_EPOCH);
                Ok((documents::bucket_document(&meta).into(), mtime))
            }
            _ => Err(VfsError::is_dir(format!("{node}: not a document"))),
        }
    }

    /// Whether `bucket` belongs to `project` (or waits to be made in it),
    /// by a listing of the project's buckets kept for the metadata TTL. A
    /// name the listing lacks that exists after all is listed again once
    /// (made since in this project?), and if it is another project's, that
    /// is remembered for the TTL.
    pub async fn is_bucket_of(&self, project: &str, bucket: &str) -> VfsResult<bool> {
        if let Some(waiting) = self.pending_buckets.get(bucket) {
            return Ok(waiting.made_in == project);
        }
        let asked = (project.to_string(), bucket.to_string());
        if let Some(names) = self.project_buckets.get(&asked.0) {
            if names.contains(bucket) {
                return Ok(true);
            }
            if self.foreign_buckets.get(&asked).is_some() || self.bucket_meta(bucket).await.is_err() {
                // Absent, or someone else's (and perhaps unreadable).
                return Ok(false);
            }
        }
        let ours = self.list_project_buckets(project).await?.iter().any(|b| b.name == bucket);
        if !ours {
            self.foreign_buckets.put(asked, ());
        }
        Ok(ours)
    }

    /// All of a project's buckets (every page); their names are kept for
    /// `is_bucket_of`.
    pub async fn list_project_buckets(&self, project: &str) -> VfsResult<Vec<BucketMeta>> {
        let mut buckets = Vec::new();
        let mut token = None;
        loop {
            let page = self.gcs.list_buckets(project, token, self.cx.options.page_size).await.map_err(vfs_error)?;
            buckets.extend(page.buckets);
            token = page.next_page_token;
            if token.is_none() {
                let names = buckets.iter().map(|b| b.name.clone()).collect();
                self.project_buckets.put(project.to_string(), Arc::new(names));
                return Ok(buckets);
            }
        }
    }

    pub async fn bucket_meta(&self, bucket: &str) -> VfsResult<Arc<BucketMeta>> {
        if unusable_segment(bucket).is_some() {
            return Err(VfsError::not_found(format!("bucket {bucket}")));
        }
        if let Some(pending) = self.pending_bucket_meta(bucket) {
            return Ok(Arc::new(pending));
        }
        let cache_key = key(bucket, "");
        match self.cache.get(&cache_key) {
            Some(Known::Bucket(meta)) => return Ok(meta),
            Some(Known::Absent) => return Err(VfsError::not_found(format!("bucket {bucket}"))),
            _ => {}
        }
        match self.gcs.get_bucket(bucket).await {
            Ok(meta) => {
                let meta = Arc::new(meta);
                self.cache.put(cache_key, Known::Bucket(meta.clone()));
                Ok(meta)
            }
            // 400: not a valid bucket name (`.Trash-1000`, say), so absent.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidArgument) => {
                self.cache.put(cache_key, Known::Absent);
                Err(VfsError::not_found(format!("bucket {bucket}")))
            }
            Err(e) => Err(vfs_error(e)),
        }
    }

    /// Whether `name` in `bucket` is a prefix (wins), an object, or absent:
    /// from the cache, else one get and one single-entry list, concurrently.
    pub async fn resolve(&self, bucket: &str, name: &str) -> VfsResult<Known> {
        if self.pending_buckets.contains(bucket) {
            return Ok(Known::Absent);
        }
        let prefix_key = key(bucket, &format!("{name}/"));
        let object_key = key(bucket, name);
        match (self.cache.get(&prefix_key), self.cache.get(&object_key)) {
            (Some(Known::Prefix), _) => return Ok(Known::Prefix),
            (_, Some(known @ Known::Object(_))) => return Ok(known),
            (Some(Known::Absent), Some(Known::Absent)) => return Ok(Known::Absent),
            _ => {}
        }
        let probe = ListObjects {
            bucket: bucket.to_string(),
            prefix: format!("{name}/"),
            delimiter: Some("/".to_string()),
            page_size: 1,
            ..Default::default()
        };
        let started = self.cache.start();
        let (listed, got) = tokio::join!(self.gcs.list_objects(&probe), self.gcs.get_object(bucket, name));
        let listed = listed.map_err(vfs_error)?;
        if !listed.objects.is_empty() || !listed.prefixes.is_empty() {
            self.cache.put_fetched(prefix_key, Known::Prefix, started);
            return Ok(Known::Prefix);
        }
        self.cache.put_fetched(prefix_key, Known::Absent, started);
        match got {
            Ok(meta) => {
                let known = Known::Object(Arc::new(meta));
                self.cache.put_fetched(object_key, known.clone(), started);
                Ok(known)
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                self.cache.put_fetched(object_key, Known::Absent, started);
                Ok(Known::Absent)
            }
            Err(e) => Err(vfs_error(e)),
        }
    }

    fn bucket_entry(&self, project: &str, bucket: &BucketMeta) -> DirEntry {
        let node = Node::Dir { project: project.to_string(), bucket: bucket.name.clone(), prefix: String::new() };
        self.cx.entry(node, 0, bucket.created.unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn bucket_meta_entry(&self, project: &str, bucket: &BucketMeta) -> DirEntry {
        let size = documents::bucket_document(bucket).len() as u64;
        let node = Node::BucketMeta { project: project.to_string(), bucket: bucket.name.clone() };
        self.cx.entry(node, size, bucket.updated.or(bucket.created).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn object_entry(&self, project: &str, meta: &ObjectMeta) -> DirEntry {
        let node = Node::Object { project: project.to_string(), bucket: meta.bucket.clone(), name: meta.name.clone() };
        self.cx.entry(node, meta.size, modified(meta))
    }

    fn object_meta_entry(&self, project: &str, meta: &ObjectMeta) -> DirEntry {
        self.listed_object_meta_entry(project, meta, None)
    }

    /// A `.meta/` document's entry. Its size is its rendering's length
    /// (`cat` and `tar` read st_size bytes): rendered once per cached
    /// listing, so that `find` over a warm tree renders nothing.
    fn listed_object_meta_entry(&self, project: &str, meta: &ObjectMeta, listing: Option<&Listing>) -> DirEntry {
        let render = || documents::object_document(meta).len() as u64;
        let size = match listing {
            Some(listing) => *lock(&listing.document_sizes).entry(meta.name.clone()).or_insert_with(render),
            None => render(),
        };
        let node =
            Node::ObjectMeta { project: project.to_string(), bucket: meta.bucket.clone(), name: meta.name.clone() };
        self.cx.entry(node, size, modified(meta))
    }

    /// A slice of a storage directory's listing, continuing after `after`.
    pub async fn readdir_page(&self, dir: &Node, ino: Ino, fh: Fh, after: Ino, max: usize) -> VfsResult<DirPage> {
        let mut stream = match self.streams.take(ino, fh, after) {
            Some(stream) => stream,
            None => self.new_stream(dir, after).await?,
        };
        let mut entries = Vec::new();
        while entries.len() < max {
            if stream.pending.is_empty() && !stream.next.is_done() {
                if let Err(e) = self.fetch_page(dir, &mut stream).await {
                    // Keep the stream: the frontend may retry from here.
                    self.streams.put_back(ino, fh, stream);
                    return Err(e);
                }
                continue;
            }
            if stream.pending.is_empty() && !stream.local_added {
                // After Cloud Storage's entries: files not uploaded yet.
                stream.local_added = true;
                if matches!(dir, Node::Dir { .. }) {
                    let local = self.unlisted_writers(dir);
                    if !local.is_empty() {
                        // Not the cached listing alone: not to be kept.
                        stream.listing = None;
                    }
                    stream.pending.extend(local);
                }
            }
            let taken = stream.take(max - entries.len());
            if taken.is_empty() {
                break;
            }
            entries.extend(taken);
        }
        let eof = stream.is_done();
        if eof && stream.from_start {
            self.read_whole(ino, stream.listing);
        }
        self.streams.put_back(ino, fh, stream);
        Ok(DirPage { entries, eof })
    }

    /// A directory was read whole, from `listing` if it was one cached.
    fn read_whole(&self, ino: Ino, listing: Option<u64>) {
        let mut read = lock(&self.kernel_listings);
        if read.len() > 100_000 {
            read.clear();
        }
        match listing {
            Some(id) => read.insert(ino, id),
            None => read.remove(&ino),
        };
    }

    /// Whether the kernel may keep a storage directory's listing (FUSE's
    /// readdir cache): a bucket directory or its `.meta/`, with a metadata
    /// TTL; and whether what it kept is still the directory's: its last
    /// full read was made of the listing cached now (a change through the
    /// mount, `touch DIR` or the TTL's end made another).
    pub fn dir_caching(&self, ino: Ino, dir: &Node) -> DirCaching {
        let (Node::Dir { bucket, prefix, .. } | Node::MetaDir { bucket, prefix, .. }) = dir else {
            return DirCaching::default();
        };
        if self.cx.options.metadata_ttl.is_zero() || self.pending_buckets.contains(bucket) {
            return DirCaching::default();
        }
        let cached = self.cache.listings.get(bucket, prefix).map(|listing| listing.id);
        let keep = cached.is_some() && lock(&self.kernel_listings).get(&ino).copied() == cached;
        DirCaching { cache: true, keep }
    }

    /// A stream positioned after the entry `after` (0: at the start).
    async fn new_stream(&self, dir: &Node, after: Ino) -> VfsResult<DirStream> {
        if after == 0 {
            let fixed = self.fixed_entries(dir).await?;
            let mut stream = DirStream::new(fixed, None);
            stream.from_start = true;
            return Ok(stream);
        }
        // Resuming a listing we no longer hold (NFS after a restart, or a
        // seekdir): continue after the cookie's entry.
        let resume = self
            .cx
            .inodes
            .node(after)
            .filter(|node| node.parent() == *dir)
            .ok_or_else(|| VfsError::invalid(format!("{dir}: cookie {after} is not an entry of it")))?;
        let last_key = match &resume {
            // A fixed entry: the children follow from the start.
            Node::MetaDir { .. } | Node::BucketMeta { .. } => None,
            Node::Dir { bucket, prefix, .. } if prefix.is_empty() => Some(bucket.clone()),
            Node::Dir { prefix, .. } => Some(prefix.clone()),
            Node::Object { name, .. } | Node::ObjectMeta { name, .. } => Some(name.clone()),
            _ => return Err(VfsError::invalid(format!("{dir}: cookie {after} is not in it"))),
        };
        Ok(DirStream::new(Vec::new(), last_key))
    }

    /// The entries a directory lists before its children: the settings.
    async fn fixed_entries(&self, dir: &Node) -> VfsResult<Vec<DirEntry>> {
        Ok(match dir {
            Node::Dir { project, bucket, prefix } => vec![self.cx.dir_entry(Node::MetaDir {
                project: project.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            })],
            Node::MetaDir { project, bucket, prefix } if prefix.is_empty() => {
                let meta = self.bucket_meta(bucket).await?;
                let node = Node::BucketMeta { project: project.clone(), bucket: bucket.clone() };
                match self.cx.local.is_hidden_at(&node, Some(&bucket_version(&meta))) {
                    true => Vec::new(),
                    false => vec![self.bucket_meta_entry(project, &meta)],
                }
            }
            _ => Vec::new(),
        })
    }

    /// Fetches the next page of `dir`'s listing into the stream.
    async fn fetch_page(&self, dir: &Node, stream: &mut DirStream) -> VfsResult<()> {
        match dir {
            Node::Service { project, service: Service::Storage } => self.fetch_buckets(project, stream).await,
            Node::Dir { project, bucket, prefix } => {
                self.fetch_objects(&ListedDir { project, bucket, prefix, documents_only: false }, stream).await
            }
            Node::MetaDir { project, bucket, prefix } => {
                self.fetch_objects(&ListedDir { project, bucket, prefix, documents_only: true }, stream).await
            }
            _ => Err(VfsError::not_dir(format!("{dir}: not a directory"))),
        }
    }

    /// All of a project's buckets at once, in name order: a project has few,
    /// and fake-gcs-server lists them in no order, so pages cannot stream.
    async fn fetch_buckets(&self, project: &str, stream: &mut DirStream) -> VfsResult<()> {
        let mut buckets = self.list_project_buckets(project).await?;
        buckets.extend(self.pending_buckets_of(project));
        // Stable: a bucket listed as it stops waiting shows as listed.
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        buckets.dedup_by(|later, first| later.name == first.name);
        for bucket in buckets {
            if let Some(why) = unusable_segment(&bucket.name) {
                tracing::warn!(bucket = %bucket.name, why, "not shown: cannot be a file name");
                continue;
            }
            let entry = self.bucket_entry(project, &bucket);
            if !self.pending_buckets.contains(&bucket.name) {
                self.cache.put(key(&bucket.name, ""), Known::Bucket(Arc::new(bucket)));
            }
            if stream.last_key.as_ref().is_none_or(|last| entry.name > *last) {
                stream.last_key = Some(entry.name.clone());
                stream.pending.push_back(entry);
            }
        }
        stream.next = Next::Done;
        Ok(())
    }

    /// The next page of a bucket directory's listing (or, for `.meta/`, one
    /// document per object): from the cached listing when there is one,
    /// all at once; else one list call, whose objects and prefixes are
    /// merged in key order and, once the last page came, cached together.
    async fn fetch_objects(&self, dir: &ListedDir<'_>, stream: &mut DirStream) -> VfsResult<()> {
        let (bucket, prefix) = (dir.bucket, dir.prefix);
        if self.pending_buckets.contains(bucket) {
            // Nothing in it yet.
            stream.next = Next::Done;
            return Ok(());
        }
        if let Next::Cached(_) = stream.next {
            self.replay_chunk(dir, stream);
            return Ok(());
        }
        if let Next::Start = stream.next {
            if let Some(listing) = self.cache.listings.get(bucket, prefix) {
                tracing::debug!(
                    bucket,
                    prefix,
                    entries = listing.objects.len() + listing.prefixes.len(),
                    "cached listing"
                );
                stream.listing = Some(listing.id);
                stream.next = Next::Cached(Replay::new(listing, stream.last_key.as_deref()));
                self.replay_chunk(dir, stream);
                return Ok(());
            }
            if stream.last_key.is_none() {
                // From the start: the whole listing can be cached.
                let started = self.cache.listings.start();
                stream.collected = Some(Collected { started, objects: Vec::new(), prefixes: Vec::new() });
            }
        }
        let request = ListObjects {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            delimiter: Some("/".to_string()),
            page_token: match &stream.next {
                Next::Token(token) => Some(token.clone()),
                _ => None,
            },
            page_size: self.cx.options.page_size,
            start_offset: match stream.next {
                Next::Start => stream.last_key.clone(),
                _ => None,
            },
        };
        let started = self.cache.start();
        let page = self.gcs.list_objects(&request).await.map_err(vfs_error)?;
        stream.next = page.next_page_token.clone().map_or(Next::Done, Next::Token);
        // With more pages to come, only what sorts before the page's last
        // object is sure to be in order.
        let boundary = match stream.next {
            Next::Done => None,
            _ => page.objects.iter().map(|o| o.name.clone()).max(),
        };
        // `prefix` itself is the directory's placeholder object.
        let objects: Vec<Arc<ObjectMeta>> = page
            .objects
            .into_iter()
            .filter(|meta| meta.name.len() > prefix.len() && meta.name.starts_with(prefix))
            .map(Arc::new)
            .collect();
        for meta in &objects {
            self.cache.put_fetched(key(bucket, &meta.name), Known::Object(meta.clone()), started);
        }
        let prefixes: Vec<String> = page.prefixes.into_iter().filter(|full| full.starts_with(prefix)).collect();
        for full in &prefixes {
            self.cache.put_fetched(key(bucket, full), Known::Prefix, started);
        }
        if let Some(collected) = stream.collected.as_mut() {
            collected.objects.extend(objects.iter().cloned());
            collected.prefixes.extend(prefixes.iter().cloned());
        }
        let listing = match (&stream.next, stream.collected.take()) {
            (Next::Done, Some(all)) => {
                Some(self.cache.listings.put(bucket, prefix, all.objects, all.prefixes, all.started))
            }
            (_, collected) => {
                stream.collected = collected;
                None
            }
        };
        stream.listing = listing.as_ref().map(|l| l.id);
        self.push_children(dir, &objects, &prefixes, boundary.as_deref(), listing.as_deref(), stream);
        Ok(())
    }

    /// The next chunk of the cached listing the stream continues, added to
    /// it as a page of the listing would be.
    fn replay_chunk(&self, dir: &ListedDir<'_>, stream: &mut DirStream) {
        let Next::Cached(mut replay) = std::mem::replace(&mut stream.next, Next::Done) else {
            return;
        };
        let listing = replay.listing.clone();
        let chunk = replay.take(self.cx.options.page_size.max(1) as usize);
        self.push_children(dir, chunk.objects, chunk.prefixes, chunk.boundary, Some(&listing), stream);
        if !replay.is_done() {
            stream.next = Next::Cached(replay);
        }
    }

    /// Adds a listing's children to the stream in key order: each object
    /// and prefix after the stream's last key and up to `boundary` (past
    /// it, they wait for the next page), as an entry of the directory or,
    /// `documents_only`, of its `.meta/`.
    fn push_children(
        &self,
        dir: &ListedDir<'_>,
        objects: &[Arc<ObjectMeta>],
        prefixes: &[String],
        boundary: Option<&str>,
        listing: Option<&Listing>,
        stream: &mut DirStream,
    ) {
        let ListedDir { project, bucket, prefix, documents_only } = *dir;
        let mut children: BTreeMap<String, (String, Child)> =
            stream.carried.drain(..).map(|(name, child)| (child.key().to_string(), (name, child))).collect();
        for meta in objects {
            let name = meta.name.get(prefix.len()..).unwrap_or_default().to_string();
            children.insert(meta.name.clone(), (name, Child::Object(meta.clone())));
        }
        for full in prefixes {
            let Some(name) = full.strip_prefix(prefix).and_then(|n| n.strip_suffix('/')) else {
                continue;
            };
            children.insert(full.clone(), (name.to_string(), Child::Prefix(full.clone())));
        }
        let prefix_names: HashSet<String> = children
            .values()
            .filter(|(_, child)| matches!(child, Child::Prefix(_)))
            .map(|(name, _)| name.clone())
            .collect();
        let mut waiting = false;
        for (child_key, (name, child)) in children {
            if stream.last_key.as_ref().is_some_and(|last| child_key <= *last) {
                continue;
            }
            // Past the boundary, or an object whose prefix twin (`name/`)
            // would sort past it: this and all after wait for the next page,
            // so that order holds and a directory still hides its twin.
            waiting = waiting
                || boundary.is_some_and(|b| {
                    child_key.as_str() > b
                        || (matches!(child, Child::Object(_)) && format!("{child_key}/").as_str() > b)
                });
            if waiting {
                stream.carried.push((name, child));
                continue;
            }
            if let Some(why) = unusable_segment(&name) {
                tracing::warn!(bucket, name = %child_key, why, "not shown: cannot be a file name");
                continue;
            }
            let entry = match (&child, documents_only) {
                (Child::Object(_), _) if prefix_names.contains(&name) => {
                    tracing::warn!(bucket, name = %child_key, "object hidden by a directory of the same name");
                    continue;
                }
                // A configuration-only tree shows no objects.
                (Child::Object(_), false) if self.cx.options.config_only => continue,
                (Child::Object(meta), false) => self.object_entry(project, meta),
                (Child::Object(_), true) if prefix.is_empty() && format!("{name}{META_SUFFIX}") == BUCKET_META => {
                    tracing::warn!(bucket, "the document of object `_bucket` is hidden by .meta/_bucket.json");
                    continue;
                }
                (Child::Object(meta), true) => {
                    let node = Node::ObjectMeta {
                        project: project.to_string(),
                        bucket: bucket.to_string(),
                        name: meta.name.clone(),
                    };
                    if self.cx.local.is_hidden_at(&node, Some(&object_version(meta))) {
                        continue;
                    }
                    self.listed_object_meta_entry(project, meta, listing)
                }
                (Child::Prefix(full), false) => self.cx.dir_entry(Node::Dir {
                    project: project.to_string(),
                    bucket: bucket.to_string(),
                    prefix: full.clone(),
                }),
                (Child::Prefix(_), true) => continue,
            };
            stream.last_key = Some(child_key);
            stream.pending.push_back(entry);
        }
    }
}

/// Which object a `.meta/` document describes: a removed document stays
/// hidden only while its object is this one.
fn object_version(meta: &ObjectMeta) -> String {
    format!("generation {}", meta.generation)
}

/// Which bucket `_bucket.json` describes (a bucket made again is another).
fn bucket_version(meta: &BucketMeta) -> String {
    format!("created {:?}", meta.created)
}

impl StorageTree {
    /// The version of what the storage document `node` describes, when it
    /// is removed: its object's generation (None: no object yet), or its
    /// bucket's creation.
    pub async fn described_version(&self, node: &Node) -> VfsResult<Option<String>> {
        match node {
            Node::ObjectMeta { bucket, name, .. } => match self.resolve(bucket, name).await? {
                Known::Object(meta) => Ok(Some(object_version(&meta))),
                _ => Ok(None),
            },
            Node::BucketMeta { bucket, .. } => Ok(Some(bucket_version(&*self.bucket_meta(bucket).await?))),
            _ => Ok(None),
        }
    }
}

fn modified(meta: &ObjectMeta) -> SystemTime {
    meta.updated.or(meta.created).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Cloud Storage's answers to what the namespace asks of every service.
#[async_trait]
impl Slice for StorageTree {
    async fn lookup(&self, dir: &Node, name: &str) -> VfsResult<DirEntry> {
        self.lookup_in(dir, name).await
    }

    /// A removed or replaced object's inode is stale (`Context::still_named`).
    async fn stat(&self, ino: Ino, node: &Node) -> VfsResult<(u64, SystemTime)> {
        self.cx.still_named(ino, node)?;
        self.stat_node(node).await
    }

    async fn readdir(&self, dir: &Node, ino: Ino, fh: Fh, after: Ino, max: usize) -> VfsResult<DirPage> {
        self.readdir_page(dir, ino, fh, after, max).await
    }

    async fn mkdir(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        self.make_dir(dir, name).await
    }

    async fn rmdir(&self, dir: &Node, name: &str) -> VfsResult<()> {
        self.remove_dir(dir, name).await
    }

    async fn document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        self.document_of(node).await
    }

    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()> {
        match node {
            Node::ObjectMeta { bucket, name, .. } => self.apply_object_meta(bucket, name, data).await,
            Node::BucketMeta { bucket, .. } => self.apply_bucket_meta(bucket, data).await,
            // A scratch file beside the documents (an editor's swap file)
            // applies nothing.
            _ => Ok(()),
        }
    }

    async fn create_due(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        self.create_due_buckets(which).await
    }

    /// A bucket or prefix (or its `.meta/`) forgets every name under it;
    /// `storage/` forgets which buckets the project has.
    fn forget_cached(&self, dir: &Node) {
        match dir {
            Node::Dir { bucket, prefix, .. } | Node::MetaDir { bucket, prefix, .. } => {
                self.cache.forget_under(bucket, prefix);
                // The kernel may keep the entries under it for the TTL too:
                // each is asked for again (one gone behind the mount's back
                // is then ENOENT).
                self.cx.attributes_changed_where(|node| match node {
                    Node::Object { bucket: b, name, .. } | Node::ObjectMeta { bucket: b, name, .. } => {
                        b == bucket && name.starts_with(prefix.as_str())
                    }
                    Node::Dir { bucket: b, prefix: p, .. } | Node::MetaDir { bucket: b, prefix: p, .. } => {
                        b == bucket && p.starts_with(prefix.as_str()) && p != prefix
                    }
                    _ => false,
                });
                tracing::debug!(bucket, prefix, "cached names forgotten");
            }
            Node::Service { project, .. } => self.project_buckets.forget(project),
            _ => {}
        }
    }
}
