use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::DateTime;
use ciofs_backends::pubsub::ReceivedMessage;

use super::stream::base64;
use super::*;
use crate::pubsub::duration::parse_duration;

const PROJECT: &str = "my-project";
const TOPIC: &str = "projects/my-project/topics/my-topic";

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("UTF-8")
}

use crate::core::errors::refused_message as einval;

fn at(text: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(text).expect("a test time").into()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn secs(seconds: u64) -> Option<Duration> {
    Some(Duration::from_secs(seconds))
}

// ---------------------------------------------------------------------------
// Topic config.json

/// The topic document of the format's specification, verbatim (plus the final newline an editor
/// saves).
const SEED_TOPIC: &str = r#"{
  "version": "1",
  "type": "pubsub-topic-config",
  "labels": {
    "env": "production"
  },
  "message_retention_duration": "86400s",
  "schema_settings": null
}
"#;

fn seed_topic() -> TopicSettings {
    TopicSettings {
        labels: labels(&[("env", "production")]),
        message_retention_duration: secs(86400),
        ..Default::default()
    }
}

#[test]
fn topic_config_renders_as_the_seed_shows_it() {
    let meta = TopicMeta { topic: "my-topic".into(), settings: seed_topic() };
    assert_eq!(text(render_topic_config(&meta)), SEED_TOPIC);
    assert_eq!(parse_topic_config(SEED_TOPIC.as_bytes(), &TopicSettings::default()).unwrap(), seed_topic());
}

#[test]
fn topic_config_round_trips_with_schema_settings_and_fractions() {
    let settings = TopicSettings {
        labels: labels(&[("a", "1"), ("b-c", "")]),
        message_retention_duration: Some(Duration::from_millis(600_500)),
        schema_settings: Some(SchemaSettings { schema: "projects/p/schemas/s".into(), encoding: "BINARY".into() }),
    };
    let rendered = render_topic_config(&TopicMeta { topic: "t".into(), settings: settings.clone() });
    assert!(text(rendered.clone()).contains("\"message_retention_duration\": \"600.5s\""));
    assert!(text(rendered.clone()).contains("\"schema\": \"projects/p/schemas/s\",\n    \"encoding\": \"BINARY\""));
    assert_eq!(parse_topic_config(&rendered, &TopicSettings::default()).unwrap(), settings);
    let empty = render_topic_config(&TopicMeta::default());
    assert_eq!(parse_topic_config(&empty, &settings).unwrap(), TopicSettings::default());
}

