//! Reads of one object generation, block by block through the content
//! cache (`block_cache`): a block read before, by this mount or by an
//! earlier one with the same cache directory, costs no request.
//!
//! Blocks are asked for unpinned, and kept only when the answer says they
//! are of the reader's generation; otherwise asked for again pinned to it
//! (`fetch_block`).
//!
//! A reader that moves forward block after block is sequential: the blocks
//! ahead of it are fetched in parallel, in a window that doubles with each
//! block read in order (up to `MAX_AHEAD`). A reader that jumps is random:
//! it fetches only the blocks it reads. Memory stays bounded by the cache's
//! memory tier and the window.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use ciofs_backends::gcs::{ObjectStore, ReadObject};
use ciofs_backends::{BackendError, BackendResult, ErrorKind};
use futures::StreamExt;

use super::block_cache::{BLOCK_SIZE, BlockCache, BlockKey};

/// The most blocks fetched ahead of a sequential reader.
const MAX_AHEAD: u64 = 16;
/// How often a block whose read broke off mid-stream is asked for again.
const MID_STREAM_RETRIES: u32 = 3;

/// Which object generation a reader reads.
#[derive(Clone, Debug)]
pub struct ObjectVersion {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub size: u64,
}

pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    blocks: Arc<BlockCache>,
    version: ObjectVersion,
    /// The block read last, and how many blocks were read in order up to it.
    last: Option<u64>,
    run: u32,
    /// The blocks below this one have been asked for ahead of the reader.
    ahead_to: u64,
    /// The block read last, kept for the reads that follow within it.
    current: Option<(u64, Bytes)>,
    /// Set once a fetch found the object changed: later blocks are asked
    /// for pinned to the generation at once (see `fetch_block`).
    changed: Arc<AtomicBool>,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, blocks: Arc<BlockCache>, version: ObjectVersion) -> Self {
        let changed = Arc::new(AtomicBool::new(false));
        Self { store, blocks, version, last: None, run: 0, ahead_to: 0, current: None, changed }
    }

    pub fn version(&self) -> &ObjectVersion {
        &self.version
    }

    /// Reads up to `len` bytes at `offset`; the flag is true at end of file.
    pub async fn read(&mut self, offset: u64, len: u32) -> BackendResult<(Bytes, bool)> {
        let size = self.version.size;
        if offset >= size {
            return Ok((Bytes::new(), true));
        }
        let end = size.min(offset + u64::from(len));
        let (first, last) = (offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE);
        if first == last {
            // The common case: one block holds it all; no copy.
            let block = self.block(first).await?;
            let start = first * BLOCK_SIZE;
            return Ok((block.slice((offset - start) as usize..(end - start) as usize), end == size));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for index in first..=last {
            let block = self.block(index).await?;
            let start = index * BLOCK_SIZE;
            let from = offset.saturating_sub(start) as usize;
            let to = (end.min(start + BLOCK_SIZE) - start) as usize;
            out.extend_from_slice(&block[from..to]);
        }
        Ok((out.freeze(), end == size))
    }

    /// Block `index` of the object, from the cache or fetched.
    async fn block(&mut self, index: u64) -> BackendResult<Bytes> {
        if let Some((at, bytes)) = &self.current
            && *at == index
        {
            return Ok(bytes.clone());
        }
        self.read_ahead(index);
        let bytes = self.blocks.block(&self.key(index), self.fetcher(index)).await?;
        self.current = Some((index, bytes.clone()));
        Ok(bytes)
    }

    /// Notes that block `index` is read and, for a sequential reader,
    /// asks for the blocks ahead of it.
    fn read_ahead(&mut self, index: u64) {
        let in_order = match self.last {
            None => index == 0,
            Some(last) => index == last + 1,
        };
        // The kernel's readahead may ask for a block just behind.
        let near = self.last.is_some_and(|last| index <= last && last - index <= 1);
        if in_order {
            self.run = self.run.saturating_add(1);
        } else if !near {
            self.run = 0;
            self.ahead_to = 0;
        }
        self.last = Some(self.last.map_or(index, |last| last.max(index)));
        if self.run == 0 {
            return;
        }
        let window = MAX_AHEAD.min(1 << self.run.min(8));
        let to = self.block_count().min(index + 1 + window);
        for ahead in self.ahead_to.max(index + 1)..to {
            self.blocks.prefetch(&self.key(ahead), self.fetcher(ahead));
        }
        self.ahead_to = self.ahead_to.max(to);
    }

    fn block_count(&self) -> u64 {
        self.version.size.div_ceil(BLOCK_SIZE)
    }

    fn key(&self, index: u64) -> BlockKey {
        let v = &self.version;
        BlockKey { bucket: v.bucket.clone(), name: v.name.clone(), generation: v.generation, index }
    }

    /// What fetches block `index` of this generation from Cloud Storage.
    fn fetcher(&self, index: u64) -> impl FnOnce() -> BoxedFetch + use<> {
        let v = &self.version;
        let start = index * BLOCK_SIZE;
        let request = ReadObject {
            bucket: v.bucket.clone(),
            name: v.name.clone(),
            generation: None,
            range: start..v.size.min(start + BLOCK_SIZE),
        };
        let (store, generation, changed) = (self.store.clone(), v.generation, self.changed.clone());
        move || Box::pin(fetch_block(store, request, generation, changed))
    }
}

