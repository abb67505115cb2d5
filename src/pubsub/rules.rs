//! Pub/Sub's rules for topic and subscription settings, and its documented
//! limits, checked by ciofs before it sends anything: the emulator accepts
//! nearly everything, real Pub/Sub does not, and a user who saves
//! `config.json` should learn what is wrong from close()'s EINVAL.
//!
//! As in `bigquery::rules`, every check collects all its problems into one
//! EINVAL (`rules::refuse_if_any`), each naming the setting and the rule. A
//! setting is only checked when it is new or changed, so a value the
//! service already holds never blocks an unrelated edit.
//!
//! The limits below are Google's published ones, from "Pub/Sub quotas and
//! limits" (<https://cloud.google.com/pubsub/quotas>, "Resource limits") and
//! the API reference of `Topic` and `Subscription`
//! (<https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions>).
//! Pub/Sub writes sizes in decimal units (1 kB = 1000 bytes).

use std::time::Duration;

use ciofs_backends::pubsub::{DeadLetterPolicy, RetryPolicy, SchemaSettings, SubscriptionSettings, TopicSettings};

use super::duration::format_duration as seconds;
use crate::core::rules::{Problems, label_problems, refuse_if_any};

/// Quotas page: "Message size (the data field)": 10 MB.
pub const MAX_MESSAGE_BYTES: u64 = 10_000_000;
/// Quotas page: "Attributes per message": 100.
pub const MAX_ATTRIBUTES: u64 = 100;
/// Quotas page: "Attribute key size": 256 bytes.
pub const MAX_ATTRIBUTE_KEY_BYTES: u64 = 256;
/// Quotas page: "Attribute value size": 1024 bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: u64 = 1024;
/// Quotas page: "Ordering key size": 1 kB.
pub const MAX_ORDERING_KEY_BYTES: u64 = 1_000;
/// Quotas page: "Publish request": 10 MB in total.
pub const MAX_PUBLISH_REQUEST_BYTES: u64 = 10_000_000;
/// Quotas page: "Publish request": 1,000 messages.
pub const MAX_PUBLISH_REQUEST_MESSAGES: u64 = 1_000;
/// Quotas page: "Topics per project": 10,000.
pub const MAX_TOPICS_PER_PROJECT: u64 = 10_000;
/// Quotas page: "Attached subscriptions per topic": 10,000.
pub const MAX_SUBSCRIPTIONS_PER_TOPIC: u64 = 10_000;
/// Subscription reference, `ackDeadlineSeconds`: "minimum custom deadline
/// you can specify is 10 seconds", maximum 600 (10 minutes); 0 means the
/// default of 10 seconds.
pub const MIN_ACK_DEADLINE_SECONDS: i32 = 10;
pub const MAX_ACK_DEADLINE_SECONDS: i32 = 600;
/// Topic and Subscription reference, `messageRetentionDuration`: "Cannot
/// be more than 31 days or less than 10 minutes" (a subscription's limit
/// was 7 days until 2023; the reference now says 31 days for both).
pub const MIN_RETENTION: Duration = Duration::from_secs(10 * 60);
pub const MAX_RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);
/// Quotas page: "Subscription filter": 256 bytes.
pub const MAX_FILTER_BYTES: usize = 256;
/// DeadLetterPolicy reference, `maxDeliveryAttempts`: "between 5 and 100".
pub const MIN_DELIVERY_ATTEMPTS: i32 = 5;
pub const MAX_DELIVERY_ATTEMPTS: i32 = 100;
/// RetryPolicy reference: backoffs "between 0 and 600 seconds", defaults
/// 10 s (minimum) and 600 s (maximum).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(10);

/// Resource names (topics, subscriptions, schemas): 3–255 characters,
/// starting with a letter, then letters, digits and `-_.~+%`, never
/// starting with `goog`.
const MIN_NAME_CHARS: usize = 3;
const MAX_NAME_CHARS: usize = 255;

// ---------------------------------------------------------------------------
// Topics

