//! Uploads. The bytes stream from the staging file with positioned reads, so
//! memory stays bounded whatever the object's size: up to one chunk
//! (`GcsConfig::upload_chunk`) in one request, above it in resumable
//! chunks. Every attempt (and every chunk) is retried on its own and reads
//! its bytes from the file again. A streamed upload is the same one request
//! sent while the file is still being written, with no length given
//! (chunked transfer encoding).
//!
//! No upload is bounded by its size: an attempt fails when the service
//! stops taking its body, or does not answer once the body is sent, for
//! the stall timeout (`RetryPolicy::run_watched`); one that keeps moving
//! at any rate is never cut.
//!
//! The one request is a `multipart/related` upload (a metadata part, then
//! the bytes), or for a large object without custom metadata a `media`
//! upload (the bytes are the body, the content type its header). It is built here rather than by the
//! crate: the crate's multipart request gives the data part no
//! Content-Type, and fake-gcs-server takes the object's content type from
//! that header (Cloud Storage takes it from the metadata part), so on the
//! emulator every object lost its content type. (A media upload also costs
//! fake-gcs-server a third less: it reads a multipart body whole first.)

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as HttpError;
use gcloud_storage::http::error::ErrorResponse;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Body, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, RequestBuilder};
use token_source::TokenSource;
use tokio::sync::watch;

use super::{GoogleGcs, backend_error, object_meta};
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gcs::{ObjectMeta, StreamedUpload, Upload, Written};
use crate::retry::Progress;

/// The default resumable chunk, and the largest object sent in one request.
/// Large, because each request costs a round trip (and fake-gcs-server
/// rewrites the whole partial object for each chunk); the bytes stream from
/// the staging file, so memory does not grow with it. A failed chunk is sent
/// again whole, so an object of up to one chunk loses nothing by going in
/// one request, and saves the round trip that starts a session.
pub const DEFAULT_CHUNK: u64 = 256 * 1024 * 1024;
/// Cloud Storage wants resumable chunks in multiples of this.
const CHUNK_GRANULE: u64 = 256 * 1024;
/// How much of the staging file one read takes (and one body piece holds).
const READ_PIECE: u64 = 256 * 1024;
/// A streamed upload whose writer writes nothing for this long is abandoned
/// (the writer's close uploads the file whole instead), so that a paused
/// writer does not hold a request open.
const STREAM_IDLE: Duration = Duration::from_secs(10);
/// An object at least this large, without custom metadata, goes up as a
/// `media` upload, its generation checked before the first byte is sent:
/// a refused upload does not send its bytes first, and fake-gcs-server
/// ignores preconditions on media uploads (Cloud Storage checks them again
/// when the upload completes). A media upload also costs fake-gcs-server a
/// third less than a multipart one, which it reads whole before storing it.
const MEDIA_FROM: u64 = 8 * 1024 * 1024;
/// What Cloud Storage calls an object uploaded without a content type.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// What uploads go through: an HTTP client without a read timeout (see
/// `GoogleGcs::connect`), and the crate's client on it for resumable sessions.
pub(super) struct Uploads {
    client: Client,
    pub(super) http: ClientWithMiddleware,
    /// `{endpoint}/upload/storage/v1`
    endpoint: String,
    /// `{endpoint}/storage/v1`, for the requests the crate cannot make.
    pub(super) api: String,
    /// `None` on an emulator (anonymous).
    token: Option<Arc<dyn TokenSource>>,
    /// The resumable chunk; objects up to it go in one request.
    chunk: u64,
    /// The service refused a request without a length (411 or 501): the
    /// uploads of this process are no longer streamed, only sent whole.
    streaming_refused: AtomicBool,
}

