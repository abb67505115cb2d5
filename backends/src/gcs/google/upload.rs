//! Uploads. The bytes stream from the staging file with positioned reads, so
//! memory stays bounded whatever the object's size: up to
//! `SINGLE_REQUEST_MAX` in one multipart request, above it in resumable
//! chunks of `CHUNK`. Every attempt (and every chunk) is retried on its own
//! and reads its bytes from the file again.
//!
//! The one-request upload is built here rather than by the crate: the
//! crate's multipart request gives the data part no Content-Type, and
//! fake-gcs-server takes the object's content type from that header (Cloud
//! Storage takes it from the metadata part), so on the emulator every object
//! lost its content type. This request is the documented
//! `multipart/related` one, with an exact Content-Length.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as HttpError;
use gcloud_storage::http::error::ErrorResponse;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus};
use reqwest::Body;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest_middleware::ClientWithMiddleware;
use token_source::TokenSource;

use super::{GoogleGcs, backend_error, object_meta};
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gcs::{ObjectMeta, Upload};
use crate::retry::RetryPolicy;

/// Objects up to this size go up in one request.
const SINGLE_REQUEST_MAX: u64 = 16 * 1024 * 1024;
/// A resumable upload's chunk; Cloud Storage wants multiples of 256 KiB.
/// Large, because each request costs a round trip (and fake-gcs-server
/// rewrites the whole partial object for each chunk); the bytes stream from
/// the staging file, so memory does not grow with it. A failed chunk is
/// sent again whole.
const CHUNK: u64 = 256 * 1024 * 1024;
/// How much of the staging file one read takes (and one body piece holds).
const READ_PIECE: u64 = 256 * 1024;
/// The slowest upload rate an attempt is given time for (bytes per second),
/// on top of the policy's attempt timeout.
const MIN_UPLOAD_RATE: u64 = 256 * 1024;
/// What Cloud Storage calls an object uploaded without a content type.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// What uploads go through: an HTTP client without a read timeout (see
/// `GoogleGcs::connect`), and the crate's client on it for resumable sessions.
pub(super) struct Uploads {
    client: Client,
    http: ClientWithMiddleware,
    /// `{endpoint}/upload/storage/v1`
    endpoint: String,
    /// `None` on an emulator (anonymous).
    token: Option<Arc<dyn TokenSource>>,
}

impl Uploads {
    pub(super) fn new(config: ClientConfig) -> Self {
        let http = config.http.clone().unwrap_or_default();
        let endpoint = format!("{}/upload/storage/v1", config.storage_endpoint);
        let token = config.token_source_provider.as_ref().map(|provider| provider.token_source());
        Self { client: Client::new(config), http, endpoint, token }
    }
}

