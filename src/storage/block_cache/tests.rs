use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::core::context::DiskTier;

fn key(generation: i64, index: u64) -> BlockKey {
    BlockKey { bucket: "b".into(), name: "dir/o".into(), generation, index }
}

/// A block's bytes, different for every key.
fn bytes_of(key: &BlockKey, len: usize) -> Bytes {
    let seed = key.generation as usize * 1_000_003 + key.index as usize * 7919;
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect::<Vec<_>>().into()
}

/// Fetches that count themselves.
#[derive(Clone, Default)]
struct Origin {
    fetches: Arc<AtomicUsize>,
}

impl Origin {
    fn fetch(
        &self,
        key: &BlockKey,
        len: usize,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, BackendResult<Bytes>> {
        let (fetches, bytes) = (self.fetches.clone(), bytes_of(key, len));
        move || {
            Box::pin(async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(bytes)
            })
        }
    }

    fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn memory_only(bytes: usize) -> CacheOptions {
    CacheOptions { memory_bytes: bytes, disk: None }
}

/// A disk tier that leaves nothing free: the tests do not depend on how
/// full the machine's disk is.
fn with_disk(dir: &Path, memory_bytes: usize, disk_bytes: u64) -> CacheOptions {
    let disk = DiskTier { dir: dir.to_path_buf(), max_bytes: disk_bytes, keep_free: 0.0 };
    CacheOptions { memory_bytes, disk: Some(disk) }
}

/// Opens a cache on `options`, reads `blocks` through it from `origin`,
/// and closes it, so that they are on disk.
async fn fill_and_close(options: &CacheOptions, origin: &Origin, blocks: &[(BlockKey, usize)]) {
    let cache = BlockCache::open(options).await.unwrap();
    for (block, len) in blocks {
        cache.block(block, origin.fetch(block, *len)).await.unwrap();
    }
    cache.close().await;
}

#[tokio::test]
async fn the_same_block_is_fetched_once() {
    let cache = Arc::new(BlockCache::open(&memory_only(64 << 20)).await.unwrap());
    let origin = Origin::default();
    let readers = (0..16).map(|_| {
        let (cache, origin) = (cache.clone(), origin.clone());
        tokio::spawn(async move { cache.block(&key(1, 0), origin.fetch(&key(1, 0), 4096)).await.unwrap() })
    });
    for reader in readers {
        assert_eq!(reader.await.unwrap(), bytes_of(&key(1, 0), 4096));
    }
    assert_eq!(cache.block(&key(1, 0), origin.fetch(&key(1, 0), 4096)).await.unwrap(), bytes_of(&key(1, 0), 4096));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_new_generation_is_fetched_again() {
    let cache = BlockCache::open(&memory_only(64 << 20)).await.unwrap();
    let origin = Origin::default();
    cache.block(&key(1, 0), origin.fetch(&key(1, 0), 100)).await.unwrap();
    let newer = cache.block(&key(2, 0), origin.fetch(&key(2, 0), 100)).await.unwrap();
    assert_eq!(newer, bytes_of(&key(2, 0), 100));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_failed_fetch_is_its_own_error_and_is_not_cached() {
    let cache = BlockCache::open(&memory_only(64 << 20)).await.unwrap();
    let gone = || async { Err(BackendError::new(ErrorKind::NotFound, "generation 1 is gone")) };
    let error = cache.block(&key(1, 0), gone).await.unwrap_err();
    assert_eq!(error, BackendError::new(ErrorKind::NotFound, "generation 1 is gone"));
    let origin = Origin::default();
    cache.block(&key(1, 0), origin.fetch(&key(1, 0), 10)).await.unwrap();
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn the_memory_tier_keeps_to_its_size() {
    let cache = BlockCache::open(&memory_only(4 << 20)).await.unwrap();
    let origin = Origin::default();
    for index in 0..20 {
        cache.block(&key(1, index), origin.fetch(&key(1, index), 1 << 20)).await.unwrap();
        assert!(cache.memory_usage() <= 4 << 20, "{} bytes in memory", cache.memory_usage());
    }
}

/// Blocks are not spread over shards that each keep to a share of the
/// bytes: a tier holds as many blocks as its bytes, whatever their hashes.
#[tokio::test]
async fn the_memory_tier_holds_as_many_blocks_as_its_bytes() {
    let blocks = 256;
    let cache = BlockCache::open(&memory_only(blocks << 20)).await.unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    for _pass in 0..2 {
        for index in 0..blocks as u64 {
            let fetches = fetches.clone();
            let fetch = || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from(vec![index as u8; 1 << 20]))
            };
            let block = cache.block(&key(1, index), fetch).await.unwrap();
            assert!(block.len() == 1 << 20 && block[0] == index as u8);
        }
    }
    assert_eq!(fetches.load(Ordering::SeqCst), blocks, "every block fetched once: none evicted");
}

#[tokio::test]
async fn the_disk_tier_survives_a_reopen_and_keeps_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = with_disk(dir.path(), 2 << 20, MIN_DISK_BYTES);
    let origin = Origin::default();
    // Twice what the disk holds: the oldest go.
    let blocks = 2 * MIN_DISK_BYTES / BLOCK_SIZE;
    let filled: Vec<_> = (0..blocks).map(|index| (key(1, index), 1 << 20)).collect();
    fill_and_close(&options, &origin, &filled).await;
    assert!(held_bytes(&dir.path().join("blocks")) <= MIN_DISK_BYTES, "{}", held_bytes(&dir.path().join("blocks")));

    let cache = BlockCache::open(&options).await.unwrap();
    let before = origin.count();
    let last = key(1, blocks - 1);
    assert_eq!(cache.block(&last, origin.fetch(&last, 1 << 20)).await.unwrap(), bytes_of(&last, 1 << 20));
    assert_eq!(origin.count(), before, "the last block came from disk");
    cache.block(&key(1, 0), origin.fetch(&key(1, 0), 1 << 20)).await.unwrap();
    assert_eq!(origin.count(), before + 1, "the first block was evicted");
}

/// At close the whole memory tier goes to disk, not only what foyer's
/// write buffer takes at once.
#[tokio::test]
async fn a_closed_cache_has_every_block_of_its_memory_tier_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let options = with_disk(dir.path(), 32 << 20, MIN_DISK_BYTES);
    let origin = Origin::default();
    let blocks: Vec<_> = (0..32).map(|index| (key(1, index), 1 << 20)).collect();
    fill_and_close(&options, &origin, &blocks).await;