impl Uploads {
    pub(super) fn new(config: ClientConfig, chunk: u64) -> Self {
        let http = config.http.clone().unwrap_or_default();
        let endpoint = format!("{}/upload/storage/v1", config.storage_endpoint);
        let api = format!("{}/storage/v1", config.storage_endpoint);
        let token = config.token_source_provider.as_ref().map(|provider| provider.token_source());
        // Rounded to what Cloud Storage accepts, at least one granule.
        let chunk = (chunk / CHUNK_GRANULE).max(1) * CHUNK_GRANULE;
        Self {
            client: Client::new(config),
            http,
            endpoint,
            api,
            token,
            chunk,
            streaming_refused: AtomicBool::new(false),
        }
    }
}

impl Uploads {
    /// `request` with the access token, where there is one (not on an
    /// emulator).
    pub(super) async fn authorized(&self, request: RequestBuilder, what: &str) -> BackendResult<RequestBuilder> {
        match &self.token {
            Some(token) => {
                let token = token.token().await.map_err(|e| backend_error(what, HttpError::TokenSource(e)))?;
                Ok(request.header(AUTHORIZATION, token))
            }
            None => Ok(request),
        }
    }
}

/// How one upload request frames the object's bytes.
struct OneRequest {
    /// `media`: the bytes are the body; `multipart`: they follow a metadata
    /// part, which carries custom metadata.
    upload_type: &'static str,
    /// The request's Content-Type header.
    content_type: String,
    /// What comes before and after the bytes in the body.
    head: Bytes,
    tail: Bytes,
}

impl OneRequest {
    /// The framing for an object of `size` bytes (`None`: not known yet, as
    /// for a streamed upload, which is large).
    fn new(metadata: &Object, size: Option<u64>, what: &str) -> BackendResult<Self> {
        let content_type = metadata.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
        if metadata.metadata.is_none() && size.is_none_or(|size| size >= MEDIA_FROM) {
            return Ok(Self { upload_type: "media", content_type, head: Bytes::new(), tail: Bytes::new() });
        }
        let json = serde_json::to_string(metadata)
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("{what}: metadata: {e}")))?;
        let boundary = boundary();
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json}\r\n\
             --{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let content_type = format!("multipart/related; boundary={boundary}");
        Ok(Self { upload_type: "multipart", content_type, head, tail })
    }

    /// The whole body: head, `data`, tail; each time it is read, the
    /// attempt moves.
    fn body<S>(&self, data: S, progress: &Progress) -> Body
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        let parts = futures::stream::iter([Ok(self.head.clone())])
            .chain(data)
            .chain(futures::stream::iter([Ok(self.tail.clone())]))
            .filter(|part| futures::future::ready(!matches!(part, Ok(bytes) if bytes.is_empty())));
        Body::wrap_stream(progress.watch_stream(parts))
    }

    fn length(&self, data: u64) -> u64 {
        self.head.len() as u64 + data + self.tail.len() as u64
    }

    fn is_media(&self) -> bool {
        self.upload_type == "media"
    }
}

impl GoogleGcs {
    pub(super) async fn upload(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        check_source(upload)?;
        let metadata = object_resource(upload)?;
        let what = format!("upload gs://{}/{} ({} bytes)", upload.bucket, upload.name, upload.size);
        let meta = if upload.size <= self.uploads.chunk {
            self.upload_in_one_request(upload, &metadata, &what).await?
        } else {
            self.upload_resumable(upload, metadata, &what).await?
        };
        check_stored_size(&meta, upload.size, &what)?;
        Ok(meta)
    }

    async fn upload_in_one_request(&self, upload: &Upload, metadata: &Object, what: &str) -> BackendResult<ObjectMeta> {
        let framing = OneRequest::new(metadata, Some(upload.size), what)?;
        self.check_media_precondition(upload, &framing).await?;
        let length = framing.length(upload.size);
        let framing = &framing;
        self.retry
            .run_watched(what, |progress| async move {
                let body = framing.body(file_stream(upload.source.clone(), 0..upload.size), &progress);
                self.send_one_request(upload, framing, body, Some(length), &progress, what).await
            })
            .await
    }

