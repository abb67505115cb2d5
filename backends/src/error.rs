//! The error every backend call returns: what kind of answer it was, and a
//! message. The core maps the kind to an errno in one place.

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
    /// 400: the request was refused as invalid.
    InvalidArgument,
    /// Anything else (an answer we could not decode, say).
    Other,
}

impl ErrorKind {
    /// Whether a call that failed this way may succeed when tried again.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::Unavailable)
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
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
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
}
