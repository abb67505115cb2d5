//! Pub/Sub's resources (the crate's model) to ciofs's types and back, and
//! the update masks: an update names only the fields that changed, so an
//! unchanged field the emulator refuses to update (labels) is never sent.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use google_cloud_pubsub::model;
use google_cloud_wkt as wkt;

use crate::pubsub::{
    DeadLetterPolicy, ReceivedMessage, RetryPolicy, SchemaSettings, SubscriptionMeta, SubscriptionSettings, TopicMeta,
    TopicSettings,
};

/// The service's default ack deadline, which `ack_deadline_seconds: 0`
/// stands for.
pub(super) const DEFAULT_ACK_DEADLINE_SECONDS: i32 = 10;

/// The service's default retention of a subscription's unacked messages
/// (7 days), which `message_retention_duration: None` stands for there.
pub(super) const DEFAULT_SUBSCRIPTION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn topic_name(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

pub(super) fn subscription_name(project: &str, subscription: &str) -> String {
    format!("projects/{project}/subscriptions/{subscription}")
}

/// The last segment of a full name (`projects/P/topics/T` → `T`).
pub(super) fn short_name(full: &str) -> String {
    full.rsplit('/').next().unwrap_or(full).to_string()
}

/// The short name if `full` is a resource of `project` (`kind`: `topics`,
/// `subscriptions`).
pub(super) fn short_name_in(full: &str, project: &str, kind: &str) -> Option<String> {
    let rest = full.strip_prefix("projects/")?.strip_prefix(project)?.strip_prefix('/')?;
    rest.strip_prefix(kind)?.strip_prefix('/').map(str::to_string)
}

fn duration_to_api(d: Duration) -> wkt::Duration {
    // Durations beyond the API's range (10,000 years) are clamped.
    let seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    wkt::Duration::clamp(seconds, i32::try_from(d.subsec_nanos()).unwrap_or(0))
}

fn duration_from_api(d: &wkt::Duration) -> Option<Duration> {
    Duration::try_from(*d).ok()
}

fn labels_from_api(labels: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn api_topic(project: &str, topic: &str, settings: &TopicSettings) -> model::Topic {
    let mut api = model::Topic::new().set_name(topic_name(project, topic)).set_labels(settings.labels.clone());
    api.message_retention_duration = settings.message_retention_duration.map(duration_to_api);
    api.schema_settings = settings.schema_settings.as_ref().map(|s| {
        model::SchemaSettings::new()
            .set_schema(s.schema.clone())
            .set_encoding(model::Encoding::from(s.encoding.as_str()))
    });
    api
}

pub(super) fn topic_meta(api: &model::Topic) -> TopicMeta {
    let schema_settings = api.schema_settings.as_ref().map(|s| SchemaSettings {
        schema: s.schema.clone(),
        encoding: s.encoding.name().unwrap_or_default().to_string(),
    });
    TopicMeta {
        topic: short_name(&api.name),
        settings: TopicSettings {
            labels: labels_from_api(&api.labels),
            message_retention_duration: api.message_retention_duration.as_ref().and_then(duration_from_api),
            schema_settings,
        },
    }
}

/// The fields of a topic to update from `current` to `wanted`.
pub(super) fn topic_mask(current: &TopicSettings, wanted: &TopicSettings) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if current.labels != wanted.labels {
        paths.push("labels");
    }
    if current.message_retention_duration != wanted.message_retention_duration {
        paths.push("message_retention_duration");
    }
    // The service reports encoding "ENCODING_UNSPECIFIED" for none given.
    if normalized_schema(current) != normalized_schema(wanted) {
        paths.push("schema_settings");
    }
    paths
}

fn normalized_schema(settings: &TopicSettings) -> Option<(String, String)> {
    settings.schema_settings.as_ref().map(|s| {
        let encoding = model::Encoding::from(s.encoding.as_str());
        (s.schema.clone(), encoding.name().unwrap_or_default().to_string())
    })
}

pub(super) fn api_subscription(
    project: &str,
    subscription: &str,
    topic: &str,
    settings: &SubscriptionSettings,
) -> model::Subscription {
    let mut api = model::Subscription::new()
        .set_name(subscription_name(project, subscription))
        .set_topic(topic_name(project, topic))
        .set_labels(settings.labels.clone())
        .set_ack_deadline_seconds(settings.ack_deadline_seconds)
        .set_retain_acked_messages(settings.retain_acked_messages)
        .set_filter(settings.filter.clone())
        .set_enable_message_ordering(settings.enable_message_ordering);
    api.message_retention_duration = settings.message_retention_duration.map(duration_to_api);
    api.dead_letter_policy = settings.dead_letter_policy.as_ref().map(api_dead_letter_policy);
    api.retry_policy = settings.retry_policy.as_ref().map(api_retry_policy);
    api.expiration_policy =
        settings.expiration_ttl.map(|ttl| model::ExpirationPolicy::new().set_ttl(duration_to_api(ttl)));
    api
}

fn api_dead_letter_policy(policy: &DeadLetterPolicy) -> model::DeadLetterPolicy {
    model::DeadLetterPolicy::new()
        .set_dead_letter_topic(policy.dead_letter_topic.clone())
        .set_max_delivery_attempts(policy.max_delivery_attempts)
}

fn api_retry_policy(policy: &RetryPolicy) -> model::RetryPolicy {
    let mut api = model::RetryPolicy::new();
    api.minimum_backoff = policy.minimum_backoff.map(duration_to_api);
    api.maximum_backoff = policy.maximum_backoff.map(duration_to_api);
    api
}

pub(super) fn subscription_meta(api: &model::Subscription) -> SubscriptionMeta {
    let dead_letter_policy = api.dead_letter_policy.as_ref().map(|p| DeadLetterPolicy {
        dead_letter_topic: p.dead_letter_topic.clone(),
        max_delivery_attempts: p.max_delivery_attempts,
    });
    let retry_policy = api.retry_policy.as_ref().map(|p| RetryPolicy {
        minimum_backoff: p.minimum_backoff.as_ref().and_then(duration_from_api),
        maximum_backoff: p.maximum_backoff.as_ref().and_then(duration_from_api),
    });
    SubscriptionMeta {
        subscription: short_name(&api.name),
        topic: api.topic.clone(),
        settings: SubscriptionSettings {
            labels: labels_from_api(&api.labels),
            ack_deadline_seconds: api.ack_deadline_seconds,
            retain_acked_messages: api.retain_acked_messages,
            message_retention_duration: api.message_retention_duration.as_ref().and_then(duration_from_api),
            filter: api.filter.clone(),
            enable_message_ordering: api.enable_message_ordering,
            dead_letter_policy,
            retry_policy,
            // A policy without a ttl: the subscription never expires. That
            // is None as well: `expiration_ttl` has no value for "never".
            expiration_ttl: api.expiration_policy.as_ref().and_then(|p| p.ttl.as_ref()).and_then(duration_from_api),
        },
    }
}

/// The fields of a subscription to update from `current` to `wanted`, among
/// those that can change after creation (not `filter`, not
/// `enable_message_ordering`), and not `expiration_policy`, which ciofs
/// sets only at creation. Defaults are compared as the values they stand
/// for.
pub(super) fn subscription_mask(current: &SubscriptionSettings, wanted: &SubscriptionSettings) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if current.labels != wanted.labels {
        paths.push("labels");
    }
    if ack_deadline(current) != ack_deadline(wanted) {
        paths.push("ack_deadline_seconds");
    }
    if current.retain_acked_messages != wanted.retain_acked_messages {
        paths.push("retain_acked_messages");
    }
    if subscription_retention(current) != subscription_retention(wanted) {
        paths.push("message_retention_duration");
    }
    if current.dead_letter_policy != wanted.dead_letter_policy {
        paths.push("dead_letter_policy");
    }
    if current.retry_policy != wanted.retry_policy {
        paths.push("retry_policy");
    }
    paths
}

