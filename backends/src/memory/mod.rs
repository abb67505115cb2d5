//! In-memory implementations of the service traits, for unit tests of the
//! core's logic: `MemoryGcs` (Cloud Storage), `MemoryBigQuery` and `MemoryPubSub`. They
//! count calls so tests can check how many were made, can be told to fail
//! the next calls of a kind, and answer as the real services do (NotFound,
//! AlreadyExists, preconditions), including where the emulators do not.

pub mod bigquery;
mod gcs;
pub mod pubsub;

pub use bigquery::{BigQueryCallCounts, BigQueryOp, MemoryBigQuery};
pub use gcs::{CallCounts, MemoryGcs, Op};
pub use pubsub::{MemoryPubSub, PubSubCallCounts, PubSubOp};

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::sync::lock;

/// What a test asked to fail: the next `times` calls of an op, with a kind.
pub(crate) struct InjectedFailures<Op>(Mutex<BTreeMap<Op, (u32, ErrorKind)>>);

impl<Op> Default for InjectedFailures<Op> {
    fn default() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }
}

impl<Op: Ord + Copy + Debug> InjectedFailures<Op> {
    /// Makes the next `times` calls of `op` fail with `kind` (replacing
    /// what was set for `op`).
    pub fn set(&self, op: Op, times: u32, kind: ErrorKind) {
        lock(&self.0).insert(op, (times, kind));
    }

    /// The failure of this call of `op`, if one is due.
    pub fn check(&self, op: Op) -> BackendResult<()> {
        let mut failures = lock(&self.0);
        match failures.get_mut(&op) {
            Some((left, kind)) if *left > 0 => {
                *left -= 1;
                Err(BackendError::new(*kind, format!("{op:?}: failure injected by the test")))
            }
            _ => Ok(()),
        }
    }
}

/// The entries after `token` (names in order), `size` of them, and a token
/// for the rest if any is left. Tokens are opaque to callers: here, the
/// last name of the page.
pub(crate) fn page<'a, T>(
    entries: impl Iterator<Item = (&'a String, T)>,
    token: Option<String>,
    size: usize,
) -> (Vec<T>, Option<String>) {
    let mut rest = entries.filter(|(name, _)| token.as_ref().is_none_or(|after| *name > after)).peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < size {
        let Some((name, entry)) = rest.next() else { break };
        items.push(entry);
        last = Some(name.clone());
    }
    let next_page_token = if rest.peek().is_some() { last } else { None };
    (items, next_page_token)
}
