//! `ObjectStore` on Cloud Storage's JSON API (crate `gcloud-storage`).
//! Uploads are in `upload.rs`, ranged reads in `download.rs`, notification
//! configs in `notifications.rs`.

mod download;
mod notifications;
mod patch;
mod upload;

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use async_trait::async_trait;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as HttpError;
use gcloud_storage::http::buckets::delete::DeleteBucketRequest;
use gcloud_storage::http::buckets::get::GetBucketRequest;
use gcloud_storage::http::buckets::insert::{BucketCreationConfig, InsertBucketParam, InsertBucketRequest};
use gcloud_storage::http::buckets::list::ListBucketsRequest;
use gcloud_storage::http::buckets::{Bucket, Versioning};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;
use reqwest_middleware::ClientWithMiddleware;
use time::OffsetDateTime;

use super::{
    BucketChange, BucketMeta, BucketPage, BucketSettings, CopyObject, ListObjects, NotificationConfig, ObjectBody,
    ObjectMeta, ObjectPage, ObjectStore, PatchObjectMetadata, ReadObject, StreamedUpload, Upload,
};
use crate::endpoint;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::retry::{ClientError, RetryPolicy, http_client};

/// Where and how to reach Cloud Storage.
#[derive(Clone, Debug)]
pub struct GcsConfig {
    /// An emulator's base URL (`http://127.0.0.1:4443`): anonymous access.
    /// `None`: Google's endpoint with Application Default Credentials.
    pub emulator: Option<String>,
    pub retry: RetryPolicy,
    /// Bytes per resumable upload request (rounded down to a multiple of
    /// 256 KiB); objects up to this size go up in one request.
    pub upload_chunk: u64,
}

impl Default for GcsConfig {
    fn default() -> Self {
        Self { emulator: None, retry: RetryPolicy::default(), upload_chunk: upload::DEFAULT_CHUNK }
    }
}

impl GcsConfig {
    /// Reads `STORAGE_EMULATOR_HOST`, as Google's own clients do.
    pub fn from_env() -> Self {
        Self { emulator: endpoint::emulator_from_env("STORAGE_EMULATOR_HOST"), ..Self::default() }
    }
}

pub struct GoogleGcs {
    client: Client,
    /// The HTTP client `client` uses (the one with the read timeout), for
    /// the ranged reads made here (`download.rs`).
    reads: ClientWithMiddleware,
    uploads: upload::Uploads,
    retry: RetryPolicy,
}

impl GoogleGcs {
    pub async fn connect(config: GcsConfig) -> BackendResult<Self> {
        let stall = config.retry.stall_timeout;
        let builder = || http_client(stall);
        // A read whose next chunk does not come within the stall timeout
        // fails; a long download that keeps moving does not (this is not a
        // total timeout). The one mechanism for a read's bytes.
        let reads = Self::http(builder().read_timeout(stall))?;
        let client = Client::new(Self::client_config(&config, reads.clone()).await?);
        // Uploads have their own HTTP client without a read timeout: reqwest
        // runs it from the start of the request, while the body is still
        // being sent, so it would cut every upload that takes longer. An
        // upload fails when its body stops being read, or its answer does
        // not come, for the stall timeout (`RetryPolicy::run_watched`).
        let uploads =
            upload::Uploads::new(Self::client_config(&config, Self::http(builder())?).await?, config.upload_chunk);
        Ok(Self { client, reads, uploads, retry: config.retry })
    }

    fn http(builder: reqwest::ClientBuilder) -> BackendResult<ClientWithMiddleware> {
        let http = builder
            .build()
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("building the HTTP client: {e}")))?;
        Ok(reqwest_middleware::ClientBuilder::new(http).build())
    }

    async fn client_config(config: &GcsConfig, http: ClientWithMiddleware) -> BackendResult<ClientConfig> {
        let base = ClientConfig { http: Some(http), ..ClientConfig::default() };
        // gcloud-storage has credentials of its own (not google-cloud-auth's
        // of `endpoint::credentials`), chosen the same way.
        let client_config = match endpoint::base_url(config.emulator.as_deref()) {
            Some(storage_endpoint) => ClientConfig { storage_endpoint, ..base }.anonymous(),
            None => base.with_auth().await.map_err(|e| endpoint::no_credentials("Cloud Storage", &e))?,
        };
        Ok(client_config)
    }

    /// `PreconditionFailed` unless the object is at `expected` (0: absent).
    async fn check_generation(&self, bucket: &str, name: &str, expected: i64) -> BackendResult<()> {
        let current = match self.get_object(bucket, name).await {
            Ok(meta) => meta.generation,
            Err(e) if e.kind == ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if current == expected {
            Ok(())
        } else {
            Err(BackendError::new(
                ErrorKind::PreconditionFailed,
                format!("gs://{bucket}/{name} is at generation {current}, not {expected}"),
            ))
        }
    }
}