    let cache = BlockCache::open(&options).await.unwrap();
    let before = origin.count();
    for (block, len) in &blocks {
        assert!(cache.block(block, origin.fetch(block, *len)).await.unwrap() == bytes_of(block, *len));
    }
    assert_eq!(origin.count(), before, "every block came from disk");
}

#[tokio::test]
async fn a_corrupt_block_on_disk_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let options = with_disk(dir.path(), 2 << 20, MIN_DISK_BYTES);
    let origin = Origin::default();
    let block = key(7, 3);
    fill_and_close(&options, &origin, &[(block.clone(), 64 << 10)]).await;

    // Flip one byte in the middle of the block's bytes on disk.
    let needle = bytes_of(&block, 64 << 10).slice(30_000..30_064);
    let mut flipped = 0;
    for entry in std::fs::read_dir(dir.path().join("blocks")).unwrap() {
        let path = entry.unwrap().path();
        let mut data = std::fs::read(&path).unwrap();
        if let Some(at) = data.windows(needle.len()).position(|w| w == &needle[..]) {
            data[at + 10] ^= 0xff;
            std::fs::write(&path, &data).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1, "the block is on disk once");

    let cache = BlockCache::open(&options).await.unwrap();
    let before = origin.count();
    assert_eq!(cache.block(&block, origin.fetch(&block, 64 << 10)).await.unwrap(), bytes_of(&block, 64 << 10));
    assert_eq!(origin.count(), before + 1, "the corrupt copy was not served");
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = with_disk(dir.path(), 2 << 20, MIN_DISK_BYTES);
    let _first = BlockCache::open(&options).await.unwrap();
    // flock locks belong to the open file: a second open in this process
    // is refused as another process's would be.
    let error = BlockCache::open(&options).await.err().unwrap();
    assert!(error.contains("is in use by process"), "{error}");
    assert!(error.contains("--cache-dir"), "{error}");
}

#[tokio::test]
async fn too_little_room_means_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::open(&with_disk(dir.path(), 2 << 20, MIN_DISK_BYTES - 1)).await.unwrap();
    assert!(!cache.cache.is_hybrid());
}

#[test]
fn the_disk_tier_has_at_most_32_regions_of_16_mib_and_up() {
    assert_eq!(region_size(MIN_DISK_BYTES), 16 << 20);
    assert_eq!(region_size(10 << 30), 512 << 20);
    for bytes in [64 << 20, 1 << 30, (10 << 30) + 12345, 3 << 40] {
        let region = region_size(bytes) as u64;
        assert!(region.is_power_of_two() && region >= MIN_REGION, "{bytes}: {region}");
        assert!(bytes / region <= MAX_REGIONS, "{bytes}: {} regions", bytes / region);
    }
}

#[tokio::test]
async fn a_large_disk_tier_holds_few_files_open() {
    let dir = tempfile::tempdir().unwrap();
    let _cache = BlockCache::open(&with_disk(dir.path(), 2 << 20, 4 << 30)).await.unwrap();
    let files = std::fs::read_dir(dir.path().join("blocks")).unwrap().count() as u64;
    assert!((1..=MAX_REGIONS).contains(&files), "{files} region files");
}
