//! `GooglePubSub` against Google's Pub/Sub emulator at
//! `PUBSUB_EMULATOR_HOST` (`scripts/emulators start`, then
//! `eval "$(scripts/emulators env)"`). Without a reachable emulator every
//! test fails: none passes without the thing it tests.
//!
//! The emulator is shared: each test works in its own project, named after
//! the test and the process (the emulator keeps projects apart). What ciofs
//! did is checked once with curl on the REST API, a client that shares no
//! code with ciofs.
//!
//! Not asserted, because the emulator refuses or ignores it (see
//! the tests below): label updates (400), subscription filters.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::pubsub::{
    CreateSubscription, DeadLetterPolicy, GooglePubSub, OutgoingMessage, PubSub, PubSubConfig,
    RetryPolicy as DeliveryRetry, SubscriptionSettings, TopicSettings,
};
use ciofs_backends::retry::RetryPolicy;
use serde_json::{Value, json};

/// A client of the emulator, checked to answer.
async fn pubsub() -> GooglePubSub {
    let config = PubSubConfig::from_env();
    let Some(endpoint) = config.emulator.clone() else {
        panic!("PUBSUB_EMULATOR_HOST is not set: run scripts/emulators start, then eval \"$(scripts/emulators env)\"");
    };
    let retry = RetryPolicy { attempts: 2, stall_timeout: Duration::from_secs(20), ..RetryPolicy::default() };
    let pubsub = GooglePubSub::connect(PubSubConfig { retry, ..config }).await.expect("client");
    if let Err(e) = pubsub.list_topics("ciofs-probe", None).await {
        panic!("the Pub/Sub emulator at {endpoint} does not answer ({e}): run scripts/emulators start");
    }
    pubsub
}

/// A project of one test's own.
fn project(test: &str) -> String {
    format!("ciofs-{test}-{}", std::process::id())
}

fn message(data: &str) -> OutgoingMessage {
    OutgoingMessage { data: Bytes::from(data.to_string()), ..Default::default() }
}

/// A topic with one subscription of it, in a project of the test's own.
async fn topic_and_subscription(pubsub: &GooglePubSub, test: &str) -> String {
    let project = project(test);
    pubsub.create_topic(&project, "topic", &TopicSettings::default()).await.expect("create topic");
    pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "sub".to_string(),
            topic: "topic".to_string(),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    project
}

/// Pulls until `count` messages came or `limit` passed: (ack id, data).
async fn receive(pubsub: &GooglePubSub, project: &str, count: usize, limit: Duration) -> Vec<(String, String)> {
    let started = Instant::now();
    let mut received = Vec::new();
    while received.len() < count && started.elapsed() < limit {
        let pulled = pubsub.pull(project, "sub", count - received.len()).await.expect("pull");
        if pulled.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        received.extend(pulled.into_iter().map(|m| (m.ack_id, String::from_utf8_lossy(&m.data).to_string())));
    }
    received
}

fn ack_ids(received: &[(String, String)]) -> Vec<String> {
    received.iter().map(|(ack_id, _)| ack_id.clone()).collect()
}

/// curl on the emulator's REST API: `method` on `/v1/<path>`.
fn curl(method: &str, path: &str, body: Option<Value>) -> Value {
    let host = std::env::var("PUBSUB_EMULATOR_HOST").expect("PUBSUB_EMULATOR_HOST");
    let url = format!("http://{}/v1/{path}", host.trim_start_matches("http://"));
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "10", "-X", method, &url, "-H", "content-type: application/json"]);
    command.args(["-d", &body.unwrap_or(json!({})).to_string()]);
    let output = command.output().expect("curl runs");
    assert!(output.status.success(), "curl {url}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("curl {url}: {e}: {:?}", output.stdout))
}