#[test]
fn topic_config_merges_at_the_top_level() {
    let current = TopicSettings {
        schema_settings: Some(SchemaSettings { schema: "projects/p/schemas/s".into(), encoding: "JSON".into() }),
        ..seed_topic()
    };
    assert_eq!(parse_topic_config(b"{}", &current).unwrap(), current, "absent keys keep");
    let nulls = br#"{"labels": null, "message_retention_duration": null, "schema_settings": null}"#;
    assert_eq!(parse_topic_config(nulls, &current).unwrap(), TopicSettings::default(), "null clears");
    let replaced = parse_topic_config(br#"{"labels": {"team": "data"}}"#, &current).unwrap();
    assert_eq!(replaced, TopicSettings { labels: labels(&[("team", "data")]), ..current.clone() }, "labels replace");
    let schema = br#"{"schema_settings": {"schema": "projects/p/schemas/t", "encoding": "binary"}}"#;
    let changed = parse_topic_config(schema, &current).unwrap();
    assert_eq!(
        changed.schema_settings,
        Some(SchemaSettings { schema: "projects/p/schemas/t".into(), encoding: "BINARY".into() })
    );
}

#[test]
fn topic_config_refuses_bad_values_and_unknown_keys() {
    let current = TopicSettings::default();
    let encoding = br#"{"schema_settings": {"schema": "projects/p/schemas/s", "encoding": "xml"}}"#;
    assert!(einval(parse_topic_config(encoding, &current)).contains("\"XML\" is not one of JSON, BINARY"));
    let message = einval(parse_topic_config(br#"{"message_retention_duration": "1d"}"#, &current));
    assert_eq!(
        message,
        "config.json: at line 1, column 36: \"1d\" is not a duration in seconds like \"86400s\" or \"1.5s\""
    );
    let typo = einval(parse_topic_config(br#"{"label": {}}"#, &current));
    assert!(typo.contains("unknown field `label`") && typo.contains("line 1, column 8"), "{typo}");
    let nested = br#"{"schema_settings": {"schema": "s", "encoding": "JSON", "first_revision_id": "x"}}"#;
    assert!(einval(parse_topic_config(nested, &current)).contains("unknown field `first_revision_id`"));
    let kind = br#"{"type": "pubsub-subscription-config"}"#;
    assert!(einval(parse_topic_config(kind, &current)).contains("does not belong here"));
    assert!(einval(parse_topic_config(br#"{"version": "2"}"#, &current)).contains("version \"2\" is not supported"));
}

#[test]
fn json_errors_name_line_and_column() {
    let trailing_comma = "{\n  \"labels\": {},\n}\n";
    let message = einval(parse_topic_config(trailing_comma.as_bytes(), &TopicSettings::default()));
    assert_eq!(message, "config.json: invalid JSON at line 3, column 1: trailing comma");
    let cut = "{\n  \"ack_deadline_seconds\": 20,\n";
    let message = einval(parse_subscription_config(PROJECT, TOPIC, cut.as_bytes(), &SubscriptionSettings::default()));
    assert!(message.starts_with("config.json: invalid JSON at line 3, column 0: EOF"), "{message}");
    let wrong_type = "{\n  \"ack_deadline_seconds\": \"20\"\n}";
    let message =
        einval(parse_subscription_config(PROJECT, TOPIC, wrong_type.as_bytes(), &SubscriptionSettings::default()));
    assert!(message.starts_with("config.json: at line 2, column 30: invalid type: string \"20\""), "{message}");
}

// ---------------------------------------------------------------------------
// Subscription config.json

/// The subscription document of the format's specification, verbatim (plus the final newline).
const SEED_SUBSCRIPTION: &str = r#"{
  "version": "1",
  "type": "pubsub-subscription-config",
  "ack_deadline_seconds": 10,
  "retain_acked_messages": false,
  "message_retention_duration": "604800s",
  "filter": "",
  "dead_letter_policy": null,
  "retry_policy": null
}
"#;

/// The seed's subscription as ciofs renders it: the seed's keys in the
/// seed's order, with `topic`, `enable_message_ordering` and `labels`
/// added.
const RENDERED_SEED_SUBSCRIPTION: &str = r#"{
  "version": "1",
  "type": "pubsub-subscription-config",
  "topic": "my-topic",
  "ack_deadline_seconds": 10,
  "retain_acked_messages": false,
  "message_retention_duration": "604800s",
  "filter": "",
  "enable_message_ordering": false,
  "dead_letter_policy": null,
  "retry_policy": null,
  "labels": {}
}
"#;

fn seed_subscription() -> SubscriptionSettings {
    SubscriptionSettings { ack_deadline_seconds: 10, message_retention_duration: secs(604800), ..Default::default() }
}

fn subscription(settings: SubscriptionSettings) -> SubscriptionMeta {
    SubscriptionMeta { subscription: "sub1".into(), topic: TOPIC.into(), settings }
}

fn parse(bytes: &[u8], current: &SubscriptionSettings) -> Result<SubscriptionSettings, Problems> {
    parse_subscription_config(PROJECT, TOPIC, bytes, current)
}

#[test]
fn subscription_config_renders_the_seed_with_ciofs_keys_added() {
    let rendered = text(render_subscription_config(PROJECT, &subscription(seed_subscription())));
    assert_eq!(rendered, RENDERED_SEED_SUBSCRIPTION);
    // Without the added keys, it is the seed's text byte for byte.
    let added = ["  \"topic\":", "  \"enable_message_ordering\":", "  \"labels\":"];
    let seed_only: Vec<&str> = rendered.lines().filter(|l| !added.iter().any(|a| l.starts_with(a))).collect();
    let seed_only = seed_only.join("\n").replace("\"retry_policy\": null,", "\"retry_policy\": null") + "\n";
    assert_eq!(seed_only, SEED_SUBSCRIPTION);
    assert_eq!(parse(SEED_SUBSCRIPTION.as_bytes(), &SubscriptionSettings::default()).unwrap(), seed_subscription());
}

fn full_subscription() -> SubscriptionSettings {
    SubscriptionSettings {
        labels: labels(&[("env", "production")]),
        ack_deadline_seconds: 60,
        retain_acked_messages: true,
        message_retention_duration: Some(Duration::new(3600, 250_000_000)),
        filter: "attributes.kind = \"a\"".into(),
        enable_message_ordering: true,
        dead_letter_policy: Some(DeadLetterPolicy {
            dead_letter_topic: "projects/my-project/topics/dead".into(),
            max_delivery_attempts: 7,
        }),
        retry_policy: Some(RetryPolicy { minimum_backoff: secs(10), maximum_backoff: secs(600) }),
        // Not in the document (see `the_expiration_is_kept_and_not_shown`).
        expiration_ttl: None,
    }
}

#[test]
fn subscription_config_round_trips_every_setting() {
    let settings = full_subscription();
    let rendered = render_subscription_config(PROJECT, &subscription(settings.clone()));
    let shown = text(rendered.clone());
    assert!(shown.contains("\"dead_letter_topic\": \"dead\",\n    \"max_delivery_attempts\": 7"), "{shown}");
    assert!(shown.contains("\"minimum_backoff\": \"10s\",\n    \"maximum_backoff\": \"600s\""), "{shown}");
    assert!(shown.contains("\"message_retention_duration\": \"3600.25s\""), "{shown}");
    assert_eq!(parse(&rendered, &SubscriptionSettings::default()).unwrap(), settings);
    assert_eq!(render_subscription_config(PROJECT, &subscription(parse(&rendered, &settings).unwrap())), rendered);
}

#[test]
fn names_in_other_projects_are_shown_and_kept_in_full() {
    let mut settings = full_subscription();
    settings.dead_letter_policy.as_mut().unwrap().dead_letter_topic = "projects/other/topics/dead".into();
    let meta = SubscriptionMeta { topic: "projects/other/topics/t".into(), ..subscription(settings.clone()) };
    let shown = text(render_subscription_config(PROJECT, &meta));
    assert!(shown.contains("\"topic\": \"projects/other/topics/t\""), "{shown}");
    assert!(shown.contains("\"dead_letter_topic\": \"projects/other/topics/dead\""), "{shown}");
    let parsed = parse_subscription_config(PROJECT, &meta.topic, shown.as_bytes(), &Default::default()).unwrap();
    assert_eq!(parsed, settings);
    // A project whose name is a prefix of another's is not mistaken for it.
    let meta = SubscriptionMeta { topic: "projects/my-project-2/topics/t".into(), ..meta };
    assert!(text(render_subscription_config(PROJECT, &meta)).contains("\"projects/my-project-2/topics/t\""));
    let deleted = SubscriptionMeta { topic: "_deleted-topic_".into(), ..meta };
    assert!(text(render_subscription_config(PROJECT, &deleted)).contains("\"topic\": \"_deleted-topic_\""));
}

#[test]
fn subscription_config_merges_at_the_top_level() {
    let current = full_subscription();
    assert_eq!(parse(b"{}", &current).unwrap(), current, "absent keys keep");
    let nulls = br#"{"labels": null, "ack_deadline_seconds": null, "retain_acked_messages": null,
        "message_retention_duration": null, "filter": null, "enable_message_ordering": null,
        "dead_letter_policy": null, "retry_policy": null}"#;
    assert_eq!(parse(nulls, &current).unwrap(), SubscriptionSettings::default(), "null clears");
    let one = parse(br#"{"ack_deadline_seconds": 30, "labels": {"team": "x"}}"#, &current).unwrap();
    assert_eq!(one, SubscriptionSettings { ack_deadline_seconds: 30, labels: labels(&[("team", "x")]), ..current });
}

/// The expiration ttl is not part of `config.json`: a written document
/// keeps the current one, even with every key null, and the rendered one
/// does not show it.
#[test]
fn the_expiration_is_kept_and_not_shown() {
    let current = SubscriptionSettings { expiration_ttl: secs(86400), ..full_subscription() };
    let nulls = br#"{"labels": null, "dead_letter_policy": null, "retry_policy": null}"#;
    assert_eq!(parse(nulls, &current).unwrap().expiration_ttl, secs(86400));
    let rendered = render_subscription_config(PROJECT, &subscription(current.clone()));
    assert!(!text(rendered.clone()).contains("expiration"));
    assert_eq!(parse(&rendered, &current).unwrap(), current);
    assert!(einval(parse(br#"{"expiration_ttl": "86400s"}"#, &current)).contains("unknown field `expiration_ttl`"));
}

#[test]
fn policies_are_replaced_whole_with_defaults_inside() {
    let current = full_subscription();
    let dead = parse(br#"{"dead_letter_policy": {"dead_letter_topic": "other-dead"}}"#, &current).unwrap();
    let expected = DeadLetterPolicy {
        dead_letter_topic: "projects/my-project/topics/other-dead".into(),
        max_delivery_attempts: 5,
    };
    assert_eq!(dead.dead_letter_policy, Some(expected), "short name expanded, attempts default to 5");
    let retry = parse(br#"{"retry_policy": {"maximum_backoff": "60s"}}"#, &current).unwrap();
    assert_eq!(retry.retry_policy, Some(RetryPolicy { minimum_backoff: None, maximum_backoff: secs(60) }));
    let nested_typo = br#"{"dead_letter_policy": {"dead_letter_topic": "d", "max_attempts": 5}}"#;
    assert!(einval(parse(nested_typo, &current)).contains("unknown field `max_attempts`"));
    let missing = br#"{"dead_letter_policy": {"max_delivery_attempts": 5}}"#;
    assert!(einval(parse(missing, &current)).contains("missing field `dead_letter_topic`"));
}

#[test]
fn the_topic_can_be_named_but_not_changed() {
    let current = seed_subscription();
    for same in [r#"{"topic": "my-topic"}"#, r#"{"topic": "projects/my-project/topics/my-topic"}"#] {
        assert_eq!(parse(same.as_bytes(), &current).unwrap(), current, "{same}");
    }
    let message = einval(parse(br#"{"topic": "other"}"#, &current));
    assert!(message.starts_with("config.json: topic \"other\" is not this subscription's topic \"my-topic\""));
    assert!(message.contains("cannot move"), "{message}");
    assert!(einval(parse(br#"{"topic": "projects/other/topics/my-topic"}"#, &current)).contains("cannot move"));
    let deleted = parse_subscription_config(PROJECT, "_deleted-topic_", br#"{"topic": "_deleted-topic_"}"#, &current);
    assert_eq!(deleted.unwrap(), current);
    assert!(einval(parse(br#"{"enable_ordering": true}"#, &current)).contains("unknown field `enable_ordering`"));
    assert!(einval(parse(br#"{"type": "pubsub-topic-config"}"#, &current)).contains("does not belong here"));
}

// ---------------------------------------------------------------------------
// Durations

#[test]
fn durations_are_seconds_with_an_s() {
    let good = [
        ("0s", Duration::ZERO),
        ("600s", Duration::from_secs(600)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("2678400.000s", Duration::from_secs(2_678_400)),
    ];
    for (written, duration) in good {
        assert_eq!(parse_duration(written), Some(duration), "{written}");
    }
    for bad in
        ["", "s", "600", "1d", "-1s", "+1s", "1.s", ".5s", "1.1234567891s", "1 s", "1e3s", "99999999999999999999s"]
    {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    assert_eq!(format_duration(Duration::from_secs(86400)), "86400s");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(format_duration(Duration::from_nanos(1)), "0.000000001s");
    let number = br#"{"message_retention_duration": 600}"#;
    assert!(einval(parse(number, &SubscriptionSettings::default())).contains("invalid type: integer `600`"));
}

// ---------------------------------------------------------------------------
// _quotas.json

#[test]
fn quotas_are_documented_limits_with_their_source() {
    let rendered = render_quotas(PROJECT);
    assert_eq!(render_quotas(PROJECT), rendered, "stable");
    let shown = text(rendered);
    assert!(
        shown.starts_with("{\n  \"version\": \"1\",\n  \"type\": \"pubsub-quotas\",\n  \"project\": \"my-project\",")
    );
    assert!(shown.ends_with("}\n"));
    let value: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(value["kind"], "documented limits");
    assert_eq!(value["source"], "https://cloud.google.com/pubsub/quotas");
    assert!(value["note"].as_str().unwrap().contains("not read from the project"));
    let expected = [
        ("max_message_bytes", 10_000_000),
        ("max_attributes_per_message", 100),
        ("max_attribute_key_bytes", 256),
        ("max_attribute_value_bytes", 1024),
        ("max_ordering_key_bytes", 1000),
        ("max_publish_request_bytes", 10_000_000),
        ("max_publish_request_messages", 1000),
        ("max_topics_per_project", 10_000),
        ("max_subscriptions_per_topic", 10_000),
        ("min_ack_deadline_seconds", 10),
        ("max_ack_deadline_seconds", 600),
        ("max_filter_bytes", 256),
        ("min_dead_letter_delivery_attempts", 5),
        ("max_dead_letter_delivery_attempts", 100),
    ];
    for (key, limit) in expected {
        assert_eq!(value[key], limit, "{key}");
    }
    assert_eq!(value["min_message_retention_duration"], "600s");
    assert_eq!(value["max_message_retention_duration"], "2678400s");
    assert_eq!(value["max_retry_backoff"], "600s");
}

// ---------------------------------------------------------------------------
// _stream lines

#[test]
fn stream_lines_show_text_as_it_is() {
    let time = at("2026-01-17T12:00:00Z");
    assert_eq!(
        text(format_stream_line(time, "msg-12345", b"hello world")),
        "[2026-01-17T12:00:00Z] msg-12345: hello world\n"
    );
    let tab_and_unicode = format_stream_line(time, "1", "a\tb ünïcode ✓".as_bytes());
    assert_eq!(text(tab_and_unicode), "[2026-01-17T12:00:00Z] 1: a\tb ünïcode ✓\n");
    assert_eq!(text(format_stream_line(time, "2", b"")), "[2026-01-17T12:00:00Z] 2: \n");
    let fraction = format_stream_line(at("2026-01-17T12:00:00.123Z"), "3", b"x");
    assert_eq!(text(fraction), "[2026-01-17T12:00:00.123Z] 3: x\n");
    // What `echo hello > _message` publishes shows as the line it was.
    let echoed = format_stream_line(time, "4", b"hello\n");
    assert_eq!(text(echoed), "[2026-01-17T12:00:00Z] 4: hello\n");
}

#[test]
fn stream_lines_show_anything_else_in_base64() {
    let time = at("2026-01-17T12:00:00Z");
    let newline = format_stream_line(time, "1", b"two\nlines");
    assert_eq!(text(newline), "[2026-01-17T12:00:00Z] 1: base64:dHdvCmxpbmVz\n");
    let two_trailing = format_stream_line(time, "2", b"hello\n\n");
    assert_eq!(text(two_trailing), "[2026-01-17T12:00:00Z] 2: base64:aGVsbG8KCg==\n");
    let binary = format_stream_line(time, "3", &[0xff, 0x00, 0xfe]);
    assert_eq!(text(binary), "[2026-01-17T12:00:00Z] 3: base64:/wD+\n");
    let escape = format_stream_line(time, "4", b"\x1b[31mred");
    assert_eq!(text(escape), "[2026-01-17T12:00:00Z] 4: base64:G1szMW1yZWQ=\n");
    // Text that looks like the base64 form is encoded too, so a line reads
    // back one way only.
    let lookalike = format_stream_line(time, "5", b"base64:abc");
    assert_eq!(text(lookalike), "[2026-01-17T12:00:00Z] 5: base64:YmFzZTY0OmFiYw==\n");
}

#[test]
fn base64_is_rfc_4648s() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
    }
    assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
}

fn received(data: &'static [u8]) -> ReceivedMessage {
    ReceivedMessage {
        ack_id: "ack".into(),
        message_id: "42".into(),
        data: Bytes::from_static(data),
        attributes: labels(&[("k", "v")]),
        ordering_key: "key".into(),
        publish_time: Some(at("2026-01-17T12:00:00Z")),
        delivery_attempt: Some(2),
    }
}

#[test]
fn stream_json_lines_carry_every_field_on_one_line() {
    let line = text(format_stream_json_line(&received(b"hello\nworld")));
    assert_eq!(
        line,
        "{\"message_id\":\"42\",\"publish_time\":\"2026-01-17T12:00:00Z\",\"data\":\"hello\\nworld\",\
         \"data_base64\":\"aGVsbG8Kd29ybGQ=\",\"attributes\":{\"k\":\"v\"},\"ordering_key\":\"key\",\
         \"delivery_attempt\":2}\n"
    );
    let binary = ReceivedMessage { publish_time: None, delivery_attempt: None, ..received(&[0xff]) };
    let line = text(format_stream_json_line(&binary));
    assert_eq!(line.matches('\n').count(), 1);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["data"], serde_json::Value::Null);
    assert_eq!(value["data_base64"], "/w==");
    assert_eq!(value["publish_time"], serde_json::Value::Null);
    assert_eq!(value["delivery_attempt"], serde_json::Value::Null);
}
