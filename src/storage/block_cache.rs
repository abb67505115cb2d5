//! Object content by block, in a foyer hybrid cache: a memory tier, and a
//! disk tier under the cache directory that a later mount recovers.
//!
//! A block is `BLOCK_SIZE` bytes of one object generation, keyed by
//! (bucket, object, generation, index). A new generation of an object is a
//! new key: stale bytes are never served and nothing needs invalidating.
//! The disk tier checksums every entry (foyer's xxHash64, checked on load),
//! so a corrupt block is a miss and is fetched again, never wrong bytes.
//! However many readers want a block at once, it is fetched once.
//!
//! The directory and what is in it are the user's alone (0700 and 0600).
//! One process at a time uses a cache directory: it holds an exclusive lock
//! on `DIR/lock` for as long as it runs, and a second mount naming the same
//! directory is refused with a clear error rather than sharing foyer's
//! files, which are not made for two writers.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ciofs_backends::{BackendError, BackendResult, ErrorKind};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, Event, EventListener, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, RecoverMode, Source,
};
use futures::future::BoxFuture;
use nix::fcntl::{Flock, FlockArg};

use crate::core::context::CacheOptions;
use crate::core::private_files::{self, Open, private_dir};

/// The unit of fetching and caching. Measured on fake-gcs-server: a 1 MiB
/// range costs about what a 4 KiB one does, and 4 MiB blocks made cold
/// random 4 KiB reads slower without speeding sequential ones.
pub const BLOCK_SIZE: u64 = 1 << 20;
/// The smallest region of the disk tier (`region_size`), and the most
/// regions (open files) it has.
const MIN_REGION: u64 = 16 << 20;
const MAX_REGIONS: u64 = 32;
/// How many lookups pass between two summaries in the debug log.
const SUMMARY_EVERY: u64 = 1024;
/// The memory tier is one shard. A shard gets an equal share of the bytes
/// and keeps to it, and blocks fall into shards by their hash, so with
/// several a shard overflows and evicts while the tier has room: a 256 MiB
/// object read through 4 shards of a 256 MiB tier kept 246 blocks and sent
/// the rest through the disk tier at every access (fio 4 KiB random reads:
/// 6,300 IOPS; one shard holds all 256, 13,000-18,000). A shard's lock is
/// held for a lookup per block, not per byte: contention stays low.
const MEMORY_SHARDS: usize = 1;
/// What the disk tier buffers on its way to disk (foyer's buffer pool).
const WRITE_BUFFER: usize = 4 << 20;
/// What foyer adds to an entry in its write buffer, at most: a header, and
/// padding to the next 4 KiB page.
const ENTRY_OVERHEAD: usize = 8 << 10;
/// Below this, a disk tier is not worth having (nor is it left on).
const MIN_DISK_BYTES: u64 = 4 * MIN_REGION;

/// A block of one object generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub index: u64,
}

impl Code for BlockKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        for text in [&self.bucket, &self.name] {
            writer.write_all(&(text.len() as u32).to_le_bytes())?;
            writer.write_all(text.as_bytes())?;
        }
        writer.write_all(&self.generation.to_le_bytes())?;
        writer.write_all(&self.index.to_le_bytes())?;
        Ok(())
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut text = || -> foyer::Result<String> {
            let mut len = [0; 4];
            reader.read_exact(&mut len)?;
            let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
            reader.read_exact(&mut bytes)?;
            String::from_utf8(bytes).map_err(|e| foyer::Error::new(foyer::ErrorKind::Parse, e.to_string()))
        };
        let (bucket, name) = (text()?, text()?);
        let mut word = [0; 8];
        reader.read_exact(&mut word)?;
        let generation = i64::from_le_bytes(word);
        reader.read_exact(&mut word)?;
        Ok(Self { bucket, name, generation, index: u64::from_le_bytes(word) })
    }

    fn estimated_size(&self) -> usize {
        8 + self.bucket.len() + self.name.len() + 16
    }
}

pub struct BlockCache {
    cache: HybridCache<BlockKey, Bytes>,
    counts: Arc<Counts>,
    /// Held while this process uses the directory.
    _lock: Option<Flock<File>>,
}

