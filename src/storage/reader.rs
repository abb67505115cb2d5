//! Streaming reads of one object generation with a bounded read-ahead.
//!
//! A sequential reader is served from a ranged GET that a background task
//! pulls into a queue holding at most `PREFETCH_BYTES`; each new request is
//! four times as long as the last, so a long sequential read soon runs on
//! one request (each request costs a round trip, and fake-gcs-server pays
//! for each range it serves). The last `BEHIND_BYTES` consumed are kept, so the kernel's
//! slightly out-of-order reads (async readahead) do not restart the request.
//! Nothing holds the whole object.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ciofs_backends::gcs::{ObjectStore, ReadObject};
use ciofs_backends::{BackendError, BackendResult, ErrorKind};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};

const FIRST_REQUEST: u64 = 1 << 20;
const MAX_REQUEST: u64 = 1 << 30;
const PREFETCH_BYTES: usize = 16 << 20;
const BEHIND_BYTES: usize = 4 << 20;
/// A forward jump this short is read through rather than re-requested (and
/// what it skips stays behind, for the reads the jump overtook).
const SKIP_THROUGH: u64 = 2 << 20;
/// How often a read that broke off mid-stream is started again.
const MID_STREAM_RETRIES: u32 = 3;

/// Which object generation a reader reads.
#[derive(Clone, Debug)]
pub struct ObjectVersion {
    pub bucket: String,
    pub name: String,
    pub generation: i64,
    pub size: u64,
}

/// An in-flight ranged GET: its bytes arrive on `chunks` starting at `next`.
struct Prefetch {
    next: u64,
    end: u64,
    chunks: mpsc::Receiver<BackendResult<Bytes>>,
    budget: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    version: ObjectVersion,
    prefetch: Option<Prefetch>,
    /// Bytes just consumed, oldest first; `behind_start` is the offset of the
    /// first.
    behind: VecDeque<Bytes>,
    behind_start: u64,
    behind_len: usize,
    next_request: u64,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, version: ObjectVersion) -> Self {
        Self {
            store,
            version,
            prefetch: None,
            behind: VecDeque::new(),
            behind_start: 0,
            behind_len: 0,
            next_request: FIRST_REQUEST,
        }
    }

    pub fn version(&self) -> &ObjectVersion {
        &self.version
    }

    /// Reads up to `len` bytes at `offset`; the flag is true at end of file.
    /// A request that breaks off mid-stream is started again from where it
    /// stopped, a few times.
    pub async fn read(&mut self, offset: u64, len: u32) -> BackendResult<(Bytes, bool)> {
        let size = self.version.size;
        if offset >= size {
            return Ok((Bytes::new(), true));
        }
        let end = size.min(offset + u64::from(len));
        let mut out = BytesMut::new();
        let mut at = offset;
        let mut failures = 0;
        while at < end {
            match self.read_piece(at, end).await {
                // The common case: one chunk holds it all; no copy.
                Ok(piece) if at == offset && piece.len() as u64 == end - offset => {
                    return Ok((piece, end == size));
                }
                Ok(piece) => {
                    if out.is_empty() {
                        out.reserve((end - offset) as usize);
                    }
                    at += piece.len() as u64;
                    out.extend_from_slice(&piece);
                }
                Err(e) if e.kind.is_transient() && failures < MID_STREAM_RETRIES => {
                    failures += 1;
                    tracing::debug!(error = %e, at, "read broke off; starting again");
                    self.prefetch = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out.freeze(), end == size))
    }

    /// Some bytes at `at` (not past `end`), from the bytes behind or the
    /// prefetch, starting a new request if neither has them.
    async fn read_piece(&mut self, at: u64, end: u64) -> BackendResult<Bytes> {
        if let Some(bytes) = self.bytes_behind(at, end) {
            return Ok(bytes);
        }
        let usable = self.prefetch.as_ref().is_some_and(|p| at >= p.next && at < p.end && at - p.next <= SKIP_THROUGH);
        if !usable {
            self.start_prefetch(at, end).await?;
        }
        loop {
            let (chunk_start, chunk) = self.next_chunk().await?;
            let chunk_end = chunk_start + chunk.len() as u64;
            if at < chunk_end {
                let from = at.saturating_sub(chunk_start) as usize;
                let to = (end.min(chunk_end) - chunk_start) as usize;
                return Ok(chunk.slice(from..to));
            }
        }
    }

    /// The next chunk of the prefetch and its offset, recorded as consumed.
    /// Starts the following request when the current one is done.
    async fn next_chunk(&mut self) -> BackendResult<(u64, Bytes)> {
        loop {
            let Some(prefetch) = self.prefetch.as_mut() else {
                return Err(BackendError::new(ErrorKind::Other, "no read in flight"));
            };
            if prefetch.next >= prefetch.end {
                let (next, size) = (prefetch.end, self.version.size);
                if next >= size {
                    return Err(BackendError::new(ErrorKind::Other, "read past the end"));
                }
                self.start_prefetch(next, next + 1).await?;
                continue;
            }
            match prefetch.chunks.recv().await {
                Some(Ok(chunk)) => {
                    prefetch.budget.add_permits(permits_for(chunk.len()));
                    let start = prefetch.next;
                    prefetch.next += chunk.len() as u64;
                    self.push_behind(start, chunk.clone());
                    return Ok((start, chunk));
                }
                Some(Err(e)) => {
                    self.prefetch = None;
                    return Err(e);
                }
                None => {
                    let (next, end) = (prefetch.next, prefetch.end);
                    self.prefetch = None;
                    let v = &self.version;
                    let message =
                        format!("gs://{}/{}: the read ended at byte {next}, {end} expected", v.bucket, v.name);
                    return Err(BackendError::new(ErrorKind::Unavailable, message));
                }
            }
        }
    }

    /// Starts a ranged GET at `at` that covers at least up to `end`. A
    /// request that continues one read to its end is four times as long.
    async fn start_prefetch(&mut self, at: u64, end: u64) -> BackendResult<()> {
        let sequential = self.prefetch.as_ref().is_some_and(|p| p.next == at && p.end == at);
        self.next_request = if sequential { (self.next_request * 4).min(MAX_REQUEST) } else { FIRST_REQUEST };
        let range = at..self.version.size.min(at + self.next_request.max(end - at));
        self.prefetch = None;
        self.prefetch = Some(self.spawn_prefetch(range).await?);
        Ok(())
    }

    async fn spawn_prefetch(&self, range: Range<u64>) -> BackendResult<Prefetch> {
        let v = &self.version;
        let request = ReadObject {
            bucket: v.bucket.clone(),
            name: v.name.clone(),
            generation: Some(v.generation),
            range: range.clone(),
        };
        let mut body = self.store.read_object(&request).await?;
        let budget = Arc::new(Semaphore::new(permits_for(PREFETCH_BYTES)));
        let (sender, chunks) = mpsc::channel(1024);
        let task_budget = budget.clone();
        let task = tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                if let Ok(bytes) = &chunk {
                    // Wait until the reader has room for this chunk.
                    match task_budget.acquire_many(permits_for(bytes.len()) as u32).await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                }
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Prefetch { next: range.start, end: range.end, chunks, budget, task })
    }

    fn behind_end(&self) -> u64 {
        self.behind_start + self.behind_len as u64
    }

    fn bytes_behind(&self, at: u64, end: u64) -> Option<Bytes> {
        if at < self.behind_start || at >= self.behind_end() {
            return None;
        }
        let mut chunk_start = self.behind_start;
        for chunk in &self.behind {
            let chunk_end = chunk_start + chunk.len() as u64;
            if at < chunk_end {
                let from = (at - chunk_start) as usize;
                let to = (end.min(chunk_end) - chunk_start) as usize;
                return Some(chunk.slice(from..to));
            }
            chunk_start = chunk_end;
        }
        None
    }

    /// Records `chunk`, which starts at `start`, as just consumed. The bytes
    /// behind are contiguous: a chunk elsewhere starts them afresh.
    fn push_behind(&mut self, start: u64, chunk: Bytes) {
        if start != self.behind_end() {
            self.behind.clear();
            self.behind_len = 0;
            self.behind_start = start;
        }
        self.behind_len += chunk.len();
        self.behind.push_back(chunk);
        while self.behind_len > BEHIND_BYTES && self.behind.len() > 1 {
            if let Some(old) = self.behind.pop_front() {
                self.behind_len -= old.len();
                self.behind_start += old.len() as u64;
            }
        }
    }
}

