//! Reads of an object's bytes: a GET of the JSON API's media download
//! (`alt=media`), with a `Range` header unless the read covers the whole
//! object, made here rather than by the crate, whose download gives no
//! headers: the answer's
//! `x-goog-generation` says which generation was served, so that a read
//! need not be pinned to learn it.
//!
//! It goes through the HTTP client with the read timeout (see
//! `GoogleGcs::connect`): an answer, or a next chunk, that does not come
//! within the stall timeout fails the read.

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, HeaderMap, RANGE};

use super::patch::encode_path_segment;
use super::upload::response_error;
use super::{GoogleGcs, backend_error};
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gcs::{ObjectBody, ObjectStore, ReadObject};

/// The header in which Cloud Storage (and fake-gcs-server) names the
/// generation whose bytes an answer carries.
const GENERATION_HEADER: &str = "x-goog-generation";

impl GoogleGcs {
    pub(super) async fn download(&self, request: &ReadObject) -> BackendResult<ObjectBody> {
        let ReadObject { bucket, name, generation, range, object_size } = request;
        let what = format!("read gs://{bucket}/{name} [{}..{})", range.start, range.end);
        if range.is_empty() {
            // No Range header asks for nothing; the generation is the one
            // named, or the live one's.
            let generation = match generation {
                Some(generation) => *generation,
                None => self.get_object(bucket, name).await?.generation,
            };
            return Ok(ObjectBody { generation, bytes: Box::pin(futures::stream::empty()) });
        }
        let url = format!("{}/b/{}/o/{}", self.uploads.api, encode_path_segment(bucket), encode_path_segment(name));
        let mut query = vec![("alt", "media".to_string())];
        if let Some(generation) = generation {
            query.push(("generation", generation.to_string()));
        }
        // HTTP ranges are inclusive at both ends; all of the object needs
        // none (another generation, larger, is told by its header before
        // its body is read).
        let whole = range.start == 0 && object_size.is_some_and(|size| range.end >= size);
        let wanted = (!whole).then(|| format!("bytes={}-{}", range.start, range.end - 1));
        let what = what.as_str();
        let response = self
            .retry
            .run(what, || async {
                let mut request = self.reads.get(&url).query(&query);
                if let Some(wanted) = &wanted {
                    request = request.header(RANGE, wanted.as_str());
                }
                let request = self.uploads.authorized(request, what).await?;
                let response = request.send().await.map_err(|e| backend_error(what, e.into()))?;
                match response.error_for_status_ref() {
                    Ok(_) => Ok(response),
                    Err(status) => Err(backend_error(what, response_error(response, status).await)),
                }
            })
            .await?;
        let served = served_generation(response.headers(), *generation, what)?;
        // What to drop from the front of the body, and how much to keep.
        let skip = match response.status() {
            StatusCode::PARTIAL_CONTENT => match range_start(response.headers()) {
                Some(start) if start != range.start => {
                    let message = format!("{what}: the answer starts at byte {start}");
                    return Err(BackendError::new(ErrorKind::Other, message));
                }
                _ => 0,
            },
            // The whole object, as a server that ignores the range (or one
            // that answers a range covering everything with it all) sends.
            StatusCode::OK => range.start,
            status => {
                let message = format!("{what}: unexpected answer {status}");
                return Err(BackendError::new(ErrorKind::Other, message));
            }
        };
        let data = format!("{what}: data");
        let chunks = response.bytes_stream().map(move |chunk| chunk.map_err(|e| backend_error(&data, e.into())));
        let bytes = Box::pin(cut(chunks, skip, range.end - range.start));
        Ok(ObjectBody { generation: served, bytes })
    }
}

/// The generation an answer is of. A pinned read without the header has
/// served the generation it named (a pinned read cannot serve another; it
/// fails instead); an unpinned read without it cannot say whose bytes they
/// are, and fails rather than let them be taken for any generation's.
fn served_generation(headers: &HeaderMap, pinned: Option<i64>, what: &str) -> BackendResult<i64> {
    let header = headers.get(GENERATION_HEADER);
    let served = header.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    match (served, pinned) {
        (Some(served), Some(pinned)) if served != pinned => {
            Err(BackendError::new(ErrorKind::Other, format!("{what}: generation {pinned} asked for, {served} served")))
        }
        (Some(served), _) => Ok(served),
        (None, Some(pinned)) => Ok(pinned),
        (None, None) => Err(BackendError::new(
            ErrorKind::Other,
            format!("{what}: the answer does not say which generation it is ({GENERATION_HEADER}: {header:?})"),
        )),
    }
}

/// The first byte of a 206 answer (`Content-Range: bytes a-b/size`).
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (start, _) = value.trim().strip_prefix("bytes ")?.split_once('-')?;
    start.trim().parse().ok()
}

/// `chunks` without their first `skip` bytes, and ending after `len` more.
fn cut(
    chunks: impl futures::Stream<Item = BackendResult<Bytes>> + Send + 'static,
    skip: u64,
    len: u64,
) -> impl futures::Stream<Item = BackendResult<Bytes>> + Send + 'static {
    chunks
        .scan((skip, len), |(skip, left), chunk| {
            let out = match chunk {
                _ if *left == 0 => return futures::future::ready(None),
                Ok(mut bytes) => {
                    let dropped = (*skip).min(bytes.len() as u64);
                    *skip -= dropped;
                    let mut bytes = bytes.split_off(dropped as usize);
                    bytes.truncate((*left).min(bytes.len() as u64) as usize);
                    *left -= bytes.len() as u64;
                    Ok(bytes)
                }
                Err(e) => Err(e),
            };
            futures::future::ready(Some(out))
        })
        .filter(|piece| futures::future::ready(!matches!(piece, Ok(bytes) if bytes.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use reqwest::header::HeaderValue;

    #[tokio::test]
    async fn a_whole_body_is_cut_to_the_range() {
        let chunks = || futures::stream::iter([b"hel".as_slice(), b"lo w", b"orld"].map(|c| Ok(Bytes::from(c))));
        let got: Vec<Bytes> = cut(chunks(), 4, 5).try_collect().await.unwrap();
        assert_eq!(got.concat(), b"o wor");
        let got: Vec<Bytes> = cut(chunks(), 0, 100).try_collect().await.unwrap();
        assert_eq!(got.concat(), b"hello world");
    }

    #[test]
    fn the_generation_comes_from_the_answer_or_the_pin() {
        let mut headers = HeaderMap::new();
        assert_eq!(served_generation(&headers, Some(7), "r").unwrap(), 7);
        assert_eq!(served_generation(&headers, None, "r").unwrap_err().kind, ErrorKind::Other);
        headers.insert(GENERATION_HEADER, HeaderValue::from_static("12"));
        assert_eq!(served_generation(&headers, None, "r").unwrap(), 12);
        assert_eq!(served_generation(&headers, Some(12), "r").unwrap(), 12);
        assert_eq!(served_generation(&headers, Some(7), "r").unwrap_err().kind, ErrorKind::Other);
        headers.insert(GENERATION_HEADER, HeaderValue::from_static("twelve"));
        assert_eq!(served_generation(&headers, None, "r").unwrap_err().kind, ErrorKind::Other);
    }

    #[test]
    fn a_content_range_gives_its_start() {
        let mut headers = HeaderMap::new();
        assert_eq!(range_start(&headers), None);
        headers.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 2-4/11"));
        assert_eq!(range_start(&headers), Some(2));
    }
}
