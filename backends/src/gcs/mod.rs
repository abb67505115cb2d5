//! Cloud Storage as ciofs needs it: buckets, listings by prefix, object
//! metadata and ranged reads, and buckets' Pub/Sub notification configs.

mod google;

use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::error::BackendResult;

pub use google::{GcsConfig, GoogleGcs};

/// A bucket's metadata, as `.meta/_bucket.json` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketMeta {
    pub name: String,
    pub location: String,
    pub location_type: String,
    pub storage_class: String,
    pub created: Option<SystemTime>,
    pub updated: Option<SystemTime>,
    pub metageneration: i64,
    pub labels: BTreeMap<String, String>,
    pub versioning: bool,
    pub etag: String,
}

/// A bucket's settings as `.meta/_bucket.json` carries them: all given at
/// creation; the location is fixed then, the rest can change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketSettings {
    /// `None`: Cloud Storage's default (`US`).
    pub location: Option<String>,
    /// The storage class of new objects; `None`: `STANDARD`.
    pub storage_class: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub versioning: bool,
}

/// What to change of an existing bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketChange {
    /// Labels to set (`Some`) or remove (`None`); others stay.
    pub labels: BTreeMap<String, Option<String>>,
    /// Whether versioning is on afterwards: always sent, as fake-gcs-server
    /// turns versioning off on a patch that leaves it out.
    pub versioning: bool,
    /// A new default storage class; `None` keeps it.
    pub storage_class: Option<String>,
}

/// An object's metadata, as a listing or a get returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub bucket: String,
    pub name: String,
    pub size: u64,
    pub generation: i64,
    pub metageneration: i64,
    pub content_type: Option<String>,
    pub md5_hash: Option<String>,
    pub crc32c: Option<String>,
    pub created: Option<SystemTime>,
    pub updated: Option<SystemTime>,
    pub storage_class: Option<String>,
    pub custom_metadata: BTreeMap<String, String>,
    pub etag: String,
}

/// A bucket's Pub/Sub notification config: Cloud Storage publishes a
/// message to `topic` for each change of the kinds `event_types` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotificationConfig {
    pub id: String,
    /// Full name: `projects/P/topics/T` (the API's `//pubsub.googleapis.com/` prefix removed).
    pub topic: String,
    /// OBJECT_FINALIZE, OBJECT_DELETE, OBJECT_METADATA_UPDATE, ...; empty: every kind.
    pub event_types: Vec<String>,
    /// JSON_API_V1 or NONE.
    pub payload_format: String,
    /// Only the objects whose names start with it; empty: every object.
    pub object_name_prefix: String,
}

/// One page of a bucket listing.
#[derive(Clone, Debug, Default)]
pub struct BucketPage {
    pub buckets: Vec<BucketMeta>,
    pub next_page_token: Option<String>,
}

/// A request for one page of an object listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListObjects {
    pub bucket: String,
    pub prefix: String,
    /// `Some("/")` lists one directory level: deeper names are folded into
    /// `prefixes`.
    pub delimiter: Option<String>,
    pub page_token: Option<String>,
    /// Always passed: the emulator has no default page size.
    pub page_size: u32,
    /// List names at or after this one.
    pub start_offset: Option<String>,
}

/// A ranged read of an object (`ObjectStore::read_object`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadObject {
    pub bucket: String,
    pub name: String,
    /// Read this generation, so that a concurrent overwrite cannot tear the
    /// read; `None`: the live one (the answer says which generation that was).
    pub generation: Option<i64>,
    /// The bytes to read, end exclusive.
    pub range: Range<u64>,
    /// The object's size, if the caller knows it: a range covering all of
    /// it is then asked for without a `Range` header, which costs the
    /// service less (fake-gcs-server: 0.76 ms a GET of 4 KiB, 0.97 ms with
    /// a range).
    pub object_size: Option<u64>,
}

/// A server-side copy within a bucket (`ObjectStore::copy_object`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyObject {
    pub bucket: String,
    pub source: String,
    pub destination: String,
    /// Copy only if the source is still at this generation.
    pub if_source_generation_match: Option<i64>,
}

/// A patch of an object's metadata (`ObjectStore::patch_object_metadata`):
/// what it does not name stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchObjectMetadata {
    pub bucket: String,
    pub name: String,
    /// A new content type; `None` leaves it.
    pub content_type: Option<String>,
    /// Custom metadata keys to set (`Some`) or remove (`None`).
    pub custom_metadata: BTreeMap<String, Option<String>>,
    /// Only while the object is at this metageneration.
    pub if_metageneration_match: Option<i64>,
}

