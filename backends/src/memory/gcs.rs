//! `MemoryGcs`: Cloud Storage in memory, for unit tests of the core and
//! for `ciofs demo` (`MemoryGcs::live`). It counts calls so tests can check
//! how many were made, and can be told to fail the next calls of a kind.
//! A listing page is a range scan of the bucket's ordered names, so paging
//! through a directory of a million objects costs each page its own size.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::InjectedFailures;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gcs::{
    BucketChange, BucketMeta, BucketPage, BucketSettings, CopyObject, ListObjects, NotificationConfig, ObjectBody,
    ObjectMeta, ObjectPage, ObjectStore, PatchObjectMetadata, ReadObject, StreamedUpload, Upload,
};
use crate::sync::lock;

/// How many calls of each kind a `MemoryGcs` served (failed ones included).
#[derive(Debug, Default)]
pub struct CallCounts {
    pub list_buckets: AtomicU64,
    pub get_bucket: AtomicU64,
    pub list_objects: AtomicU64,
    pub get_object: AtomicU64,
    pub read_object: AtomicU64,
    /// Of the reads, those pinned to a generation (`ReadObject::generation`).
    pub pinned_reads: AtomicU64,
    pub upload_object: AtomicU64,
    /// Of the uploads, those that were streamed while written.
    pub streamed_uploads: AtomicU64,
    pub delete_object: AtomicU64,
    pub copy_object: AtomicU64,
    pub patch_object: AtomicU64,
    pub create_bucket: AtomicU64,
    pub update_bucket: AtomicU64,
    pub delete_bucket: AtomicU64,
    pub list_notifications: AtomicU64,
    pub create_notification: AtomicU64,
}

/// A kind of `ObjectStore` call, to make it fail with `MemoryGcs::fail_next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    ListBuckets,
    GetBucket,
    ListObjects,
    GetObject,
    ReadObject,
    Upload,
    DeleteObject,
    CopyObject,
    PatchObject,
    CreateBucket,
    UpdateBucket,
    DeleteBucket,
    ListNotifications,
    CreateNotification,
}

impl CallCounts {
    fn of(&self, op: Op) -> &AtomicU64 {
        match op {
            Op::ListBuckets => &self.list_buckets,
            Op::GetBucket => &self.get_bucket,
            Op::ListObjects => &self.list_objects,
            Op::GetObject => &self.get_object,
            Op::ReadObject => &self.read_object,
            Op::Upload => &self.upload_object,
            Op::DeleteObject => &self.delete_object,
            Op::CopyObject => &self.copy_object,
            Op::PatchObject => &self.patch_object,
            Op::CreateBucket => &self.create_bucket,
            Op::UpdateBucket => &self.update_bucket,
            Op::DeleteBucket => &self.delete_bucket,
            Op::ListNotifications => &self.list_notifications,
            Op::CreateNotification => &self.create_notification,
        }
    }
}

#[derive(Default)]
struct Bucket {
    meta: BucketMeta,
    /// The project it belongs to; empty: listed in every project (as
    /// fake-gcs-server lists every bucket).
    project: String,
    objects: BTreeMap<String, Stored>,
    /// The content types its objects have, each kept once.
    content_types: BTreeSet<Arc<str>>,
    /// Its Pub/Sub notification configs, in the order they were made.
    notifications: Vec<NotificationConfig>,
    /// The id of the last config made: ids count from 1, per bucket, and
    /// are not reused.
    last_notification_id: u64,
}

impl Bucket {
    fn content_type(&mut self, content_type: &str) -> Arc<str> {
        if let Some(known) = self.content_types.get(content_type) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(content_type);
        self.content_types.insert(new.clone());
        new
    }
}

/// An object as its bucket keeps it: the name is the map's key, the bucket
/// the map's, the hashes numbers and the content type shared, so that an
/// object costs no allocation of its own but its data and custom metadata
/// (a million seeded objects take ~300 MB instead of ~800 MB as
/// `ObjectMeta`s). `meta` makes the API's view of it.
#[derive(Clone)]
struct Stored {
    data: Bytes,
    generation: i64,
    metageneration: i64,
    content_type: Arc<str>,
    md5: Option<[u8; 16]>,
    crc32c: u32,
    created: SystemTime,
    updated: SystemTime,
    custom_metadata: BTreeMap<String, String>,
}

impl Stored {
    fn meta(&self, bucket: &str, name: &str) -> ObjectMeta {
        let base64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
        ObjectMeta {
            bucket: bucket.to_string(),
            name: name.to_string(),
            size: self.data.len() as u64,
            generation: self.generation,
            metageneration: self.metageneration,
            content_type: Some(self.content_type.to_string()),
            md5_hash: self.md5.map(|digest| base64(&digest)),
            // As Cloud Storage gives it: base64 of the big-endian value.
            crc32c: Some(base64(&self.crc32c.to_be_bytes())),
            created: Some(self.created),
            updated: Some(self.updated),
            storage_class: Some("STANDARD".to_string()),
            custom_metadata: self.custom_metadata.clone(),
            etag: format!("etag-{}", self.generation),
        }
    }
}

