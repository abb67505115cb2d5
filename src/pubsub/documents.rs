//! Pub/Sub's documents (the files README.md lists): a topic's and a
//! subscription's `config.json`, which users edit and ciofs parses back,
//! the generated `pubsub/.meta/_quotas.json`, and the lines `_stream`
//! shows (in `stream`).
//!
//! Parsing is as strict as BigQuery's (`super::input`): unknown keys are
//! refused, a JSON error names its line and column, and the merge is at the
//! top level: a key left out keeps the current value, `null` clears it
//! (to the service's default), a present `labels` object replaces all
//! labels, and a present `dead_letter_policy` or `retry_policy` object
//! replaces the whole policy. Durations are written as protobuf's JSON
//! does: seconds with an `s`, maybe fractional (`"86400s"`, `"1.5s"`).
//!
//! Topic names are shown short (`my-topic`) when the topic is in the
//! mounted project, else in full (`projects/P/topics/T`); a short name
//! written back means a topic of the mounted project. Whether Pub/Sub
//! allows a change is `rules`'s question.

pub mod stream;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::rules::Problems;
use ciofs_backends::pubsub::{
    DeadLetterPolicy, RetryPolicy, SchemaSettings, SubscriptionMeta, SubscriptionSettings, TopicMeta, TopicSettings,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::duration::{format_duration, optional_duration, present_duration};
use super::rules as limits;
use crate::core::document::input::{check_header, parse_json, pick, present};
use crate::core::document::{VERSION, render};

pub use self::stream::{format_stream_json_line, format_stream_line};

const TOPIC_TYPE: &str = "pubsub-topic-config";
const SUBSCRIPTION_TYPE: &str = "pubsub-subscription-config";
const CONFIG_FILE: &str = "config.json";
/// Pub/Sub's default for a dead-letter policy's `max_delivery_attempts`.
const DEFAULT_DELIVERY_ATTEMPTS: i32 = 5;

// ---------------------------------------------------------------------------
// A topic's config.json

#[derive(Serialize)]
struct TopicConfigDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    labels: &'a BTreeMap<String, String>,
    message_retention_duration: Option<String>,
    schema_settings: Option<SchemaSettingsDocument<'a>>,
}

#[derive(Serialize)]
struct SchemaSettingsDocument<'a> {
    schema: &'a str,
    encoding: &'a str,
}

/// `pubsub/topics/<topic>/config.json`
pub fn render_topic_config(meta: &TopicMeta) -> Vec<u8> {
    let settings = &meta.settings;
    render(&TopicConfigDocument {
        version: VERSION,
        r#type: TOPIC_TYPE,
        labels: &settings.labels,
        message_retention_duration: settings.message_retention_duration.map(format_duration),
        schema_settings: settings
            .schema_settings
            .as_ref()
            .map(|s| SchemaSettingsDocument { schema: &s.schema, encoding: &s.encoding }),
    })
}

/// A written topic `config.json`: `None` when a key is absent, `Some(None)`
/// when it is null.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicConfigInput {
    version: Option<String>,
    r#type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    labels: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present_duration")]
    message_retention_duration: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "present")]
    schema_settings: Option<Option<SchemaSettingsInput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaSettingsInput {
    schema: String,
    #[serde(deserialize_with = "encoding")]
    encoding: String,
}

/// The settings a written topic `config.json` asks for: `current` with the
/// document's keys applied.
pub fn parse_topic_config(bytes: &[u8], current: &TopicSettings) -> Result<TopicSettings, Problems> {
    let input: TopicConfigInput = parse_json(bytes, CONFIG_FILE)?;
    check_header(CONFIG_FILE, input.version.as_deref(), input.r#type.as_deref(), TOPIC_TYPE)?;
    let schema_settings =
        input.schema_settings.map(|s| s.map(|s| SchemaSettings { schema: s.schema, encoding: s.encoding }));
    Ok(TopicSettings {
        labels: pick(input.labels.map(Option::unwrap_or_default), &current.labels),
        message_retention_duration: pick(input.message_retention_duration, &current.message_retention_duration),
        schema_settings: pick(schema_settings, &current.schema_settings),
    })
}

fn encoding<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let encoding = String::deserialize(d)?.to_ascii_uppercase();
    if ["JSON", "BINARY"].contains(&encoding.as_str()) {
        Ok(encoding)
    } else {
        Err(D::Error::custom(format!("schema_settings.encoding {encoding:?} is not one of JSON, BINARY")))
    }
}

// ---------------------------------------------------------------------------
// A subscription's config.json

