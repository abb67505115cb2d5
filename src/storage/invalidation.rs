//! What a change made elsewhere invalidates here: another mount or another
//! writer changed an object, and Cloud Storage's notification said so
//! (`--watch`, `watch.rs`). Exactly what the change names goes: the
//! object's metadata and the listings that show it (its directory's and
//! the `.meta/` made from it), the content cache's blocks of the
//! generation it replaced, and what the frontend's clients keep of the
//! object, its `.meta/` document and its directories (FUSE: the kernel's
//! attributes, entries and pages; NFS clients ask again with GETATTR).
//!
//! A change this mount already knows of (its own upload, or a change it
//! has since looked up) drops nothing: a mount's own writes are not
//! invalidated twice, and a late, out-of-order notification does not make
//! a newer generation look stale.

use std::sync::Arc;

use ciofs_backends::gcs::ObjectMeta;

use super::notifications::{ChangeKind, ObjectChange};
use super::tree::StorageTree;
use crate::core::cache::{Known, key};
use crate::core::node::Node;

/// The directories above a changed object (`directories_changed_by`).
#[derive(Default)]
struct ChangedDirs {
    /// Prefixes whose cached word goes.
    forgotten: Vec<String>,
    /// Prefixes whose kernel entry goes (they may be new, or gone).
    entries: Vec<String>,
}

/// What a notification did here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidated {
    /// This mount knew the change (or a later one) already.
    AlreadyKnown,
    /// This mount holds nothing of the object (another bucket's, or one
    /// never looked at).
    NotHeld,
    /// What it names was dropped, to be asked of Cloud Storage again.
    Dropped,
}

impl StorageTree {
    /// Acts on a change made elsewhere.
    pub fn changed_elsewhere(&self, change: &ObjectChange) -> Invalidated {
        let (bucket, name) = (change.bucket.as_str(), change.name.as_str());
        let known = self.known_now(bucket, name);
        if let Some(known) = &known
            && knows_of(known, change)
        {
            // What the kernel holds may be from before (a lookup of the
            // object's `.meta/` refilled the cache, not its own entry).
            self.tell_attributes(bucket, name);
            return Invalidated::AlreadyKnown;
        }
        let held = known.is_some() || self.holds_inode_of(bucket, name);
        let dirs = self.directories_changed_by(change);
        if !held && dirs.forgotten.is_empty() && change.kind != ChangeKind::Deleted {
            return Invalidated::NotHeld;
        }
        // The object, and the listings of every directory above it.
        self.cache.forget(&key(bucket, name));
        for prefix in &dirs.forgotten {
            self.cache.forget(&key(bucket, prefix));
        }
        if let Some(Known::Object(old)) = &known
            && Some(old.generation) != change.generation.filter(|_| change.kind != ChangeKind::Deleted)
        {
            self.drop_blocks_of(old);
        }
        self.tell_clients(bucket, name, held, &dirs.entries);
        if held { Invalidated::Dropped } else { Invalidated::NotHeld }
    }

    /// The directories above a changed object that may have appeared or
    /// gone: a new object's ancestors not known as directories; for a
    /// removed one, its ancestors known as directories (the cache's word
    /// may be stale now), and its own directory's kernel entry if the kept
    /// listing shows nothing else in it. A directory that still has other
    /// entries keeps its kernel entry: dropping it would unhash a shell's
    /// working directory.
    fn directories_changed_by(&self, change: &ObjectChange) -> ChangedDirs {
        let (bucket, name) = (change.bucket.as_str(), change.name.as_str());
        let prefixes = ancestor_prefixes(name);
        let is_dir = |prefix: &str| matches!(self.cache.get(&key(bucket, prefix)), Some(Known::Prefix));
        match change.kind {
            ChangeKind::Finalized => {
                let new: Vec<String> = prefixes.iter().filter(|p| !is_dir(p)).map(|p| p.to_string()).collect();
                ChangedDirs { forgotten: new.clone(), entries: new }
            }
            ChangeKind::Deleted | ChangeKind::Archived => {
                let forgotten = prefixes.iter().filter(|p| is_dir(p)).map(|p| p.to_string()).collect();
                let parent = prefixes.last().copied().unwrap_or_default();
                let emptied = !parent.is_empty()
                    && self.cache.listings.get(bucket, parent).is_some_and(|listing| {
                        listing.prefixes.is_empty() && listing.objects.iter().all(|o| o.name == name)
                    });
                ChangedDirs { forgotten, entries: if emptied { vec![parent.to_string()] } else { Vec::new() } }
            }
            ChangeKind::MetadataUpdated => ChangedDirs::default(),
        }
    }