/// Semaphore permits for a chunk: one per KiB, at least one, so a huge chunk
/// cannot ask for more than the budget holds.
fn permits_for(bytes: usize) -> usize {
    (bytes / 1024).clamp(1, PREFETCH_BYTES / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciofs_backends::memory::MemoryGcs;
    use std::sync::atomic::Ordering;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn reader(gcs: &Arc<MemoryGcs>, len: usize) -> (ObjectReader, Vec<u8>) {
        let bytes = data(len);
        let meta = gcs.put_object("b", "o", bytes.clone());
        let version =
            ObjectVersion { bucket: "b".into(), name: "o".into(), generation: meta.generation, size: meta.size };
        (ObjectReader::new(gcs.clone(), version), bytes)
    }

    #[tokio::test]
    async fn sequential_reads_use_few_requests() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 9 << 20);
        let mut got = Vec::new();
        let mut eof = false;
        while !eof {
            let (chunk, at_end) = reader.read(got.len() as u64, 128 * 1024).await.unwrap();
            got.extend_from_slice(&chunk);
            eof = at_end;
        }
        assert_eq!(got, bytes);
        // 1 MiB, 4 MiB, then the last 4 MiB of a 16 MiB request.
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn out_of_order_and_random_reads_return_the_right_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, bytes) = reader(&gcs, 3 << 20);
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
        let (reader, bytes) = reader(&gcs, 8 << 20);
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

    #[tokio::test]
    async fn a_replaced_generation_is_an_error_not_other_bytes() {
        let gcs = Arc::new(MemoryGcs::new());
        let (mut reader, _) = reader(&gcs, 1000);
        gcs.put_object("b", "o", "new content");
        assert!(reader.read(0, 10).await.is_err());
    }
}
