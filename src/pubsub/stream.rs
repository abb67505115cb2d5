//! `_stream` and `_stream.jsonl` through FUSE: each read blocks until a
//! message is there and returns one line, the message. Delivery is
//! at-least-once: a message is acked only after its line was handed to the
//! reader (at a later read or at close); what was pulled but not handed out,
//! or handed out only in part, is given back at close so that the next
//! reader gets it at once.
//!
//! One line per read, never more: `head -n 3` reads three lines and closes,
//! and a fourth line in its buffer would be a message acked and never shown.
//!
//! Messages are pulled at the first read, not at open (`ls`, `stat` and
//! `tar` must not consume), in batches that grow while the reader keeps up.
//! A read that has no message within about a second answers EINTR: fuser
//! answers the kernel's FUSE_INTERRUPT with ENOSYS, so a read that waited
//! forever would make Ctrl-C hang; readers retry on EINTR.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ciofs_backends::pubsub::{PubSub, ReceivedMessage};
use ciofs_frontends::{VfsError, VfsResult};
use tokio::sync::Mutex as AsyncMutex;

use super::documents::{format_stream_json_line, format_stream_line};
use crate::core::errors::vfs_error;

/// How long a read waits for a message before it answers EINTR.
const READ_WAIT: Duration = Duration::from_secs(1);
/// Pubs/Sub answers an empty pull at once; an empty subscription is asked
/// again after this long at first, twice as long each time up to
/// `MAX_POLL_INTERVAL`.
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(10);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Messages pulled at once: the first batch, and the most.
const FIRST_BATCH: usize = 10;
const MAX_BATCH: usize = 100;
/// Pulled messages not handed out within this long are given back rather
/// than shown: Pub/Sub's shortest ack deadline is 10 s, after which another
/// reader may have them too.
const HOLD_LIMIT: Duration = Duration::from_secs(5);
/// Lines handed out are acked in one call when this many are waiting, or
/// when the oldest waited `ACK_DELAY`, or before the next pull, or at close.
const ACK_BATCH: usize = 100;
const ACK_DELAY: Duration = Duration::from_secs(1);

/// One subscription's pull, acknowledge and give-back calls, with errors in
/// the namespace's terms. Failed acks and give-backs are logged, not
/// returned: either way the message comes again (at-least-once).
pub struct Puller {
    api: Arc<dyn PubSub>,
    pub project: String,
    pub subscription: String,
}

impl Puller {
    pub fn new(api: Arc<dyn PubSub>, project: &str, subscription: &str) -> Self {
        Self { api, project: project.to_string(), subscription: subscription.to_string() }
    }

    /// What is there now, at most `max` messages.
    pub async fn pull(&self, max: usize) -> VfsResult<Vec<ReceivedMessage>> {
        self.api.pull(&self.project, &self.subscription, max).await.map_err(vfs_error)
    }