pub(super) fn ack_deadline(settings: &SubscriptionSettings) -> i32 {
    if settings.ack_deadline_seconds == 0 { DEFAULT_ACK_DEADLINE_SECONDS } else { settings.ack_deadline_seconds }
}

fn subscription_retention(settings: &SubscriptionSettings) -> Duration {
    settings.message_retention_duration.unwrap_or(DEFAULT_SUBSCRIPTION_RETENTION)
}

/// The subscription to send with an update: `wanted` with the defaults
/// spelled out (the service refuses an ack deadline of 0 in an update).
pub(super) fn api_subscription_update(
    project: &str,
    subscription: &str,
    topic: &str,
    wanted: &SubscriptionSettings,
) -> model::Subscription {
    let mut settings = wanted.clone();
    settings.ack_deadline_seconds = ack_deadline(wanted);
    settings.message_retention_duration = Some(subscription_retention(wanted));
    let mut api = api_subscription(project, subscription, "", &settings);
    api.topic = topic.to_string();
    api
}

pub(super) fn field_mask(paths: &[&str]) -> wkt::FieldMask {
    wkt::FieldMask::default().set_paths(paths.iter().map(|p| p.to_string()))
}

/// A pulled message with its ack id.
pub(super) fn received_message(ack_id: String, api: model::Message, delivery_attempt: Option<i32>) -> ReceivedMessage {
    let publish_time = api.publish_time.and_then(|t| SystemTime::try_from(t).ok());
    ReceivedMessage {
        ack_id,
        message_id: api.message_id,
        data: api.data,
        attributes: api.attributes.into_iter().collect(),
        ordering_key: api.ordering_key,
        publish_time,
        delivery_attempt,
    }
}

