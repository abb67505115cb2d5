//! The versioned JSON documents ciofs shows (the files README.md lists).
//! Every document carries `"version": "1"` and a `"type"`; fields follow in a
//! fixed order so a rendering is byte-for-byte stable.
//!
//! Cloud Storage's documents are here; BigQuery's, which are also parsed
//! back when a user edits them, are in `bigquery`.

use std::collections::BTreeMap;

use ciofs_backends::gcs::{BucketMeta, BucketSettings, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::core::document::{VERSION, input, render, rfc3339};
use crate::core::rules::Problems;

const OBJECT_TYPE: &str = "gcs-object-metadata";
const BUCKET_TYPE: &str = "gcs-bucket-metadata";

/// `storage/<bucket>/.meta/<object>.json`
#[derive(Serialize)]
struct ObjectDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    bucket: &'a str,
    name: &'a str,
    content_type: Option<&'a str>,
    size: u64,
    md5_hash: Option<&'a str>,
    crc32c: Option<&'a str>,
    created: Option<String>,
    updated: Option<String>,
    generation: String,
    metageneration: String,
    storage_class: Option<&'a str>,
    custom_metadata: &'a BTreeMap<String, String>,
}

/// `storage/<bucket>/.meta/_bucket.json`
#[derive(Serialize)]
struct BucketDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    name: &'a str,
    location: &'a str,
    location_type: &'a str,
    storage_class: &'a str,
    created: Option<String>,
    updated: Option<String>,
    metageneration: String,
    versioning: bool,
    labels: &'a BTreeMap<String, String>,
}

pub fn object_document(meta: &ObjectMeta) -> Vec<u8> {
    render(&ObjectDocument {
        version: VERSION,
        r#type: OBJECT_TYPE,
        bucket: &meta.bucket,
        name: &meta.name,
        content_type: meta.content_type.as_deref(),
        size: meta.size,
        md5_hash: meta.md5_hash.as_deref(),
        crc32c: meta.crc32c.as_deref(),
        created: meta.created.map(rfc3339),
        updated: meta.updated.map(rfc3339),
        generation: meta.generation.to_string(),
        metageneration: meta.metageneration.to_string(),
        storage_class: meta.storage_class.as_deref(),
        custom_metadata: &meta.custom_metadata,
    })
}

pub fn bucket_document(meta: &BucketMeta) -> Vec<u8> {
    render(&BucketDocument {
        version: VERSION,
        r#type: BUCKET_TYPE,
        name: &meta.name,
        location: &meta.location,
        location_type: &meta.location_type,
        storage_class: &meta.storage_class,
        created: meta.created.map(rfc3339),
        updated: meta.updated.map(rfc3339),
        metageneration: meta.metageneration.to_string(),
        versioning: meta.versioning,
        labels: &meta.labels,
    })
}

/// What a written `.meta/<object>.json` asks to change: the content type
/// and the custom metadata (`None`: keep). The other fields are the
/// service's and are read and ignored, so a document read back (or taken
/// from an export) is accepted as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMetadataEdit {
    pub content_type: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the service's fields: only accepted
struct ObjectInput {
    version: Option<String>,
    r#type: Option<String>,
    content_type: Option<String>,
    custom_metadata: Option<BTreeMap<String, String>>,
    bucket: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    size: Option<serde_json::Value>,
    md5_hash: Option<serde_json::Value>,
    crc32c: Option<serde_json::Value>,
    created: Option<serde_json::Value>,
    updated: Option<serde_json::Value>,
    generation: Option<serde_json::Value>,
    metageneration: Option<serde_json::Value>,
    storage_class: Option<serde_json::Value>,
}

pub fn parse_object_document(bytes: &[u8], file: &str) -> Result<ObjectMetadataEdit, Problems> {
    let input: ObjectInput = input::parse_json(bytes, file)?;
    input::check_header(file, input.version.as_deref(), input.r#type.as_deref(), OBJECT_TYPE)?;
    Ok(ObjectMetadataEdit { content_type: input.content_type, custom_metadata: input.custom_metadata })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the service's fields: only accepted
struct BucketInput {
    version: Option<String>,
    r#type: Option<String>,
    location: Option<String>,
    storage_class: Option<String>,
    versioning: Option<bool>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<serde_json::Value>,
    location_type: Option<serde_json::Value>,
    created: Option<serde_json::Value>,
    updated: Option<serde_json::Value>,
    metageneration: Option<serde_json::Value>,
}

/// A written `.meta/_bucket.json`: the settings it asks for, a key left out
/// keeping `current`'s. The service's fields (name, times, metageneration)
/// are read and ignored, so a document taken from another bucket's export
/// applies as it is.
pub fn parse_bucket_document(bytes: &[u8], file: &str, current: &BucketMeta) -> Result<BucketSettings, Problems> {
    let input: BucketInput = input::parse_json(bytes, file)?;
    input::check_header(file, input.version.as_deref(), input.r#type.as_deref(), BUCKET_TYPE)?;
    Ok(BucketSettings {
        location: Some(input.location.unwrap_or_else(|| current.location.clone())),
        storage_class: Some(input.storage_class.unwrap_or_else(|| current.storage_class.clone())),
        labels: input.labels.unwrap_or_else(|| current.labels.clone()),
        versioning: input.versioning.unwrap_or(current.versioning),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn object_document_has_the_seed_format() {
        let meta = ObjectMeta {
            bucket: "bucket-name".into(),
            name: "object.txt".into(),
            size: 1024,
            generation: 1705492800000000,
            metageneration: 1,
            content_type: Some("text/plain".into()),
            md5_hash: Some("XUFAKrxLKna5cZ2REBfFkg==".into()),
            crc32c: Some("yZRlqg==".into()),
            created: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_651_200)),
            updated: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_768_653_000_250)),
            storage_class: Some("STANDARD".into()),
            custom_metadata: BTreeMap::from([("user-key".into(), "user-value".into())]),
            etag: "x".into(),
        };
        let text = String::from_utf8(object_document(&meta)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], "1");
        assert_eq!(value["type"], "gcs-object-metadata");
        assert_eq!(value["size"], 1024);
        assert_eq!(value["generation"], "1705492800000000");
        assert_eq!(value["created"], "2026-01-17T12:00:00Z");
        assert_eq!(value["updated"], "2026-01-17T12:30:00.250Z");
        assert_eq!(value["custom_metadata"]["user-key"], "user-value");
        assert!(text.ends_with("}\n"));
        // The same metadata renders to the same bytes.
        assert_eq!(object_document(&meta), text.into_bytes());
    }
}