    /// Polls until at least one message came or `wait` passed (then none).
    pub async fn pull_within(&self, max: usize, wait: Duration) -> VfsResult<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        let mut interval = FIRST_POLL_INTERVAL;
        loop {
            let pulled = self.pull(max).await?;
            if !pulled.is_empty() || Instant::now() >= deadline {
                return Ok(pulled);
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }

    pub async fn ack(&self, ack_ids: &[String]) {
        if ack_ids.is_empty() {
            return;
        }
        if let Err(e) = self.api.acknowledge(&self.project, &self.subscription, ack_ids).await {
            tracing::warn!(subscription = %self.subscription, error = %e, "ack failed: the messages come again");
        }
    }

    /// Gives messages back at once (ack deadline zero).
    pub async fn give_back(&self, ack_ids: &[String]) {
        self.set_deadline(ack_ids, Duration::ZERO).await;
    }

    /// Sets the ack deadline of held messages: zero gives them back, more
    /// keeps them from other readers that long.
    pub async fn set_deadline(&self, ack_ids: &[String], deadline: Duration) {
        if ack_ids.is_empty() {
            return;
        }
        let result = self.api.modify_ack_deadline(&self.project, &self.subscription, ack_ids, deadline).await;
        if let Err(e) = result {
            tracing::debug!(subscription = %self.subscription, error = %e, "ack deadline not set: the deadline passes");
        }
    }
}

/// A message as a line of `_stream` (text) or `_stream.jsonl`.
pub fn stream_line(message: &ReceivedMessage, json: bool) -> Bytes {
    if json {
        return Bytes::from(format_stream_json_line(message));
    }
    let time = message.publish_time.unwrap_or_else(SystemTime::now);
    Bytes::from(format_stream_line(time, &message.message_id, &message.data))
}

/// One open `_stream` (or `_stream.jsonl`) handle.
pub struct StreamReader {
    puller: Puller,
    json: bool,
    state: AsyncMutex<ReaderState>,
}

struct ReaderState {
    /// Pulled, not handed out yet, in order, and when they were pulled.
    ahead: VecDeque<ReceivedMessage>,
    pulled_at: Instant,
    /// The line being handed out, how much of it was, and its ack id.
    partial: Option<(Bytes, usize, String)>,
    /// Handed out whole, not acked yet, and since when the first waits.
    delivered: Vec<String>,
    delivered_since: Instant,
    batch: usize,
}

impl StreamReader {
    pub fn new(api: Arc<dyn PubSub>, project: &str, subscription: &str, json: bool) -> Self {
        let state = ReaderState {
            ahead: VecDeque::new(),
            pulled_at: Instant::now(),
            partial: None,
            delivered: Vec::new(),
            delivered_since: Instant::now(),
            batch: FIRST_BATCH,
        };
        Self { puller: Puller::new(api, project, subscription), json, state: AsyncMutex::new(state) }
    }

    /// The next bytes of the stream, at most `len`: the rest of a line, or
    /// the next message's line.
    pub async fn read(&self, len: u32) -> VfsResult<Bytes> {
        let mut state = self.state.lock().await;
        if state.delivered.len() >= ACK_BATCH || state.delivered_since.elapsed() >= ACK_DELAY {
            self.ack_delivered(&mut state).await;
        }
        if state.partial.is_none() {
            let message = self.next_message(&mut state).await?;
            let line = stream_line(&message, self.json);
            state.partial = Some((line, 0, message.ack_id));
        }
        Ok(take(&mut state, len as usize))
    }

    /// At close: acks what was handed out, gives back the rest (a line
    /// handed out in part included).
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        self.ack_delivered(&mut state).await;
        let partial = state.partial.take().map(|(_, _, ack_id)| ack_id);
        let unread: Vec<String> = partial.into_iter().chain(state.ahead.drain(..).map(|m| m.ack_id)).collect();
        self.puller.give_back(&unread).await;
    }

    async fn ack_delivered(&self, state: &mut ReaderState) {
        let ack_ids = std::mem::take(&mut state.delivered);
        self.puller.ack(&ack_ids).await;
    }

    /// The next message pulled ahead, or pulls; EINTR when none came within
    /// `READ_WAIT`.
    async fn next_message(&self, state: &mut ReaderState) -> VfsResult<ReceivedMessage> {
        if !state.ahead.is_empty() && state.pulled_at.elapsed() >= HOLD_LIMIT {
            let stale: Vec<String> = state.ahead.drain(..).map(|m| m.ack_id).collect();
            self.puller.give_back(&stale).await;
        }
        if state.ahead.is_empty() {
            self.ack_delivered(state).await;
            let pulled = self.puller.pull_within(state.batch, READ_WAIT).await?;
            // A reader that emptied a full batch gets a bigger one.
            if pulled.len() == state.batch {
                state.batch = (state.batch * 2).min(MAX_BATCH);
            }
            state.ahead.extend(pulled);
            state.pulled_at = Instant::now();
        }
        state
            .ahead
            .pop_front()
            .ok_or_else(|| VfsError::new(libc::EINTR, format!("no message on {} yet", self.puller.subscription)))
    }
}

/// Hands out up to `len` bytes of the partial line; a line handed out whole
/// is delivered.
fn take(state: &mut ReaderState, len: usize) -> Bytes {
    let Some((line, sent, ack_id)) = state.partial.take() else { return Bytes::new() };
    let end = line.len().min(sent + len.max(1));
    let chunk = line.slice(sent..end);
    if end == line.len() {
        if state.delivered.is_empty() {
            state.delivered_since = Instant::now();
        }
        state.delivered.push(ack_id);
    } else {
        state.partial = Some((line, end, ack_id));
    }
    chunk
}
