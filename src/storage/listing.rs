//! Directory listings that stream page by page.
//!
//! A listing is a sequence of entries in a fixed order (settings files
//! first, then children in Cloud Storage key order). Frontends ask for it in
//! slices, each continuing after the inode number of the last entry they
//! took (the cookie). A `DirStream` keeps the entries of the current page and
//! the last ones it handed out, so a frontend that took fewer entries than it
//! was given (a full FUSE reply buffer) continues without a new list call.
//! A listing read from its start to its end is kept whole in the metadata
//! cache for the TTL, and the next stream of the directory (or of its
//! `.meta/`) is served from it at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciofs_backends::gcs::ObjectMeta;
use ciofs_backends::sync::lock;
use ciofs_frontends::{DirEntry, Fh, Ino};

use crate::core::cache::{Listing, ListingStart};

/// How many returned entries a stream keeps to serve a step back.
const KEEP_RETURNED: usize = 1024;
/// How many streams one directory handle keeps (NFS has one handle for all).
const STREAMS_PER_HANDLE: usize = 8;
/// How many directory handles keep streams at once.
const MAX_HANDLES: usize = 4096;
/// Past this many handles, streams idle this long go (NFS never closes a
/// directory, so its streams would otherwise stay).
const PRUNE_AT: usize = 256;
const IDLE: Duration = Duration::from_secs(60);

/// Where the next page of a listing comes from.
pub enum Next {
    /// Nothing fetched yet.
    Start,
    /// Continue with this page token.
    Token(String),
    /// Continue the cached listing.
    Cached(Replay),
    Done,
}

impl Next {
    pub fn is_done(&self) -> bool {
        matches!(self, Next::Done)
    }
}

/// A cached listing handed out a chunk at a time, as if in pages (of
/// `--page-size` children), so that what a stream holds stays bounded
/// however large the directory: where its next chunk starts among its
/// objects and among its prefixes.
pub struct Replay {
    pub listing: Arc<Listing>,
    objects: usize,
    prefixes: usize,
}

impl Replay {
    /// Positioned after `last_key` (None: at the start).
    pub fn new(listing: Arc<Listing>, last_key: Option<&str>) -> Self {
        let (objects, prefixes) = match last_key {
            Some(last) => (
                listing.objects.partition_point(|meta| meta.name.as_str() <= last),
                listing.prefixes.partition_point(|full| full.as_str() <= last),
            ),
            None => (0, 0),
        };
        Self { listing, objects, prefixes }
    }

    /// Takes the next `max` children in key order: the objects and the
    /// prefixes taken, and the key of the last one unless they were the
    /// listing's last (the boundary of this chunk, as of a page).
    pub fn take(&mut self, max: usize) -> Chunk<'_> {
        let (objects, prefixes) = (&self.listing.objects, &self.listing.prefixes);
        let (mut o, mut p) = (self.objects, self.prefixes);
        let mut last = None;
        for _ in 0..max {
            let object = objects.get(o).map(|meta| meta.name.as_str());
            let prefix = prefixes.get(p).map(String::as_str);
            match (object, prefix) {
                (Some(name), Some(full)) if name <= full => (o, last) = (o + 1, Some(name)),
                (_, Some(full)) => (p, last) = (p + 1, Some(full)),
                (Some(name), None) => (o, last) = (o + 1, Some(name)),
                (None, None) => break,
            }
        }
        let ended = o == objects.len() && p == prefixes.len();
        let chunk = Chunk {
            objects: &objects[self.objects..o],
            prefixes: &prefixes[self.prefixes..p],
            boundary: if ended { None } else { last },
        };
        (self.objects, self.prefixes) = (o, p);
        chunk
    }

    pub fn is_done(&self) -> bool {
        self.objects == self.listing.objects.len() && self.prefixes == self.listing.prefixes.len()
    }
}

/// Children of a cached listing taken together (`Replay::take`).
pub struct Chunk<'a> {
    pub objects: &'a [Arc<ObjectMeta>],
    pub prefixes: &'a [String],
    /// Children after it wait for the next chunk (None: none follow).
    pub boundary: Option<&'a str>,
}

/// A child of a bucket directory, as a listing returns it.
#[derive(Clone, Debug)]
pub enum Child {
    Object(Arc<ObjectMeta>),
    /// The full prefix, ending with `/`.
    Prefix(String),
}