#[derive(Serialize)]
struct SubscriptionConfigDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    topic: &'a str,
    ack_deadline_seconds: i32,
    retain_acked_messages: bool,
    message_retention_duration: Option<String>,
    filter: &'a str,
    enable_message_ordering: bool,
    dead_letter_policy: Option<DeadLetterDocument<'a>>,
    retry_policy: Option<RetryDocument>,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct DeadLetterDocument<'a> {
    dead_letter_topic: &'a str,
    max_delivery_attempts: i32,
}

#[derive(Serialize)]
struct RetryDocument {
    minimum_backoff: Option<String>,
    maximum_backoff: Option<String>,
}

/// `pubsub/topics/<topic>/subscriptions/<sub>/config.json`; `project` is
/// the mounted project, whose topics are shown by their short names.
pub fn render_subscription_config(project: &str, meta: &SubscriptionMeta) -> Vec<u8> {
    let settings = &meta.settings;
    render(&SubscriptionConfigDocument {
        version: VERSION,
        r#type: SUBSCRIPTION_TYPE,
        topic: short_topic(project, &meta.topic),
        ack_deadline_seconds: settings.ack_deadline_seconds,
        retain_acked_messages: settings.retain_acked_messages,
        message_retention_duration: settings.message_retention_duration.map(format_duration),
        filter: &settings.filter,
        enable_message_ordering: settings.enable_message_ordering,
        dead_letter_policy: settings.dead_letter_policy.as_ref().map(|p| DeadLetterDocument {
            dead_letter_topic: short_topic(project, &p.dead_letter_topic),
            max_delivery_attempts: p.max_delivery_attempts,
        }),
        retry_policy: settings.retry_policy.as_ref().map(|p| RetryDocument {
            minimum_backoff: p.minimum_backoff.map(format_duration),
            maximum_backoff: p.maximum_backoff.map(format_duration),
        }),
        labels: &settings.labels,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionConfigInput {
    version: Option<String>,
    r#type: Option<String>,
    /// Only checked: a subscription stays with its topic.
    topic: Option<String>,
    #[serde(default, deserialize_with = "present")]
    ack_deadline_seconds: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    retain_acked_messages: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present_duration")]
    message_retention_duration: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "present")]
    filter: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    enable_message_ordering: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    dead_letter_policy: Option<Option<DeadLetterInput>>,
    #[serde(default, deserialize_with = "present")]
    retry_policy: Option<Option<RetryInput>>,
    #[serde(default, deserialize_with = "present")]
    labels: Option<Option<BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterInput {
    dead_letter_topic: String,
    #[serde(default = "default_delivery_attempts")]
    max_delivery_attempts: i32,
}

/// Inside a policy, a backoff left out or null is the service's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryInput {
    #[serde(default, deserialize_with = "optional_duration")]
    minimum_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    maximum_backoff: Option<Duration>,
}

fn default_delivery_attempts() -> i32 {
    DEFAULT_DELIVERY_ATTEMPTS
}

/// The settings a written subscription `config.json` asks for: `current`
/// with the document's keys applied. `topic` is the subscription's topic
/// (full name); the document may name it (short or full) but not another.
/// A short dead-letter topic name is a topic of `project`.
pub fn parse_subscription_config(
    project: &str,
    topic: &str,
    bytes: &[u8],
    current: &SubscriptionSettings,
) -> Result<SubscriptionSettings, Problems> {
    let input: SubscriptionConfigInput = parse_json(bytes, CONFIG_FILE)?;
    check_header(CONFIG_FILE, input.version.as_deref(), input.r#type.as_deref(), SUBSCRIPTION_TYPE)?;
    if let Some(given) = &input.topic {
        check_same_topic(project, topic, given)?;
    }
    let dead_letter_policy = input.dead_letter_policy.map(|p| p.map(|p| dead_letter_policy(project, p)));
    let retry_policy = input
        .retry_policy
        .map(|p| p.map(|p| RetryPolicy { minimum_backoff: p.minimum_backoff, maximum_backoff: p.maximum_backoff }));
    Ok(SubscriptionSettings {
        labels: pick(input.labels.map(Option::unwrap_or_default), &current.labels),
        ack_deadline_seconds: pick(
            input.ack_deadline_seconds.map(Option::unwrap_or_default),
            &current.ack_deadline_seconds,
        ),
        retain_acked_messages: pick(
            input.retain_acked_messages.map(Option::unwrap_or_default),
            &current.retain_acked_messages,
        ),
        message_retention_duration: pick(input.message_retention_duration, &current.message_retention_duration),
        filter: pick(input.filter.map(Option::unwrap_or_default), &current.filter),
        enable_message_ordering: pick(
            input.enable_message_ordering.map(Option::unwrap_or_default),
            &current.enable_message_ordering,
        ),
        dead_letter_policy: pick(dead_letter_policy, &current.dead_letter_policy),
        retry_policy: pick(retry_policy, &current.retry_policy),
        // Not in the document: set only when ciofs creates a subscription.
        expiration_ttl: current.expiration_ttl,
    })
}

fn dead_letter_policy(project: &str, input: DeadLetterInput) -> DeadLetterPolicy {
    DeadLetterPolicy {
        dead_letter_topic: full_topic(project, &input.dead_letter_topic),
        max_delivery_attempts: input.max_delivery_attempts,
    }
}

fn check_same_topic(project: &str, topic: &str, given: &str) -> Result<(), Problems> {
    if given == topic || full_topic(project, given) == topic {
        return Ok(());
    }
    let message = format!(
        "{CONFIG_FILE}: topic {given:?} is not this subscription's topic {:?} \
         (a subscription cannot move to another topic: create one under that topic instead)",
        short_topic(project, topic)
    );
    Err(Problems::one("topic", message))
}

/// `projects/<project>/topics/T` shown as `T`; any other name in full.
fn short_topic<'a>(project: &str, full: &'a str) -> &'a str {
    let short = full.strip_prefix("projects/").and_then(|rest| rest.strip_prefix(project));
    match short.and_then(|rest| rest.strip_prefix("/topics/")) {
        Some(name) if !name.is_empty() && !name.contains('/') => name,
        _ => full,
    }
}

