//! `MemoryPubSub`'s own tests: what the core may rely on it for.

use bytes::Bytes;

use super::*;
use crate::pubsub::DeadLetterPolicy;

fn message(data: &str) -> OutgoingMessage {
    OutgoingMessage { data: Bytes::from(data.to_string()), ..Default::default() }
}

fn kind<T>(result: BackendResult<T>) -> ErrorKind {
    result.err().map(|e| e.kind).unwrap_or(ErrorKind::Other)
}

fn data(messages: &[ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect()
}

const NOW: Duration = Duration::from_millis(50);

#[tokio::test]
async fn topics_and_subscriptions_answer_as_pubsub_does() {
    let ps = MemoryPubSub::new();
    ps.create_topic("p", "topic", &TopicSettings::default()).await.unwrap();
    assert_eq!(kind(ps.create_topic("p", "topic", &TopicSettings::default()).await), ErrorKind::AlreadyExists);
    assert_eq!(kind(ps.create_topic("p", "ab", &TopicSettings::default()).await), ErrorKind::InvalidArgument);
    assert_eq!(kind(ps.get_topic("q", "topic").await), ErrorKind::NotFound, "projects are apart");
    let settings = SubscriptionSettings::default();
    assert_eq!(kind(ps.create_subscription("p", "sub", "nope", &settings).await), ErrorKind::NotFound);
    let created = ps.create_subscription("p", "sub", "topic", &settings).await.unwrap();
    assert_eq!((created.topic.as_str(), created.settings.ack_deadline_seconds), ("projects/p/topics/topic", 10));
    assert_eq!(kind(ps.create_subscription("p", "sub", "topic", &settings).await), ErrorKind::AlreadyExists);
    let bad = SubscriptionSettings { ack_deadline_seconds: 5, ..Default::default() };
    assert_eq!(kind(ps.create_subscription("p", "sub2", "topic", &bad).await), ErrorKind::InvalidArgument);

    let changed = SubscriptionSettings { ack_deadline_seconds: 60, filter: "x".to_string(), ..created.settings };
    let updated = ps.update_subscription("p", "sub", &changed).await.unwrap();
    assert_eq!((updated.settings.ack_deadline_seconds, updated.settings.filter.as_str()), (60, ""));
    assert_eq!(ps.list_topic_subscriptions("p", "topic", None).await.unwrap().items, ["sub"]);

    ps.delete_topic("p", "topic").await.unwrap();
    assert_eq!(ps.get_subscription("p", "sub").await.unwrap().topic, "_deleted-topic_");
    ps.delete_subscription("p", "sub").await.unwrap();
    assert_eq!(kind(ps.delete_subscription("p", "sub").await), ErrorKind::NotFound);
    assert_eq!(ps.calls.get(PubSubOp::DeleteSubscription), 2);
}

#[tokio::test]
async fn listings_come_in_pages_in_name_order() {
    let ps = MemoryPubSub::new();
    for name in ["ccc", "aaa", "bbb"] {
        ps.put_topic("p", name, TopicSettings::default());
    }
    ps.put_topic("q", "zzz", TopicSettings::default());
    ps.set_page_size(2);
    let first = ps.list_topics("p", None).await.unwrap();
    assert_eq!(first.items.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(), ["aaa", "bbb"]);
    let second = ps.list_topics("p", first.next_page_token).await.unwrap();
    assert_eq!(second.items.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(), ["ccc"]);
    assert_eq!(second.next_page_token, None);
}

#[tokio::test]
async fn published_messages_are_received_in_order_and_acked_once() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    assert_eq!(kind(ps.publish("p", "nope", vec![message("x")]).await), ErrorKind::NotFound);
    let ids = ps.publish("p", "topic", vec![message("a"), message("b")]).await.unwrap();
    assert!(ids[0] < ids[1], "increasing ids: {ids:?}");
    let mut s = ps.subscribe("p", "sub", 10).await.unwrap();
    let a = s.next(NOW).await.unwrap().unwrap();
    let b = s.next(NOW).await.unwrap().unwrap();
    assert_eq!((a.message_id.as_str(), b.data.as_ref()), (ids[0].as_str(), &b"b"[..]));
    assert_eq!(a.delivery_attempt, None, "only with a dead-letter policy");
    assert_eq!(s.next(NOW).await.unwrap(), None);
    s.ack(&[a.ack_id.clone(), b.ack_id.clone(), a.ack_id.clone()]).await.unwrap();
    assert_eq!(data(&ps.acked("p", "sub")), ["a", "b"]);
    assert!(ps.backlog("p", "sub").is_empty());
}

