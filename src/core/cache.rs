//! What ciofs knows about Cloud Storage names, for a while: filled by
//! listings and gets, read by lookup and getattr, so that `ls -l` makes no
//! call per entry. Entries expire after a TTL; an absent name is remembered
//! for a shorter time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciofs_backends::gcs::{BucketMeta, ObjectMeta};
use ciofs_backends::sync::lock;

/// What a name in a bucket turned out to be.
#[derive(Clone, Debug)]
pub enum Known {
    Bucket(Arc<BucketMeta>),
    Object(Arc<ObjectMeta>),
    /// A prefix with something under it.
    Prefix,
    Absent,
}

/// Keeps at most this many names; past it, expired ones go, then all.
const MAX_ENTRIES: usize = 1 << 20;

pub struct MetaCache {
    ttl: Duration,
    negative_ttl: Duration,
    entries: Mutex<HashMap<String, (Known, Instant)>>,
}

/// A key for a name in a bucket: `bucket` then the object name or prefix.
pub fn key(bucket: &str, name: &str) -> String {
    format!("{bucket}\0{name}")
}

impl MetaCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, negative_ttl: ttl.min(Duration::from_secs(5)), entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, key: &str) -> Option<Known> {
        let entries = lock(&self.entries);
        match entries.get(key) {
            Some((known, expires)) if *expires > Instant::now() => Some(known.clone()),
            _ => None,
        }
    }

    pub fn forget(&self, key: &str) {
        lock(&self.entries).remove(key);
    }

    pub fn put(&self, key: String, known: Known) {
        let ttl = if matches!(known, Known::Absent) { self.negative_ttl } else { self.ttl };
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (known, now + ttl));
    }
}

/// Values that expire after a TTL.
pub struct Timed<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq, V: Clone> Timed<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let entries = lock(&self.entries);
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        let mut entries = lock(&self.entries);
        if entries.len() > 100_000 {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub fn forget(&self, key: &K) {
        lock(&self.entries).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = MetaCache::new(Duration::from_millis(30));
        cache.put(key("b", "x/"), Known::Prefix);
        assert!(matches!(cache.get(&key("b", "x/")), Some(Known::Prefix)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key("b", "x/")).is_none());
    }
}