/// Cloud Storage in memory: buckets of objects, listing with prefix,
/// delimiter and page tokens as the JSON API does, generation preconditions
/// as Cloud Storage checks them.
#[derive(Default)]
pub struct MemoryGcs {
    buckets: Mutex<BTreeMap<String, Bucket>>,
    next_generation: AtomicU64,
    /// Generations and times from the wall clock, as Cloud Storage's are
    /// (`live`); else generations count from 1 and times from the epoch,
    /// which unit tests compare exactly.
    wall_clock: bool,
    /// Calls still to fail, per kind: how many, and how.
    failures: InjectedFailures<Op>,
    pub calls: CallCounts,
}

impl MemoryGcs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cloud Storage in memory as a user sees it (`ciofs demo`): an
    /// object's generation is the microsecond it was written, as on Google,
    /// so a generation is never reused by a later run (the content cache on
    /// disk outlives the process and is keyed by generation), and its
    /// times are the wall clock's.
    pub fn live() -> Self {
        Self { wall_clock: true, ..Self::default() }
    }

    /// Stores an object with a content type and custom metadata (creating
    /// its bucket if needed), as an upload from elsewhere would; no call is
    /// counted.
    pub fn put_object_with(
        &self,
        bucket: &str,
        name: &str,
        data: impl Into<Bytes>,
        content_type: &str,
        custom_metadata: BTreeMap<String, String>,
    ) -> ObjectMeta {
        self.put(bucket, name, data.into(), Some(content_type.to_string()), custom_metadata)
    }

    /// A bucket listed in every project.
    pub fn add_bucket(&self, name: &str) {
        self.add_bucket_of("", name);
    }

    /// A bucket of `project` only.
    pub fn add_bucket_of(&self, project: &str, name: &str) {
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(name.to_string()).or_default();
        bucket.meta = self.new_bucket_meta(name);
        bucket.project = project.to_string();
    }

    /// Stores an object (creating its bucket if needed) with a new generation,
    /// as a change made behind the mount's back would.
    pub fn put_object(&self, bucket: &str, name: &str, data: impl Into<Bytes>) -> ObjectMeta {
        self.put(bucket, name, data.into(), None, BTreeMap::new())
    }

    /// `put_object` and `put_object_with`: stores an object, its bucket
    /// made if missing, counting no call.
    fn put(
        &self,
        bucket: &str,
        name: &str,
        data: Bytes,
        content_type: Option<String>,
        custom_metadata: BTreeMap<String, String>,
    ) -> ObjectMeta {
        self.add_bucket_if_missing(bucket);
        let mut buckets = lock(&self.buckets);
        let b = buckets.get_mut(bucket).expect("the bucket was just added");
        self.store(b, name, data, content_type, custom_metadata)
    }

    /// Removes an object behind the mount's back (no call is counted).
    pub fn remove_object(&self, bucket: &str, name: &str) {
        let mut buckets = lock(&self.buckets);
        if let Some(b) = buckets.get_mut(bucket) {
            b.objects.remove(name);
        }
    }

    /// An object's metadata, if it exists (no call is counted).
    pub fn object_meta(&self, bucket: &str, name: &str) -> Option<ObjectMeta> {
        let buckets = lock(&self.buckets);
        buckets.get(bucket)?.objects.get(name).map(|stored| stored.meta(bucket, name))
    }

    /// The names of a bucket's objects, in order (no call is counted).
    pub fn object_names(&self, bucket: &str) -> Vec<String> {
        let buckets = lock(&self.buckets);
        buckets.get(bucket).map(|b| b.objects.keys().cloned().collect()).unwrap_or_default()
    }

    /// An object's bytes, if it exists.
    pub fn object_data(&self, bucket: &str, name: &str) -> Option<Bytes> {
        let buckets = lock(&self.buckets);
        buckets.get(bucket)?.objects.get(name).map(|stored| stored.data.clone())
    }

    /// Makes the next `times` calls of kind `op` fail with `kind` (they
    /// count as calls, and change nothing). Replaces what was set for `op`.
    pub fn fail_next(&self, op: Op, times: u32, kind: ErrorKind) {
        self.failures.set(op, times, kind);
    }

    /// Counts a call, and fails it if `fail_next` said so.
    fn call(&self, op: Op) -> BackendResult<()> {
        self.calls.of(op).fetch_add(1, Ordering::SeqCst);
        self.failures.check(op)
    }

    fn add_bucket_if_missing(&self, bucket: &str) {
        let exists = lock(&self.buckets).contains_key(bucket);
        if !exists {
            self.add_bucket(bucket);
        }
    }

    /// Stores `data` as `name` in `bucket` with a new generation.
    fn store(
        &self,
        bucket: &mut Bucket,
        name: &str,
        data: Bytes,
        content_type: Option<String>,
        custom_metadata: BTreeMap<String, String>,
    ) -> ObjectMeta {
        let (generation, created, updated) = self.next_generation_and_times();
        // As Cloud Storage gives it; unit tests compare metadata without it.
        let md5 = self.wall_clock.then(|| <md5::Md5 as md5::Digest>::digest(&data).into());
        let content_type = bucket.content_type(content_type.as_deref().unwrap_or("application/octet-stream"));
        let stored = Stored {
            crc32c: crc32c::crc32c(&data),
            md5,
            data,
            generation,
            metageneration: 1,
            content_type,
            created,
            updated,
            custom_metadata,
        };
        let meta = stored.meta(&bucket.meta.name, name);
        bucket.objects.insert(name.to_string(), stored);
        meta
    }

    /// A new bucket's metadata, made now (`live`) or at the epoch.
    fn new_bucket_meta(&self, name: &str) -> BucketMeta {
        let now = if self.wall_clock { SystemTime::now() } else { SystemTime::UNIX_EPOCH };
        BucketMeta {
            name: name.to_string(),
            location: "US".to_string(),
            storage_class: "STANDARD".to_string(),
            created: Some(now),
            updated: Some(now),
            metageneration: 1,
            ..Default::default()
        }
    }

    /// A new generation, above every earlier one, and the object's
    /// creation and update times.
    fn next_generation_and_times(&self) -> (i64, SystemTime, SystemTime) {
        if !self.wall_clock {
            let generation = self.next_generation.fetch_add(1, Ordering::SeqCst) as i64 + 1;
            let updated = SystemTime::UNIX_EPOCH + Duration::from_secs(generation as u64);
            return (generation, SystemTime::UNIX_EPOCH, updated);
        }
        let now = SystemTime::now();
        let micros = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        // Two writes in one microsecond still get distinct generations.
        let next = |last: u64| last.saturating_add(1).max(micros);
        let last = self.next_generation.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)));
        let generation = next(last.unwrap_or_else(|last| last)) as i64;
        (generation, now, now)
    }

    fn with_bucket<T>(&self, bucket: &str, f: impl FnOnce(&Bucket) -> BackendResult<T>) -> BackendResult<T> {
        let buckets = lock(&self.buckets);
        match buckets.get(bucket) {
            Some(b) => f(b),
            None => Err(BackendError::not_found(format!("bucket {bucket}"))),
        }
    }

    fn with_bucket_mut<T>(&self, bucket: &str, f: impl FnOnce(&mut Bucket) -> BackendResult<T>) -> BackendResult<T> {
        let mut buckets = lock(&self.buckets);
        match buckets.get_mut(bucket) {
            Some(b) => f(b),
            None => Err(BackendError::not_found(format!("bucket {bucket}"))),
        }
    }
}

