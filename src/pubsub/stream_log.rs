//! `_stream` and `_stream.jsonl` over NFS, which has no open or close: a
//! growing log file. The first READ starts it; from then on, while someone
//! reads or stats it, messages are pulled and appended as lines, and the
//! file's size grows, so that `tail -f` (which polls the size) follows it.
//! A line is acked once READ replies carried all of its bytes (in one READ
//! or several, in any order). A READ that starts past lines (`tail -n`,
//! `dd skip=`, a second reader) carries none of them: they stay unacked and
//! are given back (deadline 0) when the log goes idle, and the log starts
//! afresh (empty) at the next READ.
//!
//! What is held is bounded: at most `MAX_UNREAD` messages beyond the
//! furthest offset a reply reached, kept from other readers by extending
//! their ack deadline, and the last `KEEP_READ` bytes before it, for a
//! client that reads a page again. Older offsets answer EIO; an unacked line
//! that falls that far behind is given back. Leases are renewed by a task of
//! their own (`spawn_stream_log_tending` in tree.rs), never behind uploads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ciofs_backends::pubsub::PubSub;
use ciofs_backends::sync::lock;
use ciofs_frontends::{VfsError, VfsResult};
use tokio::sync::Mutex as AsyncMutex;
// Tokio's clock, so that tests can let time pass.
use tokio::time::Instant;

use super::stream::{Puller, stream_line};

/// How long a READ at the end waits for a message before it answers with
/// no bytes (end of file for now).
const READ_WAIT: Duration = Duration::from_millis(500);
/// A log nobody read or stat'ed for this long is given up.
const IDLE: Duration = Duration::from_secs(30);
/// Messages held beyond what was read past.
const MAX_UNREAD: usize = 100;
/// Bytes already read past still served.
const KEEP_READ: u64 = 4 << 20;
/// Held messages are leased this long, renewed every `LEASE_RENEW`.
const LEASE: Duration = Duration::from_secs(60);
const LEASE_RENEW: Duration = Duration::from_secs(20);

struct Line {
    start: u64,
    bytes: Bytes,
    ack_id: String,
    /// The spans of the line (offsets in it) READ replies carried, merged,
    /// in order.
    carried: Vec<(usize, usize)>,
    acked: bool,
}

impl Line {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Records that a reply carried bytes `from..to` of the line; whether
    /// all of it has been carried now.
    fn carry(&mut self, from: usize, to: usize) -> bool {
        self.carried.push((from, to));
        self.carried.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.carried.len());
        for (start, end) in self.carried.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.carried = merged;
        self.carried == [(0, self.bytes.len())]
    }
}

struct LogState {
    lines: VecDeque<Line>,
    /// The log's size: the end of the last line.
    end: u64,
    /// The furthest offset a reply reached: lines from there on are ahead
    /// of every reader.
    reached: u64,
    used: Instant,
    leased: Instant,
}

/// One subscription's log, in one of the two formats.
pub struct StreamLog {
    puller: Puller,
    json: bool,
    state: AsyncMutex<LogState>,
}

impl StreamLog {
    fn new(puller: Puller, json: bool) -> Self {
        let now = Instant::now();
        let state = LogState { lines: VecDeque::new(), end: 0, reached: 0, used: now, leased: now };
        Self { puller, json, state: AsyncMutex::new(state) }
    }

    /// Bytes at `offset`, at most `len`, and whether they reach the end. A
    /// READ at the end pulls, waiting up to `READ_WAIT`. The lines the
    /// reply completes are acked.
    pub async fn read(&self, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        let mut state = self.state.lock().await;
        state.used = Instant::now();
        if offset >= state.end {
            self.append(&mut state, READ_WAIT).await?;
        }
        let first_held = state.lines.front().map_or(state.end, |l| l.start);
        if offset < first_held {
            let name = &self.puller.subscription;
            return Err(VfsError::io(format!("{name}: lines before offset {first_held} are no longer held")));
        }
        let bytes = slice_from(&state.lines, offset, len as usize);
        self.carried(&mut state, offset, bytes.len() as u64).await;
        let at_end = offset + bytes.len() as u64 >= state.end;
        Ok((bytes, at_end))
    }

    /// The size now, after pulling what is there (GETATTR: `tail -f` polls
    /// the size).
    pub async fn size(&self) -> VfsResult<u64> {
        let mut state = self.state.lock().await;
        state.used = Instant::now();
        self.append(&mut state, Duration::ZERO).await?;
        Ok(state.end)
    }

