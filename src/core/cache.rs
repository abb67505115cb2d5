//! What ciofs knows about Cloud Storage names, for a while: filled by
//! listings and gets, read by lookup and getattr, so that `ls -l` makes no
//! call per entry. Entries expire after a TTL; an absent name is remembered
//! for a shorter time. `touch DIR` forgets what is known under a directory.

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

pub struct MetaCache {
    ttl: Duration,
    negative_ttl: Duration,
    /// The most names kept; past it, expired ones go, then all.
    max_entries: usize,
    entries: Mutex<HashMap<String, (Known, Instant)>>,
}

/// A key for a name in a bucket: `bucket` then the object name or prefix.
pub fn key(bucket: &str, name: &str) -> String {
    format!("{bucket}\0{name}")
}

impl MetaCache {
    /// Names kept for `ttl`, absent ones for `negative_ttl` (at most `ttl`),
    /// `max_entries` of them at most.
    pub fn new(ttl: Duration, negative_ttl: Duration, max_entries: usize) -> Self {
        Self { ttl, negative_ttl: negative_ttl.min(ttl), max_entries, entries: Mutex::new(HashMap::new()) }
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

    /// Forgets every name of `bucket` that starts with `prefix` (all of
    /// the bucket for an empty one): what was known under a directory.
    pub fn forget_under(&self, bucket: &str, prefix: &str) {
        let start = key(bucket, prefix);
        lock(&self.entries).retain(|name, _| !name.starts_with(&start));
    }

    pub fn put(&self, key: String, known: Known) {
        let ttl = if matches!(known, Known::Absent) { self.negative_ttl } else { self.ttl };
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= self.max_entries {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.max_entries {
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
        let cache = MetaCache::new(Duration::from_millis(30), Duration::from_secs(5), 100);
        cache.put(key("b", "x/"), Known::Prefix);
        assert!(matches!(cache.get(&key("b", "x/")), Some(Known::Prefix)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key("b", "x/")).is_none());
    }

    #[test]
    fn an_absent_name_is_kept_for_the_negative_ttl_and_never_past_the_ttl() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_millis(30), 100);
        cache.put(key("b", "gone"), Known::Absent);
        cache.put(key("b", "here/"), Known::Prefix);
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key("b", "gone")).is_none(), "asked again after the negative TTL");
        assert!(cache.get(&key("b", "here/")).is_some(), "the rest is kept for the TTL");
        let always_ask = MetaCache::new(Duration::ZERO, Duration::from_secs(5), 100);
        always_ask.put(key("b", "gone"), Known::Absent);
        assert!(always_ask.get(&key("b", "gone")).is_none(), "--metadata-ttl 0 asks every time");
    }

    #[test]
    fn forgetting_a_directory_forgets_what_is_under_it_only() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(60), 100);
        for name in ["d/", "d/a", "d/e/f", "da", "x"] {
            cache.put(key("b", name), Known::Absent);
        }
        cache.put(key("c", "d/a"), Known::Absent);
        cache.forget_under("b", "d/");
        let kept: Vec<&str> =
            ["d/", "d/a", "d/e/f", "da", "x"].into_iter().filter(|n| cache.get(&key("b", n)).is_some()).collect();
        assert_eq!(kept, ["da", "x"]);
        assert!(cache.get(&key("c", "d/a")).is_some(), "another bucket's names stay");
        cache.forget_under("b", "");
        assert!(cache.get(&key("b", "x")).is_none(), "a bucket root forgets the whole bucket");
    }

    #[test]
    fn the_cache_holds_at_most_its_size_dropping_expired_names_first() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_millis(20), 3);
        cache.put(key("b", "gone"), Known::Absent);
        cache.put(key("b", "a/"), Known::Prefix);
        cache.put(key("b", "b/"), Known::Prefix);
        std::thread::sleep(Duration::from_millis(30));
        cache.put(key("b", "c/"), Known::Prefix);
        let kept = |names: &[&str]| names.iter().filter(|n| cache.get(&key("b", n)).is_some()).count();
        assert_eq!(kept(&["a/", "b/", "c/"]), 3, "the expired name made room");
        cache.put(key("b", "d/"), Known::Prefix);
        assert_eq!(kept(&["a/", "b/", "c/", "d/"]), 1, "full of live names: all go, the new one stays");
        assert!(cache.get(&key("b", "d/")).is_some());
    }
}