impl BlockCache {
    /// Opens the cache: the disk tier's directory locked and its blocks
    /// recovered. An error says what the user can do about it.
    pub async fn open(options: &CacheOptions) -> Result<Self, String> {
        let counts = Arc::new(Counts::default());
        let Some((device, lock)) = open_disk(options)? else {
            return Self::memory_only(options, counts).await;
        };
        let region = region_size(device.capacity() as u64);
        let engine = BlockEngineConfig::new(device)
            .with_block_size(region)
            // One flusher has the whole write buffer: foyer splits the pool
            // among its flushers, and `flush_to_disk` sizes its batches to
            // one buffer.
            .with_flushers(1)
            .with_buffer_pool_size(WRITE_BUFFER)
            // What waits for the flusher (past this, foyer drops it): each
            // holds a block's memory until written.
            .with_submit_queue_size_threshold(4 * WRITE_BUFFER);
        let built = builder(options, counts.clone())
            .with_engine_config(engine)
            .with_recover_mode(RecoverMode::Quiet)
            .build()
            .await;
        match built {
            Ok(cache) => Ok(Self { cache, counts, _lock: Some(lock) }),
            // Out of file descriptors, say: the mount serves without it.
            Err(e) => {
                tracing::warn!(error = %e, "content cache: cannot open the disk tier; memory only");
                Self::memory_only(options, counts).await
            }
        }
    }

    async fn memory_only(options: &CacheOptions, counts: Arc<Counts>) -> Result<Self, String> {
        let cache = builder(options, counts.clone())
            .build()
            .await
            .map_err(|e| format!("cannot open the content cache: {e}"))?;
        Ok(Self { cache, counts, _lock: None })
    }

    /// A block: from memory, else from disk, else from `fetch`, whose
    /// bytes are then cached. Readers of the same block share one fetch.
    pub async fn block<F, Fut>(&self, key: &BlockKey, fetch: F) -> BackendResult<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = BackendResult<Bytes>> + Send + 'static,
    {
        match self.cache.get_or_fetch(key, self.counting(fetch)).await {
            Ok(entry) => {
                self.counted(key, entry.source());
                Ok(entry.value().clone())
            }
            Err(e) => Err(backend_error(e)),
        }
    }

    /// Starts loading a block from disk, or fetching it, without waiting
    /// for it; nothing if it is in memory or on its way.
    pub fn prefetch<F, Fut>(&self, key: &BlockKey, fetch: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = BackendResult<Bytes>> + Send + 'static,
    {
        // foyer runs the load and the fetch on tasks of their own: dropping
        // the wait does not cancel them.
        drop(self.cache.get_or_fetch(key, self.counting(fetch)));
    }

    /// `fetch`, counting the block it brings in as a miss: where it is
    /// fetched, as a reader may be served by a fetch started ahead of it.
    fn counting<F, Fut>(&self, fetch: F) -> impl FnOnce() -> BoxFuture<'static, BackendResult<Bytes>> + use<F, Fut>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = BackendResult<Bytes>> + Send + 'static,
    {
        let counts = self.counts.clone();
        move || {
            let fetching = fetch();
            Box::pin(async move {
                let fetched = fetching.await;
                if let Ok(block) = &fetched {
                    counts.misses.fetch_add(1, Ordering::Relaxed);
                    counts.fetched_bytes.fetch_add(block.len() as u64, Ordering::Relaxed);
                    metrics::counter!("ciofs_content_cache_misses_total").increment(1);
                    metrics::counter!("ciofs_content_cache_fetched_bytes_total").increment(block.len() as u64);
                }
                fetched
            })
        }
    }

    /// Whether the block is in memory or (likely) on disk.
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.cache.contains(key)
    }

    /// Drops the blocks of a generation replaced elsewhere: none will be
    /// read again, and they would take the room of those that will.
    pub fn remove_generation(&self, bucket: &str, name: &str, generation: i64, size: u64) {
        let blocks = size.div_ceil(BLOCK_SIZE).max(1);
        for index in 0..blocks {
            self.cache.remove(&BlockKey { bucket: bucket.to_string(), name: name.to_string(), generation, index });
        }
    }