    /// Everything known of `bucket` goes (a gap in its notifications: what
    /// changed meanwhile is not known), and the frontend's clients ask
    /// again for what they keep of it.
    /// (None: of every bucket, for a topic any bucket may publish to.)
    pub fn forget_bucket(&self, bucket: Option<&str>) {
        match bucket {
            Some(bucket) => self.cache.forget_under(bucket, ""),
            None => self.cache.forget_all(),
        }
        self.cx.changed_elsewhere_where(|node| {
            let in_bucket = match node {
                Node::Dir { bucket, .. }
                | Node::Object { bucket, .. }
                | Node::MetaDir { bucket, .. }
                | Node::ObjectMeta { bucket, .. } => bucket,
                _ => return false,
            };
            bucket.is_none_or(|wanted| wanted == in_bucket)
        });
    }

    /// What this mount knows of an object now: its cached metadata, else
    /// what the kept listing of its directory says (absent if not in it).
    fn known_now(&self, bucket: &str, name: &str) -> Option<Known> {
        if let Some(known) = self.cache.get(&key(bucket, name)) {
            return Some(known);
        }
        let prefix = name.rfind('/').map_or("", |at| &name[..=at]);
        let listing = self.cache.listings.get(bucket, prefix)?;
        let listed = listing.objects.binary_search_by(|o| o.name.as_str().cmp(name)).ok();
        Some(listed.map_or(Known::Absent, |at| Known::Object(listing.objects[at].clone())))
    }

    /// Whether a frontend was given an inode for the object, in any
    /// project: its clients may hold its attributes or pages.
    fn holds_inode_of(&self, bucket: &str, name: &str) -> bool {
        self.cx.projects.iter().any(|project| {
            let object = Node::Object { project: project.clone(), bucket: bucket.to_string(), name: name.to_string() };
            self.cx.inodes.find(&object).is_some()
        })
    }

    /// Drops the cached blocks of an object's replaced generation.
    fn drop_blocks_of(&self, old: &Arc<ObjectMeta>) {
        if let Some(blocks) = self.content_cache_if_open() {
            blocks.remove_generation(&old.bucket, &old.name, old.generation, old.size);
        }
    }

    /// Tells the frontend's clients, in every project that shows the
    /// bucket: the object and its document, if held (attributes, pages,
    /// entries), the listings of its directory and its `.meta/`, and the
    /// entries of `dirs`.
    fn tell_clients(&self, bucket: &str, name: &str, held: bool, dirs: &[String]) {
        let dir = |project: &str, prefix: &str| Node::Dir {
            project: project.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        };
        let parent = name.rfind('/').map_or("", |at| &name[..=at]);
        for project in &self.cx.projects {
            let (p, b, n) = (project.clone(), bucket.to_string(), name.to_string());
            if held {
                self.cx.changed_elsewhere(&Node::Object { project: p.clone(), bucket: b.clone(), name: n.clone() });
                self.cx.changed_elsewhere(&Node::ObjectMeta { project: p.clone(), bucket: b.clone(), name: n });
            }
            self.cx.listing_changed(&dir(project, parent));
            self.cx.listing_changed(&Node::MetaDir { project: p, bucket: b, prefix: parent.to_string() });
            for prefix in dirs {
                self.cx.changed_elsewhere(&dir(project, prefix));
            }
        }
    }

    /// Tells the frontend's clients that the object's attributes, and its
    /// document's, may have changed.
    pub fn tell_attributes(&self, bucket: &str, name: &str) {
        for project in &self.cx.projects {
            let (p, b, n) = (project.clone(), bucket.to_string(), name.to_string());
            self.cx.attributes_changed(&Node::Object { project: p.clone(), bucket: b.clone(), name: n.clone() });
            self.cx.attributes_changed(&Node::ObjectMeta { project: p, bucket: b, name: n });
        }
    }
}

