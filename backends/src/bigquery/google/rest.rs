//! The two calls ciofs sends as plain JSON instead of through the crate:
//! `tables.update` and `datasets.update` (PUT), and the `get` that reads the
//! resource they replace.
//!
//! Why: a PUT replaces the whole resource, so a setting being removed must
//! be sent as removed. The crate's encoding leaves out empty label maps and
//! unset fields, which BigQuery reads as "clear" on a PUT but bqemulator as
//! "keep" (and on a patch both keep them). Sending `"labels": {}` and
//! `"description": null` is right on both. The resource is read as JSON too,
//! so the fields ciofs does not manage (access lists, encryption, ...) go
//! back exactly as the service gave them.
//!
//! The same endpoint and credentials as the crate's clients; one attempt per
//! call (the caller's `RetryPolicy` retries).

use std::time::Duration;

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::{BackendError, BackendResult, ErrorKind};

pub(super) struct Rest {
    http: reqwest::Client,
    /// `https://bigquery.googleapis.com` or the emulator's base URL.
    endpoint: Url,
    credentials: Credentials,
}

impl Rest {
    pub(super) fn new(endpoint: &str, credentials: Credentials) -> BackendResult<Self> {
        let endpoint = Url::parse(endpoint)
            .map_err(|e| BackendError::new(ErrorKind::InvalidArgument, format!("BigQuery endpoint {endpoint}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("building the HTTP client: {e}")))?;
        Ok(Self { http, endpoint, credentials })
    }

    /// GET `/bigquery/v2/<segments>`; `what` names the call in errors.
    pub(super) async fn get(&self, what: &str, segments: &[&str]) -> BackendResult<Value> {
        self.send(what, Method::GET, segments, None, None).await
    }

    /// PUT `body` to `/bigquery/v2/<segments>`, only if the resource is still
    /// at `if_match` when given.
    pub(super) async fn put(
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
            .extend(["bigquery", "v2"])
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
    BackendError::new(ErrorKind::Unavailable, format!("{what}: {error}"))
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
        Rest::new(endpoint, google_cloud_auth::credentials::anonymous::Builder::new().build()).unwrap()
    }

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        let url =
            rest("http://127.0.0.1:9050").url("t", &["projects", "p", "datasets", "d", "tables", "a b/c"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9050/bigquery/v2/projects/p/datasets/d/tables/a%20b%2Fc");
        let url = rest("https://bigquery.googleapis.com/").url("t", &["projects", "p"]).unwrap();
        assert_eq!(url.as_str(), "https://bigquery.googleapis.com/bigquery/v2/projects/p");
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