/// `PreconditionFailed` unless `current` (the object's generation, `None`
/// when absent) satisfies `expected` (0: must be absent).
fn check_generation(what: &str, current: Option<i64>, expected: Option<i64>) -> BackendResult<()> {
    match (expected, current.unwrap_or(0)) {
        (Some(expected), current) if expected != current => Err(BackendError::new(
            ErrorKind::PreconditionFailed,
            format!("{what} is at generation {current}, not {expected}"),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl ObjectStore for MemoryGcs {
    async fn list_buckets(
        &self,
        project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage> {
        self.call(Op::ListBuckets)?;
        let buckets = lock(&self.buckets);
        let after = page_token.unwrap_or_default();
        let mut page: Vec<BucketMeta> = buckets
            .values()
            .filter(|b| b.meta.name > after && (b.project.is_empty() || b.project == project))
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
        self.call(Op::GetBucket)?;
        self.with_bucket(bucket, |b| Ok(b.meta.clone()))
    }

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage> {
        self.call(Op::ListObjects)?;
        self.with_bucket(&request.bucket, |b| Ok(list_page(b, request)))
    }

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta> {
        self.call(Op::GetObject)?;
        self.with_bucket(bucket, |b| {
            b.objects
                .get(name)
                .map(|stored| stored.meta(bucket, name))
                .ok_or_else(|| BackendError::not_found(format!("gs://{bucket}/{name}")))
        })
    }

    /// As Cloud Storage reads: the generation asked for or the live one,
    /// and a range that starts at or past the end is refused (HTTP 416).
    async fn read_object(&self, request: &ReadObject) -> BackendResult<ObjectBody> {
        let ReadObject { bucket, name, generation, range, .. } = request;
        self.call(Op::ReadObject)?;
        if generation.is_some() {
            self.calls.pinned_reads.fetch_add(1, Ordering::SeqCst);
        }
        let what = format!("gs://{bucket}/{name}");
        let (served, data) = self.with_bucket(bucket, |b| match b.objects.get(name) {
            Some(stored) if generation.is_none_or(|g| g == stored.generation) => {
                Ok((stored.generation, stored.data.clone()))
            }
            _ => Err(BackendError::not_found(&what)),
        })?;
        if range.is_empty() {
            return Ok(ObjectBody { generation: served, bytes: Box::pin(futures::stream::empty()) });
        }
        if range.start >= data.len() as u64 {
            let message = format!("read {what} [{}..{}): past its end ({} bytes)", range.start, range.end, data.len());
            return Err(BackendError::new(ErrorKind::InvalidArgument, message));
        }
        let end = (range.end as usize).min(data.len());
        let start = range.start as usize;
        // Several chunks, as a network stream would deliver them.
        let chunks: Vec<BackendResult<Bytes>> =
            (start..end).step_by(64 * 1024).map(|at| Ok(data.slice(at..(at + 64 * 1024).min(end)))).collect();
        Ok(ObjectBody { generation: served, bytes: Box::pin(futures::stream::iter(chunks)) })
    }

    async fn upload_object(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        self.call(Op::Upload)?;
        let what = format!("gs://{}/{}", upload.bucket, upload.name);
        let mut data = vec![0; upload.size as usize];
        upload
            .source
            .read_exact_at(&mut data, 0)
            .map_err(|e| BackendError::new(ErrorKind::InvalidArgument, format!("upload {what}: staging file: {e}")))?;
        self.with_bucket_mut(&upload.bucket, |b| {
            let current = b.objects.get(&upload.name).map(|stored| stored.generation);
            check_generation(&what, current, upload.if_generation_match)?;
            let content_type = upload.content_type.clone();
            Ok(self.store(b, &upload.name, data.into(), content_type, upload.custom_metadata.clone()))
        })
    }

    /// Waits until the writer is done, then stores the file as a whole
    /// upload would (counted as an upload).
    async fn upload_streamed(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta> {
        let StreamedUpload { upload, mut progress } = streamed;
        let size = match progress.wait_for(|w| w.complete).await {
            Ok(written) => written.len,
            Err(_) => {
                let what = format!("gs://{}/{}", upload.bucket, upload.name);
                return Err(BackendError::new(ErrorKind::Other, format!("streamed upload {what}: abandoned")));
            }
        };
        self.calls.streamed_uploads.fetch_add(1, Ordering::SeqCst);
        self.upload_object(&Upload { size, ..upload }).await
    }

    async fn delete_object(&self, bucket: &str, name: &str, if_generation_match: Option<i64>) -> BackendResult<()> {
        self.call(Op::DeleteObject)?;
        let what = format!("gs://{bucket}/{name}");
        self.with_bucket_mut(bucket, |b| {
            let current = b.objects.get(name).map(|stored| stored.generation);
            if current.is_none() {
                return Err(BackendError::not_found(&what));
            }
            check_generation(&what, current, if_generation_match)?;
            b.objects.remove(name);
            Ok(())
        })
    }

    async fn copy_object(&self, request: &CopyObject) -> BackendResult<ObjectMeta> {
        let CopyObject { bucket, source, destination, if_source_generation_match } = request;
        self.call(Op::CopyObject)?;
        let what = format!("gs://{bucket}/{source}");
        self.with_bucket_mut(bucket, |b| {
            let Some(source) = b.objects.get(source).cloned() else {
                return Err(BackendError::not_found(&what));
            };
            check_generation(&what, Some(source.generation), *if_source_generation_match)?;
            let content_type = Some(source.content_type.to_string());
            Ok(self.store(b, destination, source.data, content_type, source.custom_metadata))
        })
    }

    async fn patch_object_metadata(&self, request: &PatchObjectMetadata) -> BackendResult<ObjectMeta> {
        let PatchObjectMetadata { bucket, name, content_type, custom_metadata, if_metageneration_match } = request;
        self.call(Op::PatchObject)?;
        let what = format!("gs://{bucket}/{name}");
        self.with_bucket_mut(bucket, |b| {
            // Shared with the bucket's other objects of that type; made
            // before the object is borrowed from the bucket.
            let content_type = content_type.as_deref().map(|c| b.content_type(c));
            let Some(meta) = b.objects.get_mut(name) else {
                return Err(BackendError::not_found(&what));
            };
            if if_metageneration_match.is_some_and(|m| m != meta.metageneration) {
                return Err(BackendError::new(
                    ErrorKind::PreconditionFailed,
                    format!("{what}: metageneration changed"),
                ));
            }
            if let Some(content_type) = content_type {
                meta.content_type = content_type;
            }
            for (key, value) in custom_metadata {
                match value {
                    Some(value) => meta.custom_metadata.insert(key.clone(), value.clone()),
                    None => meta.custom_metadata.remove(key),
                };
            }
            meta.metageneration += 1;
            meta.updated = std::time::SystemTime::now();
            Ok(meta.meta(bucket, name))
        })
    }

    async fn create_bucket(&self, project: &str, bucket: &str, settings: &BucketSettings) -> BackendResult<BucketMeta> {
        self.call(Op::CreateBucket)?;
        let mut buckets = lock(&self.buckets);
        if buckets.contains_key(bucket) {
            return Err(BackendError::new(ErrorKind::AlreadyExists, format!("bucket {bucket} exists")));
        }
        let mut meta = self.new_bucket_meta(bucket);
        meta.location = settings.location.clone().unwrap_or(meta.location);
        meta.storage_class = settings.storage_class.clone().unwrap_or(meta.storage_class);
        meta.labels = settings.labels.clone();
        meta.versioning = settings.versioning;
        let project = project.to_string();
        buckets.insert(bucket.to_string(), Bucket { meta: meta.clone(), project, ..Bucket::default() });
        Ok(meta)
    }

    async fn update_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta> {
        self.call(Op::UpdateBucket)?;
        self.with_bucket_mut(bucket, |b| {
            let meta = &mut b.meta;
            if if_metageneration_match.is_some_and(|m| m != meta.metageneration) {
                let message = format!("bucket {bucket}: metageneration changed");
                return Err(BackendError::new(ErrorKind::PreconditionFailed, message));
            }
            for (key, value) in &change.labels {
                match value {
                    Some(value) => meta.labels.insert(key.clone(), value.clone()),
                    None => meta.labels.remove(key),
                };
            }
            meta.versioning = change.versioning;
            meta.storage_class = change.storage_class.clone().unwrap_or(meta.storage_class.clone());
            meta.metageneration += 1;
            meta.updated = Some(SystemTime::now());
            Ok(meta.clone())
        })
    }

    /// As Cloud Storage: only an empty bucket, else `AlreadyExists` (its 409).
    async fn delete_bucket(&self, bucket: &str) -> BackendResult<()> {
        self.call(Op::DeleteBucket)?;
        let mut buckets = lock(&self.buckets);
        match buckets.get(bucket) {
            None => Err(BackendError::not_found(format!("bucket {bucket}"))),
            Some(b) if !b.objects.is_empty() => {
                Err(BackendError::new(ErrorKind::AlreadyExists, format!("bucket {bucket} is not empty")))
            }
            Some(_) => {
                buckets.remove(bucket);
                Ok(())
            }
        }
    }

    async fn list_notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>> {
        self.call(Op::ListNotifications)?;
        self.with_bucket(bucket, |b| Ok(b.notifications.clone()))
    }

    async fn create_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig> {
        self.call(Op::CreateNotification)?;
        self.with_bucket_mut(bucket, |b| {
            b.last_notification_id += 1;
            let config = NotificationConfig {
                id: b.last_notification_id.to_string(),
                topic: topic.to_string(),
                event_types: event_types.to_vec(),
                payload_format: "JSON_API_V1".to_string(),
                object_name_prefix: String::new(),
            };
            b.notifications.push(config.clone());
            Ok(config)
        })
    }
}

/// One page of a listing: names after the page token (or at/after the start
/// offset) under the prefix, with names past the delimiter folded into
/// prefixes. A range scan from where the page starts; a folded prefix is
/// stepped over with one seek, not name by name.
fn list_page(bucket: &Bucket, request: &ListObjects) -> ObjectPage {
    let mut page = ObjectPage::default();
    let mut count = 0;
    let mut from = scan_start(request);
    // What the next page starts after: the last name taken, or the end of
    // the last prefix folded.
    let mut last = None;
    loop {
        let mut step_over = None;
        for (name, stored) in bucket.objects.range::<str, _>((from.as_ref().map(String::as_str), Bound::Unbounded)) {
            let Some(rest) = name.strip_prefix(request.prefix.as_str()) else { return page };
            let folded = request
                .delimiter
                .as_deref()
                .and_then(|d| rest.find(d).map(|at| &name[..request.prefix.len() + at + d.len()]));
            if folded.is_some_and(|prefix| page.prefixes.last().is_some_and(|last| last == prefix)) {
                continue;
            }
            if count == request.page_size as usize {
                page.next_page_token = last;
                return page;
            }
            count += 1;
            match folded {
                Some(prefix) => {
                    page.prefixes.push(prefix.to_string());
                    step_over = Some(past(prefix));
                    break;
                }
                None => {
                    page.objects.push(stored.meta(&bucket.meta.name, name));
                    last = Some(name.clone());
                }
            }
        }
        let Some(after) = step_over else { return page };
        last = Some(after.clone());
        from = Bound::Excluded(after);
    }
}

/// Where a listing's scan starts: the latest of the prefix, the start
/// offset (both included) and the page token (excluded).
fn scan_start(request: &ListObjects) -> Bound<String> {
    let floor = match &request.start_offset {
        Some(offset) if *offset > request.prefix => offset,
        _ => &request.prefix,
    };
    match &request.page_token {
        Some(token) if token >= floor => Bound::Excluded(token.clone()),
        _ => Bound::Included(floor.clone()),
    }
}

/// A name after every name that starts with `prefix` (but one that goes on
/// with U+10FFFF, which the listing then steps over name by name).
fn past(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;
    use std::sync::Arc;

    fn upload(name: &str, data: &[u8], if_generation_match: Option<i64>) -> Upload {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        Upload {
            bucket: "b".to_string(),
            name: name.to_string(),
            source: Arc::new(file),
            size: data.len() as u64,
            content_type: Some("text/plain".to_string()),
            custom_metadata: [("k".to_string(), "v".to_string())].into(),
            if_generation_match,
        }
    }

    async fn read(gcs: &MemoryGcs, name: &str) -> Vec<u8> {
        let body = gcs
            .read_object(&ReadObject {
                bucket: "b".to_string(),
                name: name.to_string(),
                range: 0..u64::MAX,
                ..Default::default()
            })
            .await
            .unwrap();
        body.bytes.try_collect::<Vec<_>>().await.unwrap().concat()
    }

    /// A read says which generation it served: the live one unless pinned;
    /// a pinned read of a replaced generation is `NotFound`, and a range
    /// past the end is refused, as Cloud Storage answers.
    #[tokio::test]
    async fn a_read_returns_the_generation_it_served() {
        let gcs = MemoryGcs::new();
        let first = gcs.put_object("b", "f", "first");
        let second = gcs.put_object("b", "f", "second!");
        let request = |generation, range| ReadObject {
            bucket: "b".to_string(),
            name: "f".to_string(),
            generation,
            range,
            ..Default::default()
        };
        let live = gcs.read_object(&request(None, 1..4)).await.unwrap();
        assert_eq!(live.generation, second.generation);
        assert_eq!(live.bytes.try_collect::<Vec<_>>().await.unwrap().concat(), b"eco");
        let pinned = gcs.read_object(&request(Some(second.generation), 0..100)).await.unwrap();
        assert_eq!(pinned.generation, second.generation);
        assert_eq!(kind(gcs.read_object(&request(Some(first.generation), 0..5)).await), ErrorKind::NotFound);
        assert_eq!(kind(gcs.read_object(&request(None, 7..8)).await), ErrorKind::InvalidArgument);
        assert_eq!(gcs.calls.read_object.load(Ordering::SeqCst), 4);
        assert_eq!(gcs.calls.pinned_reads.load(Ordering::SeqCst), 2);
    }

    fn kind<T: std::fmt::Debug>(result: BackendResult<T>) -> ErrorKind {
        result.unwrap_err().kind
    }

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

    /// Every page size gives the same listing, each prefix once, as one
    /// walk over the names would; the start offset and the prefix bound it.
    #[tokio::test]
    async fn paging_gives_each_entry_once_whatever_the_page_size() {
        let gcs = MemoryGcs::new();
        let names = ["a", "b/1", "b/2", "b/c/3", "b0", "c/1", "d", "e/x/1", "e/y", "f", "f/1", "g"];
        for name in names {
            gcs.put_object("b", name, "x");
        }
        let walk = |prefix: &str, offset: Option<&str>| -> Vec<String> {
            let mut entries: Vec<String> = Vec::new();
            for name in names.iter().filter(|n| n.starts_with(prefix) && offset.is_none_or(|o| **n >= o)) {
                let entry = match name[prefix.len()..].find('/') {
                    Some(at) => name[..prefix.len() + at + 1].to_string(),
                    None => name.to_string(),
                };
                if entries.last() != Some(&entry) {
                    entries.push(entry);
                }
            }
            entries
        };
        for (prefix, offset) in [("", None), ("", Some("b0")), ("b/", None), ("e/", None), ("f", None), ("zz", None)] {
            for size in 1..=5 {
                let mut listed = Vec::new();
                let mut token = None;
                loop {
                    let request =
                        ListObjects { start_offset: offset.map(str::to_string), ..request(prefix, size, token) };
                    let page = gcs.list_objects(&request).await.unwrap();
                    assert!(page.objects.len() + page.prefixes.len() <= size as usize);
                    let mut entries: Vec<String> = page.objects.iter().map(|o| o.name.clone()).collect();
                    entries.extend(page.prefixes);
                    entries.sort();
                    listed.extend(entries);
                    token = page.next_page_token;
                    if token.is_none() {
                        break;
                    }
                }
                assert_eq!(listed, walk(prefix, offset), "prefix {prefix:?}, offset {offset:?}, page size {size}");
            }
        }
    }

    /// `live` generations are the wall clock's microseconds, never reused.
    #[tokio::test]
    async fn live_generations_are_wall_clock_microseconds() {
        let gcs = MemoryGcs::live();
        let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros() as i64;
        let first = gcs.put_object("b", "f", "1");
        let second = gcs.put_object("b", "f", "2");
        assert!(first.generation >= before, "{} < {before}", first.generation);
        assert!(second.generation > first.generation);
        assert!(first.updated.unwrap() >= SystemTime::UNIX_EPOCH + Duration::from_micros(before as u64));
    }

    #[tokio::test]
    async fn an_upload_stores_the_file_with_its_metadata() {
        let gcs = MemoryGcs::new();
        gcs.add_bucket("b");
        let request = upload("f", b"hello", Some(0));
        let meta = gcs.upload_object(&request).await.unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
        assert_eq!(meta.custom_metadata, request.custom_metadata);
        assert_eq!(gcs.get_object("b", "f").await.unwrap(), meta);
        assert_eq!(read(&gcs, "f").await, b"hello");
        assert_eq!(gcs.calls.upload_object.load(Ordering::SeqCst), 1);

        let plain = Upload { content_type: None, ..upload("g", b"", None) };
        let meta = gcs.upload_object(&plain).await.unwrap();
        assert_eq!(meta.content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(meta.size, 0);
    }

    #[tokio::test]
    async fn uploads_honour_generation_preconditions() {
        let gcs = MemoryGcs::new();
        let first = gcs.put_object("b", "f", "one");
        assert_eq!(kind(gcs.upload_object(&upload("f", b"two", Some(0))).await), ErrorKind::PreconditionFailed);
        let stale = upload("f", b"two", Some(first.generation + 1));
        assert_eq!(kind(gcs.upload_object(&stale).await), ErrorKind::PreconditionFailed);
        assert_eq!(read(&gcs, "f").await, b"one", "a refused upload changes nothing");
        let second = gcs.upload_object(&upload("f", b"two", Some(first.generation))).await.unwrap();
        assert!(second.generation > first.generation);
        assert_eq!(read(&gcs, "f").await, b"two");
        let absent = upload("new", b"x", Some(second.generation));
        assert_eq!(kind(gcs.upload_object(&absent).await), ErrorKind::PreconditionFailed);
    }

    #[tokio::test]
    async fn an_upload_needs_its_bucket_and_all_its_bytes() {
        let gcs = MemoryGcs::new();
        let request = upload("f", b"abc", None);
        assert_eq!(kind(gcs.upload_object(&request).await), ErrorKind::NotFound);
        gcs.add_bucket("b");
        let short = Upload { size: 10, ..request };
        assert_eq!(kind(gcs.upload_object(&short).await), ErrorKind::InvalidArgument);
        assert_eq!(kind(gcs.get_object("b", "f").await), ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn deletes_honour_generation_preconditions() {
        let gcs = MemoryGcs::new();
        let meta = gcs.put_object("b", "f", "x");
        assert_eq!(kind(gcs.delete_object("b", "f", Some(meta.generation + 1)).await), ErrorKind::PreconditionFailed);
        assert_eq!(kind(gcs.delete_object("b", "f", Some(0)).await), ErrorKind::PreconditionFailed);
        gcs.delete_object("b", "f", Some(meta.generation)).await.unwrap();
        assert_eq!(kind(gcs.delete_object("b", "f", None).await), ErrorKind::NotFound);
        gcs.put_object("b", "g", "y");
        gcs.delete_object("b", "g", None).await.unwrap();
        assert_eq!(kind(gcs.get_object("b", "g").await), ErrorKind::NotFound);
        assert_eq!(kind(gcs.delete_object("nobucket", "g", None).await), ErrorKind::NotFound);
        assert_eq!(gcs.calls.delete_object.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_copy_keeps_content_and_metadata() {
        let gcs = MemoryGcs::new();
        gcs.add_bucket("b");
        let source = gcs.upload_object(&upload("src", b"data", None)).await.unwrap();
        let copy = gcs
            .copy_object(&CopyObject {
                bucket: "b".to_string(),
                source: "src".to_string(),
                destination: "dst".to_string(),
                if_source_generation_match: Some(source.generation),
            })
            .await
            .unwrap();
        assert_eq!(copy.name, "dst");
        assert_ne!(copy.generation, source.generation);
        assert_eq!(copy.content_type, source.content_type);
        assert_eq!(copy.custom_metadata, source.custom_metadata);
        assert_eq!(read(&gcs, "dst").await, b"data");
        assert_eq!(gcs.get_object("b", "src").await.unwrap(), source, "the source stays");
        let stale = gcs
            .copy_object(&CopyObject {
                bucket: "b".to_string(),
                source: "src".to_string(),
                destination: "x".to_string(),
                if_source_generation_match: Some(source.generation + 1),
            })
            .await;
        assert_eq!(kind(stale), ErrorKind::PreconditionFailed);
        assert_eq!(
            kind(
                gcs.copy_object(&CopyObject {
                    bucket: "b".to_string(),
                    source: "nope".to_string(),
                    destination: "x".to_string(),
                    ..Default::default()
                })
                .await
            ),
            ErrorKind::NotFound
        );
        assert_eq!(kind(gcs.get_object("b", "x").await), ErrorKind::NotFound);
        assert_eq!(gcs.calls.copy_object.load(Ordering::SeqCst), 3);
    }

    /// A content type patched in is shared with the bucket's other objects
    /// of that type, as one stored is (a million objects hold one copy).
    #[tokio::test]
    async fn a_patched_content_type_is_shared() {
        let gcs = MemoryGcs::new();
        gcs.put_object_with("b", "typed", "x", "text/csv", BTreeMap::new());
        gcs.put_object("b", "patched", "x");
        let patch = PatchObjectMetadata {
            bucket: "b".to_string(),
            name: "patched".to_string(),
            content_type: Some("text/csv".to_string()),
            ..Default::default()
        };
        gcs.patch_object_metadata(&patch).await.unwrap();
        let buckets = lock(&gcs.buckets);
        let objects = &buckets["b"].objects;
        assert!(Arc::ptr_eq(&objects["typed"].content_type, &objects["patched"].content_type));
    }

    #[tokio::test]
    async fn buckets_are_created_once_and_deleted_when_empty() {
        let gcs = MemoryGcs::new();
        assert_eq!(gcs.create_bucket("p", "b", &BucketSettings::default()).await.unwrap().name, "b");
        assert_eq!(kind(gcs.create_bucket("p", "b", &BucketSettings::default()).await), ErrorKind::AlreadyExists);
        gcs.put_object("b", "o", "x");
        assert_eq!(kind(gcs.delete_bucket("b").await), ErrorKind::AlreadyExists);
        gcs.remove_object("b", "o");
        gcs.delete_bucket("b").await.unwrap();
        assert_eq!(kind(gcs.get_bucket("b").await), ErrorKind::NotFound);
        assert_eq!(kind(gcs.delete_bucket("b").await), ErrorKind::NotFound);
        assert_eq!(gcs.calls.create_bucket.load(Ordering::SeqCst), 2);
        assert_eq!(gcs.calls.delete_bucket.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn notification_configs_are_kept_per_bucket_with_counted_ids() {
        let gcs = MemoryGcs::new();
        gcs.add_bucket("b");
        gcs.add_bucket("c");
        assert_eq!(gcs.list_notifications("b").await.unwrap(), []);
        let kinds = ["OBJECT_FINALIZE".to_string(), "OBJECT_DELETE".to_string()];
        let first = gcs.create_notification("b", "projects/p/topics/t", &kinds).await.unwrap();
        let expected = NotificationConfig {
            id: "1".to_string(),
            topic: "projects/p/topics/t".to_string(),
            event_types: kinds.to_vec(),
            payload_format: "JSON_API_V1".to_string(),
            object_name_prefix: String::new(),
        };
        assert_eq!(first, expected);
        let second = gcs.create_notification("b", "projects/p/topics/u", &[]).await.unwrap();
        assert_eq!((second.id.as_str(), second.event_types.len()), ("2", 0));
        assert_eq!(gcs.list_notifications("b").await.unwrap(), [first, second]);
        assert_eq!(gcs.create_notification("c", "projects/p/topics/t", &[]).await.unwrap().id, "1");
        assert_eq!(gcs.list_notifications("c").await.unwrap().len(), 1, "each bucket has its own");
        assert_eq!(kind(gcs.list_notifications("nope").await), ErrorKind::NotFound);
        assert_eq!(kind(gcs.create_notification("nope", "projects/p/topics/t", &[]).await), ErrorKind::NotFound);
        gcs.fail_next(Op::CreateNotification, 1, ErrorKind::Unavailable);
        assert_eq!(kind(gcs.create_notification("b", "projects/p/topics/t", &[]).await), ErrorKind::Unavailable);
        assert_eq!(gcs.list_notifications("b").await.unwrap().len(), 2, "a failed create makes nothing");
        assert_eq!(gcs.calls.create_notification.load(Ordering::SeqCst), 5);
        assert_eq!(gcs.calls.list_notifications.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn injected_failures_fail_the_next_calls_of_a_kind_and_change_nothing() {
        let gcs = MemoryGcs::new();
        gcs.add_bucket("b");
        gcs.fail_next(Op::Upload, 2, ErrorKind::Unavailable);
        let request = upload("f", b"x", None);
        assert_eq!(kind(gcs.upload_object(&request).await), ErrorKind::Unavailable);
        assert_eq!(kind(gcs.get_object("b", "f").await), ErrorKind::NotFound, "other kinds are not failed");
        assert_eq!(kind(gcs.upload_object(&request).await), ErrorKind::Unavailable);
        gcs.upload_object(&request).await.unwrap();
        assert_eq!(gcs.calls.upload_object.load(Ordering::SeqCst), 3, "failed calls count too");

        gcs.fail_next(Op::DeleteObject, 1, ErrorKind::PermissionDenied);
        assert_eq!(kind(gcs.delete_object("b", "f", None).await), ErrorKind::PermissionDenied);
        assert_eq!(read(&gcs, "f").await, b"x");
        gcs.fail_next(Op::ListObjects, 1, ErrorKind::RateLimited);
        let listing = ListObjects { bucket: "b".to_string(), page_size: 10, ..Default::default() };
        assert_eq!(kind(gcs.list_objects(&listing).await), ErrorKind::RateLimited);
        assert_eq!(gcs.list_objects(&listing).await.unwrap().objects.len(), 1);
    }
}
