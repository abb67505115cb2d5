//! Unary pull, acknowledge and modifyAckDeadline over Pub/Sub's REST API
//! (`google-cloud-pubsub` keeps its own private). The pull asks with
//! `returnImmediately`: without it the emulator holds an empty pull open
//! until a message comes, and a pull given up by the client can strand the
//! messages the server handed to it until their ack deadline.

use std::time::Duration;

use google_cloud_pubsub::model;
use serde::Deserialize;
use serde_json::{Value, json};

use super::convert::received_message;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::pubsub::ReceivedMessage;
use crate::rest::Rest;

/// Pub/Sub's limit on `modifyAckDeadline`.
const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);

/// Pub/Sub's limit on ack ids per acknowledge or modifyAckDeadline call
/// (the request must also stay under 512 KB; ack ids are ~200 bytes).
pub(super) const MAX_ACK_IDS: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<ApiReceivedMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiReceivedMessage {
    ack_id: String,
    message: model::Message,
    #[serde(default)]
    delivery_attempt: Option<i32>,
}

fn subscription_path<'a>(project: &'a str, method: &'a str) -> [&'a str; 4] {
    ["projects", project, "subscriptions", method]
}

/// One pull attempt.
pub(super) async fn pull(
    rest: &Rest,
    what: &str,
    project: &str,
    subscription: &str,
    max_messages: usize,
) -> BackendResult<Vec<ReceivedMessage>> {
    let method = format!("{subscription}:pull");
    let body = json!({ "maxMessages": max_messages.max(1), "returnImmediately": true });
    let answer = rest.post(what, &subscription_path(project, &method), &body).await?;
    let response: PullResponse = serde_json::from_value(answer)
        .map_err(|e| BackendError::new(ErrorKind::Other, format!("{what}: unexpected answer: {e}")))?;
    let messages = response.received_messages.into_iter();
    Ok(messages.map(|m| received_message(m.ack_id, m.message, m.delivery_attempt)).collect())
}

/// One acknowledge attempt (at most `MAX_ACK_IDS` ids).
pub(super) async fn acknowledge(
    rest: &Rest,
    what: &str,
    project: &str,
    subscription: &str,
    ack_ids: &[String],
) -> BackendResult<()> {
    let method = format!("{subscription}:acknowledge");
    rest.post(what, &subscription_path(project, &method), &json!({ "ackIds": ack_ids })).await.map(drop)
}

/// One modifyAckDeadline attempt (at most `MAX_ACK_IDS` ids); the deadline
/// is clamped to Pub/Sub's 600 s.
pub(super) async fn modify_ack_deadline(
    rest: &Rest,
    what: &str,
    project: &str,
    subscription: &str,
    ack_ids: &[String],
    deadline: Duration,
) -> BackendResult<()> {
    let method = format!("{subscription}:modifyAckDeadline");
    let seconds = deadline.min(MAX_ACK_DEADLINE).as_secs();
    let body: Value = json!({ "ackIds": ack_ids, "ackDeadlineSeconds": seconds });
    rest.post(what, &subscription_path(project, &method), &body).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_answer_becomes_received_messages() {
        let answer = json!({"receivedMessages": [{
            "ackId": "projects/p/subscriptions/s:1",
            "message": {"data": "aGVsbG8=", "messageId": "7", "publishTime": "2026-11-25T15:35:22.182Z",
                        "attributes": {"k": "v"}, "orderingKey": "o"},
            "deliveryAttempt": 2
        }]});
        let response: PullResponse = serde_json::from_value(answer).unwrap();
        let m = &response.received_messages[0];
        let m = received_message(m.ack_id.clone(), m.message.clone(), m.delivery_attempt);
        assert_eq!(
            (m.ack_id.as_str(), m.message_id.as_str(), m.data.as_ref()),
            ("projects/p/subscriptions/s:1", "7", &b"hello"[..])
        );
        assert_eq!((m.attributes["k"].as_str(), m.ordering_key.as_str(), m.delivery_attempt), ("v", "o", Some(2)));
        let since_epoch = m.publish_time.unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(since_epoch.as_millis(), 1_795_620_922_182);
        let empty: PullResponse = serde_json::from_value(json!({})).unwrap();
        assert!(empty.received_messages.is_empty(), "an empty pull answers {{}}");
    }
}
