//! Buckets' Pub/Sub notification configs (`notificationConfigs` of the JSON
//! API), as JSON of our own: the notification types of `gcloud-storage`
//! 1.3 name their fields in snake_case, so they cannot decode the API's
//! answers (`payloadFormat`, `eventTypes`) and do not send a new config's
//! event types and payload format under the names the API reads.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::patch::encode_path_segment;
use super::{GoogleGcs, backend_error};
use crate::error::BackendResult;
use crate::gcs::NotificationConfig;

/// What the API puts before a topic's full name.
const TOPIC_PREFIX: &str = "//pubsub.googleapis.com/";

/// The only payload format ciofs asks for: the object's JSON resource.
const JSON_API_V1: &str = "JSON_API_V1";

/// A notification config as the API answers it (fields ciofs reads).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiNotification {
    id: String,
    topic: String,
    /// Left out: every kind.
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    payload_format: String,
    #[serde(default)]
    object_name_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiNotificationList {
    /// Left out when the bucket has none.
    #[serde(default)]
    items: Vec<ApiNotification>,
}

/// A new notification config, as the API reads it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NewNotification<'a> {
    topic: String,
    /// Left out for every kind (the API refuses an empty list).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    event_types: &'a [String],
    payload_format: &'static str,
}

impl GoogleGcs {
    pub(super) async fn notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>> {
        let what = format!("list the notification configs of bucket {bucket}");
        let list: ApiNotificationList = self.retry.run(&what, || self.notification_call(bucket, None, &what)).await?;
        Ok(list.items.into_iter().map(notification_config).collect())
    }

    /// Inserts the config. An insert is not idempotent: when an attempt
    /// failed in a way that may have created the config anyway (its answer
    /// lost), the next attempt first looks for it, so that a retry does not
    /// leave two configs publishing each event twice.
    pub(super) async fn insert_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig> {
        let what = format!("create a notification config of bucket {bucket} for {topic}");
        let body = NewNotification { topic: topic_to_api(topic), event_types, payload_format: JSON_API_V1 };
        let mut retried = false;
        let created: ApiNotification = self
            .retry
            .run(&what, || {
                let look_first = std::mem::replace(&mut retried, true);
                let (body, what) = (&body, &what);
                async move {
                    if look_first && let Some(found) = self.find_notification(bucket, topic, event_types, what).await? {
                        return Ok(found);
                    }
                    self.notification_call(bucket, Some(body), what).await
                }
            })
            .await?;
        Ok(notification_config(created))
    }

    /// A config of `bucket` as `insert_notification` makes it, if there is one.
    async fn find_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
        what: &str,
    ) -> BackendResult<Option<ApiNotification>> {
        let list: ApiNotificationList = self.notification_call(bucket, None, what).await?;
        Ok(list.items.into_iter().find(|n| is_made_as(n, topic, event_types)))
    }

    /// One attempt: a GET of the bucket's configs, or a POST of `body`.
    async fn notification_call<T: DeserializeOwned>(
        &self,
        bucket: &str,
        body: Option<&NewNotification<'_>>,
        what: &str,
    ) -> BackendResult<T> {
        let uploads = &self.uploads;
        let url = format!("{}/b/{}/notificationConfigs", uploads.api, encode_path_segment(bucket));
        let request = match body {
            Some(body) => uploads.http.post(&url).json(body),
            None => uploads.http.get(&url),
        };
        let response =
            uploads.authorized(request, what).await?.send().await.map_err(|e| backend_error(what, e.into()))?;
        if let Err(status) = response.error_for_status_ref() {
            return Err(backend_error(what, super::upload::response_error(response, status).await));
        }
        response.json::<T>().await.map_err(|e| backend_error(what, e.into()))
    }
}

/// `projects/P/topics/T` as the API names it.
fn topic_to_api(topic: &str) -> String {
    if topic.starts_with(TOPIC_PREFIX) { topic.to_string() } else { format!("{TOPIC_PREFIX}{topic}") }
}

/// The API's `//pubsub.googleapis.com/projects/P/topics/T` as `projects/P/topics/T`.
fn topic_from_api(topic: &str) -> String {
    topic.strip_prefix(TOPIC_PREFIX).unwrap_or(topic).to_string()
}

fn notification_config(api: ApiNotification) -> NotificationConfig {
    NotificationConfig {
        id: api.id,
        topic: topic_from_api(&api.topic),
        event_types: api.event_types,
        payload_format: api.payload_format,
        object_name_prefix: api.object_name_prefix.unwrap_or_default(),
    }
}