/// Whether Pub/Sub would accept `new` as a topic's settings: when creating
/// (`old` is None) or changing. Labels follow Google's label rules; the
/// retention is 10 minutes to 31 days; schema settings name a schema as
/// `projects/P/schemas/S` with encoding JSON or BINARY.
pub fn check_topic_settings(old: Option<&TopicSettings>, new: &TopicSettings) -> Result<(), Problems> {
    let mut problems = Problems::default();
    if changed(old, new, |s| &s.labels) {
        label_problems("Pub/Sub", &new.labels, &mut problems);
    }
    if changed(old, new, |s| &s.message_retention_duration) {
        retention_problems(new.message_retention_duration, &mut problems);
    }
    if let Some(schema) = new.schema_settings.as_ref().filter(|_| changed(old, new, |s| &s.schema_settings)) {
        schema_problems(schema, &mut problems);
    }
    refuse_if_any(problems)
}

fn schema_problems(schema: &SchemaSettings, problems: &mut Problems) {
    if let Some(problem) = name_problem(&schema.schema, "schemas") {
        problems.add("schema_settings.schema", format!("schema_settings.schema: {problem}"));
    }
    if !["JSON", "BINARY"].contains(&schema.encoding.as_str()) {
        problems.add(
            "schema_settings.encoding",
            format!("schema_settings.encoding {:?} is not one of JSON, BINARY", schema.encoding),
        );
    }
}

// ---------------------------------------------------------------------------
// Subscriptions

/// Whether Pub/Sub would accept `new` as a subscription's settings: at
/// creation (`old` is None) or as a change of `old`. `filter` and
/// `enable_message_ordering` are fixed at creation; the ack deadline is 0
/// (the default) or 10–600 s; the retention 10 minutes to 31 days; the
/// filter at most 256 bytes; a dead-letter policy names a topic
/// `projects/P/topics/T` and 5–100 delivery attempts; retry backoffs are
/// 0–600 s with the minimum at most the maximum.
pub fn check_subscription_change(
    old: Option<&SubscriptionSettings>,
    new: &SubscriptionSettings,
) -> Result<(), Problems> {
    let mut problems = Problems::default();
    if let Some(old) = old {
        fixed_at_creation(old, new, &mut problems);
    }
    if changed(old, new, |s| &s.labels) {
        label_problems("Pub/Sub", &new.labels, &mut problems);
    }
    if changed(old, new, |s| &s.ack_deadline_seconds) {
        ack_deadline_problems(new.ack_deadline_seconds, &mut problems);
    }
    if changed(old, new, |s| &s.message_retention_duration) {
        retention_problems(new.message_retention_duration, &mut problems);
    }
    if old.is_none() && new.filter.len() > MAX_FILTER_BYTES {
        problems.add(
            "filter",
            format!("filter: {} bytes long, Pub/Sub allows at most {MAX_FILTER_BYTES}", new.filter.len()),
        );
    }
    if let Some(policy) = new.dead_letter_policy.as_ref().filter(|_| changed(old, new, |s| &s.dead_letter_policy)) {
        dead_letter_problems(policy, &mut problems);
    }
    if let Some(policy) = new.retry_policy.as_ref().filter(|_| changed(old, new, |s| &s.retry_policy)) {
        retry_problems(policy, &mut problems);
    }
    refuse_if_any(problems)
}

const FIXED: &str = "Pub/Sub sets it only when it creates a subscription: create a new subscription instead";

fn fixed_at_creation(old: &SubscriptionSettings, new: &SubscriptionSettings, problems: &mut Problems) {
    if new.filter != old.filter {
        problems.add("filter", format!("filter cannot change from {:?} to {:?} ({FIXED})", old.filter, new.filter));
    }
    if new.enable_message_ordering != old.enable_message_ordering {
        problems.add(
            "enable_message_ordering",
            format!(
                "enable_message_ordering cannot change from {} to {} ({FIXED})",
                old.enable_message_ordering, new.enable_message_ordering
            ),
        );
    }
}

