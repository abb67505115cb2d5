//! In-memory implementations of the service traits, for unit tests of the
//! core's logic. They count calls so tests can check how many were made.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{BackendError, BackendResult};
use crate::gcs::{BucketMeta, BucketPage, ByteStream, ListObjects, ObjectMeta, ObjectPage, ObjectStore};

/// How many calls of each kind a `MemoryGcs` served.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub list_buckets: AtomicU64,
    pub get_bucket: AtomicU64,
    pub list_objects: AtomicU64,
    pub get_object: AtomicU64,
    pub read_object: AtomicU64,
}

#[derive(Default)]
struct Bucket {
    meta: BucketMeta,
    objects: BTreeMap<String, (ObjectMeta, Bytes)>,
}

/// Cloud Storage in memory: buckets of objects, listing with prefix,
/// delimiter and page tokens as the JSON API does.
#[derive(Default)]
pub struct MemoryGcs {
    buckets: Mutex<BTreeMap<String, Bucket>>,
    next_generation: AtomicU64,
    pub calls: CallCounts,
}

impl MemoryGcs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_bucket(&self, name: &str) {
        let meta = BucketMeta {
            name: name.to_string(),
            location: "US".to_string(),
            storage_class: "STANDARD".to_string(),
            created: Some(SystemTime::UNIX_EPOCH),
            updated: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.entry(name.to_string()).or_default().meta = meta;
    }

    /// Stores an object (creating its bucket if needed) with a new generation.
    pub fn put_object(&self, bucket: &str, name: &str, data: impl Into<Bytes>) -> ObjectMeta {
        let data = data.into();
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst) as i64 + 1;
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            name: name.to_string(),
            size: data.len() as u64,
            generation,
            metageneration: 1,
            content_type: Some("application/octet-stream".to_string()),
            created: Some(SystemTime::UNIX_EPOCH),
            updated: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(generation as u64)),
            storage_class: Some("STANDARD".to_string()),
            ..Default::default()
        };
        self.add_bucket_if_missing(bucket);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get_mut(bucket) {
            b.objects.insert(name.to_string(), (meta.clone(), data));
        }
        meta
    }

    pub fn delete_object(&self, bucket: &str, name: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get_mut(bucket) {
            b.objects.remove(name);
        }
    }

    fn add_bucket_if_missing(&self, bucket: &str) {
        let exists = self.buckets.lock().unwrap_or_else(|e| e.into_inner()).contains_key(bucket);
        if !exists {
            self.add_bucket(bucket);
        }
    }

    fn with_bucket<T>(&self, bucket: &str, f: impl FnOnce(&Bucket) -> BackendResult<T>) -> BackendResult<T> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(bucket) {
            Some(b) => f(b),
            None => Err(BackendError::not_found(format!("bucket {bucket}"))),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryGcs {
    async fn list_buckets(
        &self,
        _project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage> {
        self.calls.list_buckets.fetch_add(1, Ordering::SeqCst);
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let after = page_token.unwrap_or_default();
        let mut page: Vec<BucketMeta> = buckets
            .values()
            .filter(|b| b.meta.name > after)
            .take(page_size as usize + 1)
            .map(|b| b.meta.clone())
            .collect();
        let next_page_token = if page.len() > page_size as usize {
            page.pop();
            page.last().map(|b| b.name.clone())
        } else {
            None
        };
        Ok(BucketPage { buckets: page, next_page_token })
    }

    async fn get_bucket(&self, bucket: &str) -> BackendResult<BucketMeta> {
        self.calls.get_bucket.fetch_add(1, Ordering::SeqCst);
        self.with_bucket(bucket, |b| Ok(b.meta.clone()))
    }

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage> {
        self.calls.list_objects.fetch_add(1, Ordering::SeqCst);
        self.with_bucket(&request.bucket, |b| Ok(list_page(b, request)))
    }

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta> {
        self.calls.get_object.fetch_add(1, Ordering::SeqCst);
        self.with_bucket(bucket, |b| {
            b.objects
                .get(name)
                .map(|(meta, _)| meta.clone())
                .ok_or_else(|| BackendError::not_found(format!("gs://{bucket}/{name}")))
        })
    }

    async fn read_object(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        range: Range<u64>,
    ) -> BackendResult<ByteStream> {
        self.calls.read_object.fetch_add(1, Ordering::SeqCst);
        let data = self.with_bucket(bucket, |b| match b.objects.get(name) {
            Some((meta, data)) if generation.is_none_or(|g| g == meta.generation) => Ok(data.clone()),
            _ => Err(BackendError::not_found(format!("gs://{bucket}/{name}"))),
        })?;
        let end = (range.end as usize).min(data.len());
        let start = (range.start as usize).min(end);
        // Several chunks, as a network stream would deliver them.
        let chunks: Vec<BackendResult<Bytes>> =
            (start..end).step_by(64 * 1024).map(|at| Ok(data.slice(at..(at + 64 * 1024).min(end)))).collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// One page of a listing: names after the page token (or at/after the start
/// offset) under the prefix, with names past the delimiter folded into
/// prefixes.
fn list_page(bucket: &Bucket, request: &ListObjects) -> ObjectPage {
    let mut page = ObjectPage::default();
    let mut last = None;
    let mut count = 0;
    let names = bucket.objects.iter().filter(|(name, _)| {
        name.starts_with(&request.prefix)
            && request.page_token.as_ref().is_none_or(|after| *name > after)
            && request.start_offset.as_ref().is_none_or(|start| *name >= start)
    });
    for (name, (meta, _)) in names {
        let rest = &name[request.prefix.len()..];
        let folded = request
            .delimiter
            .as_deref()
            .and_then(|d| rest.find(d).map(|at| format!("{}{}", request.prefix, &rest[..at + d.len()])));
        match folded {
            Some(prefix) if page.prefixes.last() == Some(&prefix) => {}
            Some(_) | None if count == request.page_size as usize => {
                page.next_page_token = last;
                return page;
            }
            Some(prefix) => {
                page.prefixes.push(prefix);
                count += 1;
            }
            None => {
                page.objects.push(meta.clone());
                count += 1;
            }
        }
        last = Some(name.clone());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prefix: &str, page_size: u32, page_token: Option<String>) -> ListObjects {
        ListObjects {
            bucket: "b".to_string(),
            prefix: prefix.to_string(),
            delimiter: Some("/".to_string()),
            page_token,
            page_size,
            start_offset: None,
        }
    }

    #[tokio::test]
    async fn listing_folds_prefixes_and_pages() {
        let gcs = MemoryGcs::new();
        for name in ["a.txt", "d/1", "d/2", "e/x/y", "z"] {
            gcs.put_object("b", name, "x");
        }
        let first = gcs.list_objects(&request("", 2, None)).await.unwrap();
        assert_eq!(first.objects.len(), 1);
        assert_eq!(first.prefixes, vec!["d/"]);
        let second = gcs.list_objects(&request("", 2, first.next_page_token)).await.unwrap();
        assert_eq!(second.prefixes, vec!["e/"]);
        assert_eq!(second.objects[0].name, "z");
        assert!(second.next_page_token.is_none());
        let nested = gcs.list_objects(&request("e/", 10, None)).await.unwrap();
        assert_eq!(nested.prefixes, vec!["e/x/"]);
    }
}
