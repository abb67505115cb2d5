//! Reads of one object generation, block by block through the content
//! cache (`block_cache`): a block read before, by this mount or by an
//! earlier one with the same cache directory, costs no request.
//!
//! Blocks are asked for unpinned, and kept only when the answer says they
//! are of the reader's generation; otherwise asked for again pinned to it
//! (`BlockRead`).
//!
//! A reader that moves forward block after block is sequential: the blocks
//! ahead of it are fetched in parallel, in a window that doubles with each
//! block read in order (up to `MAX_AHEAD`). A reader that jumps is random:
//! it fetches only the blocks it reads. Memory stays bounded by the cache's
//! memory tier and the window.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use ciofs_backends::gcs::{ObjectMeta, ObjectStore, ReadObject};
use ciofs_backends::{BackendError, BackendResult, ErrorKind};
use futures::StreamExt;
use tokio::sync::oneshot;

use super::block_cache::{BLOCK_SIZE, BlockCache, BlockKey};

/// The most blocks fetched ahead of a sequential reader.
const MAX_AHEAD: u64 = 16;
/// The most blocks one request fetches: fewer, longer requests cost the
/// service less; more of them at once go faster on Cloud Storage.
const RUN_BLOCKS: u64 = 8;
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

impl ObjectVersion {
    pub fn of(meta: &ObjectMeta) -> Self {
        let (bucket, name) = (meta.bucket.clone(), meta.name.clone());
        Self { bucket, name, generation: meta.generation, size: meta.size }
    }
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

    /// Starts fetching the object's first block into the cache, unless it
    /// is there or on its way, without waiting for it.
    pub fn fetch_first_block(&self) {
        if self.version.size > 0 {
            self.blocks.prefetch(&self.key(0), self.fetcher(0));
        }
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
    /// asks for it and the blocks ahead of it: those on disk are loaded in
    /// the background, the others fetched in runs of up to `RUN_BLOCKS`
    /// blocks, one request per run.
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
        let mut missing = Vec::new();
        for ahead in self.ahead_to.max(index)..to {
            if self.blocks.contains(&self.key(ahead)) {
                self.fetch_run(std::mem::take(&mut missing));
                self.blocks.prefetch(&self.key(ahead), self.fetcher(ahead));
            } else {
                missing.push(ahead);
                if missing.len() as u64 == RUN_BLOCKS {
                    self.fetch_run(std::mem::take(&mut missing));
                }
            }
        }
        self.fetch_run(missing);
        self.ahead_to = self.ahead_to.max(to);
    }

    /// Fetches consecutive blocks with one request: each block goes into
    /// the cache as soon as its bytes are in, and a reader waiting for one
    /// waits for that block only.
    fn fetch_run(&self, run: Vec<u64>) {
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else { return };
        if first == last {
            return self.blocks.prefetch(&self.key(first), self.fetcher(first));
        }
        let mut waiting = VecDeque::new();
        for index in first..=last {
            let (sender, receiver) = oneshot::channel();
            waiting.push_back(sender);
            let stopped = || BackendError::new(ErrorKind::Unavailable, "the read ahead stopped");
            let fetch =
                move || -> BoxedFetch { Box::pin(async move { receiver.await.unwrap_or_else(|_| Err(stopped())) }) };
            self.blocks.prefetch(&self.key(index), fetch);
        }
        tokio::spawn(deliver_run(self.store.clone(), self.read_of(first..last + 1), waiting));
    }

    fn block_count(&self) -> u64 {
        self.version.size.div_ceil(BLOCK_SIZE)
    }

    fn key(&self, index: u64) -> BlockKey {
        let v = &self.version;
        BlockKey { bucket: v.bucket.clone(), name: v.name.clone(), generation: v.generation, index }
    }

    /// A read of `blocks` of this generation.
    fn read_of(&self, blocks: Range<u64>) -> BlockRead {
        let v = &self.version;
        let request = ReadObject {
            bucket: v.bucket.clone(),
            name: v.name.clone(),
            generation: None,
            range: blocks.start * BLOCK_SIZE..v.size.min(blocks.end * BLOCK_SIZE),
            object_size: Some(v.size),
        };
        BlockRead { request, generation: v.generation, changed: self.changed.clone() }
    }

