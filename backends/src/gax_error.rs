//! Errors of Google's official clients (`google-cloud-gax`'s `Error`,
//! shared by the BigQuery and Pub/Sub crates) mapped to ours: the one place
//! that reads their statuses.

use google_cloud_gax::error::Error as ApiError;
use google_cloud_gax::error::rpc::Code;

use crate::error::{BackendError, ErrorKind};
use crate::retry::ClientError;

/// Maps the crate's error to ours, with the call and the service's message;
/// the one place that reads its statuses.
pub(crate) fn backend_error(what: &str, error: &ApiError) -> BackendError {
    let message = error.status().map(|s| s.message.clone()).filter(|m| !m.is_empty());
    BackendError::new(error_kind(error), format!("{what}: {}", message.unwrap_or_else(|| error.to_string())))
}

impl ClientError for ApiError {
    fn into_backend_error(self, what: &str) -> BackendError {
        backend_error(what, &self)
    }
}

fn error_kind(error: &ApiError) -> ErrorKind {
    if let Some(status) = error.http_status_code() {
        return ErrorKind::from_http_status(status);
    }
    if let Some(status) = error.status() {
        return kind_of_code(status.code);
    }
    if error.is_timeout() || error.is_exhausted() || error.is_connect() || error.is_io() || error.is_transport() {
        // No answer (refused, reset, timed out): the service may be back soon.
        ErrorKind::Unavailable
    } else if error.is_authentication() {
        if error.is_transient_and_before_rpc() { ErrorKind::Unavailable } else { ErrorKind::PermissionDenied }
    } else if error.is_binding() || error.is_serialization() {
        // A name that cannot be put in a request path.
        ErrorKind::InvalidArgument
    } else {
        // An answer that could not be decoded.
        ErrorKind::Other
    }
}

/// For a service error without an HTTP status (gRPC calls; none seen on
/// REST, but the type allows it).
fn kind_of_code(code: Code) -> ErrorKind {
    match code {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition | Code::Aborted => ErrorKind::PreconditionFailed,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::PermissionDenied | Code::Unauthenticated => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::RateLimited,
        Code::Unavailable | Code::DeadlineExceeded | Code::Internal => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_by_http_status() {
        let status = google_cloud_gax::error::rpc::Status::default()
            .set_code(Code::NotFound)
            .set_message("Not found: table p:d.t");
        let error = ApiError::service_with_http_metadata(status, Some(404), None);
        let mapped = backend_error("get table p.d.t", &error);
        assert_eq!(mapped.kind, ErrorKind::NotFound);
        assert_eq!(mapped.message, "get table p.d.t: Not found: table p:d.t");
        let conflict = ApiError::service_with_http_metadata(
            google_cloud_gax::error::rpc::Status::default().set_code(Code::AlreadyExists),
            Some(409),
            None,
        );
        assert_eq!(error_kind(&conflict), ErrorKind::AlreadyExists);
        assert_eq!(error_kind(&ApiError::http(412, http::HeaderMap::new(), "x".into())), ErrorKind::PreconditionFailed);
        assert_eq!(error_kind(&ApiError::http(503, http::HeaderMap::new(), "x".into())), ErrorKind::Unavailable);
        assert_eq!(error_kind(&ApiError::io("reset")), ErrorKind::Unavailable);
        assert_eq!(error_kind(&ApiError::timeout("slow")), ErrorKind::Unavailable);
        assert_eq!(error_kind(&ApiError::deser("bad")), ErrorKind::Other);
    }
}
