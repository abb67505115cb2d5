//! Cloud Storage's Pub/Sub notifications, read: what one message says
//! changed. A bucket's notification config publishes a message per
//! change, whose attributes name the event, the bucket, the object and its
//! generation (`payloadFormat` JSON_API_V1 or NONE). The attributes carry
//! nearly all `--watch` needs; a JSON payload adds the metageneration and
//! the metadata the object now has, so that a mount can tell its own
//! metadata change from another's (the emulator's payload has no
//! metageneration: the metadata itself is compared then). This
//! module only reads them; what a change invalidates is
//! `invalidation.rs`'s.
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
    /// From a JSON_API_V1 payload; None without one.
    pub metageneration: Option<i64>,
    /// The metadata the object has now, from a JSON_API_V1 payload.
    pub shown: Option<ShownMetadata>,
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
    /// Reads a message: its attributes, and its payload if it is the
    /// object's JSON.
    pub fn from_message(attributes: &BTreeMap<String, String>, data: &[u8]) -> Result<Self, NotChange> {
        let mut change = Self::from_attributes(attributes)?;
        if let Ok(payload) = serde_json::from_slice::<Payload>(data) {
            change.metageneration = payload.metageneration.and_then(|m| m.parse().ok()).filter(|m: &i64| *m > 0);
            change.shown = Some(ShownMetadata {
                content_type: payload.content_type,
                storage_class: payload.storage_class,
                custom_metadata: payload.metadata.unwrap_or_default(),
            });
        }
        Ok(change)
    }

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
            metageneration: None,
            shown: None,
            overwrote_generation: generation("overwroteGeneration"),
            overwritten_by_generation: generation("overwrittenByGeneration"),
        })
    }
}

/// What of an object's metadata ciofs shows (in its `.meta/` document
/// and attributes) beyond its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownMetadata {
    pub content_type: Option<String>,
    pub storage_class: Option<String>,
    pub custom_metadata: BTreeMap<String, String>,
}

/// A JSON_API_V1 payload: the object resource (its numbers are strings).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    metageneration: Option<String>,
    content_type: Option<String>,
    storage_class: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
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
    fn a_json_payload_gives_the_metageneration_and_the_metadata_shown() {
        let message = attributes(&[("eventType", "OBJECT_METADATA_UPDATE"), ("bucketId", "b"), ("objectId", "o")]);
        let json = br#"{"kind":"storage#object","name":"o","generation":"7","metageneration":"3",
            "contentType":"text/csv","storageClass":"STANDARD","metadata":{"team":"blue"}}"#;
        let change = ObjectChange::from_message(&message, json).unwrap();
        assert_eq!(change.metageneration, Some(3));
        let shown = change.shown.expect("shown");
        assert_eq!(
            (shown.content_type.as_deref(), shown.storage_class.as_deref()),
            (Some("text/csv"), Some("STANDARD"))
        );
        assert_eq!(shown.custom_metadata, BTreeMap::from([("team".to_string(), "blue".to_string())]));
        let emulator = ObjectChange::from_message(&message, br#"{"name":"o","generation":"7"}"#).unwrap();
        assert_eq!((emulator.metageneration, emulator.shown.map(|s| s.custom_metadata.len())), (None, Some(0)));
        for data in [&b""[..], b"not json", br#"{"metageneration":3}"#] {
            let change = ObjectChange::from_message(&message, data).unwrap();
            assert_eq!((change.metageneration, change.shown), (None, None), "{data:?}");
        }
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