/// One page of an object listing: objects and, with a delimiter, the
/// prefixes one level down (each ending with the delimiter).
#[derive(Clone, Debug, Default)]
pub struct ObjectPage {
    pub objects: Vec<ObjectMeta>,
    pub prefixes: Vec<String>,
    pub next_page_token: Option<String>,
}

/// An upload: the whole content of an object, from a local staging file.
#[derive(Clone, Debug)]
pub struct Upload {
    pub bucket: String,
    pub name: String,
    /// Holds exactly the object's bytes from offset 0 (`size` of them). The
    /// upload reads it with positioned reads and leaves it unchanged.
    pub source: Arc<std::fs::File>,
    pub size: u64,
    /// `None`: Cloud Storage's default (application/octet-stream).
    pub content_type: Option<String>,
    pub custom_metadata: BTreeMap<String, String>,
    /// Upload only if the object's current generation is this one; `Some(0)`
    /// means only if no object exists. A mismatch is `PreconditionFailed`.
    pub if_generation_match: Option<i64>,
}

/// How far the staging file of a streamed upload is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The file holds the object's first `len` bytes; they no longer change.
    pub len: u64,
    /// `len` is the object's size: nothing more comes.
    pub complete: bool,
}

/// An upload that starts while its staging file is still being written,
/// from its start on, in order (see `ObjectStore::upload_streamed`).
pub struct StreamedUpload {
    /// The object to make; its `size` is not read: the object is as long as
    /// `progress` says when it completes.
    pub upload: Upload,
    pub progress: watch::Receiver<Written>,
}

/// The bytes of a ranged read, as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = BackendResult<Bytes>> + Send>>;

/// What a ranged read returns: the generation the service served (its
/// `x-goog-generation` header), known before the bytes come, and the bytes.
/// A caller that reads unpinned learns here which generation it got.
pub struct ObjectBody {
    pub generation: i64,
    pub bytes: ByteStream,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody").field("generation", &self.generation).finish_non_exhaustive()
    }
}

/// The Cloud Storage calls ciofs makes.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn list_buckets(
        &self,
        project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage>;

    async fn get_bucket(&self, bucket: &str) -> BackendResult<BucketMeta>;

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage>;

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta>;

    /// Streams `range` (end exclusive) of the object's bytes, with the
    /// generation they are of. With a generation, reads that generation
    /// (`NotFound` once it is gone), so that a concurrent overwrite cannot
    /// tear the read; without, the live one, whichever it is. A range that
    /// starts at or past the object's end is `InvalidArgument` (HTTP 416);
    /// one that ends past it gives the bytes up to the end.
    async fn read_object(&self, request: &ReadObject) -> BackendResult<ObjectBody>;

    /// Uploads an object whole; it becomes visible only when complete. Large
    /// objects go up in resumable chunks. Bounded by progress, not by size:
    /// a stalled upload fails as `Unavailable` (see `retry.rs`).
    async fn upload_object(&self, upload: &Upload) -> BackendResult<ObjectMeta>;

    /// Uploads an object in one request while its staging file is written:
    /// bytes go up as `progress` reports them, and the object becomes visible
    /// only once progress is complete and the request succeeds. Abandoned,
    /// with nothing stored, when the sender of `progress` goes away before
    /// completion, when no byte comes for a while, or when the future is
    /// dropped; failed as `Unavailable` when the service takes none of the
    /// bytes written for the stall timeout, or does not answer once they
    /// are all sent. Not retried: the caller has the whole file for a retry.
    async fn upload_streamed(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta>;

    /// Deletes an object (only at that generation, if given).
    async fn delete_object(&self, bucket: &str, name: &str, if_generation_match: Option<i64>) -> BackendResult<()>;

    /// Copies an object server-side within a bucket (a rewrite, repeated
    /// until done), keeping its content type and custom metadata. With a
    /// generation, only if the source is still at it.
    async fn copy_object(&self, request: &CopyObject) -> BackendResult<ObjectMeta>;

    /// Sets an object's content type (`None` leaves it) and sets (`Some`)
    /// or removes (`None`) custom metadata keys (a patch: keys not named
    /// stay), only while it is at `if_metageneration_match` when given.
    async fn patch_object_metadata(&self, request: &PatchObjectMetadata) -> BackendResult<ObjectMeta>;

    async fn create_bucket(&self, project: &str, bucket: &str, settings: &BucketSettings) -> BackendResult<BucketMeta>;

    /// Changes a bucket's labels, versioning or storage class, only while it
    /// is at `if_metageneration_match` when given.
    async fn update_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta>;

    async fn delete_bucket(&self, bucket: &str) -> BackendResult<()>;

    /// The bucket's Pub/Sub notification configs (`NotFound`: no bucket).
    async fn list_notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>>;

    /// Creates a config publishing `event_types` of `bucket` to `topic` (full name), payload JSON_API_V1.
    async fn create_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig>;
}
