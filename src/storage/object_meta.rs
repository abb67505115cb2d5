//! Metadata written to `.meta/<object>.json`, kept for the object's next
//! upload when that makes a new object (`tar x` writes `.meta/` before the
//! objects, and over an existing tree it unlinks each object and creates
//! it anew), and what turns one set of custom metadata into another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ciofs_backends::sync::lock;

use super::documents::ObjectMetadataEdit;

/// How long metadata written for an object waits for the object's upload:
/// `tar x` uploads a directory's objects after all of their documents, so
/// this is long; a much later new object of that name does not take it.
const PENDING_META_TTL: Duration = Duration::from_secs(3600);

/// Metadata written, kept for the object's next upload, by (bucket, name),
/// with when it was written.
pub struct PendingObjectMeta {
    edits: Mutex<HashMap<(String, String), (ObjectMetadataEdit, Instant)>>,
    ttl: Duration,
}

impl Default for PendingObjectMeta {
    fn default() -> Self {
        Self { edits: Mutex::default(), ttl: PENDING_META_TTL }
    }
}

impl PendingObjectMeta {
    pub fn get(&self, bucket: &str, name: &str) -> Option<ObjectMetadataEdit> {
        let edits = lock(&self.edits);
        let (edit, written) = edits.get(&(bucket.to_string(), name.to_string()))?;
        (written.elapsed() < self.ttl).then(|| edit.clone())
    }

    pub fn remove(&self, bucket: &str, name: &str) {
        lock(&self.edits).remove(&(bucket.to_string(), name.to_string()));
    }

    pub fn put(&self, bucket: &str, name: &str, edit: ObjectMetadataEdit) {
        let mut edits = lock(&self.edits);
        if edits.len() % 1024 == 1023 {
            // Now and then, what waited too long goes.
            edits.retain(|_, (_, written)| written.elapsed() < self.ttl);
        }
        edits.insert((bucket.to_string(), name.to_string()), (edit, Instant::now()));
    }
}

/// What turns `current` into `wanted`: keys to set (`Some`) and to remove
/// (`None`); empty when they are the same.
pub fn map_change(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    let removed = current.keys().filter(|k| !wanted.contains_key(*k)).map(|k| (k.clone(), None));
    let set = wanted.iter().filter(|(k, v)| current.get(*k) != Some(v)).map(|(k, v)| (k.clone(), Some(v.clone())));
    removed.chain(set).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_waits_for_its_object_a_while_only() {
        let pending = PendingObjectMeta { ttl: Duration::from_millis(50), ..PendingObjectMeta::default() };
        let edit = ObjectMetadataEdit { content_type: Some("text/csv".into()), custom_metadata: None };
        pending.put("b", "old", edit.clone());
        assert_eq!(pending.get("b", "old"), Some(edit));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(pending.get("b", "old"), None, "too old to be given to a new object");
        for i in 0..1024 {
            pending.put("b", &format!("n{i}"), ObjectMetadataEdit::default());
        }
        let kept = pending.edits.lock().unwrap();
        assert!(!kept.contains_key(&("b".to_string(), "old".to_string())), "dropped in time");
    }
}
