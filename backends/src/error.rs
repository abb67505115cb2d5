//! The error every backend call returns: what kind of answer it was, and a
//! message. The core maps the kind to an errno in one place.
//!
//! Every message passes through `redact` when the error is made, so that
//! no log line or error file carries what would let its reader act as
//! ciofs: URL queries (a resumable upload's session URL holds an
//! `upload_id` that grants write access to that upload; the HTTP client's
//! errors name the URL they were for), `upload_id` and access token
//! values, and bearer tokens.

use std::fmt;

/// What went wrong, as far as the caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the resource does not exist.
    NotFound,
    /// 401/403: not allowed.
    PermissionDenied,
    /// 409: the resource exists already.
    AlreadyExists,
    /// 412: a generation or etag precondition failed.
    PreconditionFailed,
    /// 429 or quota: retried, then reported.
    RateLimited,
    /// 5xx, timeouts, connection failures: retried, then reported.
    Unavailable,
    /// The call made no progress for the stall timeout (a frozen service):
    /// retried within the retry window, then reported. Kept apart from
    /// `Unavailable` so that a caller can tell a stall, which the same
    /// request again would likely meet, from a reset.
    Stalled,
    /// 400: the request was refused as invalid.
    InvalidArgument,
    /// Anything else (an answer we could not decode, say).
    Other,
}

impl ErrorKind {
    /// Whether a call that failed this way may succeed when tried again.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Stalled)
    }

    /// The kind as a label: the `status` of the metrics and the API log.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Stalled => "stalled",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Other => "other",
        }
    }

    /// The kind for an HTTP status code.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::PermissionDenied,
            409 => ErrorKind::AlreadyExists,
            412 => ErrorKind::PreconditionFailed,
            429 => ErrorKind::RateLimited,
            408 => ErrorKind::Unavailable,
            400 | 411 | 413 | 416 => ErrorKind::InvalidArgument,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Other,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    /// An error with `message`, redacted (see the module's header).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: redact(&message.into()) }
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for BackendError {}

pub type BackendResult<T> = Result<T, BackendError>;

/// What stands in for a removed secret.
const REDACTED: &str = "[redacted]";

/// Keys whose values are secrets, wherever they appear (`key=value` in a
/// query or form, `"key": "value"` in JSON).
const SECRET_KEYS: [&str; 4] = ["upload_id", "access_token", "refresh_token", "id_token"];

/// `text` without URL queries, secret keys' values and bearer tokens.
pub fn redact(text: &str) -> String {
    let text = without_url_queries(text);
    let text = SECRET_KEYS.iter().fold(text, |text, key| without_values_of(&text, key));
    without_values_of(&text, "bearer")
}

/// Each `http://` or `https://` URL in `text` up to its query, which
/// becomes `?[redacted]`.
fn without_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        let (before, url) = rest.split_at(start);
        out.push_str(before);
        let end = url.find(|c: char| c.is_whitespace() || "()<>\"'`[]{}".contains(c)).unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        match url.split_once('?') {
            Some((path, _)) => {
                out.push_str(path);
                out.push('?');
                out.push_str(REDACTED);
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")].into_iter().flatten().min()
}

/// `text` with the value after each `key` (any case) redacted: the value
/// follows the key after `=`, `:`, spaces or quotes, and ends at a quote,
/// `&`, `,`, a space or a bracket.
fn without_values_of(text: &str, key: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(key) {
        let key_end = at + found + key.len();
        let separator = text[key_end..].find(|c: char| !"=: \"'".contains(c)).map_or(text.len(), |i| key_end + i);
        if separator == key_end {
            // Not followed by a separator: a word that contains the key.
            out.push_str(&text[at..key_end]);
            at = key_end;
            continue;
        }
        let value_end = text[separator..]
            .find(|c: char| c.is_whitespace() || "\"'&,;()<>[]{}".contains(c))
            .map_or(text.len(), |i| separator + i);
        out.push_str(&text[at..separator]);
        if value_end > separator {
            out.push_str(REDACTED);
        }
        at = value_end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_kinds() {
        assert_eq!(ErrorKind::from_http_status(404), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_http_status(403), ErrorKind::PermissionDenied);
        assert_eq!(ErrorKind::from_http_status(409), ErrorKind::AlreadyExists);
        assert_eq!(ErrorKind::from_http_status(412), ErrorKind::PreconditionFailed);
        assert_eq!(ErrorKind::from_http_status(429), ErrorKind::RateLimited);
        assert_eq!(ErrorKind::from_http_status(503), ErrorKind::Unavailable);
        assert_eq!(ErrorKind::from_http_status(400), ErrorKind::InvalidArgument);
        assert!(ErrorKind::Unavailable.is_transient());
        assert!(!ErrorKind::NotFound.is_transient());
    }

    #[test]
    fn messages_lose_url_queries_and_secrets() {
        let session = "http://127.0.0.1:4443/upload/storage/v1/b/b/o?uploadType=resumable&name=o&upload_id=SECRET1";
        let error = BackendError::new(
            ErrorKind::InvalidArgument,
            format!("upload: HTTP status client error (400 Bad Request) for url ({session})"),
        );
        assert_eq!(
            error.message,
            "upload: HTTP status client error (400 Bad Request) for url \
             (http://127.0.0.1:4443/upload/storage/v1/b/b/o?[redacted])"
        );
        let echoed = redact(r#"{"message": "no session upload_id=SECRET2&x=1", "access_token":"ya29.SECRET3"}"#);
        assert_eq!(echoed, r#"{"message": "no session upload_id=[redacted]&x=1", "access_token":"[redacted]"}"#);
        assert_eq!(redact("Authorization: Bearer ya29.SECRET4 refused"), "Authorization: Bearer [redacted] refused");
        assert_eq!(redact("HTTPS://Host/p?Q=1"), "HTTPS://Host/p?[redacted]");
        // Text without secrets is left alone, words that merely contain a
        // key included.
        let plain = "upload gs://b/dir/o (300 bytes): bytes 0..262144: the server keeps no more than 0 bytes";
        assert_eq!(redact(plain), plain);
        assert_eq!(redact("upload_ids are fine"), "upload_ids are fine");
        assert_eq!(redact("ends with upload_id="), "ends with upload_id=");
    }
}
