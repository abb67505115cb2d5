//! Resources that `mkdir` makes but that cannot be created yet: a bucket
//! waits for its `.meta/_bucket.json` and a dataset for its
//! `.meta/_dataset.json` (locations and storage classes are given only at
//! creation). Each waits here until its settings come, something is made in
//! it, or `WAIT` passes; buckets.rs and bigquery.rs create them.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long a resource made by `mkdir` waits for its settings.
pub(super) const WAIT: Duration = Duration::from_secs(1);

/// Which of the waiting resources to create now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingDue<'a> {
    /// Those that waited `WAIT`.
    Waited,
    /// This one subscription (project, name): its stream is read.
    Subscription(&'a str, &'a str),
    /// All of them: the process ends.
    All,
}

/// One resource waiting to be created.
#[derive(Clone)]
pub(super) struct Waiting<S> {
    pub project: String,
    since: Instant,
    /// When `mkdir` made it: its directory's time.
    pub made: SystemTime,
    /// Settings whose creation failed for a while (the service
    /// unreachable): the next try uses them, not the defaults.
    pub settings: Option<S>,
}

/// The resources of one kind that wait, by key.
pub(super) struct Pending<K, S> {
    waiting: Mutex<BTreeMap<K, Waiting<S>>>,
    /// Held while one is created, so that two callers do not both try.
    creating: tokio::sync::Mutex<()>,
}

impl<K, S> Default for Pending<K, S> {
    fn default() -> Self {
        Self { waiting: Mutex::new(BTreeMap::new()), creating: tokio::sync::Mutex::new(()) }
    }
}

impl<K: Ord + Clone, S: Clone> Pending<K, S> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<K, Waiting<S>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting; when it was made.
    pub fn add(&self, key: K, project: &str) -> SystemTime {
        let made = SystemTime::now();
        let waiting = Waiting { project: project.to_string(), since: Instant::now(), made, settings: None };
        self.lock().insert(key, waiting);
        made
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<Waiting<S>>
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

    /// Keeps `settings` for the next try of a creation that failed.
    pub fn keep_settings<Q: Ord + ?Sized>(&self, key: &Q, settings: &S)
    where
        K: Borrow<Q>,
    {
        if let Some(waiting) = self.lock().get_mut(key) {
            waiting.settings = Some(settings.clone());
        }
    }

    /// Those of `project`, by key.
    pub fn of_project(&self, project: &str) -> Vec<(K, SystemTime)> {
        self.lock().iter().filter(|(_, w)| w.project == project).map(|(k, w)| (k.clone(), w.made)).collect()
    }

    /// Those to create now, with their projects.
    pub fn due(&self, which: PendingDue<'_>) -> Vec<(K, String)> {
        let due = |w: &Waiting<S>| which == PendingDue::All || w.since.elapsed() >= WAIT;
        self.lock().iter().filter(|(_, w)| due(w)).map(|(k, w)| (k.clone(), w.project.clone())).collect()
    }

    /// Held while one of them is created.
    pub async fn creating(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.creating.lock().await
    }
}
