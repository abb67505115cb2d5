//! Metadata patches as JSON: the crate's requests cannot send a `null`,
//! which is how the JSON API removes a custom metadata key or a label.

use serde_json::Value;

use super::{GoogleGcs, backend_error};
use crate::error::BackendResult;

impl GoogleGcs {
    /// PATCHes `path` of the JSON API with `body`. The answer is not read
    /// (fake-gcs-server's object does not always decode): callers read the
    /// resource back.
    pub(super) async fn patch_json(
        &self,
        path: &str,
        if_metageneration_match: Option<i64>,
        body: &Value,
        what: &str,
    ) -> BackendResult<()> {
        let uploads = &self.uploads;
        let url = format!("{}/{path}", uploads.api);
        self.retry
            .run(what, || async {
                let mut request = uploads.http.patch(&url).json(body);
                if let Some(generation) = if_metageneration_match {
                    request = request.query(&[("ifMetagenerationMatch", generation.to_string())]);
                }
                let request = uploads.authorized(request, what).await?;
                let response = request.send().await.map_err(|e| backend_error(what, e.into()))?;
                match response.error_for_status_ref() {
                    Ok(_) => Ok(()),
                    Err(status) => Err(backend_error(what, super::upload::response_error(response, status).await)),
                }
            })
            .await
    }
}

/// An object name as one URL path segment.
pub(super) fn encode_path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(super::encode_path_segment("a b/c%d.txt"), "a%20b%2Fc%25d.txt");
    }
}