pub(super) fn api_message(message: crate::pubsub::OutgoingMessage) -> model::Message {
    model::Message::new()
        .set_data(message.data)
        .set_attributes(message.attributes)
        .set_ordering_key(message.ordering_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_filtered_by_project() {
        assert_eq!(short_name("projects/p/topics/t"), "t");
        assert_eq!(short_name_in("projects/p/subscriptions/s", "p", "subscriptions").as_deref(), Some("s"));
        assert_eq!(short_name_in("projects/pp/subscriptions/s", "p", "subscriptions"), None);
        assert_eq!(short_name_in("projects/p/topics/s", "p", "subscriptions"), None);
    }

    #[test]
    fn masks_name_only_what_changed() {
        let current = SubscriptionSettings {
            ack_deadline_seconds: 10,
            message_retention_duration: Some(DEFAULT_SUBSCRIPTION_RETENTION),
            labels: [("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let same = SubscriptionSettings { labels: current.labels.clone(), ..Default::default() };
        assert!(subscription_mask(&current, &same).is_empty(), "defaults are the values they stand for");
        let longer = SubscriptionSettings { ack_deadline_seconds: 30, ..same.clone() };
        assert_eq!(subscription_mask(&current, &longer), ["ack_deadline_seconds"]);
        let filtered = SubscriptionSettings { filter: "x".to_string(), ..same.clone() };
        assert!(subscription_mask(&current, &filtered).is_empty(), "the filter is fixed at creation");
        let expiring = SubscriptionSettings { expiration_ttl: Some(Duration::from_secs(86400)), ..same };
        assert!(subscription_mask(&current, &expiring).is_empty(), "the expiration is set only at creation");

        let topic = TopicSettings {
            schema_settings: Some(SchemaSettings { schema: "s".to_string(), encoding: "JSON".to_string() }),
            ..Default::default()
        };
        assert!(topic_mask(&topic, &topic.clone()).is_empty());
        let labelled = TopicSettings { labels: [("k".to_string(), "v".to_string())].into(), ..topic.clone() };
        assert_eq!(topic_mask(&topic, &labelled), ["labels"]);
    }

    /// A ttl is sent as the expiration policy and read back; none leaves the
    /// policy out (the service's default), and a policy without a ttl
    /// (never expires) reads as none.
    #[test]
    fn the_expiration_ttl_is_the_expiration_policy() {
        let day = Duration::from_secs(24 * 3600);
        let settings = SubscriptionSettings { expiration_ttl: Some(day), ..Default::default() };
        let api = api_subscription("p", "s", "t", &settings);
        let ttl = api.expiration_policy.as_ref().and_then(|p| p.ttl);
        assert_eq!(ttl, Some(wkt::Duration::clamp(86400, 0)));
        assert_eq!(subscription_meta(&api).settings.expiration_ttl, Some(day));
        let default = api_subscription("p", "s", "t", &SubscriptionSettings::default());
        assert_eq!(default.expiration_policy, None);
        let never = model::Subscription::new().set_expiration_policy(model::ExpirationPolicy::new());
        assert_eq!(subscription_meta(&never).settings.expiration_ttl, None);
    }

    #[test]
    fn durations_round_trip() {
        let settings = SubscriptionSettings {
            retry_policy: Some(RetryPolicy {
                minimum_backoff: Some(Duration::from_millis(1500)),
                maximum_backoff: Some(Duration::from_secs(60)),
            }),
            message_retention_duration: Some(Duration::from_secs(3600)),
            expiration_ttl: Some(Duration::from_secs(2 * 24 * 3600)),
            ..Default::default()
        };
        let meta = subscription_meta(&api_subscription("p", "s", "t", &settings));
        assert_eq!(meta.settings, settings);
        assert_eq!((meta.subscription.as_str(), meta.topic.as_str()), ("s", "projects/p/topics/t"));
    }
}