    /// The one request while the file is written: sent as the bytes
    /// come, without a length. It lasts as long as the writer writes, and
    /// fails as a stall when the service takes none of the bytes the writer
    /// has for it, or does not answer once they are all sent, for the stall
    /// timeout. Waiting for the writer is no stall (a writer that writes
    /// nothing for `STREAM_IDLE` ends the request).
    pub(super) async fn streamed_upload(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta> {
        let StreamedUpload { upload, progress: mut written } = streamed;
        if self.uploads.streaming_refused.load(Ordering::Relaxed) {
            let message = "streamed uploads are refused by this service; the file goes up whole";
            return Err(BackendError::new(ErrorKind::Other, message));
        }
        let metadata = object_resource(&upload)?;
        let what = format!("streamed upload gs://{}/{}", upload.bucket, upload.name);
        let framing = OneRequest::new(&metadata, None, &what)?;
        self.check_media_precondition(&upload, &framing).await?;
        let moved = Progress::new();
        let body = framing.body(growing_file_stream(upload.source.clone(), written.clone(), moved.clone()), &moved);
        let request = self.send_one_request(&upload, &framing, body, None, &moved, &what);
        let request = self.retry.unless_stalled(&what, &moved, request);
        tokio::pin!(request);
        let size = tokio::select! {
            biased;
            complete = written.wait_for(|w| w.complete) => match complete {
                Ok(written) => written.len,
                Err(_) => {
                    return Err(BackendError::new(ErrorKind::Other, format!("{what}: abandoned by its writer")));
                }
            },
            // The server answered before the writer was done: a refusal
            // (the body cannot have ended before that).
            answered = &mut request => {
                return answered.and_then(|_| {
                    Err(BackendError::new(ErrorKind::Other, format!("{what}: the server answered before the last byte")))
                });
            }
        };
        let meta = request.await?;
        check_stored_size(&meta, size, &what)?;
        Ok(meta)
    }

    /// A media upload's generation precondition, checked before it starts
    /// (see `MEDIA_FROM`).
    async fn check_media_precondition(&self, upload: &Upload, framing: &OneRequest) -> BackendResult<()> {
        match upload.if_generation_match {
            Some(expected) if framing.is_media() => self.check_generation(&upload.bucket, &upload.name, expected).await,
            _ => Ok(()),
        }
    }

    /// Sends one upload request (its `body` moves `progress`) and reads the
    /// stored object from the answer.
    async fn send_one_request(
        &self,
        upload: &Upload,
        framing: &OneRequest,
        body: Body,
        length: Option<u64>,
        progress: &Progress,
        what: &str,
    ) -> BackendResult<ObjectMeta> {
        let uploads = &self.uploads;
        let url = format!("{}/b/{}/o", uploads.endpoint, upload.bucket);
        let mut query = vec![("uploadType", framing.upload_type.to_string())];
        if framing.is_media() {
            query.push(("name", upload.name.clone()));
        }
        if let Some(generation) = upload.if_generation_match {
            query.push(("ifGenerationMatch", generation.to_string()));
        }
        let mut request =
            uploads.http.post(&url).query(&query).header(CONTENT_TYPE, framing.content_type.as_str()).body(body);
        if let Some(length) = length {
            request = request.header(CONTENT_LENGTH, length);
        }
        let response =
            uploads.authorized(request, what).await?.send().await.map_err(|e| backend_error(what, e.into()))?;
        // The answer came: reading it gets a stall timeout of its own.
        progress.moved();
        if let Err(status) = response.error_for_status_ref() {
            let refused = [StatusCode::LENGTH_REQUIRED, StatusCode::NOT_IMPLEMENTED].contains(&response.status());
            if length.is_none() && refused && !uploads.streaming_refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(status = %response.status(), "uploads without a length are refused: no more streaming");
            }
            return Err(backend_error(what, response_error(response, status).await));
        }
        let object: Object = response.json().await.map_err(|e| backend_error(what, e.into()))?;
        Ok(object_meta(object))
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
        let session =
            self.retry.call(&start, || self.uploads.client.prepare_resumable_upload(&request, &upload_type)).await?;
        let sent = self.send_chunks(&session, upload, what).await;
        if sent.is_err() {
            // Best effort, and not waited for: a stalled service must not
            // hold the error back. An abandoned session expires anyway.
            let stall = self.retry.stall_timeout;
            tokio::spawn(async move { tokio::time::timeout(stall, session.cancel()).await });
        }
        sent
    }

