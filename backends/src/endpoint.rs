//! Where a service is reached, the same way for all three: an emulator
//! named by an environment variable (`STORAGE_EMULATOR_HOST`,
//! `BIGQUERY_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`), reached anonymously;
//! otherwise Google's endpoint with Application Default Credentials.

use google_cloud_auth::credentials::Credentials;

use crate::error::{BackendError, BackendResult, ErrorKind};

/// The emulator `var` names, as a base URL (`http://` is added when
/// missing); `None` when it is unset or empty.
pub(crate) fn emulator_from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|host| !host.is_empty()).map(with_scheme)
}

/// `host:port` as a URL; a URL as it is.
fn with_scheme(host: String) -> String {
    if host.contains("://") { host } else { format!("http://{host}") }
}

/// An emulator's base URL as the clients take it: without a trailing `/`.
pub(crate) fn base_url(emulator: Option<&str>) -> Option<String> {
    emulator.map(|e| e.trim_end_matches('/').to_string())
}

/// Credentials for Google's official crates: anonymous for an emulator
/// (without them the crate would look for the metadata server for about a
/// minute); Application Default Credentials otherwise. `service` names the
/// service in the error.
pub(crate) fn credentials(emulator: Option<&str>, service: &str) -> BackendResult<Credentials> {
    if emulator.is_some() {
        return Ok(google_cloud_auth::credentials::anonymous::Builder::new().build());
    }
    google_cloud_auth::credentials::Builder::default().build().map_err(|e| no_credentials(service, &e))
}

/// No Application Default Credentials for `service`.
pub(crate) fn no_credentials(service: &str, error: &dyn std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::PermissionDenied, format!("no Application Default Credentials for {service}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bigquery_emulator_host_gets_a_scheme() {
        assert_eq!(with_scheme("127.0.0.1:9050".to_string()), "http://127.0.0.1:9050");
        assert_eq!(with_scheme("https://bq.example:443".to_string()), "https://bq.example:443");
    }

    #[test]
    fn the_pubsub_emulator_host_gets_a_scheme() {
        assert_eq!(with_scheme("127.0.0.1:8085".to_string()), "http://127.0.0.1:8085");
        assert_eq!(with_scheme("https://pubsub.example".to_string()), "https://pubsub.example");
    }

    #[test]
    fn the_base_url_has_no_trailing_slash() {
        assert_eq!(base_url(Some("http://127.0.0.1:4443/")).as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(base_url(None), None);
    }
}
