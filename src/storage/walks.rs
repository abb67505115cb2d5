//! Walks through a directory's files: a reader that opens the files of a
//! directory one after the other in listing order (`tar`, `cp -r`, `zip`,
//! an NFS client's copy) gets the next small files fetched ahead, into the
//! content cache. Each file then costs its open and not a GET in turn.
//!
//! Only while the directory's listing is cached: the order, and the
//! generations to fetch, come from it. Only objects of one block, so that
//! a guess that was wrong costs little; the window doubles while the walk
//! keeps to the order, up to `MAX_FILES_AHEAD`, and a jump ends it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ciofs_backends::gcs::ObjectMeta;
use ciofs_backends::sync::lock;

use crate::core::cache::Listing;

/// The most files fetched ahead of a walk.
const MAX_FILES_AHEAD: usize = 16;
/// The most directories whose walks are followed (past it, the one opened
/// in least recently is forgotten).
const MAX_WALKS: usize = 64;

/// The walks under way, by directory (a listing key).
#[derive(Default)]
pub struct Walks {
    state: Mutex<WalksState>,
}

#[derive(Default)]
struct WalksState {
    walks: HashMap<String, Walk>,
    /// Counts opens: each walk keeps the count at its last one.
    opens: u64,
}

/// Where a walk through one directory is.
struct Walk {
    /// `WalksState::opens` at its last open.
    used: u64,
    /// The listing the positions are in.
    listing: u64,
    /// The position opened last, and how many were opened in order up to it.
    last: usize,
    run: u32,
    /// The objects below this position have been fetched ahead.
    ahead_to: usize,
}

impl Walks {
    /// Notes that `name` of the directory `dir` (whose cached listing is
    /// `listing`) was opened, and returns the objects to fetch ahead of it:
    /// none unless the opens keep to the listing's order.
    pub fn opened(&self, dir: &str, listing: &Listing, name: &str, max_size: u64) -> Vec<Arc<ObjectMeta>> {
        let Ok(at) = listing.objects.binary_search_by(|object| object.name.as_str().cmp(name)) else {
            return Vec::new();
        };
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.opens += 1;
        let (walks, now) = (&mut state.walks, state.opens);
        if walks.len() >= MAX_WALKS && !walks.contains_key(dir) {
            let oldest = walks.iter().min_by_key(|(_, walk)| walk.used).map(|(dir, _)| dir.clone());
            walks.remove(&oldest.unwrap_or_default());
        }
        let new = Walk { used: now, listing: listing.id, last: at, run: 0, ahead_to: 0 };
        let walk = walks.entry(dir.to_string()).or_insert(new);
        walk.used = now;
        if walk.listing != listing.id {
            *walk = Walk { used: now, listing: listing.id, last: at, run: 0, ahead_to: 0 };
        } else if at == walk.last + 1 {
            walk.run = walk.run.saturating_add(1);
        } else if at != walk.last {
            walk.run = 0;
            walk.ahead_to = 0;
        }
        walk.last = at;
        if walk.run == 0 {
            return Vec::new();
        }
        let window = MAX_FILES_AHEAD.min(1 << walk.run.min(8));
        let to = listing.objects.len().min(at + 1 + window);
        let from = walk.ahead_to.max(at + 1);
        walk.ahead_to = walk.ahead_to.max(to);
        listing.objects.get(from..to).unwrap_or_default().iter().filter(|o| o.size <= max_size).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(id: u64, sizes: &[u64]) -> Listing {
        let objects = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| Arc::new(ObjectMeta { name: format!("d/f{i:02}"), size: *size, ..Default::default() }))
            .collect();
        Listing { id, objects, prefixes: Vec::new(), document_sizes: Mutex::default() }
    }

    fn names(objects: Vec<Arc<ObjectMeta>>) -> Vec<String> {
        objects.iter().map(|o| o.name.trim_start_matches("d/").to_string()).collect()
    }

    #[test]
    fn opens_in_listing_order_fetch_a_growing_window_ahead_once() {
        let walks = Walks::default();
        let dir = listing(1, &[10; 40]);
        assert!(walks.opened("b\0d/", &dir, "d/f00", 100).is_empty(), "one open is no walk");
        assert_eq!(names(walks.opened("b\0d/", &dir, "d/f01", 100)), ["f02", "f03"]);
        assert_eq!(names(walks.opened("b\0d/", &dir, "d/f02", 100)), ["f04", "f05", "f06"]);
        assert_eq!(names(walks.opened("b\0d/", &dir, "d/f03", 100)), ["f07", "f08", "f09", "f10", "f11"]);
        // The same file again (a second open by the same reader) moves nothing.
        assert!(walks.opened("b\0d/", &dir, "d/f03", 100).is_empty());
        for i in 4..30 {
            let ahead = walks.opened("b\0d/", &dir, &format!("d/f{i:02}"), 100);
            assert!(ahead.iter().all(|o| o.name.as_str() > "d/f11"), "nothing fetched twice: {:?}", names(ahead));
        }
        let last = walks.opened("b\0d/", &dir, "d/f30", 100);
        assert!(names(last).last().is_none_or(|n| n.as_str() <= "f39"), "not past the end");
    }

    #[test]
    fn a_jump_ends_the_walk_and_large_objects_are_not_fetched() {
        let walks = Walks::default();
        let dir = listing(1, &[10, 10, 10, 500, 10, 10, 10, 10, 10, 10]);
        walks.opened("k", &dir, "d/f00", 100);
        assert_eq!(names(walks.opened("k", &dir, "d/f01", 100)), ["f02"], "f03 is too large");
        assert!(walks.opened("k", &dir, "d/f07", 100).is_empty(), "a jump");
        assert!(walks.opened("k", &dir, "d/f05", 100).is_empty(), "backwards");
        assert_eq!(names(walks.opened("k", &dir, "d/f06", 100)), ["f07", "f08"]);
        assert!(walks.opened("k", &dir, "d/gone", 100).is_empty(), "a name not in the listing");
    }

    #[test]
    fn past_the_most_walks_the_least_recent_is_forgotten() {
        let walks = Walks::default();
        let dir = listing(1, &[10; 10]);
        walks.opened("kept", &dir, "d/f00", 100);
        assert_eq!(names(walks.opened("kept", &dir, "d/f01", 100)), ["f02", "f03"]);
        for other in 0..MAX_WALKS {
            walks.opened(&format!("other{other}"), &dir, "d/f00", 100);
            walks.opened("kept", &dir, "d/f01", 100);
        }
        // The walk in use went on: its window doubled again.
        assert_eq!(names(walks.opened("kept", &dir, "d/f02", 100)), ["f04", "f05", "f06"]);
        assert_eq!(names(walks.opened("other0", &dir, "d/f01", 100)), Vec::<String>::new(), "other0 was forgotten");
        assert_eq!(names(walks.opened("other9", &dir, "d/f01", 100)), ["f02", "f03"], "other9 was kept");
    }

    #[test]
    fn a_new_listing_starts_the_walk_again() {
        let walks = Walks::default();
        walks.opened("k", &listing(1, &[10; 10]), "d/f00", 100);
        walks.opened("k", &listing(1, &[10; 10]), "d/f01", 100);
        assert!(walks.opened("k", &listing(2, &[10; 10]), "d/f02", 100).is_empty());
        assert_eq!(names(walks.opened("k", &listing(2, &[10; 10]), "d/f03", 100)), ["f04", "f05"]);
    }
}
