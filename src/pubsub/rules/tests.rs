use std::collections::BTreeMap;
use std::time::Duration;

use ciofs_backends::pubsub::{DeadLetterPolicy, RetryPolicy, SchemaSettings, SubscriptionSettings, TopicSettings};

use super::*;

fn secs(seconds: u64) -> Option<Duration> {
    Some(Duration::from_secs(seconds))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

use crate::core::errors::refused_message as problem;

// ---------------------------------------------------------------------------
// Topics

#[test]
fn topic_defaults_and_good_settings_pass() {
    check_topic_settings(None, &TopicSettings::default()).unwrap();
    let good = TopicSettings {
        labels: labels(&[("env", "production"), ("日本", "値")]),
        message_retention_duration: secs(86400),
        schema_settings: Some(SchemaSettings {
            schema: "projects/p/schemas/my.schema".into(),
            encoding: "JSON".into(),
        }),
    };
    check_topic_settings(None, &good).unwrap();
    check_topic_settings(Some(&TopicSettings::default()), &good).unwrap();
}

#[test]
fn topic_retention_is_10_minutes_to_31_days() {
    for ok in [600, 86400, 31 * 86400] {
        check_topic_settings(None, &TopicSettings { message_retention_duration: secs(ok), ..Default::default() })
            .unwrap();
    }
    let short = TopicSettings { message_retention_duration: secs(599), ..Default::default() };
    assert_eq!(
        problem(check_topic_settings(None, &short)),
        "message_retention_duration is 599s: Pub/Sub allows 600s (10 minutes) to 2678400s (31 days), \
         or null for the default"
    );
    let long = TopicSettings { message_retention_duration: Some(Duration::new(31 * 86400, 1)), ..Default::default() };
    assert!(problem(check_topic_settings(None, &long)).contains("is 2678400.000000001s"));
}

#[test]
fn topic_labels_and_schema_follow_googles_rules() {
    let bad = TopicSettings {
        labels: labels(&[("Env", "x")]),
        schema_settings: Some(SchemaSettings { schema: "my-schema".into(), encoding: "XML".into() }),
        ..Default::default()
    };
    let message = problem(check_topic_settings(None, &bad));
    assert!(message.contains("label `Env`: a key must start with a lowercase letter"), "{message}");
    assert!(message.contains("schema_settings.schema: \"my-schema\" is not a name like"), "{message}");
    assert!(message.contains("schema_settings.encoding \"XML\" is not one of JSON, BINARY"), "{message}");
    assert_eq!(message.matches("; ").count(), 2, "one EINVAL for all: {message}");
    let many = TopicSettings { labels: (0..65).map(|i| (format!("k{i}"), String::new())).collect(), ..bad.clone() };
    assert!(problem(check_topic_settings(None, &many)).contains("65 labels, Pub/Sub allows at most 64"));
    // What the topic already has does not block another change.
    let edited = TopicSettings { message_retention_duration: secs(3600), ..bad.clone() };
    check_topic_settings(Some(&bad), &edited).unwrap();
}

// ---------------------------------------------------------------------------
// Subscriptions

/// A subscription change and what must come of it: allowed, or refused
/// with a message containing these substrings.
struct Row {
    what: &'static str,
    old: Option<SubscriptionSettings>,
    new: SubscriptionSettings,
    refused: &'static [&'static str],
}

fn existing() -> SubscriptionSettings {
    SubscriptionSettings {
        labels: labels(&[("env", "production")]),
        ack_deadline_seconds: 10,
        message_retention_duration: secs(604800),
        filter: "attributes.kind = \"a\"".into(),
        ..Default::default()
    }
}

fn changed_to(edit: impl FnOnce(&mut SubscriptionSettings)) -> SubscriptionSettings {
    let mut settings = existing();
    edit(&mut settings);
    settings
}

fn dead_letter(topic: &str, attempts: i32) -> Option<DeadLetterPolicy> {
    Some(DeadLetterPolicy { dead_letter_topic: topic.into(), max_delivery_attempts: attempts })
}

fn retry(minimum: Option<Duration>, maximum: Option<Duration>) -> Option<RetryPolicy> {
    Some(RetryPolicy { minimum_backoff: minimum, maximum_backoff: maximum })
}