    /// Bytes held in memory.
    pub fn memory_usage(&self) -> usize {
        self.cache.memory().usage()
    }

    /// Counts a block served from memory or disk (a block that had to be
    /// fetched was counted by `counting`); every so often, and at debug,
    /// logs what the cache did so far.
    fn counted(&self, key: &BlockKey, source: Source) {
        let c = &self.counts;
        let hit = match source {
            Source::Memory => Some((&c.memory_hits, "memory")),
            Source::Disk => Some((&c.disk_hits, "disk")),
            Source::Outer => None,
        };
        if let Some((counter, tier)) = hit {
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ciofs_content_cache_hits_total", "tier" => tier).increment(1);
        }
        let (b, served) = (key, hit.map_or("fetched", |(_, tier)| tier));
        tracing::trace!(bucket = %b.bucket, object = %b.name, generation = b.generation, block = b.index, served, "content cache");
        if c.lookups.fetch_add(1, Ordering::Relaxed) % SUMMARY_EVERY == SUMMARY_EVERY - 1 {
            tracing::debug!("content cache: {}", self.summary());
        }
    }

    /// Hits by tier, misses, evictions from memory, and the bytes of each
    /// tier, as `name=value` pairs.
    fn summary(&self) -> String {
        let c = &self.counts;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let disk = self.cache.statistics();
        format!(
            "memory_hits={} disk_hits={} misses={} evicted={} fetched_bytes={} memory_bytes={} disk_written={} disk_read={}",
            load(&c.memory_hits),
            load(&c.disk_hits),
            load(&c.misses),
            load(&c.evicted),
            load(&c.fetched_bytes),
            self.memory_usage(),
            disk.disk_write_bytes(),
            disk.disk_read_bytes(),
        )
    }

    /// Writes the memory tier to disk and waits for blocks on their way
    /// there, so that the next mount on the directory has them.
    pub async fn close(&self) {
        // Before the flush, which empties memory and counts as evictions.
        tracing::info!("content cache: {}", self.summary());
        let written = || self.cache.statistics().disk_write_bytes();
        let before = written();
        self.flush_to_disk().await;
        if let Err(e) = self.cache.close().await {
            tracing::warn!(error = %e, "content cache: not closed cleanly");
        }
        tracing::info!(bytes = written() - before, "content cache: memory written to disk at close");
    }

    /// Moves the memory tier to disk a write buffer at a time. foyer drops
    /// what its write buffer has no room for when it comes (a cache may
    /// lose entries), so handing it the whole tier at once wrote three
    /// blocks of it; each `flush_if` first waits for the previous batch to
    /// be written.
    async fn flush_to_disk(&self) {
        if !self.cache.is_hybrid() {
            return;
        }
        loop {
            let (mut room, mut taken) = (WRITE_BUFFER, 0);
            self.cache
                .flush_if(|key, block| {
                    let size = key.estimated_size() + block.len() + ENTRY_OVERHEAD;
                    let fits = size <= room;
                    if fits {
                        room -= size;
                        taken += 1;
                    }
                    fits
                })
                .await;
            if taken == 0 {
                return;
            }
        }
    }
}

/// The cache's memory tier, ready for a disk tier or none.
fn builder(
    options: &CacheOptions,
    counts: Arc<Counts>,
) -> foyer::HybridCacheBuilderPhaseStorage<BlockKey, Bytes, foyer::DefaultHasher> {
    HybridCacheBuilder::new()
        .with_name("ciofs-blocks")
        // To disk when evicted from memory, and what memory holds at
        // close: foyer's other policy writes every hit to disk again.
        // (A killed process loses what only its memory held.)
        .with_policy(HybridCachePolicy::WriteOnEviction)
        .with_flush_on_close(true)
        .with_event_listener(counts)
        .memory(options.memory_bytes)
        .with_shards(MEMORY_SHARDS)
        .with_weighter(|_: &BlockKey, block: &Bytes| block.len())
        .storage()
}