    /// What fetches block `index` of this generation from Cloud Storage.
    fn fetcher(&self, index: u64) -> impl FnOnce() -> BoxedFetch + use<> {
        let (store, read) = (self.store.clone(), self.read_of(index..index + 1));
        move || Box::pin(fetch_block(store, read))
    }
}

type BoxedFetch = std::pin::Pin<Box<dyn Future<Output = BackendResult<Bytes>> + Send>>;

/// Blocks of one generation being read.
///
/// They are asked for unpinned first: Cloud Storage says which generation
/// it served, and an unpinned read costs fake-gcs-server less than a pinned
/// one. If the object has changed since its metadata was seen (another
/// generation served, or a read refused because the object is gone or now
/// shorter), they are asked for again pinned to `generation`, which gives
/// its bytes while that generation lives (a versioned bucket keeps it) and
/// fails `NotFound` once it does not. Bytes are only ever delivered for the
/// generation the service said they are of.
struct BlockRead {
    request: ReadObject,
    generation: i64,
    /// The reader's: once one read found the object changed, the others are
    /// pinned at once.
    changed: Arc<AtomicBool>,
}

impl BlockRead {
    fn pin(&mut self) {
        self.changed.store(true, Ordering::Relaxed);
        self.request.generation = Some(self.generation);
    }
}

/// One block's bytes, all of them.
async fn fetch_block(store: Arc<dyn ObjectStore>, mut read: BlockRead) -> BackendResult<Bytes> {
    let mut block = None;
    stream_blocks(store.as_ref(), &mut read, |bytes| {
        block = Some(bytes);
        true
    })
    .await?;
    block.ok_or_else(|| BackendError::new(ErrorKind::Other, "an empty block was asked for"))
}

/// The blocks of `read`, each to its waiter in order; what could not be
/// read goes to the waiters left as the error. Stops early when nobody
/// waits any more (the readers went).
async fn deliver_run(store: Arc<dyn ObjectStore>, mut read: BlockRead, mut waiting: VecDeque<Waiter>) {
    let deliver = |bytes: Bytes| match waiting.pop_front() {
        Some(waiter) => {
            let _ = waiter.send(Ok(bytes));
            !waiting.iter().all(|w| w.is_closed())
        }
        None => false,
    };
    if let Err(e) = stream_blocks(store.as_ref(), &mut read, deliver).await {
        for waiter in waiting {
            let _ = waiter.send(Err(e.clone()));
        }
    }
}

type Waiter = oneshot::Sender<BackendResult<Bytes>>;

/// How one request of `stream_blocks` ended.
enum Streamed {
    /// Every block asked for was delivered.
    ToTheEnd,
    /// `deliver` wanted no more.
    Stopped,
    /// Another generation was served: none of its bytes were delivered.
    OtherGeneration(i64),
}

