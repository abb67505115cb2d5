//! Calls ciofs sends as plain JSON over HTTP instead of through a Google
//! crate, with the same endpoint and credentials as the crate's clients:
//! BigQuery's whole-resource updates (bigquery/google.rs says why) and
//! Pub/Sub's unary pull, acknowledge and modifyAckDeadline (which
//! google-cloud-pubsub keeps private). One attempt per call: the caller's
//! `RetryPolicy` retries.

use std::time::Duration;

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::retry::http_client;

pub(crate) struct Rest {
    http: reqwest::Client,
    /// `https://bigquery.googleapis.com` or the emulator's base URL.
    endpoint: Url,
    /// The API's path prefix: `["bigquery", "v2"]`, `["v1"]`.
    base_path: &'static [&'static str],
    credentials: Credentials,
}

impl Rest {
    pub(crate) fn new(
        endpoint: &str,
        base_path: &'static [&'static str],
        credentials: Credentials,
        stall_timeout: Duration,
    ) -> BackendResult<Self> {
        let endpoint = Url::parse(endpoint)
            .map_err(|e| BackendError::new(ErrorKind::InvalidArgument, format!("endpoint {endpoint}: {e}")))?;
        let http = http_client(stall_timeout)
            .read_timeout(stall_timeout)
            .build()
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("building the HTTP client: {e}")))?;
        Ok(Self { http, endpoint, base_path, credentials })
    }

    /// GET `<base_path>/<segments>`; `what` names the call in errors.
    pub(crate) async fn get(&self, what: &str, segments: &[&str]) -> BackendResult<Value> {
        self.send(what, Method::GET, segments, None, None).await
    }

    /// POST `body` to `<base_path>/<segments>` (a custom method such as
    /// `subscriptions/S:pull` as the last segment).
    pub(crate) async fn post(&self, what: &str, segments: &[&str], body: &Value) -> BackendResult<Value> {
        self.send(what, Method::POST, segments, Some(body), None).await
    }

    /// PUT `body` to `<base_path>/<segments>`, only if the resource is still
    /// at `if_match` when given.
    pub(crate) async fn put(
        &self,
        what: &str,
        segments: &[&str],
        body: &Value,
        if_match: Option<&str>,
    ) -> BackendResult<Value> {
        self.send(what, Method::PUT, segments, Some(body), if_match).await
    }

    async fn send(
        &self,
        what: &str,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> BackendResult<Value> {
        let mut request = self.http.request(method, self.url(what, segments)?).headers(self.auth_headers(what).await?);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header(reqwest::header::IF_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| transport_error(what, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport_error(what, &e))?;
        if !status.is_success() {
            return Err(status_error(what, status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("{what}: the answer is not JSON: {e}")))
    }

    fn url(&self, what: &str, segments: &[&str]) -> BackendResult<Url> {
        let mut url = self.endpoint.clone();
        // Each segment is percent-encoded: table names may hold spaces and
        // other characters a path cannot.
        url.path_segments_mut()
            .map_err(|()| {
                BackendError::new(ErrorKind::InvalidArgument, format!("{what}: endpoint cannot take a path"))
            })?
            .pop_if_empty()
            .extend(self.base_path)
            .extend(segments);
        Ok(url)
    }

    async fn auth_headers(&self, what: &str) -> BackendResult<http::HeaderMap> {
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            // Only answered to a request that carried an entity tag; none did.
            Ok(CacheableResource::NotModified) => Ok(http::HeaderMap::new()),
            Err(e) => {
                let kind = if e.is_transient() { ErrorKind::Unavailable } else { ErrorKind::PermissionDenied };
                Err(BackendError::new(kind, format!("{what}: no credentials: {e}")))
            }
        }
    }
}

/// No answer: refused, reset or timed out connections may pass.
fn transport_error(what: &str, error: &reqwest::Error) -> BackendError {
    // The read timeout is the stall timeout.
    let kind = if error.is_timeout() { ErrorKind::Stalled } else { ErrorKind::Unavailable };
    BackendError::new(kind, format!("{what}: {error}"))
}

/// An error answer, with the service's message when it sent one
/// (`{"error": {"code": 404, "message": "Not found: ..."}}`).
fn status_error(what: &str, status: StatusCode, body: &[u8]) -> BackendError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    BackendError::new(ErrorKind::from_http_status(status.as_u16()), format!("{what}: HTTP {status}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(endpoint: &str) -> Rest {
        let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
        Rest::new(endpoint, &["bigquery", "v2"], anonymous, Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        let url =
            rest("http://127.0.0.1:9050").url("t", &["projects", "p", "datasets", "d", "tables", "a b/c"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9050/bigquery/v2/projects/p/datasets/d/tables/a%20b%2Fc");
        let url = rest("https://bigquery.googleapis.com/").url("t", &["projects", "p"]).unwrap();
        assert_eq!(url.as_str(), "https://bigquery.googleapis.com/bigquery/v2/projects/p");
        let pubsub = Rest::new(
            "http://127.0.0.1:8085",
            &["v1"],
            google_cloud_auth::credentials::anonymous::Builder::new().build(),
            Duration::from_secs(30),
        );
        let url = pubsub.unwrap().url("t", &["projects", "p", "subscriptions", "s-1:pull"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8085/v1/projects/p/subscriptions/s-1:pull");
    }

    #[test]
    fn error_answers_keep_the_service_message() {
        let body = br#"{"error": {"code": 404, "message": "Not found: table p:d.t", "status": "NOT_FOUND"}}"#;
        let error = status_error("update table d.t", StatusCode::NOT_FOUND, body);
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert!(error.message.contains("update table d.t") && error.message.contains("Not found: table p:d.t"));
        let error = status_error("x", StatusCode::PRECONDITION_FAILED, b"<html>");
        assert_eq!(error.kind, ErrorKind::PreconditionFailed);
        assert!(error.message.contains("<html>"));
    }
}
