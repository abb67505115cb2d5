//! Resources that `mkdir` makes but that cannot be created yet, because
//! some settings can only be given at creation: a bucket waits for its
//! `.meta/_bucket.json`, a dataset for its `.meta/_dataset.json`, a topic
//! or a subscription for its config.json (the documents `tar x` writes
//! right after the directory). Each waits here until its settings come,
//! something is made in it, or `WAIT` passes; the slices create them
//! (storage/buckets.rs, bigquery/tree.rs, pubsub/tree.rs).

use ciofs_backends::sync::lock;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long a resource made by `mkdir` waits for its settings.
pub const WAIT: Duration = Duration::from_secs(1);

/// Which of the waiting resources to create now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PendingDue<'a> {
    /// Those that waited `WAIT`.
    Waited,
    /// This one subscription (project, name): its stream is read.
    Subscription(&'a str, &'a str),
    /// All of them: the process ends.
    All,
}

/// One resource waiting to be created.
#[derive(Clone)]
pub struct Waiting<D, S> {
    /// Where `mkdir` made it, beyond its key: a bucket's project, a
    /// subscription's topic.
    pub made_in: D,
    since: Instant,
    /// When `mkdir` made it: its directory's time.
    pub made: SystemTime,
    /// Settings it is to be created with, written before it could be (the
    /// service unreachable, a dead-letter topic not there yet).
    pub settings: Option<S>,
}

impl<D, S> Waiting<D, S> {
    /// Since it was made, or since its settings came.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }
}

/// The resources of one kind that wait, by key.
pub struct Pending<K, D, S> {
    waiting: Mutex<BTreeMap<K, Waiting<D, S>>>,
    /// Held while one is created, so that two callers do not both try.
    creating: tokio::sync::Mutex<()>,
}

impl<K, D, S> Default for Pending<K, D, S> {
    fn default() -> Self {
        Self { waiting: Mutex::new(BTreeMap::new()), creating: tokio::sync::Mutex::new(()) }
    }
}

impl<K: Ord + Clone, D: Clone, S: Clone> Pending<K, D, S> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<K, Waiting<D, S>>> {
        lock(&self.waiting)
    }

    /// Starts waiting; when it was made.
    pub fn add(&self, key: K, made_in: D) -> SystemTime {
        let made = SystemTime::now();
        self.lock().insert(key, Waiting { made_in, since: Instant::now(), made, settings: None });
        made
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<Waiting<D, S>>
    where
        K: Borrow<Q>,
    {
        self.lock().get(key).cloned()
    }

    pub fn contains<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.lock().contains_key(key)
    }

    /// Stops waiting (created, refused, or removed); whether it waited.
    pub fn remove<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.lock().remove(key).is_some()
    }

    /// Keeps `settings` for the next try of a creation that could not be
    /// made yet, which waits `WAIT` (or longer) again.
    pub fn wait_again<Q: Ord + ?Sized>(&self, key: &Q, settings: &S)
    where
        K: Borrow<Q>,
    {
        if let Some(waiting) = self.lock().get_mut(key) {
            waiting.settings = Some(settings.clone());
            waiting.since = Instant::now();
        }
    }

    /// Those that `keep`, by key.
    pub fn filter(&self, keep: impl Fn(&K, &Waiting<D, S>) -> bool) -> Vec<(K, Waiting<D, S>)> {
        self.lock().iter().filter(|(k, w)| keep(k, w)).map(|(k, w)| (k.clone(), w.clone())).collect()
    }

    /// Those to create now: all of them, or those that waited `WAIT` (one
    /// `Subscription` is pubsub/tree.rs's to pick).
    pub fn due(&self, which: PendingDue<'_>) -> Vec<(K, Waiting<D, S>)> {
        self.filter(|_, w| which == PendingDue::All || w.waited() >= WAIT)
    }

    /// Held while one of them is created.
    pub async fn creating(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.creating.lock().await
    }
}