    async fn send_chunks(
        &self,
        session: &ResumableUploadClient,
        upload: &Upload,
        what: &str,
    ) -> BackendResult<ObjectMeta> {
        let mut offset = 0;
        let mut stalled = 0;
        while offset < upload.size {
            let end = (offset + self.uploads.chunk).min(upload.size);
            let range = ChunkSize::new(offset, end - 1, Some(upload.size));
            let chunk = &format!("{what}: bytes {offset}..{end}");
            let range = &range;
            let status = self
                .retry
                .run_watched(chunk, |progress| async move {
                    let body =
                        Body::wrap_stream(progress.watch_stream(file_stream(upload.source.clone(), offset..end)));
                    session.upload_multiple_chunk(body, range).await.map_err(|e| backend_error(chunk, e))
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
                if stalled >= self.retry.attempts {
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
}

/// Cloud Storage's error answer.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorResponse,
}

/// The error of a failed answer: Cloud Storage's own when its body has one.
pub(super) async fn response_error(response: reqwest::Response, status: reqwest::Error) -> HttpError {
    match response.json::<ErrorBody>().await {
        Ok(body) => HttpError::Response(body.error),
        Err(_) => HttpError::HttpClient(status),
    }
}

/// A multipart boundary that no object's bytes will contain by chance.
fn boundary() -> String {
    let state = RandomState::new();
    format!("ciofs-{:016x}{:016x}", state.hash_one(1), state.hash_one(2))
}

/// The object resource of an upload's metadata part.
fn object_resource(upload: &Upload) -> BackendResult<Object> {
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
    Ok(Object {
        name: upload.name.clone(),
        content_type: Some(content_type),
        metadata: Some(upload.custom_metadata.clone().into_iter().collect::<HashMap<_, _>>()).filter(|m| !m.is_empty()),
        ..Default::default()
    })
}

fn check_stored_size(meta: &ObjectMeta, size: u64, what: &str) -> BackendResult<()> {
    if meta.size == size {
        return Ok(());
    }
    Err(BackendError::new(ErrorKind::Other, format!("{what}: the stored object has {} bytes, not {size}", meta.size)))
}

/// Reads `len` bytes of `file` at `at` off the async worker threads.
async fn read_piece(file: Arc<File>, at: u64, len: u64) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0; len as usize];
        file.read_exact_at(&mut buffer, at).map(|()| Bytes::from(buffer))
    })
    .await
    .map_err(io::Error::other)?
}

/// The bytes of `file` from its start, as `written` says they are written,
/// in pieces of at most `READ_PIECE`; the stream ends when the writer is
/// done and fails (so the request is abandoned) when the writer goes away or
/// writes nothing for `STREAM_IDLE`. While it waits for the writer it holds
/// `moved`: the service is not what it waits for.
fn growing_file_stream(
    file: Arc<File>,
    written: watch::Receiver<Written>,
    moved: Progress,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold((0u64, written), move |(at, mut written)| {
        let file = file.clone();
        let moved = moved.clone();
        async move {
            loop {
                let now = *written.borrow_and_update();
                if at < now.len {
                    let len = (now.len - at).min(READ_PIECE);
                    let piece = read_piece(file, at, len).await?;
                    return Ok(Some((piece, (at + len, written))));
                }
                if now.complete {
                    return Ok(None);
                }
                let _waiting_for_the_writer = moved.hold();
                match tokio::time::timeout(STREAM_IDLE, written.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(io::Error::other("the writer went away")),
                    // Not `TimedOut`: that is a stall of the service, and the
                    // caller would not send the file whole after it.
                    Err(_) => return Err(io::Error::other("the writer paused; the request is abandoned")),
                }
            }
        }
    })
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
            Ok(Some((read_piece(file, at, len).await?, at + len)))
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