/// Whether what the mount knows already reflects `change` or a later one.
fn knows_of(known: &Known, change: &ObjectChange) -> bool {
    let Some(generation) = change.generation else { return false };
    match (change.kind, known) {
        (ChangeKind::Finalized, Known::Object(meta)) => meta.generation >= generation,
        (ChangeKind::MetadataUpdated, Known::Object(meta)) => {
            meta.generation > generation || (meta.generation == generation && shows_metadata_of(meta, change))
        }
        // Deleted or made noncurrent: known if something newer replaced it,
        // or if the mount knows it is gone.
        (ChangeKind::Deleted | ChangeKind::Archived, Known::Object(meta)) => meta.generation > generation,
        (ChangeKind::Deleted | ChangeKind::Archived, Known::Absent) => true,
        _ => false,
    }
}

/// Whether the metadata of `meta` (of the changed generation) is what the
/// change made: by metageneration if the notification says it, else by
/// the metadata shown (the emulator's notifications have no
/// metageneration). Neither said: not known.
fn shows_metadata_of(meta: &ObjectMeta, change: &ObjectChange) -> bool {
    if let Some(wanted) = change.metageneration {
        return meta.metageneration >= wanted;
    }
    change.shown.as_ref().is_some_and(|shown| {
        shown.content_type == meta.content_type
            && shown.storage_class == meta.storage_class
            && shown.custom_metadata == meta.custom_metadata
    })
}

/// The prefixes above `name`, nearest last: `a/b/c` → `a/`, `a/b/`.
fn ancestor_prefixes(name: &str) -> Vec<&str> {
    name.match_indices('/').map(|(at, _)| &name[..=at]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::notifications::ShownMetadata;

    fn meta(generation: i64, metageneration: i64) -> Known {
        Known::Object(Arc::new(ObjectMeta { generation, metageneration, ..Default::default() }))
    }

    fn change(kind: ChangeKind, generation: i64, metageneration: Option<i64>) -> ObjectChange {
        ObjectChange {
            kind,
            bucket: "b".into(),
            name: "o".into(),
            generation: Some(generation),
            metageneration,
            shown: None,
            overwrote_generation: None,
            overwritten_by_generation: None,
        }
    }

    #[test]
    fn a_change_is_known_only_if_the_mount_holds_it_or_a_later_one() {
        use ChangeKind::*;
        assert!(knows_of(&meta(5, 1), &change(Finalized, 5, None)), "its own upload");
        assert!(knows_of(&meta(6, 1), &change(Finalized, 5, None)), "a late notification");
        assert!(!knows_of(&meta(4, 1), &change(Finalized, 5, None)));
        assert!(!knows_of(&Known::Absent, &change(Finalized, 5, None)));
        assert!(knows_of(&meta(5, 3), &change(MetadataUpdated, 5, Some(3))), "its own patch");
        assert!(!knows_of(&meta(5, 2), &change(MetadataUpdated, 5, Some(3))));
        assert!(!knows_of(&meta(5, 3), &change(MetadataUpdated, 5, None)), "nothing to compare: dropped");
        let mut shown = change(MetadataUpdated, 5, None);
        shown.shown = Some(ShownMetadata {
            content_type: None,
            storage_class: None,
            custom_metadata: [("team".to_string(), "blue".to_string())].into(),
        });
        assert!(!knows_of(&meta(5, 1), &shown), "other metadata: dropped");
        let mut tagged = ObjectMeta { generation: 5, ..Default::default() };
        tagged.custom_metadata.insert("team".into(), "blue".into());
        assert!(knows_of(&Known::Object(Arc::new(tagged)), &shown), "the same metadata: its own");
        assert!(knows_of(&Known::Absent, &change(Deleted, 5, None)), "its own removal");
        assert!(knows_of(&meta(6, 1), &change(Deleted, 5, None)), "an overwrite it knows");
        assert!(!knows_of(&meta(5, 1), &change(Deleted, 5, None)));
        assert!(!knows_of(&Known::Prefix, &change(Deleted, 5, None)));
    }

    #[test]
    fn the_prefixes_above_a_name_are_its_directories() {
        assert_eq!(ancestor_prefixes("a/b/c.txt"), vec!["a/", "a/b/"]);
        assert!(ancestor_prefixes("top.txt").is_empty());
    }
}