/// Whether `config` is what an insert of `topic` and `event_types` makes:
/// the same topic and kinds (in any order), the JSON payload, no prefix.
fn is_made_as(config: &ApiNotification, topic: &str, event_types: &[String]) -> bool {
    let kinds = |types: &[String]| types.iter().cloned().collect::<BTreeSet<_>>();
    topic_from_api(&config.topic) == topic_from_api(topic)
        && kinds(&config.event_types) == kinds(event_types)
        && config.payload_format == JSON_API_V1
        && config.object_name_prefix.as_deref().unwrap_or_default().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_lose_and_regain_the_api_prefix() {
        let api = "//pubsub.googleapis.com/projects/p/topics/t";
        assert_eq!(topic_from_api(api), "projects/p/topics/t");
        assert_eq!(topic_to_api("projects/p/topics/t"), api);
        assert_eq!(topic_to_api(api), api, "a name already prefixed is kept");
        assert_eq!(topic_from_api("projects/p/topics/t"), "projects/p/topics/t");
    }

    /// The answer of `notifications.list` as the API documents it.
    #[test]
    fn the_api_answer_decodes_to_configs() {
        let answer = r#"{"kind": "storage#notifications", "items": [
            {"kind": "storage#notification", "id": "7", "selfLink": "https://x",
             "topic": "//pubsub.googleapis.com/projects/p/topics/t",
             "eventTypes": ["OBJECT_FINALIZE", "OBJECT_DELETE"], "payloadFormat": "JSON_API_V1", "etag": "7"},
            {"id": "8", "topic": "//pubsub.googleapis.com/projects/p/topics/u", "payloadFormat": "NONE"}]}"#;
        let list: ApiNotificationList = serde_json::from_str(answer).unwrap();
        let configs: Vec<_> = list.items.into_iter().map(notification_config).collect();
        let first = NotificationConfig {
            id: "7".to_string(),
            topic: "projects/p/topics/t".to_string(),
            event_types: vec!["OBJECT_FINALIZE".to_string(), "OBJECT_DELETE".to_string()],
            payload_format: "JSON_API_V1".to_string(),
            object_name_prefix: String::new(),
        };
        assert_eq!(configs[0], first);
        assert_eq!((configs[1].event_types.len(), configs[1].payload_format.as_str()), (0, "NONE"));
        let empty: ApiNotificationList = serde_json::from_str(r#"{"kind": "storage#notifications"}"#).unwrap();
        assert!(empty.items.is_empty());
    }

    #[test]
    fn a_new_config_is_sent_with_the_api_field_names() {
        let kinds = ["OBJECT_FINALIZE".to_string()];
        let body = NewNotification {
            topic: topic_to_api("projects/p/topics/t"),
            event_types: &kinds,
            payload_format: JSON_API_V1,
        };
        let expected = serde_json::json!({
            "topic": "//pubsub.googleapis.com/projects/p/topics/t",
            "eventTypes": ["OBJECT_FINALIZE"],
            "payloadFormat": "JSON_API_V1",
        });
        assert_eq!(serde_json::to_value(&body).unwrap(), expected);
        let every = NewNotification { event_types: &[], ..body };
        assert!(serde_json::to_value(&every).unwrap().get("eventTypes").is_none());
    }

    #[test]
    fn a_retry_recognizes_the_config_it_made() {
        let made = ApiNotification {
            id: "1".to_string(),
            topic: "//pubsub.googleapis.com/projects/p/topics/t".to_string(),
            event_types: vec!["OBJECT_DELETE".to_string(), "OBJECT_FINALIZE".to_string()],
            payload_format: JSON_API_V1.to_string(),
            object_name_prefix: None,
        };
        let kinds = ["OBJECT_FINALIZE".to_string(), "OBJECT_DELETE".to_string()];
        assert!(is_made_as(&made, "projects/p/topics/t", &kinds));
        assert!(!is_made_as(&made, "projects/p/topics/other", &kinds));
        assert!(!is_made_as(&made, "projects/p/topics/t", &kinds[..1]));
        let prefixed = ApiNotification { object_name_prefix: Some("logs/".to_string()), ..made.clone() };
        assert!(!is_made_as(&prefixed, "projects/p/topics/t", &kinds));
        let bare = ApiNotification { payload_format: "NONE".to_string(), ..made };
        assert!(!is_made_as(&bare, "projects/p/topics/t", &kinds));
    }
}