#[async_trait]
impl ObjectStore for GoogleGcs {
    async fn list_buckets(
        &self,
        project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage> {
        let request = ListBucketsRequest {
            project: project.to_string(),
            max_results: Some(page_size as i32),
            page_token,
            ..Default::default()
        };
        let what = format!("list buckets of {project}");
        self.retry
            .run(&what, || async {
                match self.client.list_buckets(&request).await {
                    Ok(response) => Ok(BucketPage {
                        buckets: response.items.into_iter().map(bucket_meta).collect(),
                        next_page_token: response.next_page_token.filter(|t| !t.is_empty()),
                    }),
                    // Cloud Storage leaves out `items` when a project has no
                    // bucket, and the crate's response type requires it.
                    Err(HttpError::HttpClient(e))
                        if e.is_decode() && format!("{e:?}").contains("missing field `items`") =>
                    {
                        Ok(BucketPage::default())
                    }
                    Err(e) => Err(backend_error(&what, e)),
                }
            })
            .await
    }

    async fn get_bucket(&self, bucket: &str) -> BackendResult<BucketMeta> {
        let request = GetBucketRequest { bucket: bucket.to_string(), ..Default::default() };
        let what = format!("get bucket {bucket}");
        self.retry.call(&what, || self.client.get_bucket(&request)).await.map(bucket_meta)
    }

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage> {
        let http_request = ListObjectsRequest {
            bucket: request.bucket.clone(),
            prefix: Some(request.prefix.clone()).filter(|p| !p.is_empty()),
            delimiter: request.delimiter.clone(),
            page_token: request.page_token.clone(),
            max_results: Some(request.page_size as i32),
            start_offset: request.start_offset.clone(),
            ..Default::default()
        };
        let what = format!("list gs://{}/{}", request.bucket, request.prefix);
        let response = self.retry.call(&what, || self.client.list_objects(&http_request)).await?;
        Ok(ObjectPage {
            objects: response.items.unwrap_or_default().into_iter().map(object_meta).collect(),
            prefixes: response.prefixes.unwrap_or_default(),
            next_page_token: response.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta> {
        let request = GetObjectRequest { bucket: bucket.to_string(), object: name.to_string(), ..Default::default() };
        let what = format!("get gs://{bucket}/{name}");
        self.retry.call(&what, || self.client.get_object(&request)).await.map(object_meta)
    }

    async fn read_object(&self, request: &ReadObject) -> BackendResult<ObjectBody> {
        self.download(request).await
    }

    async fn upload_object(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        self.upload(upload).await
    }

    async fn upload_streamed(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta> {
        self.streamed_upload(streamed).await
    }

    async fn delete_object(&self, bucket: &str, name: &str, if_generation_match: Option<i64>) -> BackendResult<()> {
        let request = DeleteObjectRequest {
            bucket: bucket.to_string(),
            object: name.to_string(),
            if_generation_match,
            ..Default::default()
        };
        let what = format!("delete gs://{bucket}/{name}");
        self.retry.call(&what, || self.client.delete_object(&request)).await
    }

    async fn copy_object(&self, request: &CopyObject) -> BackendResult<ObjectMeta> {
        let CopyObject { bucket, source, destination, if_source_generation_match } = request;
        let if_source_generation_match = *if_source_generation_match;
        // The crate's request has no ifSourceGenerationMatch (and
        // fake-gcs-server ignores it): the copy reads that exact generation
        // instead, which an overwrite cannot change, and a 404 is told apart
        // below. (On a versioned bucket, an overwritten generation is still
        // copied.) No destination metadata: the copy keeps the source's.
        let mut request = RewriteObjectRequest {
            source_bucket: bucket.clone(),
            source_object: source.clone(),
            destination_bucket: bucket.clone(),
            destination_object: destination.clone(),
            source_generation: if_source_generation_match,
            ..Default::default()
        };
        let what = format!("copy gs://{bucket}/{source} to {destination}");
        loop {
            let step = self.retry.call(&what, || self.client.rewrite_object(&request)).await;
            let response = match (step, if_source_generation_match) {
                (Err(e), Some(expected)) if e.kind == ErrorKind::NotFound => {
                    // Gone (or its bucket is), or there at another generation.
                    return match self.get_object(bucket, source).await {
                        Ok(current) => Err(BackendError::new(
                            ErrorKind::PreconditionFailed,
                            format!("{what}: the source is at generation {}, not {expected}", current.generation),
                        )),
                        Err(_) => Err(e),
                    };
                }
                (step, _) => step?,
            };
            if response.done {
                let object = response.resource.ok_or_else(|| {
                    BackendError::new(ErrorKind::Other, format!("{what}: done, but the answer has no object"))
                })?;
                return Ok(object_meta(object));
            }
            match response.rewrite_token.filter(|t| !t.is_empty()) {
                Some(token) => request.rewrite_token = Some(token),
                None => {
                    return Err(BackendError::new(
                        ErrorKind::Other,
                        format!("{what}: not done, and no token to go on"),
                    ));
                }
            }
        }
    }

    async fn patch_object_metadata(&self, request: &PatchObjectMetadata) -> BackendResult<ObjectMeta> {
        let PatchObjectMetadata { bucket, name, content_type, custom_metadata, if_metageneration_match } = request;
        let mut body = serde_json::json!({ "metadata": custom_metadata });
        if let Some(content_type) = content_type {
            body["contentType"] = serde_json::json!(content_type);
        }
        let path = format!("b/{bucket}/o/{}", patch::encode_path_segment(name));
        let what = format!("set the metadata of gs://{bucket}/{name}");
        self.patch_json(&path, *if_metageneration_match, &body, &what).await?;
        self.get_object(bucket, name).await
    }

    async fn create_bucket(&self, project: &str, bucket: &str, settings: &BucketSettings) -> BackendResult<BucketMeta> {
        let config = BucketCreationConfig {
            // Cloud Storage's default, said explicitly: the crate would send "".
            location: settings.location.clone().unwrap_or_else(|| "US".to_string()),
            storage_class: settings.storage_class.clone(),
            labels: Some(settings.labels.clone().into_iter().collect()).filter(|l: &HashMap<_, _>| !l.is_empty()),
            versioning: settings.versioning.then_some(Versioning { enabled: true }),
            ..Default::default()
        };
        let request = InsertBucketRequest {
            name: bucket.to_string(),
            param: InsertBucketParam { project: project.to_string(), ..Default::default() },
            bucket: config,
        };
        let what = format!("create bucket {bucket} in {project}");
        self.retry.call(&what, || self.client.insert_bucket(&request)).await.map(bucket_meta)
    }

    async fn update_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta> {
        let mut body = serde_json::json!({ "versioning": { "enabled": change.versioning } });
        if !change.labels.is_empty() {
            body["labels"] = serde_json::json!(change.labels);
        }
        if let Some(class) = &change.storage_class {
            body["storageClass"] = serde_json::json!(class);
        }
        let what = format!("change bucket {bucket}");
        self.patch_json(&format!("b/{bucket}"), if_metageneration_match, &body, &what).await?;
        self.get_bucket(bucket).await
    }

    async fn delete_bucket(&self, bucket: &str) -> BackendResult<()> {
        let request = DeleteBucketRequest { bucket: bucket.to_string(), ..Default::default() };
        let what = format!("delete bucket {bucket}");
        // A bucket with objects: Cloud Storage answers 409, fake-gcs-server
        // 412 (no precondition was sent). Neither is retried.
        self.retry.call(&what, || self.client.delete_bucket(&request)).await.map_err(|e| match e.kind {
            ErrorKind::PreconditionFailed => {
                BackendError::new(ErrorKind::AlreadyExists, format!("{what}: not empty ({})", e.message))
            }
            _ => e,
        })
    }

    async fn list_notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>> {
        self.notifications(bucket).await
    }

    async fn create_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig> {
        self.insert_notification(bucket, topic, event_types).await
    }
}

impl ClientError for HttpError {
    fn into_backend_error(self, what: &str) -> BackendError {
        backend_error(what, self)
    }
}

/// Maps the crate's error to ours; the one place that reads HTTP statuses.
fn backend_error(what: &str, error: HttpError) -> BackendError {
    let kind = match &error {
        HttpError::Response(response) => ErrorKind::from_http_status(response.code),
        HttpError::HttpClient(e) | HttpError::RawResponse(e, _) => match e.status() {
            Some(status) => ErrorKind::from_http_status(status.as_u16()),
            None if e.is_decode() => ErrorKind::Other,
            // The read timeout (the stall timeout): no answer, or no next
            // chunk, for that long.
            None if e.is_timeout() => ErrorKind::Stalled,
            // Connection refused, reset: the service may be back soon.
            None => ErrorKind::Unavailable,
        },
        HttpError::HttpMiddleware(_) => ErrorKind::Unavailable,
        HttpError::TokenSource(_) => ErrorKind::PermissionDenied,
        HttpError::InvalidRangeHeader(_) => ErrorKind::InvalidArgument,
    };
    BackendError::new(kind, format!("{what}: {error}"))
}

fn system_time(time: Option<OffsetDateTime>) -> Option<SystemTime> {
    time.map(SystemTime::from)
}

fn object_meta(object: Object) -> ObjectMeta {
    ObjectMeta {
        bucket: object.bucket,
        name: object.name,
        size: u64::try_from(object.size).unwrap_or(0),
        generation: object.generation,
        metageneration: object.metageneration,
        content_type: object.content_type,
        md5_hash: object.md5_hash,
        crc32c: object.crc32c,
        created: system_time(object.time_created),
        updated: system_time(object.updated),
        storage_class: object.storage_class,
        custom_metadata: object.metadata.unwrap_or_default().into_iter().collect(),
        etag: object.etag,
    }
}

fn bucket_meta(bucket: Bucket) -> BucketMeta {
    BucketMeta {
        name: bucket.name,
        location: bucket.location,
        location_type: bucket.location_type,
        storage_class: bucket.storage_class,
        created: system_time(bucket.time_created),
        updated: system_time(bucket.updated),
        metageneration: bucket.metageneration,
        labels: bucket.labels.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
        versioning: bucket.versioning.is_some_and(|v| v.enabled),
        etag: bucket.etag,
    }
}
