//! What ciofs knows about Cloud Storage names, for a while: filled by
//! listings and gets, read by lookup and getattr, so that `ls -l` makes no
//! call per entry. Entries expire after a TTL; an absent name is remembered
//! for a shorter time. `touch DIR` forgets what is known under a directory.
//!
//! It also keeps whole directory listings (`Listing`: every object and
//! prefix of a bucket directory, all pages) for the same TTL, so that a
//! second `ls` or `find` asks Cloud Storage nothing. A name changed through
//! the mount (`set`, `forget`) drops the listings of every directory above
//! it, and a listing fetched while one of those changed is not kept: what
//! the mount did shows in its next listing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Which names changed when, so that what a fetch started before a
    /// change found is not kept after it (`put_fetched`).
    changes: Mutex<Changes>,
    pub listings: ListingCache,
}

/// The changes of names, counted: a fetch notes the count at its start.
#[derive(Default)]
struct Changes {
    count: u64,
    /// The count at each name's last change (cleared past a bound).
    at: HashMap<String, u64>,
    /// Changes up to this count are no longer in `at`: older fetches are
    /// not kept.
    cleared_at: u64,
}

/// When a fetch of names started (`MetaCache::start`).
#[derive(Clone, Copy, Debug)]
pub struct FetchStart(u64);

/// A key for a name in a bucket: `bucket` then the object name or prefix.
pub fn key(bucket: &str, name: &str) -> String {
    format!("{bucket}\0{name}")
}

impl MetaCache {
    /// Names kept for `ttl`, absent ones for `negative_ttl` (at most `ttl`),
    /// `max_entries` of them at most; listings kept for `ttl`, holding
    /// `max_listed` objects and prefixes together at most.
    pub fn new(ttl: Duration, negative_ttl: Duration, max_entries: usize, max_listed: usize) -> Self {
        Self {
            ttl,
            negative_ttl: negative_ttl.min(ttl),
            max_entries,
            entries: Mutex::new(HashMap::new()),
            changes: Mutex::default(),
            listings: ListingCache::new(ttl, max_listed),
        }
    }

    /// A name changed through the mount (written, patched, removed, moved):
    /// what it is now, and the listings that showed it go.
    pub fn set(&self, key: String, known: Known) {
        self.listings.changed(&key);
        self.note_change(Some(&key));
        self.put(key, known);
    }

    /// Called before a fetch whose answers go to `put_fetched`.
    pub fn start(&self) -> FetchStart {
        FetchStart(lock(&self.changes).count)
    }

    /// Keeps what a fetch started at `started` found, unless the name
    /// changed meanwhile (set, forgotten: a notification said so): the
    /// answer may be from before the change.
    pub fn put_fetched(&self, key: String, known: Known, started: FetchStart) {
        {
            let changes = lock(&self.changes);
            if started.0 < changes.cleared_at || changes.at.get(&key).is_some_and(|at| *at > started.0) {
                return;
            }
        }
        self.put(key, known);
    }

