//! Metadata patches as JSON: the crate's requests cannot send a `null`,
//! which is how the JSON API removes a custom metadata key or a label.

use std::collections::BTreeMap;

use gcloud_storage::http::Error as HttpError;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::{GoogleGcs, backend_error};
use crate::error::BackendResult;
use crate::gcs::{BucketChange, BucketMeta, ObjectMeta, ObjectStore};

impl GoogleGcs {
    pub(super) async fn patch_object(
        &self,
        bucket: &str,
        name: &str,
        content_type: Option<&str>,
        custom_metadata: &BTreeMap<String, Option<String>>,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<ObjectMeta> {
        let mut body = json!({ "metadata": custom_metadata });
        if let Some(content_type) = content_type {
            body["contentType"] = json!(content_type);
        }
        let path = format!("b/{bucket}/o/{}", encode_path_segment(name));
        let what = format!("set the metadata of gs://{bucket}/{name}");
        self.patch_json(&path, if_metageneration_match, &body, &what).await?;
        self.get_object(bucket, name).await
    }

    pub(super) async fn patch_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta> {
        let mut body = json!({});
        if !change.labels.is_empty() {
            body["labels"] = json!(change.labels);
        }
        // fake-gcs-server turns versioning off on a patch that leaves it
        // out: it is always sent.
        let versioning = match change.versioning {
            Some(enabled) => enabled,
            None => self.get_bucket(bucket).await?.versioning,
        };
        body["versioning"] = json!({ "enabled": versioning });
        if let Some(class) = &change.storage_class {
            body["storageClass"] = json!(class);
        }
        let what = format!("change bucket {bucket}");
        self.patch_json(&format!("b/{bucket}"), if_metageneration_match, &body, &what).await?;
        self.get_bucket(bucket).await
    }

    /// PATCHes `path` of the JSON API with `body`. The answer is not read
    /// (fake-gcs-server's object does not always decode): callers read the
    /// resource back.
    async fn patch_json(
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
                if let Some(token) = &uploads.token {
                    let token = token.token().await.map_err(|e| backend_error(what, HttpError::TokenSource(e)))?;
                    request = request.header(AUTHORIZATION, token);
                }
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
fn encode_path_segment(name: &str) -> String {
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