#[tokio::test]
async fn topics_are_created_listed_read_and_deleted() {
    let pubsub = pubsub().await;
    let project = project("topics");
    let settings = TopicSettings { labels: [("team".to_string(), "data".to_string())].into(), ..Default::default() };
    let created = pubsub.create_topic(&project, "first", &settings).await.unwrap();
    assert_eq!((created.topic.as_str(), &created.settings.labels), ("first", &settings.labels));
    let again = pubsub.create_topic(&project, "first", &settings).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::AlreadyExists, "{again}");
    pubsub.create_topic(&project, "second", &TopicSettings::default()).await.unwrap();
    assert_eq!(pubsub.get_topic(&project, "first").await.unwrap(), created);

    let listed = pubsub.list_topics(&project, None).await.unwrap();
    let names: BTreeSet<String> = listed.items.into_iter().map(|t| t.topic).collect();
    assert_eq!(names, ["first", "second"].map(String::from).into(), "only this project's topics");
    assert_eq!(listed.next_page_token, None);

    let same = pubsub.update_topic(&project, "first", &settings).await.unwrap();
    assert_eq!(same, created, "nothing changed: nothing sent");

    pubsub.delete_topic(&project, "first").await.unwrap();
    assert_eq!(pubsub.get_topic(&project, "first").await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(pubsub.delete_topic(&project, "first").await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(pubsub.list_topics(&project, None).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn the_emulator_refuses_label_updates() {
    // Real Pub/Sub takes them; the emulator answers 400. ciofs passes the
    // refusal on as it is.
    let pubsub = pubsub().await;
    let project = project("labels");
    pubsub.create_topic(&project, "topic", &TopicSettings::default()).await.unwrap();
    let labelled = TopicSettings { labels: [("k".to_string(), "v".to_string())].into(), ..Default::default() };
    let refused = pubsub.update_topic(&project, "topic", &labelled).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::InvalidArgument, "{refused}");
}

#[tokio::test]
async fn subscriptions_are_created_with_policies_listed_updated_and_deleted() {
    let pubsub = pubsub().await;
    let project = project("subscriptions");
    for topic in ["topic", "dead-letters", "other"] {
        pubsub.create_topic(&project, topic, &TopicSettings::default()).await.unwrap();
    }
    let settings = SubscriptionSettings {
        ack_deadline_seconds: 20,
        dead_letter_policy: Some(DeadLetterPolicy {
            dead_letter_topic: format!("projects/{project}/topics/dead-letters"),
            max_delivery_attempts: 5,
        }),
        retry_policy: Some(DeliveryRetry {
            minimum_backoff: Some(Duration::from_secs(1)),
            maximum_backoff: Some(Duration::from_secs(30)),
        }),
        expiration_ttl: Some(Duration::from_secs(2 * 24 * 3600)),
        ..Default::default()
    };
    let created = pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "sub".to_string(),
            topic: "topic".to_string(),
            settings: settings.clone(),
        })
        .await
        .unwrap();
    assert_eq!(created.subscription, "sub");
    assert_eq!(created.topic, format!("projects/{project}/topics/topic"));
    assert_eq!(created.settings.ack_deadline_seconds, 20);
    assert_eq!(created.settings.dead_letter_policy, settings.dead_letter_policy);
    assert_eq!(created.settings.retry_policy, settings.retry_policy);
    assert_eq!(created.settings.expiration_ttl, settings.expiration_ttl);
    let again = pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "sub".to_string(),
            topic: "topic".to_string(),
            settings: settings.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.kind, ErrorKind::AlreadyExists, "{again}");
    let orphan = pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "orphan".to_string(),
            topic: "nope".to_string(),
            settings: settings.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(orphan.kind, ErrorKind::NotFound, "{orphan}");
    pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "sub2".to_string(),
            topic: "topic".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    pubsub
        .create_subscription(&CreateSubscription {
            project: project.clone(),
            subscription: "elsewhere".to_string(),
            topic: "other".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pubsub.get_subscription(&project, "sub").await.unwrap(), created);

    let listed = pubsub.list_topic_subscriptions(&project, "topic", None).await.unwrap();
    let names: BTreeSet<String> = listed.items.into_iter().collect();
    assert_eq!(names, ["sub", "sub2"].map(String::from).into());
    // Real Pub/Sub answers 404 for a missing topic; the emulator an empty
    // list.
    if let Err(missing) = pubsub.list_topic_subscriptions(&project, "nope", None).await {
        assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    }

    let longer = SubscriptionSettings { ack_deadline_seconds: 60, ..created.settings.clone() };
    let updated = pubsub.update_subscription(&project, "sub", &longer).await.unwrap();
    assert_eq!(updated.settings, longer);
    // The expiration is set only at creation: an update leaves it.
    let unexpiring = SubscriptionSettings { expiration_ttl: None, ..longer.clone() };
    let updated = pubsub.update_subscription(&project, "sub", &unexpiring).await.unwrap();
    assert_eq!(updated.settings.expiration_ttl, settings.expiration_ttl);
    assert_eq!(pubsub.get_subscription(&project, "sub").await.unwrap().settings.ack_deadline_seconds, 60);
    let fewer = SubscriptionSettings { retry_policy: None, dead_letter_policy: None, ..longer.clone() };
    let updated = pubsub.update_subscription(&project, "sub", &fewer).await.unwrap();
    assert_eq!((updated.settings.retry_policy, updated.settings.dead_letter_policy), (None, None));

    pubsub.delete_subscription(&project, "sub").await.unwrap();
    assert_eq!(pubsub.get_subscription(&project, "sub").await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(pubsub.delete_subscription(&project, "sub").await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(pubsub.pull(&project, "sub", 10).await.err().map(|e| e.kind), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn a_hundred_messages_are_published_and_all_received() {
    let pubsub = pubsub().await;
    let project = topic_and_subscription(&pubsub, "hundred").await;
    let mut messages: Vec<OutgoingMessage> = (0..100).map(|i| message(&format!("m{i}"))).collect();
    messages[7].attributes = BTreeMap::from([("kind".to_string(), "seven".to_string())]);
    let ids = pubsub.publish(&project, "topic", messages).await.unwrap();
    assert_eq!(ids.len(), 100);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 100, "one id each");
    assert!(ids.iter().all(|id| !id.is_empty()));

    let mut data = BTreeSet::new();
    let started = Instant::now();
    while data.len() < 100 && started.elapsed() < Duration::from_secs(30) {
        let pulled = pubsub.pull(&project, "sub", 30).await.unwrap();
        assert!(pulled.len() <= 30);
        for m in &pulled {
            assert!(ids.contains(&m.message_id), "{m:?}");
            assert!(m.publish_time.is_some());
            if m.data == "m7" {
                assert_eq!(m.attributes.get("kind").map(String::as_str), Some("seven"));
            }
            data.insert(String::from_utf8_lossy(&m.data).to_string());
        }
        let ack_ids: Vec<String> = pulled.into_iter().map(|m| m.ack_id).collect();
        pubsub.acknowledge(&project, "sub", &ack_ids).await.unwrap();
    }
    assert_eq!(data, (0..100).map(|i| format!("m{i}")).collect());
    assert!(pubsub.pull(&project, "sub", 10).await.unwrap().is_empty(), "all acked");

    // curl: nothing is left to pull.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pulled = curl(
        "POST",
        &format!("projects/{project}/subscriptions/sub:pull"),
        Some(json!({"maxMessages": 10, "returnImmediately": true})),
    );
    assert!(pulled.get("receivedMessages").is_none(), "acked messages stay acked: {pulled}");
}

#[tokio::test]
async fn a_message_given_back_is_delivered_again_at_once() {
    let pubsub = pubsub().await;
    let project = topic_and_subscription(&pubsub, "nack").await;
    pubsub.publish(&project, "topic", vec![message("again"), message("other")]).await.unwrap();
    let first = receive(&pubsub, &project, 2, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 2);
    let started = Instant::now();
    pubsub.modify_ack_deadline(&project, "sub", &ack_ids(&first), Duration::ZERO).await.unwrap();
    let second = receive(&pubsub, &project, 2, Duration::from_secs(10)).await;
    let mut data: Vec<&str> = second.iter().map(|(_, d)| d.as_str()).collect();
    data.sort();
    assert_eq!(data, ["again", "other"]);
    assert_ne!(second[0].0, first[0].0, "each delivery has its own ack id");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after the deadline: {:?}", started.elapsed());
    pubsub.acknowledge(&project, "sub", &ack_ids(&second)).await.unwrap();
    pubsub.acknowledge(&project, "sub", &ack_ids(&second)).await.unwrap();
    assert!(pubsub.pull(&project, "sub", 10).await.unwrap().is_empty(), "acked");
}

#[tokio::test]
async fn a_lease_keeps_a_message_past_its_deadline() {
    let pubsub = pubsub().await;
    let project = topic_and_subscription(&pubsub, "lease").await;
    pubsub.publish(&project, "topic", vec![message("held")]).await.unwrap();
    let held = receive(&pubsub, &project, 1, Duration::from_secs(10)).await;
    // The subscription's deadline is 10 s; leased for 60 s from now, the
    // message is still held 11 s later.
    pubsub.modify_ack_deadline(&project, "sub", &ack_ids(&held), Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(pubsub.pull(&project, "sub", 10).await.unwrap().is_empty(), "still leased");
    pubsub.acknowledge(&project, "sub", &ack_ids(&held)).await.unwrap();
}

#[tokio::test]
async fn a_pull_on_an_empty_subscription_answers_at_once() {
    let pubsub = pubsub().await;
    let project = topic_and_subscription(&pubsub, "empty").await;
    for _ in 0..3 {
        let started = Instant::now();
        assert!(pubsub.pull(&project, "sub", 10).await.unwrap().is_empty());
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    }
    pubsub.publish(&project, "topic", vec![message("late")]).await.unwrap();
    assert_eq!(receive(&pubsub, &project, 1, Duration::from_secs(10)).await.len(), 1);
}

#[tokio::test]
async fn what_ciofs_publishes_curl_pulls_and_what_curl_makes_ciofs_sees() {
    let pubsub = pubsub().await;
    let project = project("curl");
    curl("PUT", &format!("projects/{project}/topics/by-curl"), None);
    assert_eq!(pubsub.get_topic(&project, "by-curl").await.unwrap().topic, "by-curl");
    let sub = json!({"topic": format!("projects/{project}/topics/by-curl"), "ackDeadlineSeconds": 15});
    curl("PUT", &format!("projects/{project}/subscriptions/sub"), Some(sub));
    assert_eq!(pubsub.get_subscription(&project, "sub").await.unwrap().settings.ack_deadline_seconds, 15);

    let ids = pubsub.publish(&project, "by-curl", vec![message("from ciofs")]).await.unwrap();
    let pulled = curl("POST", &format!("projects/{project}/subscriptions/sub:pull"), Some(json!({"maxMessages": 10})));
    let received = &pulled["receivedMessages"][0]["message"];
    assert_eq!(received["messageId"], ids[0]);
    assert_eq!(received["data"], "ZnJvbSBjaW9mcw==", "base64 of 'from ciofs'");
    let ack_id = pulled["receivedMessages"][0]["ackId"].clone();
    curl("POST", &format!("projects/{project}/subscriptions/sub:acknowledge"), Some(json!({"ackIds": [ack_id]})));

    let published = curl(
        "POST",
        &format!("projects/{project}/topics/by-curl:publish"),
        Some(json!({"messages": [{"data": "ZnJvbSBjdXJs", "attributes": {"a": "b"}}]})),
    );
    let m = pubsub.pull(&project, "sub", 10).await.unwrap().pop().expect("the message curl published");
    assert_eq!(
        (m.data.as_ref(), m.message_id.as_str()),
        (&b"from curl"[..], published["messageIds"][0].as_str().unwrap())
    );
    assert_eq!(m.attributes.get("a").map(String::as_str), Some("b"));
    pubsub.acknowledge(&project, "sub", &[m.ack_id]).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_bounded_time() {
    let retry = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(2),
        window: Duration::from_secs(10),
    };
    // Port 9 (discard) has no listener: connections are refused.
    let config = PubSubConfig { emulator: Some("http://127.0.0.1:9".to_string()), retry };
    let pubsub = GooglePubSub::connect(config).await.expect("a client connects lazily");
    let started = Instant::now();
    let error = pubsub.get_topic("p", "topic").await.expect_err("nothing listens");
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.message.contains("get topic p/topic"), "{error}");
    let error = pubsub.publish("p", "topic", vec![message("x")]).await.expect_err("nothing listens");
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    let error = pubsub.pull("p", "sub", 1).await.expect_err("nothing listens");
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