    /// Counts a change of `key`, or of every name (None).
    fn note_change(&self, key: Option<&str>) {
        let mut changes = lock(&self.changes);
        changes.count += 1;
        let count = changes.count;
        match key {
            Some(key) if changes.at.len() < 100_000 => {
                changes.at.insert(key.to_string(), count);
            }
            _ => {
                changes.at.clear();
                changes.cleared_at = count;
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Known> {
        let entries = lock(&self.entries);
        match entries.get(key) {
            Some((known, expires)) if *expires > Instant::now() => Some(known.clone()),
            _ => None,
        }
    }

    /// Forgets a name that changed, or may have (an upload refused, a
    /// read that found its generation gone), and the listings that show it.
    pub fn forget(&self, key: &str) {
        self.listings.changed(key);
        self.note_change(Some(key));
        lock(&self.entries).remove(key);
    }

    /// Forgets every name of `bucket` that starts with `prefix` (all of
    /// the bucket for an empty one), and the listings of the directory and
    /// of those under it: what was known under a directory.
    pub fn forget_under(&self, bucket: &str, prefix: &str) {
        let start = key(bucket, prefix);
        self.listings.forget_under(&start);
        self.note_change(None);
        lock(&self.entries).retain(|name, _| !name.starts_with(&start));
    }

    /// Forgets every name and listing (a gap in what `--watch` was told).
    pub fn forget_all(&self) {
        self.listings.forget_under("");
        self.note_change(None);
        lock(&self.entries).clear();
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

/// A bucket directory's children as Cloud Storage listed them (every
/// page): its objects (the placeholder `prefix` itself left out) and its
/// prefixes. Both the directory and its `.meta/` are made from it.
pub struct Listing {
    /// Which fetch this is: a listing fetched again is another.
    pub id: u64,
    /// In name order.
    pub objects: Vec<Arc<ObjectMeta>>,
    /// Full prefixes, each ending with `/`, in order.
    pub prefixes: Vec<String>,
    /// The lengths of the objects' `.meta/` documents, by object name, as
    /// the slice that renders them found them (rendered once per listing).
    pub document_sizes: Mutex<HashMap<String, u64>>,
}

impl Listing {
    /// What it counts toward the cache's bound: one for an empty one.
    fn weight(&self) -> usize {
        (self.objects.len() + self.prefixes.len()).max(1)
    }
}

/// Where and when a listing fetch started: a change meanwhile keeps it
/// out, and it expires a TTL after its start, with the names its first
/// page put in the metadata cache (so `ls -l` of a kept listing never
/// stats a name the cache let go).
#[derive(Clone, Copy, Debug)]
pub struct ListingStart(u64, Instant);

/// Directory listings, by `key(bucket, prefix)`, for the metadata TTL and
/// up to a number of listed entries; a listing larger than that bound is
/// not kept.
pub struct ListingCache {
    ttl: Duration,
    max_listed: usize,
    /// Counts changes; a listing is kept only if no change to its directory
    /// came after its fetch started.
    changes: AtomicU64,
    next_id: AtomicU64,
    state: Mutex<ListingState>,
}

#[derive(Default)]
struct ListingState {
    listings: HashMap<String, (Arc<Listing>, Instant)>,
    /// The sum of the kept listings' weights.
    listed: usize,
    /// The change count at each directory's last change.
    changed_at: HashMap<String, u64>,
    /// `changed_at` was emptied at this count: a fetch that started before
    /// is not kept (its directory may have changed).
    cleared_at: u64,
}

impl ListingState {
    /// Drops the listing of `dir`, if one is kept, and its weight.
    fn remove(&mut self, dir: &str) {
        if let Some((old, _)) = self.listings.remove(dir) {
            self.listed -= old.weight();
        }
    }
}

/// The listing keys of every directory that shows `name_key` (a name or a
/// prefix ending with `/`): its parent and all above, up to the bucket.
fn listing_keys_above(name_key: &str) -> Vec<String> {
    let Some((bucket, name)) = name_key.split_once('\0') else { return Vec::new() };
    let mut keys = Vec::new();
    let mut rest = name.strip_suffix('/').unwrap_or(name);
    while let Some(at) = rest.rfind('/') {
        rest = &rest[..at];
        keys.push(key(bucket, &format!("{rest}/")));
    }
    if !name.is_empty() {
        keys.push(key(bucket, ""));
    }
    keys
}

impl ListingCache {
    pub fn new(ttl: Duration, max_listed: usize) -> Self {
        Self {
            ttl,
            max_listed,
            changes: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            state: Mutex::new(ListingState::default()),
        }
    }

    /// The kept listing of `prefix` in `bucket`, if it is still fresh.
    pub fn get(&self, bucket: &str, prefix: &str) -> Option<Arc<Listing>> {
        let state = lock(&self.state);
        match state.listings.get(&key(bucket, prefix)) {
            Some((listing, expires)) if *expires > Instant::now() => Some(listing.clone()),
            _ => None,
        }
    }

    /// Called before the first page of a listing is asked for.
    pub fn start(&self) -> ListingStart {
        ListingStart(self.changes.load(Ordering::SeqCst), Instant::now())
    }

    /// Keeps a complete listing fetched since `started`, unless its
    /// directory changed meanwhile, the TTL is zero or it is larger than
    /// the bound; returns it either way.
    pub fn put(
        &self,
        bucket: &str,
        prefix: &str,
        mut objects: Vec<Arc<ObjectMeta>>,
        mut prefixes: Vec<String>,
        started: ListingStart,
    ) -> Arc<Listing> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Kept in key order, to be handed out a chunk at a time
        // (storage/listing.rs `Replay`); pages come in order already.
        if !objects.is_sorted_by(|a, b| a.name <= b.name) {
            objects.sort_by(|a, b| a.name.cmp(&b.name));
        }
        if !prefixes.is_sorted() {
            prefixes.sort();
        }
        let listing = Arc::new(Listing { id, objects, prefixes, document_sizes: Mutex::default() });
        let weight = listing.weight();
        if self.ttl.is_zero() || weight > self.max_listed {
            return listing;
        }
        let dir = key(bucket, prefix);
        let now = Instant::now();
        let mut state = lock(&self.state);
        let changed = started.0 < state.cleared_at || state.changed_at.get(&dir).is_some_and(|at| *at > started.0);
        if changed {
            tracing::debug!(bucket, prefix, "listing not kept: the directory changed while it was listed");
            return listing;
        }
        state.remove(&dir);
        if state.listed + weight > self.max_listed {
            state.listings.retain(|_, (_, expires)| *expires > now);
            state.listed = state.listings.values().map(|(l, _)| l.weight()).sum();
        }
        while state.listed + weight > self.max_listed {
            // The oldest go first.
            let Some(oldest) = state.listings.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| k.clone())
            else {
                break;
            };
            state.remove(&oldest);
        }
        state.listed += weight;
        state.listings.insert(dir, (listing.clone(), started.1 + self.ttl));
        listing
    }

    /// `name_key` changed: the listings above it go, and one being fetched
    /// now is not kept.
    pub fn changed(&self, name_key: &str) {
        let dirs = listing_keys_above(name_key);
        let at = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = lock(&self.state);
        if state.changed_at.len() > 100_000 {
            state.changed_at.clear();
            state.cleared_at = at;
        }
        for dir in dirs {
            state.remove(&dir);
            state.changed_at.insert(dir, at);
        }
    }

    /// Forgets the listings of the directory `start` (a listing key) and of
    /// every directory under it (`touch DIR`).
    pub fn forget_under(&self, start: &str) {
        let at = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = lock(&self.state);
        let gone: Vec<String> = state.listings.keys().filter(|dir| dir.starts_with(start)).cloned().collect();
        for dir in gone {
            state.remove(&dir);
        }
        // A fetch under way of any of them is not kept either.
        state.changed_at.clear();
        state.cleared_at = at;
    }

    /// How many listed entries are kept (for tests and logs).
    pub fn listed(&self) -> usize {
        lock(&self.state).listed
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
    fn what_a_fetch_found_is_not_kept_if_the_name_changed_meanwhile() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(5), 100, 100);
        let started = cache.start();
        cache.forget(&key("b", "changed"));
        cache.put_fetched(key("b", "changed"), Known::Prefix, started);
        assert!(cache.get(&key("b", "changed")).is_none(), "found before the change: not kept");
        cache.put_fetched(key("b", "other"), Known::Prefix, started);
        assert!(cache.get(&key("b", "other")).is_some(), "another name is kept");
        let after = cache.start();
        cache.put_fetched(key("b", "changed"), Known::Prefix, after);
        assert!(cache.get(&key("b", "changed")).is_some(), "found after the change: kept");
        let before_all = cache.start();
        cache.forget_under("b", "");
        cache.put_fetched(key("b", "other"), Known::Prefix, before_all);
        assert!(cache.get(&key("b", "other")).is_none(), "a whole bucket forgotten meanwhile");
    }

    #[test]
    fn entries_expire() {
        let cache = MetaCache::new(Duration::from_millis(30), Duration::from_secs(5), 100, 100);
        cache.put(key("b", "x/"), Known::Prefix);
        assert!(matches!(cache.get(&key("b", "x/")), Some(Known::Prefix)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key("b", "x/")).is_none());
    }

    #[test]
    fn an_absent_name_is_kept_for_the_negative_ttl_and_never_past_the_ttl() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_millis(30), 100, 100);
        cache.put(key("b", "gone"), Known::Absent);
        cache.put(key("b", "here/"), Known::Prefix);
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key("b", "gone")).is_none(), "asked again after the negative TTL");
        assert!(cache.get(&key("b", "here/")).is_some(), "the rest is kept for the TTL");
        let always_ask = MetaCache::new(Duration::ZERO, Duration::from_secs(5), 100, 100);
        always_ask.put(key("b", "gone"), Known::Absent);
        assert!(always_ask.get(&key("b", "gone")).is_none(), "--metadata-ttl 0 asks every time");
    }

    #[test]
    fn forgetting_a_directory_forgets_what_is_under_it_only() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(60), 100, 100);
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
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_millis(20), 3, 100);
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

    fn object(bucket: &str, name: &str) -> Arc<ObjectMeta> {
        Arc::new(ObjectMeta { bucket: bucket.into(), name: name.into(), ..Default::default() })
    }

    fn list(cache: &ListingCache, prefix: &str, names: &[&str]) -> Arc<Listing> {
        let start = cache.start();
        cache.put("b", prefix, names.iter().map(|n| object("b", n)).collect(), Vec::new(), start)
    }

    #[test]
    fn a_listing_is_kept_for_the_ttl_and_never_with_a_zero_ttl() {
        let cache = ListingCache::new(Duration::from_millis(30), 100);
        let kept = list(&cache, "d/", &["d/a", "d/b"]);
        let got = cache.get("b", "d/").expect("kept");
        assert_eq!(got.id, kept.id);
        assert_eq!(got.objects.len(), 2);
        assert!(cache.get("b", "").is_none() && cache.get("c", "d/").is_none(), "only its own directory");
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("b", "d/").is_none(), "expired");
        let always_ask = ListingCache::new(Duration::ZERO, 100);
        list(&always_ask, "d/", &["d/a"]);
        assert!(always_ask.get("b", "d/").is_none(), "--metadata-ttl 0 lists every time");
        assert_eq!(always_ask.listed(), 0);
    }

    #[test]
    fn listings_hold_at_most_the_bound_oldest_going_first_and_a_larger_one_not_at_all() {
        let cache = ListingCache::new(Duration::from_secs(60), 5);
        list(&cache, "a/", &["a/1", "a/2"]);
        std::thread::sleep(Duration::from_millis(2));
        list(&cache, "b/", &["b/1", "b/2"]);
        assert_eq!(cache.listed(), 4);
        std::thread::sleep(Duration::from_millis(2));
        list(&cache, "c/", &["c/1", "c/2"]);
        assert!(cache.get("b", "a/").is_none(), "the oldest made room");
        assert!(cache.get("b", "b/").is_some() && cache.get("b", "c/").is_some());
        assert_eq!(cache.listed(), 4);
        list(&cache, "big/", &["big/1", "big/2", "big/3", "big/4", "big/5", "big/6"]);
        assert!(cache.get("b", "big/").is_none(), "larger than the bound: not kept");
        assert!(cache.get("b", "b/").is_some(), "and nothing else went for it");
        list(&cache, "empty/", &[]);
        assert_eq!(cache.listed(), 5, "an empty listing counts one");
    }

    #[test]
    fn a_change_drops_the_listings_above_the_name_only() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(5), 100, 100);
        for prefix in ["", "d/", "d/e/", "d/e/f/", "x/"] {
            list(&cache.listings, prefix, &[]);
        }
        cache.set(key("b", "d/e/file"), Known::Absent);
        let kept = |prefixes: &[&str]| -> Vec<String> {
            prefixes.iter().filter(|p| cache.listings.get("b", p).is_some()).map(|p| p.to_string()).collect()
        };
        assert_eq!(kept(&["", "d/", "d/e/", "d/e/f/", "x/"]), ["d/e/f/", "x/"]);
        list(&cache.listings, "", &[]);
        cache.forget(&key("b", "x/made/"));
        assert_eq!(kept(&["", "x/"]), Vec::<String>::new(), "a prefix changed: its parent and above");
        assert_eq!(kept(&["d/e/f/"]), ["d/e/f/"]);
    }

    #[test]
    fn a_listing_fetched_while_its_directory_changed_is_not_kept() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(5), 100, 100);
        let started = cache.listings.start();
        cache.set(key("b", "d/new"), Known::Object(object("b", "d/new")));
        cache.listings.put("b", "d/", Vec::new(), Vec::new(), started);
        assert!(cache.listings.get("b", "d/").is_none(), "it may lack d/new");
        let started = cache.listings.start();
        cache.set(key("b", "elsewhere/x"), Known::Absent);
        cache.listings.put("b", "d/", Vec::new(), Vec::new(), started);
        assert!(cache.listings.get("b", "d/").is_some(), "a change elsewhere does not matter");
    }

    #[test]
    fn touch_of_a_directory_forgets_its_listing_and_those_under_it() {
        let cache = MetaCache::new(Duration::from_secs(60), Duration::from_secs(5), 100, 100);
        for prefix in ["", "d/", "d/e/", "da/"] {
            list(&cache.listings, prefix, &["x"]);
        }
        cache.forget_under("b", "d/");
        let kept: Vec<&str> =
            ["", "d/", "d/e/", "da/"].into_iter().filter(|p| cache.listings.get("b", p).is_some()).collect();
        assert_eq!(kept, ["", "da/"]);
        assert_eq!(cache.listings.listed(), 2);
    }
}