impl GoogleGcs {
    pub(super) async fn upload(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        check_source(upload)?;
        let content_type = upload.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
        // It becomes a header line in the request body.
        if content_type.chars().any(char::is_control) {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "upload gs://{}/{}: content type {content_type:?} has control characters",
                    upload.bucket, upload.name
                ),
            ));
        }
        let metadata = Object {
            name: upload.name.clone(),
            content_type: Some(content_type),
            metadata: Some(upload.custom_metadata.clone().into_iter().collect::<HashMap<_, _>>())
                .filter(|m| !m.is_empty()),
            ..Default::default()
        };
        let what = format!("upload gs://{}/{} ({} bytes)", upload.bucket, upload.name, upload.size);
        let meta = if upload.size <= SINGLE_REQUEST_MAX {
            self.upload_multipart(upload, &metadata, &what).await?
        } else {
            self.upload_resumable(upload, metadata, &what).await?
        };
        if meta.size != upload.size {
            return Err(BackendError::new(
                ErrorKind::Other,
                format!("{what}: the stored object has {} bytes, not {}", meta.size, upload.size),
            ));
        }
        Ok(meta)
    }

    /// One `multipart/related` request: the metadata, then the bytes.
    async fn upload_multipart(&self, upload: &Upload, metadata: &Object, what: &str) -> BackendResult<ObjectMeta> {
        let uploads = &self.uploads;
        let mut url = format!("{}/b/{}/o?uploadType=multipart", uploads.endpoint, upload.bucket);
        if let Some(generation) = upload.if_generation_match {
            url.push_str(&format!("&ifGenerationMatch={generation}"));
        }
        let json = serde_json::to_string(metadata)
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("{what}: metadata: {e}")))?;
        let boundary = boundary();
        let content_type = metadata.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json}\r\n\
             --{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = head.len() as u64 + upload.size + tail.len() as u64;
        self.upload_retry(upload.size)
            .run(what, || async {
                let parts = futures::stream::iter([Ok(head.clone())])
                    .chain(file_stream(upload.source.clone(), 0..upload.size))
                    .chain(futures::stream::iter([Ok(tail.clone())]));
                let mut request = uploads
                    .http
                    .post(&url)
                    .header(CONTENT_TYPE, format!("multipart/related; boundary={boundary}"))
                    .header(CONTENT_LENGTH, length)
                    .body(Body::wrap_stream(parts));
                if let Some(token) = &uploads.token {
                    let token = token.token().await.map_err(|e| backend_error(what, HttpError::TokenSource(e)))?;
                    request = request.header(AUTHORIZATION, token);
                }
                let response = request.send().await.map_err(|e| backend_error(what, e.into()))?;
                if let Err(status) = response.error_for_status_ref() {
                    let error = match response.json::<ErrorBody>().await {
                        Ok(body) => HttpError::Response(body.error),
                        Err(_) => HttpError::HttpClient(status),
                    };
                    return Err(backend_error(what, error));
                }
                let object: Object = response.json().await.map_err(|e| backend_error(what, e.into()))?;
                Ok(object_meta(object))
            })
            .await
    }

    /// Uploads in resumable chunks; each chunk is retried by re-sending it.
    /// The session's status is never queried (on fake-gcs-server a status
    /// query finalizes the object).
    async fn upload_resumable(&self, upload: &Upload, metadata: Object, what: &str) -> BackendResult<ObjectMeta> {
        if let Some(expected) = upload.if_generation_match {
            // Checked before any byte is sent; Cloud Storage checks again when
            // the upload completes (fake-gcs-server only does this check).
            self.check_generation(&upload.bucket, &upload.name, expected).await?;
        }
        let request = UploadObjectRequest {
            bucket: upload.bucket.clone(),
            if_generation_match: upload.if_generation_match,
            ..Default::default()
        };
        let upload_type = UploadType::Multipart(Box::new(metadata));
        let start = format!("{what}: start");
        let session = self
            .retry
            .run(&start, || async {
                let prepared = self.uploads.client.prepare_resumable_upload(&request, &upload_type).await;
                prepared.map_err(|e| backend_error(&start, e))
            })
            .await?;
        let sent = self.send_chunks(&session, upload, what).await;
        if sent.is_err() {
            // Best effort: an abandoned session expires anyway.
            let _ = tokio::time::timeout(self.retry.attempt_timeout, session.cancel()).await;
        }
        sent
    }

    async fn send_chunks(
        &self,
        session: &ResumableUploadClient,
        upload: &Upload,
        what: &str,
    ) -> BackendResult<ObjectMeta> {
        let retry = self.upload_retry(CHUNK);
        let mut offset = 0;
        let mut stalled = 0;
        while offset < upload.size {
            let end = (offset + CHUNK).min(upload.size);
            let range = ChunkSize::new(offset, end - 1, Some(upload.size));
            let chunk = format!("{what}: bytes {offset}..{end}");
            let status = retry
                .run(&chunk, || async {
                    let body = Body::wrap_stream(file_stream(upload.source.clone(), offset..end));
                    session.upload_multiple_chunk(body, &range).await.map_err(|e| backend_error(&chunk, e))
                })
                .await?;
            // The server says how much it kept, which may be less than sent.
            let kept = match status {
                UploadStatus::Ok(object) => return Ok(object_meta(object)),
                UploadStatus::ResumeIncomplete(range) => range.last_byte + 1,
                UploadStatus::NotStarted => 0,
            };
            if kept <= offset {
                stalled += 1;
                if stalled >= retry.attempts {
                    return Err(BackendError::new(
                        ErrorKind::Unavailable,
                        format!("{chunk}: the server keeps no more than {kept} bytes"),
                    ));
                }
            } else {
                stalled = 0;
            }
            offset = kept;
        }
        Err(BackendError::new(ErrorKind::Other, format!("{what}: all bytes sent but the upload was not completed")))
    }

    /// The retry policy for a request that sends `bytes`: each attempt also
    /// gets the time to send them at `MIN_UPLOAD_RATE`.
    fn upload_retry(&self, bytes: u64) -> RetryPolicy {
        let sending = Duration::from_secs(bytes.div_ceil(MIN_UPLOAD_RATE));
        RetryPolicy { attempt_timeout: self.retry.attempt_timeout + sending, ..self.retry }
    }
}

/// Cloud Storage's error answer.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorResponse,
}

/// A multipart boundary that no object's bytes will contain by chance.
fn boundary() -> String {
    let state = RandomState::new();
    format!("ciofs-{:016x}{:016x}", state.hash_one(1), state.hash_one(2))
}

/// The bytes `range` of `file`, read with positioned reads in pieces of
/// `READ_PIECE`, off the async worker threads. A file shorter than the range
/// ends the stream with an error (so the request fails and nothing is stored).
fn file_stream(file: Arc<File>, range: Range<u64>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(range.start, move |at| {
        let file = file.clone();
        let end = range.end;
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = (end - at).min(READ_PIECE);
            let piece = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0; len as usize];
                file.read_exact_at(&mut buffer, at).map(|()| Bytes::from(buffer))
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Some((piece, at + len)))
        }
    })
}

/// Refuses an upload whose staging file holds fewer bytes than it claims.
fn check_source(upload: &Upload) -> BackendResult<()> {
    let what = || format!("upload gs://{}/{}", upload.bucket, upload.name);
    let len = upload
        .source
        .metadata()
        .map_err(|e| BackendError::new(ErrorKind::Other, format!("{}: staging file: {e}", what())))?
        .len();
    if len < upload.size {
        return Err(BackendError::new(
            ErrorKind::InvalidArgument,
            format!("{}: staging file holds {len} bytes, not {}", what(), upload.size),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    #[tokio::test]
    async fn a_file_streams_in_pieces_from_any_offset() {
        let data: Vec<u8> = (0..READ_PIECE as usize * 2 + 10).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let file = Arc::new(file);
        let pieces: Vec<Bytes> = file_stream(file.clone(), 5..data.len() as u64).try_collect().await.unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), &data[5..]);
        let short = file_stream(file, 0..data.len() as u64 + 1).try_collect::<Vec<_>>().await;
        assert_eq!(short.map_err(|e| e.kind()).err(), Some(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(boundary(), boundary());
    }
}