/// A name without `/` is a topic of `project`; anything else is kept.
fn full_topic(project: &str, name: &str) -> String {
    if name.contains('/') { name.to_string() } else { format!("projects/{project}/topics/{name}") }
}

// ---------------------------------------------------------------------------
// .meta/_quotas.json (generated; writes are ignored)

/// Where the limits come from: they are Google's published limits (the
/// constants in `rules`), not read from the project.
const QUOTAS_SOURCE: &str = "https://cloud.google.com/pubsub/quotas";

#[derive(Serialize)]
struct QuotasDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    project: &'a str,
    kind: &'static str,
    source: &'static str,
    note: &'static str,
    max_message_bytes: u64,
    max_attributes_per_message: u64,
    max_attribute_key_bytes: u64,
    max_attribute_value_bytes: u64,
    max_ordering_key_bytes: u64,
    max_publish_request_bytes: u64,
    max_publish_request_messages: u64,
    max_topics_per_project: u64,
    max_subscriptions_per_topic: u64,
    min_ack_deadline_seconds: i32,
    max_ack_deadline_seconds: i32,
    min_message_retention_duration: String,
    max_message_retention_duration: String,
    max_filter_bytes: usize,
    min_dead_letter_delivery_attempts: i32,
    max_dead_letter_delivery_attempts: i32,
    max_retry_backoff: String,
}

/// `pubsub/.meta/_quotas.json`: Pub/Sub's documented limits, the same for
/// every project (sizes in bytes, Pub/Sub's 1 kB being 1000 bytes).
pub fn render_quotas(project: &str) -> Vec<u8> {
    render(&QuotasDocument {
        version: VERSION,
        r#type: "pubsub-quotas",
        project,
        kind: "documented limits",
        source: QUOTAS_SOURCE,
        note: "Google's published Pub/Sub limits, not read from the project; \
               the project's own quota usage is in the Cloud console (IAM & Admin > Quotas)",
        max_message_bytes: limits::MAX_MESSAGE_BYTES,
        max_attributes_per_message: limits::MAX_ATTRIBUTES,
        max_attribute_key_bytes: limits::MAX_ATTRIBUTE_KEY_BYTES,
        max_attribute_value_bytes: limits::MAX_ATTRIBUTE_VALUE_BYTES,
        max_ordering_key_bytes: limits::MAX_ORDERING_KEY_BYTES,
        max_publish_request_bytes: limits::MAX_PUBLISH_REQUEST_BYTES,
        max_publish_request_messages: limits::MAX_PUBLISH_REQUEST_MESSAGES,
        max_topics_per_project: limits::MAX_TOPICS_PER_PROJECT,
        max_subscriptions_per_topic: limits::MAX_SUBSCRIPTIONS_PER_TOPIC,
        min_ack_deadline_seconds: limits::MIN_ACK_DEADLINE_SECONDS,
        max_ack_deadline_seconds: limits::MAX_ACK_DEADLINE_SECONDS,
        min_message_retention_duration: format_duration(limits::MIN_RETENTION),
        max_message_retention_duration: format_duration(limits::MAX_RETENTION),
        max_filter_bytes: limits::MAX_FILTER_BYTES,
        min_dead_letter_delivery_attempts: limits::MIN_DELIVERY_ATTEMPTS,
        max_dead_letter_delivery_attempts: limits::MAX_DELIVERY_ATTEMPTS,
        max_retry_backoff: format_duration(limits::MAX_BACKOFF),
    })
}

#[cfg(test)]
mod tests;