/// Streams `read`, which starts at a block's start, and hands each complete
/// block to `deliver`, in order, until it answers false. The request's
/// start follows the blocks delivered: a read that breaks off is asked for
/// again from the first block not delivered, a few times. A block is never
/// short: a body that ends early is an error.
async fn stream_blocks(
    store: &dyn ObjectStore,
    read: &mut BlockRead,
    mut deliver: impl FnMut(Bytes) -> bool,
) -> BackendResult<()> {
    if read.changed.load(Ordering::Relaxed) {
        read.pin();
    }
    let unpinned = |read: &BlockRead| read.request.generation.is_none();
    let mut failures = 0;
    while read.request.range.start < read.request.range.end {
        let generation = read.generation;
        match stream_some_blocks(store, read, &mut deliver).await {
            Ok(Streamed::Stopped) => return Ok(()),
            Ok(Streamed::ToTheEnd) => {}
            Ok(Streamed::OtherGeneration(served)) if unpinned(read) => {
                tracing::debug!(generation, served, "the object changed since it was seen; reading its generation");
                read.pin();
            }
            Ok(Streamed::OtherGeneration(served)) => {
                let r = &read.request;
                let message =
                    format!("gs://{}/{}: generation {generation} asked for, {served} served", r.bucket, r.name);
                return Err(BackendError::new(ErrorKind::Other, message));
            }
            // Gone, or shorter than this generation (HTTP 416): the pinned
            // read says whether this generation is still there.
            Err(e) if unpinned(read) && matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidArgument) => {
                tracing::debug!(error = %e, generation, "the live object differs; reading its generation");
                read.pin();
            }
            Err(e) if e.kind.is_transient() && failures < MID_STREAM_RETRIES => {
                failures += 1;
                tracing::debug!(error = %e, "block read broke off; asking again");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One request of `stream_blocks`.
async fn stream_some_blocks(
    store: &dyn ObjectStore,
    read: &mut BlockRead,
    deliver: &mut impl FnMut(Bytes) -> bool,
) -> BackendResult<Streamed> {
    let body = store.read_object(&read.request).await?;
    if body.generation != read.generation {
        return Ok(Streamed::OtherGeneration(body.generation));
    }
    let request = &mut read.request;
    let mut bytes = body.bytes;
    let block_len = |start: u64| (request.range.end - start).min(BLOCK_SIZE) as usize;
    let mut block = BytesMut::with_capacity(block_len(request.range.start));
    while let Some(chunk) = bytes.next().await {
        let mut chunk = chunk?;
        while !chunk.is_empty() {
            let wanted = block_len(request.range.start) - block.len();
            if wanted == 0 {
                return Err(short_or_long(request, "more bytes than asked for"));
            }
            block.extend_from_slice(&chunk.split_to(wanted.min(chunk.len())));
            if block.len() == block_len(request.range.start) {
                request.range.start += block.len() as u64;
                let done = std::mem::replace(&mut block, BytesMut::with_capacity(block_len(request.range.start)));
                if !deliver(done.freeze()) {
                    return Ok(Streamed::Stopped);
                }
            }
        }
    }
    if request.range.start < request.range.end {
        return Err(short_or_long(request, "the body ended early"));
    }
    Ok(Streamed::ToTheEnd)
}

fn short_or_long(request: &ReadObject, what: &str) -> BackendError {
    let r = request;
    let message = format!("gs://{}/{}: reading from byte {}: {what}", r.bucket, r.name, r.range.start);
    BackendError::new(ErrorKind::Unavailable, message)
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
        let version = ObjectVersion::of(&meta);
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
    async fn a_sequential_reader_fetches_runs_of_blocks_once_and_rereads_from_the_cache() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 9 << 20).await;
        assert_eq!(read_all(&mut reader).await, bytes);
        // Runs of blocks, one request each: 0-2, 3-5 and 6-8.
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 3);
        // Another reader of the same generation: from the cache.
        let mut again = ObjectReader::new(gcs.clone(), reader.blocks.clone(), reader.version.clone());
        assert_eq!(read_all(&mut again).await, bytes);
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_run_that_breaks_off_goes_on_from_the_first_block_not_read() {
        use ciofs_backends::fault::{Call, Fault, Faulty};
        use ciofs_backends::memory::Op;
        let memory = Arc::new(MemoryGcs::new());
        let bytes = data(6 << 20);
        let meta = memory.put_object("b", "o", bytes.clone());
        let gcs = Arc::new(Faulty::new(memory.clone()));
        // The first request (blocks 0-2) breaks off in block 1.
        gcs.arm(Call::Gcs(Op::ReadObject), 1, Fault::BreakBody { after: (1 << 20) + 5000 });
        let version = ObjectVersion::of(&meta);
        let mut reader = ObjectReader::new(gcs.clone(), cache().await, version);
        assert!(read_all(&mut reader).await == bytes);
        // 0-2 broken, 1-2 again, 3-5: block 0 was not asked for twice.
        assert_eq!(memory.calls.read_object.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_run_that_keeps_breaking_off_is_an_error_for_its_reader() {
        use ciofs_backends::fault::{Call, Fault, Faulty};
        use ciofs_backends::memory::Op;
        let memory = Arc::new(MemoryGcs::new());
        let meta = memory.put_object("b", "o", data(3 << 20));
        let gcs = Arc::new(Faulty::new(memory.clone()));
        for nth in 1..=4 {
            gcs.arm(Call::Gcs(Op::ReadObject), nth, Fault::BreakBody { after: 100 });
        }
        let version = ObjectVersion::of(&meta);
        let mut reader = ObjectReader::new(gcs.clone(), cache().await, version);
        let error = reader.read(0, 4096).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
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