fn change(what: &'static str, edit: impl FnOnce(&mut SubscriptionSettings), refused: &'static [&'static str]) -> Row {
    Row { what, old: Some(existing()), new: changed_to(edit), refused }
}

fn create(what: &'static str, new: SubscriptionSettings, refused: &'static [&'static str]) -> Row {
    Row { what, old: None, new, refused }
}

const DEAD: &str = "projects/p/topics/dead-letters";

fn allowed_rows() -> Vec<Row> {
    vec![
        create("defaults", SubscriptionSettings::default(), &[]),
        create("the seed's", existing(), &[]),
        create("ordering and a filter", SubscriptionSettings { enable_message_ordering: true, ..existing() }, &[]),
        create("filter of 256 bytes", SubscriptionSettings { filter: "a".repeat(256), ..Default::default() }, &[]),
        change("nothing", |_| {}, &[]),
        change("ack deadline 600", |s| s.ack_deadline_seconds = 600, &[]),
        change("ack deadline back to default", |s| s.ack_deadline_seconds = 0, &[]),
        change("retain acked", |s| s.retain_acked_messages = true, &[]),
        change("retention 10 minutes", |s| s.message_retention_duration = secs(600), &[]),
        change("retention 31 days", |s| s.message_retention_duration = secs(31 * 86400), &[]),
        change("retention default", |s| s.message_retention_duration = None, &[]),
        change("labels", |s| s.labels = labels(&[("team", "data")]), &[]),
        change("dead letter 5", |s| s.dead_letter_policy = dead_letter(DEAD, 5), &[]),
        change("dead letter 100", |s| s.dead_letter_policy = dead_letter(DEAD, 100), &[]),
        change("retry 0–600", |s| s.retry_policy = retry(secs(0), secs(600)), &[]),
        change("retry equal", |s| s.retry_policy = retry(secs(30), secs(30)), &[]),
        change("retry defaults", |s| s.retry_policy = retry(None, None), &[]),
        change("retry maximum only", |s| s.retry_policy = retry(None, secs(10)), &[]),
    ]
}

fn refused_rows() -> Vec<Row> {
    vec![
        change("filter", |s| s.filter = "attributes.kind = \"b\"".into(), &["filter cannot change from", FIXED]),
        change("filter removed", |s| s.filter.clear(), &["filter cannot change"]),
        change("ordering", |s| s.enable_message_ordering = true, &["enable_message_ordering cannot change"]),
        change("ack deadline 9", |s| s.ack_deadline_seconds = 9, &["ack_deadline_seconds is 9", "10 to 600"]),
        change("ack deadline 601", |s| s.ack_deadline_seconds = 601, &["ack_deadline_seconds is 601"]),
        change("ack deadline -1", |s| s.ack_deadline_seconds = -1, &["ack_deadline_seconds is -1"]),
        change("retention 599s", |s| s.message_retention_duration = secs(599), &["message_retention_duration is 599s"]),
        change("retention 32 days", |s| s.message_retention_duration = secs(32 * 86400), &["is 2764800s"]),
        change("dead letter 4", |s| s.dead_letter_policy = dead_letter(DEAD, 4), &["max_delivery_attempts is 4"]),
        change("dead letter 101", |s| s.dead_letter_policy = dead_letter(DEAD, 101), &["max_delivery_attempts is 101"]),
        change(
            "dead letter short name",
            |s| s.dead_letter_policy = dead_letter("dead", 5),
            &["\"dead\" is not a name"],
        ),
        change(
            "dead letter subscription name",
            |s| s.dead_letter_policy = dead_letter("projects/p/subscriptions/s", 5),
            &["projects/PROJECT/topics/NAME"],
        ),
        change(
            "dead letter bad topic",
            |s| s.dead_letter_policy = dead_letter("projects/p/topics/goog-x", 5),
            &["cannot start with \"goog\""],
        ),
        change("retry minimum 601s", |s| s.retry_policy = retry(secs(601), None), &["minimum_backoff is 601s"]),
        change("retry maximum 601s", |s| s.retry_policy = retry(None, secs(601)), &["maximum_backoff is 601s"]),
        change(
            "retry minimum above maximum",
            |s| s.retry_policy = retry(secs(60), secs(30)),
            &["minimum_backoff (60s) is above maximum_backoff (30s)"],
        ),
        change(
            "retry default minimum above maximum",
            |s| s.retry_policy = retry(None, secs(5)),
            &["minimum_backoff (10s) is above maximum_backoff (5s)"],
        ),
        change("bad label", |s| s.labels = labels(&[("a", "B")]), &["label `a`: 'B' in the value"]),
        create(
            "filter of 257 bytes",
            SubscriptionSettings { filter: "a".repeat(257), ..Default::default() },
            &["filter: 257 bytes long, Pub/Sub allows at most 256"],
        ),
        create(
            "bad settings at creation",
            SubscriptionSettings { ack_deadline_seconds: 5, dead_letter_policy: dead_letter(DEAD, 1), ..existing() },
            &["ack_deadline_seconds is 5", "max_delivery_attempts is 1"],
        ),
    ]
}

#[test]
fn subscription_changes_follow_pubsubs_rules() {
    for row in allowed_rows().into_iter().chain(refused_rows()) {
        let result = check_subscription_change(row.old.as_ref(), &row.new);
        if row.refused.is_empty() {
            assert!(result.is_ok(), "{}: refused: {result:?}", row.what);
            continue;
        }
        let message = problem(result);
        for expected in row.refused {
            assert!(message.contains(expected), "{}: {message:?} lacks {expected:?}", row.what);
        }
    }
}

#[test]
fn every_problem_is_reported_in_one_einval() {
    let new = changed_to(|s| {
        s.filter.clear();
        s.enable_message_ordering = true;
        s.ack_deadline_seconds = 1;
        s.retry_policy = retry(secs(700), secs(600));
    });
    let message = problem(check_subscription_change(Some(&existing()), &new));
    let parts: Vec<&str> = message.split("; ").collect();
    assert_eq!(parts.len(), 5, "{message}");
    assert!(parts[0].starts_with("filter cannot change"), "{message}");
    assert!(parts[1].starts_with("enable_message_ordering cannot change"), "{message}");
}

#[test]
fn values_already_held_do_not_block_other_changes() {
    let odd = SubscriptionSettings {
        labels: labels(&[("Bad", "x")]),
        ack_deadline_seconds: 5,
        dead_letter_policy: dead_letter("dead", 1),
        ..existing()
    };
    let edited = SubscriptionSettings { retain_acked_messages: true, ..odd.clone() };
    check_subscription_change(Some(&odd), &edited).unwrap();
}