    /// Renews the lease of held lines; true when the log went idle and gave
    /// its unread lines back (the caller forgets it).
    async fn tend(&self) -> bool {
        let mut state = self.state.lock().await;
        let unread: Vec<String> = state.lines.iter().filter(|l| !l.acked).map(|l| l.ack_id.clone()).collect();
        if state.used.elapsed() >= IDLE {
            self.puller.give_back(&unread).await;
            state.lines.clear();
            state.end = 0;
            state.reached = 0;
            return true;
        }
        if state.leased.elapsed() >= LEASE_RENEW {
            self.puller.set_deadline(&unread, LEASE).await;
            state.leased = Instant::now();
        }
        false
    }

    /// A reply carried `len` bytes from `offset`: acks the lines it
    /// completed, and drops the lines `KEEP_READ` behind the furthest reply
    /// (giving back those never carried whole).
    async fn carried(&self, state: &mut LogState, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let to = offset + len;
        let mut ack_ids = Vec::new();
        for line in state.lines.iter_mut().skip_while(|l| l.end() <= offset).take_while(|l| l.start < to) {
            let from = offset.saturating_sub(line.start) as usize;
            let until = (to.min(line.end()) - line.start) as usize;
            if line.carry(from, until) && !line.acked {
                line.acked = true;
                ack_ids.push(line.ack_id.clone());
            }
        }
        self.puller.ack(&ack_ids).await;
        state.reached = state.reached.max(to);
        let keep_from = state.reached.saturating_sub(KEEP_READ);
        let mut skipped = Vec::new();
        while let Some(line) = state.lines.front().filter(|l| l.end() <= keep_from) {
            if !line.acked {
                skipped.push(line.ack_id.clone());
            }
            state.lines.pop_front();
        }
        self.puller.give_back(&skipped).await;
    }

    /// Pulls up to the bound and appends the lines, leased.
    async fn append(&self, state: &mut LogState, wait: Duration) -> VfsResult<()> {
        let unread = state.lines.iter().filter(|l| l.start >= state.reached).count();
        if unread >= MAX_UNREAD {
            return Ok(());
        }
        let pulled = self.puller.pull_within(MAX_UNREAD - unread, wait).await?;
        let ack_ids: Vec<String> = pulled.iter().map(|m| m.ack_id.clone()).collect();
        self.puller.set_deadline(&ack_ids, LEASE).await;
        for message in pulled {
            let bytes = stream_line(&message, self.json);
            let start = state.end;
            state.end += bytes.len() as u64;
            state.lines.push_back(Line { start, bytes, ack_id: message.ack_id, carried: Vec::new(), acked: false });
        }
        Ok(())
    }
}

/// Up to `len` bytes of the lines from `offset` on.
fn slice_from(lines: &VecDeque<Line>, offset: u64, len: usize) -> Bytes {
    let mut out = Vec::new();
    for line in lines.iter().skip_while(|l| l.end() <= offset) {
        let from = offset.saturating_sub(line.start) as usize;
        let want = len - out.len();
        let chunk = &line.bytes[from..line.bytes.len().min(from + want)];
        out.extend_from_slice(chunk);
        if out.len() >= len {
            break;
        }
    }
    Bytes::from(out)
}

/// The logs being followed, by (project, subscription, JSON or text).
#[derive(Default)]
pub struct StreamLogs {
    logs: Mutex<HashMap<(String, String, bool), Arc<StreamLog>>>,
}

impl StreamLogs {
    /// The log of a subscription, started if `start` (a READ) and not
    /// followed yet.
    pub fn get(
        &self,
        api: &Arc<dyn PubSub>,
        project: &str,
        subscription: &str,
        json: bool,
        start: bool,
    ) -> Option<Arc<StreamLog>> {
        let mut logs = lock(&self.logs);
        let key = (project.to_string(), subscription.to_string(), json);
        if !start {
            return logs.get(&key).cloned();
        }
        let new = || Arc::new(StreamLog::new(Puller::new(api.clone(), project, subscription), json));
        Some(logs.entry(key).or_insert_with(new).clone())
    }

    /// Renews leases and gives up idle logs (called periodically).
    pub async fn tend(&self) {
        let logs: Vec<_> = lock(&self.logs).clone().into_iter().collect();
        for (key, log) in logs {
            if log.tend().await {
                tracing::debug!(subscription = %key.1, "stream log idle: unread lines given back");
                let mut logs = lock(&self.logs);
                if logs.get(&key).is_some_and(|l| Arc::ptr_eq(l, &log)) {
                    logs.remove(&key);
                }
            }
        }
    }
}
