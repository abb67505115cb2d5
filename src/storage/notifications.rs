//! Cloud Storage's Pub/Sub notifications, read: what one message says
//! changed. A bucket's notification config publishes a message per
//! change, whose attributes name the event, the bucket, the object and its
//! generation (`payloadFormat` JSON_API_V1 or NONE: the attributes carry
//! all `--watch` needs, so the payload is not read). This module only
//! reads them; what a change invalidates is the watcher's.
//!
//! Notifications arrive at least once and in no particular order (the
//! emulator sends an object's metadata update before its finalize): a
//! change is described by its generation, so that a reader can tell an
//! old one from a new one.

use std::collections::BTreeMap;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// OBJECT_FINALIZE: a generation was written (new, or over another).
    Finalized,
    /// OBJECT_METADATA_UPDATE: a generation's metadata changed.
    MetadataUpdated,
    /// OBJECT_DELETE: a generation was deleted or replaced.
    Deleted,
    /// OBJECT_ARCHIVE: a generation became noncurrent (versioned buckets).
    Archived,
}

/// One notification: `kind` happened to generation `generation` of
/// `bucket`/`name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange {
    pub kind: ChangeKind,
    pub bucket: String,
    pub name: String,
    /// None when the message does not say (or says it unreadably).
    pub generation: Option<i64>,
    /// A finalize over an object: the generation it replaced.
    pub overwrote_generation: Option<i64>,
    /// A delete by an overwrite: the generation that replaced it.
    pub overwritten_by_generation: Option<i64>,
}

/// Why a message is not a change to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotChange {
    /// An event this reader does not know (a later API's): skipped.
    OtherEvent(String),
    /// Not a Cloud Storage notification, or a broken one: logged, skipped.
    Malformed(String),
}

impl ObjectChange {
    /// Reads a message's attributes.
    pub fn from_attributes(attributes: &BTreeMap<String, String>) -> Result<Self, NotChange> {
        let get = |key: &str| attributes.get(key).filter(|value| !value.is_empty());
        let event = get("eventType").ok_or_else(|| NotChange::Malformed("no eventType attribute".into()))?;
        let kind = match event.as_str() {
            "OBJECT_FINALIZE" => ChangeKind::Finalized,
            "OBJECT_METADATA_UPDATE" => ChangeKind::MetadataUpdated,
            "OBJECT_DELETE" => ChangeKind::Deleted,
            "OBJECT_ARCHIVE" => ChangeKind::Archived,
            other => return Err(NotChange::OtherEvent(other.to_string())),
        };
        let required = |key: &str| get(key).cloned().ok_or_else(|| NotChange::Malformed(format!("{event}: no {key}")));
        let generation = |key: &str| get(key).and_then(|value| value.parse::<i64>().ok()).filter(|g| *g > 0);
        Ok(ObjectChange {
            kind,
            bucket: required("bucketId")?,
            name: required("objectId")?,
            generation: generation("objectGeneration"),
            overwrote_generation: generation("overwroteGeneration"),
            overwritten_by_generation: generation("overwrittenByGeneration"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_finalize_over_an_object_names_both_generations() {
        let message = attributes(&[
            ("eventType", "OBJECT_FINALIZE"),
            ("bucketId", "bk"),
            ("objectId", "a/b c.txt"),
            ("objectGeneration", "1796318618558485"),
            ("overwroteGeneration", "1796318618000000"),
            ("payloadFormat", "JSON_API_V1"),
            ("notificationConfig", "projects/_/buckets/bk/notificationConfigs/1"),
        ]);
        let change = ObjectChange::from_attributes(&message).unwrap();
        assert_eq!(change.kind, ChangeKind::Finalized);
        assert_eq!((change.bucket.as_str(), change.name.as_str()), ("bk", "a/b c.txt"));
        assert_eq!((change.generation, change.overwrote_generation), (Some(1796318618558485), Some(1796318618000000)));
        assert_eq!(change.overwritten_by_generation, None);
    }

    #[test]
    fn each_event_type_is_read_and_an_unknown_one_is_skipped_by_name() {
        for (event, kind) in [
            ("OBJECT_METADATA_UPDATE", ChangeKind::MetadataUpdated),
            ("OBJECT_DELETE", ChangeKind::Deleted),
            ("OBJECT_ARCHIVE", ChangeKind::Archived),
        ] {
            let message = attributes(&[("eventType", event), ("bucketId", "b"), ("objectId", "o")]);
            assert_eq!(ObjectChange::from_attributes(&message).unwrap().kind, kind, "{event}");
        }
        let message = attributes(&[("eventType", "OBJECT_RETAINED"), ("bucketId", "b"), ("objectId", "o")]);
        assert_eq!(ObjectChange::from_attributes(&message), Err(NotChange::OtherEvent("OBJECT_RETAINED".into())));
    }

    #[test]
    fn a_message_from_elsewhere_or_broken_is_refused_with_why() {
        let refused = |pairs: &[(&str, &str)]| match ObjectChange::from_attributes(&attributes(pairs)) {
            Err(NotChange::Malformed(why)) => why,
            other => panic!("{pairs:?}: {other:?}"),
        };
        assert_eq!(refused(&[("hello", "world")]), "no eventType attribute");
        assert_eq!(refused(&[("eventType", "OBJECT_DELETE"), ("objectId", "o")]), "OBJECT_DELETE: no bucketId");
        assert_eq!(
            refused(&[("eventType", "OBJECT_DELETE"), ("bucketId", "b"), ("objectId", "")]),
            "OBJECT_DELETE: no objectId"
        );
        let odd = attributes(&[
            ("eventType", "OBJECT_DELETE"),
            ("bucketId", "b"),
            ("objectId", "o"),
            ("objectGeneration", "-3x"),
        ]);
        assert_eq!(ObjectChange::from_attributes(&odd).unwrap().generation, None, "an unreadable generation is none");
    }
}