/// The disk tier's regions (foyer's "blocks", its unit of writing and
/// eviction): each is a file held open, so there are at most
/// `MAX_REGIONS` of them, each a power of two from 16 MiB.
fn region_size(disk_bytes: u64) -> usize {
    (disk_bytes / MAX_REGIONS).next_power_of_two().max(MIN_REGION) as usize
}

/// What the cache did, for the log (the metrics are recorded as it goes).
#[derive(Default)]
struct Counts {
    lookups: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    /// Blocks evicted from the memory tier.
    evicted: AtomicU64,
    fetched_bytes: AtomicU64,
}

impl EventListener for Counts {
    type Key = BlockKey;
    type Value = Bytes;

    fn on_leave(&self, reason: Event, _: &BlockKey, _: &Bytes) {
        if reason == Event::Evict {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ciofs_content_cache_evictions_total").increment(1);
        }
    }
}

/// The fetch's own error when it failed, else the cache's.
fn backend_error(e: foyer::Error) -> BackendError {
    match e.downcast_ref::<BackendError>() {
        Some(backend) => backend.clone(),
        None => BackendError::new(ErrorKind::Other, format!("content cache: {e}")),
    }
}

type Device = Arc<dyn foyer::Device>;

/// The disk tier's device and the directory's lock; none when the options
/// name no disk tier or the file system has too little room for one.
fn open_disk(options: &CacheOptions) -> Result<Option<(Device, Flock<File>)>, String> {
    let Some(disk) = &options.disk else { return Ok(None) };
    let dir = &disk.dir;
    let problem = |what: &str, e: &dyn std::fmt::Display| format!("cache directory {}: {what}: {e}", dir.display());
    // Object content: nobody else's to read.
    private_dir(&dir.join("blocks")).map_err(|e| problem("cannot make it private", &e))?;
    private_dir(dir).map_err(|e| problem("cannot make it private", &e))?;
    let lock = lock_dir(dir)?;
    let bytes =
        disk_bytes(dir, disk.max_bytes, disk.keep_free).map_err(|e| problem("cannot measure its file system", &e))?;
    if bytes < MIN_DISK_BYTES {
        tracing::warn!(dir = %dir.display(), bytes, "content cache: too little free disk for a disk tier; memory only");
        return Ok(None);
    }
    let device = FsDeviceBuilder::new(dir.join("blocks"))
        .with_capacity(bytes as usize)
        .build()
        .map_err(|e| problem("cannot open the disk tier", &e))?;
    tracing::info!(dir = %dir.display(), bytes, "content cache: disk tier");
    Ok(Some((device, lock)))
}

/// Locks `dir` for this process, or says who has it.
fn lock_dir(dir: &Path) -> Result<Flock<File>, String> {
    let path = dir.join("lock");
    let file = private_files::open(&path, Open::ReadWrite)
        .map_err(|e| format!("cache directory {}: cannot open its lock: {e}", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // Who holds it, for the error another mount shows.
            let _ = lock.set_len(0);
            let _ = write!(lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((_, _)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = if holder.trim().is_empty() {
                "another process".to_string()
            } else {
                format!("process {}", holder.trim())
            };
            Err(format!("cache directory {} is in use by {holder}; give each mount its own --cache-dir", dir.display()))
        }
    }
}

/// How big the disk tier may be: at most `max`, and no more than leaves
/// `keep_free` of the file system free (counting what the cache already
/// holds as room it may keep).
fn disk_bytes(dir: &Path, max: u64, keep_free: f64) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let unit = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * unit;
    let available = stat.blocks_available() as u64 * unit;
    let reserved = (total as f64 * keep_free) as u64;
    let room = (available + held_bytes(&dir.join("blocks"))).saturating_sub(reserved);
    let bytes = max.min(room);
    Ok(bytes - bytes % region_size(bytes) as u64)
}

/// The bytes the files in `dir` take on disk (they may be sparse).
fn held_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|entry| entry.metadata().ok()).map(|meta| meta.blocks() * 512).sum()
}

#[cfg(test)]
mod tests;