#[tokio::test]
async fn nacked_and_dropped_messages_come_back() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    ps.publish("p", "topic", vec![message("a"), message("b")]).await.unwrap();
    let mut s = ps.subscribe("p", "sub", 10).await.unwrap();
    let a = s.next(NOW).await.unwrap().unwrap();
    s.nack(std::slice::from_ref(&a.ack_id)).await.unwrap();
    let again = s.next(NOW).await.unwrap().unwrap();
    assert_eq!((again.data.as_ref(), again.message_id == a.message_id), (&b"a"[..], true), "first in line again");
    assert_ne!(again.ack_id, a.ack_id);
    let _b = s.next(NOW).await.unwrap().unwrap();
    assert_eq!(data(&ps.backlog("p", "sub")), ["a", "b"], "handed out, not acked");
    drop(s);
    let mut other = ps.subscribe("p", "sub", 10).await.unwrap();
    let mut got = vec![other.next(NOW).await.unwrap().unwrap(), other.next(NOW).await.unwrap().unwrap()];
    got.sort_by(|x, y| x.data.cmp(&y.data));
    assert_eq!(data(&got), ["a", "b"], "the dropped subscriber's messages");
}

#[tokio::test]
async fn flow_control_bounds_what_is_held_and_next_waits_for_publishes() {
    let ps = Arc::new(MemoryPubSub::new());
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    ps.publish("p", "topic", vec![message("a"), message("b")]).await.unwrap();
    let mut s = ps.subscribe("p", "sub", 1).await.unwrap();
    let a = s.next(NOW).await.unwrap().unwrap();
    assert_eq!(s.next(NOW).await.unwrap(), None, "one outstanding at most");
    s.ack(&[a.ack_id]).await.unwrap();
    let b = s.next(NOW).await.unwrap().unwrap();
    s.ack(&[b.ack_id]).await.unwrap();

    let publisher = ps.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publisher.publish("p", "topic", vec![message("late")]).await
    });
    let started = std::time::Instant::now();
    let late = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(late.data.as_ref(), b"late");
    assert!(started.elapsed() < Duration::from_secs(2), "woken by the publish");
}

#[tokio::test]
async fn a_message_nacked_too_often_goes_to_the_dead_letter_topic() {
    let ps = MemoryPubSub::new();
    ps.put_topic("p", "dead", TopicSettings::default());
    ps.put_subscription("p", "dead-sub", "dead", SubscriptionSettings::default());
    let policy = DeadLetterPolicy { dead_letter_topic: "projects/p/topics/dead".to_string(), max_delivery_attempts: 5 };
    let settings = SubscriptionSettings { dead_letter_policy: Some(policy), ..Default::default() };
    ps.put_subscription("p", "sub", "topic", settings);
    ps.publish("p", "topic", vec![message("poison")]).await.unwrap();
    let mut s = ps.subscribe("p", "sub", 10).await.unwrap();
    for attempt in 1..=5 {
        let m = s.next(NOW).await.unwrap().unwrap();
        assert_eq!(m.delivery_attempt, Some(attempt));
        s.nack(&[m.ack_id]).await.unwrap();
    }
    assert_eq!(s.next(NOW).await.unwrap(), None);
    assert_eq!(data(&ps.backlog("p", "dead-sub")), ["poison"]);
}

#[tokio::test]
async fn injected_failures_fail_the_next_calls_of_a_kind() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    ps.fail_next(PubSubOp::Publish, 1, ErrorKind::Unavailable);
    assert_eq!(kind(ps.publish("p", "topic", vec![message("x")]).await), ErrorKind::Unavailable);
    assert!(ps.backlog("p", "sub").is_empty(), "a failed call changes nothing");
    ps.publish("p", "topic", vec![message("x")]).await.unwrap();
    let mut s = ps.subscribe("p", "sub", 10).await.unwrap();
    ps.fail_next(PubSubOp::Next, 1, ErrorKind::Unavailable);
    assert_eq!(kind(s.next(NOW).await), ErrorKind::Unavailable);
    assert!(s.next(NOW).await.unwrap().is_some());
    assert_eq!(ps.calls.get(PubSubOp::Publish), 2);
    assert_eq!(ps.calls.get(PubSubOp::Next), 2);
    assert!(ps.remove_subscription("p", "sub"));
    assert_eq!(kind(s.next(NOW).await), ErrorKind::NotFound, "the subscription is gone");
}