fn ack_deadline_problems(seconds: i32, problems: &mut Problems) {
    if seconds != 0 && !(MIN_ACK_DEADLINE_SECONDS..=MAX_ACK_DEADLINE_SECONDS).contains(&seconds) {
        problems.add(
            "ack_deadline_seconds",
            format!(
                "ack_deadline_seconds is {seconds}: Pub/Sub allows {MIN_ACK_DEADLINE_SECONDS} to \
             {MAX_ACK_DEADLINE_SECONDS} (or 0 for the default of 10)"
            ),
        );
    }
}

fn dead_letter_problems(policy: &DeadLetterPolicy, problems: &mut Problems) {
    if let Some(problem) = name_problem(&policy.dead_letter_topic, "topics") {
        problems
            .add("dead_letter_policy.dead_letter_topic", format!("dead_letter_policy.dead_letter_topic: {problem}"));
    }
    let attempts = policy.max_delivery_attempts;
    if !(MIN_DELIVERY_ATTEMPTS..=MAX_DELIVERY_ATTEMPTS).contains(&attempts) {
        problems.add(
            "dead_letter_policy.max_delivery_attempts",
            format!(
                "dead_letter_policy.max_delivery_attempts is {attempts}: Pub/Sub allows {MIN_DELIVERY_ATTEMPTS} \
             to {MAX_DELIVERY_ATTEMPTS}"
            ),
        );
    }
}

fn retry_problems(policy: &RetryPolicy, problems: &mut Problems) {
    let backoffs = [("minimum_backoff", policy.minimum_backoff), ("maximum_backoff", policy.maximum_backoff)];
    for (key, backoff) in backoffs {
        if let Some(backoff) = backoff.filter(|&b| b > MAX_BACKOFF) {
            problems.add(
                format!("retry_policy.{key}"),
                format!("retry_policy.{key} is {}: Pub/Sub allows 0s to {}", seconds(backoff), seconds(MAX_BACKOFF)),
            );
        }
    }
    let minimum = policy.minimum_backoff.unwrap_or(DEFAULT_MIN_BACKOFF);
    let maximum = policy.maximum_backoff.unwrap_or(MAX_BACKOFF);
    if minimum > maximum {
        problems.add(
            "retry_policy",
            format!(
                "retry_policy: minimum_backoff ({}) is above maximum_backoff ({})",
                seconds(minimum),
                seconds(maximum)
            ),
        );
    }
}

// ---------------------------------------------------------------------------
// Shared

/// True at creation, or when the setting `field` picks differs.
fn changed<S, T: PartialEq>(old: Option<&S>, new: &S, field: impl Fn(&S) -> &T) -> bool {
    old.is_none_or(|old| field(old) != field(new))
}

fn retention_problems(retention: Option<Duration>, problems: &mut Problems) {
    if let Some(retention) = retention.filter(|r| !(MIN_RETENTION..=MAX_RETENTION).contains(r)) {
        problems.add(
            "message_retention_duration",
            format!(
                "message_retention_duration is {}: Pub/Sub allows {} (10 minutes) to {} (31 days), \
             or null for the default",
                seconds(retention),
                seconds(MIN_RETENTION),
                seconds(MAX_RETENTION)
            ),
        );
    }
}

/// What is wrong with a full resource name `projects/P/<kind>/N`, if
/// anything.
fn name_problem(name: &str, kind: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').collect();
    let well_formed = parts.len() == 4 && parts[0] == "projects" && !parts[1].is_empty() && parts[2] == kind;
    if !well_formed {
        return Some(format!("{name:?} is not a name like \"projects/PROJECT/{kind}/NAME\""));
    }
    short_name_problem(parts[3]).map(|problem| format!("{name:?}: {problem}"))
}

fn short_name_problem(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if !(MIN_NAME_CHARS..=MAX_NAME_CHARS).contains(&chars) {
        return Some(format!("a name is {MIN_NAME_CHARS} to {MAX_NAME_CHARS} characters long, not {chars}"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("a name starts with a letter".into());
    }
    if name.starts_with("goog") {
        return Some("a name cannot start with \"goog\"".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    name.chars().find(|&c| !allowed(c)).map(|c| format!("{c:?} in the name (letters, digits and -_.~+% only)"))
}

#[cfg(test)]
mod tests;