type BoxedFetch = std::pin::Pin<Box<dyn Future<Output = BackendResult<Bytes>> + Send>>;

/// One block's bytes of `generation`, all of them.
///
/// It is asked for unpinned first: Cloud Storage says which generation it
/// served, and an unpinned read costs fake-gcs-server less than a pinned
/// one. If the object has changed since its metadata was seen (another
/// generation served, or a read refused because the object is gone or now
/// shorter), the block is asked for again pinned to `generation`, which
/// gives its bytes while that generation lives (a versioned bucket keeps
/// it) and fails `NotFound` once it does not. Bytes are only ever returned
/// for the generation the service said they are of.
///
/// `changed` is the reader's: once one block found the object changed, the
/// others are asked for pinned at once.
///
/// A read that breaks off is asked for again, a few times; a short one is
/// an error, never a short block.
async fn fetch_block(
    store: Arc<dyn ObjectStore>,
    mut request: ReadObject,
    generation: i64,
    changed: Arc<AtomicBool>,
) -> BackendResult<Bytes> {
    if changed.load(Ordering::Relaxed) {
        request.generation = Some(generation);
    }
    let mut failures = 0;
    loop {
        match read_range(store.as_ref(), &request, generation).await {
            Ok(Fetched::Block(bytes)) => return Ok(bytes),
            Ok(Fetched::Other(served)) if request.generation.is_none() => {
                tracing::debug!(
                    bucket = %request.bucket, name = %request.name, generation, served,
                    "the object changed since it was seen; reading its generation"
                );
                changed.store(true, Ordering::Relaxed);
                request.generation = Some(generation);
            }
            Ok(Fetched::Other(served)) => {
                let message = format!(
                    "gs://{}/{}: generation {generation} asked for, {served} served",
                    request.bucket, request.name
                );
                return Err(BackendError::new(ErrorKind::Other, message));
            }
            // Gone, or shorter than this generation (HTTP 416): the pinned
            // read says whether this generation is still there.
            Err(e)
                if request.generation.is_none()
                    && matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidArgument) =>
            {
                tracing::debug!(error = %e, generation, "the live object differs; reading its generation");
                changed.store(true, Ordering::Relaxed);
                request.generation = Some(generation);
            }
            Err(e) if e.kind.is_transient() && failures < MID_STREAM_RETRIES => {
                failures += 1;
                tracing::debug!(error = %e, "block read broke off; asking again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a read of a block brought.
enum Fetched {
    /// The block, of the generation wanted.
    Block(Bytes),
    /// Another generation was served: its bytes are not read.
    Other(i64),
}

async fn read_range(store: &dyn ObjectStore, request: &ReadObject, generation: i64) -> BackendResult<Fetched> {
    let expected = (request.range.end - request.range.start) as usize;
    let body = store.read_object(request).await?;
    if body.generation != generation {
        return Ok(Fetched::Other(body.generation));
    }
    let mut stream = body.bytes;
    let mut bytes = BytesMut::with_capacity(expected);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if bytes.len() + chunk.len() > expected {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() != expected {
        let message = format!(
            "gs://{}/{}: the read of [{}..{}) gave {} bytes",
            request.bucket,
            request.name,
            request.range.start,
            request.range.end,
            bytes.len()
        );
        return Err(BackendError::new(ErrorKind::Unavailable, message));
    }
    Ok(Fetched::Block(bytes.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciofs_backends::memory::MemoryGcs;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    async fn cache() -> Arc<BlockCache> {
        Arc::new(BlockCache::open(&Default::default()).await.unwrap())
    }

    async fn reader(gcs: &Arc<MemoryGcs>, len: usize) -> (ObjectReader, Vec<u8>) {
        let bytes = data(len);
        let meta = gcs.put_object("b", "o", bytes.clone());
        let version =
            ObjectVersion { bucket: "b".into(), name: "o".into(), generation: meta.generation, size: meta.size };
        (ObjectReader::new(gcs.clone(), cache().await, version), bytes)
    }

    async fn read_all(reader: &mut ObjectReader) -> Vec<u8> {
        let mut got = Vec::new();
        let mut eof = false;
        while !eof {
            let (chunk, at_end) = reader.read(got.len() as u64, 128 * 1024).await.unwrap();
            got.extend_from_slice(&chunk);
            eof = at_end;
        }
        got
    }

    #[tokio::test]
    async fn each_block_is_fetched_once_and_read_again_from_the_cache() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 9 << 20).await;
        assert_eq!(read_all(&mut reader).await, bytes);
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 9);
        // Another reader of the same generation: from the cache.
        let mut again = ObjectReader::new(gcs.clone(), reader.blocks.clone(), reader.version.clone());
        assert_eq!(read_all(&mut again).await, bytes);
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 9);
    }

    #[tokio::test]
    async fn a_random_reader_fetches_only_what_it_reads() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 64 << 20).await;
        for block in [40u64, 3, 17, 60, 9, 33] {
            let at = block * BLOCK_SIZE + 100;
            let (chunk, _) = reader.read(at, 4096).await.unwrap();
            assert_eq!(&chunk[..], &bytes[at as usize..at as usize + 4096]);
        }
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn out_of_order_and_random_reads_return_the_right_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 3 << 20).await;
        let reads = [
            (131072, 4096),
            (0, 131072),
            (2_000_000, 100),
            (10, 20),
            (3_145_000, 4096),
            // A read that starts where the first request ends, before that
            // request was read to its end; then the bytes it skipped.
            (0, 4096),
            (1 << 20, 4096),
            (4096, 8192),
            ((1 << 20) - 100, 200),
        ];
        for (offset, len) in reads {
            let (chunk, eof) = reader.read(offset, len).await.unwrap();
            let end = (offset as usize + len as usize).min(bytes.len());
            assert_eq!(&chunk[..], &bytes[offset as usize..end], "at {offset}");
            assert_eq!(eof, end == bytes.len());
        }
        let (chunk, eof) = reader.read(bytes.len() as u64, 10).await.unwrap();
        assert!(chunk.is_empty() && eof);
    }

    #[tokio::test]
    async fn concurrent_out_of_order_reads_return_the_right_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (reader, bytes) = reader(&gcs, 8 << 20).await;
        let reader = Arc::new(tokio::sync::Mutex::new(reader));
        // As the kernel's async readahead does: many 128 KiB reads at once.
        let reads = (0..64u64).rev().map(|i| {
            let reader = reader.clone();
            tokio::spawn(async move { (i, reader.lock().await.read(i * 131072, 131072).await.unwrap().0) })
        });
        for read in reads {
            let (i, chunk) = read.await.unwrap();
            let at = (i * 131072) as usize;
            assert!(chunk[..] == bytes[at..at + 131072], "block {i}");
        }
    }

    fn reads(gcs: &MemoryGcs) -> (u64, u64) {
        (gcs.calls.read_object.load(Ordering::SeqCst), gcs.calls.pinned_reads.load(Ordering::SeqCst))
    }

    /// One request per block, unpinned: the answer says which generation
    /// it served.
    #[tokio::test]
    async fn an_unchanged_object_is_read_unpinned() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 1000).await;
        assert_eq!(read_all(&mut reader).await, bytes);
        assert_eq!(reads(&gcs), (1, 0), "(reads, pinned reads)");
    }

    /// Replaced by an object of the same size between the reader's creation
    /// and its first read: the unpinned read gets the new generation, whose
    /// bytes are not returned; the read pinned to the reader's generation
    /// then finds it gone.
    #[tokio::test]
    async fn an_object_replaced_before_the_first_read_is_an_error_not_its_new_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, _) = reader(&gcs, 1000).await;
        gcs.put_object("b", "o", vec![b'n'; 1000]);
        let error = reader.read(0, 10).await.expect_err("not the new bytes");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        assert_eq!(reads(&gcs), (2, 1), "unpinned, then pinned");
        // Not cached either: a reader of the new generation reads its bytes.
        let meta = gcs.get_object("b", "o").await.unwrap();
        let version = ObjectVersion { generation: meta.generation, size: meta.size, ..reader.version.clone() };
        let mut new = ObjectReader::new(gcs.clone(), reader.blocks.clone(), version);
        assert_eq!(read_all(&mut new).await, vec![b'n'; 1000]);
    }

    /// Replaced by a shorter object: the unpinned read of a block past its
    /// end is refused (HTTP 416), and the pinned one says the generation is
    /// gone (ESTALE for the file), not that the read was invalid. The
    /// reader's next blocks are asked for pinned at once.
    #[tokio::test]
    async fn an_object_replaced_by_a_shorter_one_is_not_found_and_later_reads_are_pinned() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, _) = reader(&gcs, 2 << 20).await;
        gcs.put_object("b", "o", "short");
        let error = reader.read(BLOCK_SIZE, 10).await.expect_err("gone");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        assert_eq!(reads(&gcs), (2, 1), "unpinned, then pinned");
        let error = reader.read(0, 10).await.expect_err("gone");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        assert_eq!(reads(&gcs), (3, 2), "pinned at once");
    }

    #[tokio::test]
    async fn a_replaced_generation_is_an_error_not_other_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, _) = reader(&gcs, 1000).await;
        gcs.put_object("b", "o", "new content");
        assert!(reader.read(0, 10).await.is_err());
    }
}