impl Child {
    /// The child's Cloud Storage key, which orders the listing.
    pub fn key(&self) -> &str {
        match self {
            Child::Object(meta) => &meta.name,
            Child::Prefix(full) => full,
        }
    }
}

pub struct DirStream {
    pub last_used: Instant,
    pub returned: VecDeque<DirEntry>,
    pub pending: VecDeque<DirEntry>,
    pub next: Next,
    /// The key of the last child handed on (or the cookie's, when a listing
    /// resumes): children at or before it are not listed again.
    pub last_key: Option<String>,
    /// Prefixes of a page that sort after its last object, kept for the next
    /// page (fake-gcs-server returns every prefix after the page's start).
    pub carried: Vec<(String, Child)>,
    /// Files being written but not uploaded were added after the listing.
    pub local_added: bool,
    /// The pages of a listing from its start, kept to be cached whole
    /// (core/cache.rs `ListingCache`) once its last page came.
    pub collected: Option<Collected>,
    /// The cached listing this stream's entries came from, if any.
    pub listing: Option<u64>,
    /// It began at the directory's first entry.
    pub from_start: bool,
}

/// What the pages of one listing held so far.
pub struct Collected {
    pub started: ListingStart,
    pub objects: Vec<Arc<ObjectMeta>>,
    pub prefixes: Vec<String>,
}

impl DirStream {
    pub fn new(first: Vec<DirEntry>, last_key: Option<String>) -> Self {
        Self {
            last_used: Instant::now(),
            returned: VecDeque::new(),
            pending: first.into(),
            next: Next::Start,
            last_key,
            carried: Vec::new(),
            local_added: false,
            collected: None,
            listing: None,
            from_start: false,
        }
    }

    /// Whether the stream is positioned so that it can continue after
    /// `after`: rewinds to it if it was handed out recently.
    pub fn seek(&mut self, after: Ino) -> bool {
        if after == 0 {
            return self.returned.is_empty();
        }
        let Some(at) = self.returned.iter().rposition(|e| e.attr.ino == after) else {
            return false;
        };
        while self.returned.len() > at + 1 {
            if let Some(entry) = self.returned.pop_back() {
                self.pending.push_front(entry);
            }
        }
        true
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty() && self.next.is_done() && self.carried.is_empty() && self.local_added
    }

    /// Hands out up to `max` pending entries.
    pub fn take(&mut self, max: usize) -> Vec<DirEntry> {
        let count = max.min(self.pending.len());
        let entries: Vec<DirEntry> = self.pending.drain(..count).collect();
        self.returned.extend(entries.iter().cloned());
        while self.returned.len() > KEEP_RETURNED {
            self.returned.pop_front();
        }
        entries
    }
}

/// The open listings, by directory and handle.
#[derive(Default)]
pub struct DirStreams {
    streams: Mutex<HashMap<(Ino, Fh), Vec<DirStream>>>,
}

impl DirStreams {
    /// Takes out a stream of `dir` that can continue after `after`.
    pub fn take(&self, dir: Ino, fh: Fh, after: Ino) -> Option<DirStream> {
        let mut streams = lock(&self.streams);
        let list = streams.get_mut(&(dir, fh))?;
        let at = list.iter_mut().position(|s| s.seek(after))?;
        Some(list.remove(at))
    }

    pub fn put_back(&self, dir: Ino, fh: Fh, mut stream: DirStream) {
        stream.last_used = Instant::now();
        let mut streams = lock(&self.streams);
        if streams.len() >= PRUNE_AT {
            streams.retain(|_, list| {
                list.retain(|s| s.last_used.elapsed() < IDLE);
                !list.is_empty()
            });
        }
        if streams.len() >= MAX_HANDLES && !streams.contains_key(&(dir, fh)) {
            // Rare: many directories listed over NFS at once. Any will do.
            if let Some(key) = streams.keys().next().copied() {
                streams.remove(&key);
            }
        }
        let list = streams.entry((dir, fh)).or_default();
        if list.len() >= STREAMS_PER_HANDLE {
            list.remove(0);
        }
        list.push(stream);
    }

    pub fn close(&self, dir: Ino, fh: Fh) {
        lock(&self.streams).remove(&(dir, fh));
    }
}
