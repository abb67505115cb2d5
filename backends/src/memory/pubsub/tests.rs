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

#[tokio::test]
async fn topics_and_subscriptions_answer_as_pubsub_does() {
    let ps = MemoryPubSub::new();
    ps.create_topic("p", "topic", &TopicSettings::default()).await.unwrap();
    assert_eq!(kind(ps.create_topic("p", "topic", &TopicSettings::default()).await), ErrorKind::AlreadyExists);
    assert_eq!(kind(ps.create_topic("p", "ab", &TopicSettings::default()).await), ErrorKind::InvalidArgument);
    assert_eq!(kind(ps.get_topic("q", "topic").await), ErrorKind::NotFound, "projects are apart");
    let settings = SubscriptionSettings::default();
    assert_eq!(
        kind(
            ps.create_subscription(&CreateSubscription {
                project: "p".to_string(),
                subscription: "sub".to_string(),
                topic: "nope".to_string(),
                settings: settings.clone()
            })
            .await
        ),
        ErrorKind::NotFound
    );
    let created = ps
        .create_subscription(&CreateSubscription {
            project: "p".to_string(),
            subscription: "sub".to_string(),
            topic: "topic".to_string(),
            settings: settings.clone(),
        })
        .await
        .unwrap();
    assert_eq!((created.topic.as_str(), created.settings.ack_deadline_seconds), ("projects/p/topics/topic", 10));
    assert_eq!(
        kind(
            ps.create_subscription(&CreateSubscription {
                project: "p".to_string(),
                subscription: "sub".to_string(),
                topic: "topic".to_string(),
                settings: settings.clone()
            })
            .await
        ),
        ErrorKind::AlreadyExists
    );
    let bad = SubscriptionSettings { ack_deadline_seconds: 5, ..Default::default() };
    assert_eq!(
        kind(
            ps.create_subscription(&CreateSubscription {
                project: "p".to_string(),
                subscription: "sub2".to_string(),
                topic: "topic".to_string(),
                settings: bad.clone()
            })
            .await
        ),
        ErrorKind::InvalidArgument
    );

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

/// The expiration ttl is kept from creation: an update leaves it, and one
/// under a day (Pub/Sub's minimum) is refused.
#[tokio::test]
async fn the_expiration_is_set_at_creation_only() {
    let ps = MemoryPubSub::new();
    ps.create_topic("p", "topic", &TopicSettings::default()).await.unwrap();
    let day = Duration::from_secs(24 * 3600);
    let create = |subscription: &str, expiration_ttl| CreateSubscription {
        project: "p".to_string(),
        subscription: subscription.to_string(),
        topic: "topic".to_string(),
        settings: SubscriptionSettings { expiration_ttl, ..Default::default() },
    };
    let created = ps.create_subscription(&create("sub", Some(day))).await.unwrap();
    assert_eq!(created.settings.expiration_ttl, Some(day));
    assert_eq!(ps.get_subscription("p", "sub").await.unwrap().settings.expiration_ttl, Some(day));
    let changed = SubscriptionSettings { expiration_ttl: None, ack_deadline_seconds: 60, ..created.settings };
    let updated = ps.update_subscription("p", "sub", &changed).await.unwrap();
    assert_eq!((updated.settings.ack_deadline_seconds, updated.settings.expiration_ttl), (60, Some(day)));
    let short = create("short", Some(day - Duration::from_secs(1)));
    assert_eq!(kind(ps.create_subscription(&short).await), ErrorKind::InvalidArgument);
    assert_eq!(ps.create_subscription(&create("default", None)).await.unwrap().settings.expiration_ttl, None);
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
async fn published_messages_are_pulled_in_order_and_acked_once() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    assert_eq!(kind(ps.publish("p", "nope", vec![message("x")]).await), ErrorKind::NotFound);
    let ids = ps.publish("p", "topic", vec![message("a"), message("b"), message("c")]).await.unwrap();
    assert!(ids[0] < ids[1], "increasing ids: {ids:?}");
    let first = ps.pull("p", "sub", 2).await.unwrap();
    assert_eq!(data(&first), ["a", "b"], "at most max_messages");
    assert_eq!(first[0].message_id, ids[0]);
    assert_eq!(first[0].delivery_attempt, None, "only with a dead-letter policy");
    let rest = ps.pull("p", "sub", 10).await.unwrap();
    assert_eq!(data(&rest), ["c"]);
    assert!(ps.pull("p", "sub", 10).await.unwrap().is_empty(), "outstanding ones are not pulled again");
    let ack_ids = [first[0].ack_id.clone(), first[1].ack_id.clone(), first[0].ack_id.clone()];
    ps.acknowledge("p", "sub", &ack_ids).await.unwrap();
    assert_eq!(data(&ps.acked("p", "sub")), ["a", "b"]);
    assert_eq!(data(&ps.backlog("p", "sub")), ["c"]);
}

#[tokio::test]
async fn given_back_messages_come_first_in_line_with_new_ack_ids() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    ps.publish("p", "topic", vec![message("a"), message("b"), message("c")]).await.unwrap();
    let pulled = ps.pull("p", "sub", 2).await.unwrap();
    let ack_ids: Vec<String> = pulled.iter().map(|m| m.ack_id.clone()).collect();
    ps.modify_ack_deadline("p", "sub", &ack_ids, Duration::ZERO).await.unwrap();
    let again = ps.pull("p", "sub", 10).await.unwrap();
    assert_eq!(data(&again), ["a", "b", "c"], "first in line again, in order");
    assert_ne!(again[0].ack_id, pulled[0].ack_id);
    ps.acknowledge("p", "sub", &ack_ids).await.unwrap();
    assert!(ps.acked("p", "sub").is_empty(), "an old ack id acks nothing");
}

#[tokio::test]
async fn a_message_whose_deadline_passed_comes_back_and_a_lease_keeps_it() {
    let ps = MemoryPubSub::new();
    ps.put_subscription("p", "sub", "topic", SubscriptionSettings::default());
    ps.publish("p", "topic", vec![message("a"), message("b")]).await.unwrap();
    let pulled = ps.pull("p", "sub", 2).await.unwrap();
    let (a, b) = (pulled[0].ack_id.clone(), pulled[1].ack_id.clone());
    ps.modify_ack_deadline("p", "sub", &[a], Duration::from_secs(600)).await.unwrap();
    // "b" expires at once: what Pub/Sub does after the deadline.
    ps.modify_ack_deadline("p", "sub", std::slice::from_ref(&b), Duration::from_millis(1)).await.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(data(&ps.pull("p", "sub", 10).await.unwrap()), ["b"], "a is leased, b came back");
    ps.acknowledge("p", "sub", &[b]).await.unwrap();
    assert!(ps.acked("p", "sub").is_empty(), "the expired ack id acks nothing");
}

#[tokio::test]
async fn a_message_given_back_too_often_goes_to_the_dead_letter_topic() {
    let ps = MemoryPubSub::new();
    ps.put_topic("p", "dead", TopicSettings::default());
    ps.put_subscription("p", "dead-sub", "dead", SubscriptionSettings::default());
    let policy = DeadLetterPolicy { dead_letter_topic: "projects/p/topics/dead".to_string(), max_delivery_attempts: 5 };
    let settings = SubscriptionSettings { dead_letter_policy: Some(policy), ..Default::default() };
    ps.put_subscription("p", "sub", "topic", settings);
    ps.publish("p", "topic", vec![message("poison")]).await.unwrap();
    for attempt in 1..=5 {
        let m = ps.pull("p", "sub", 1).await.unwrap().remove(0);
        assert_eq!(m.delivery_attempt, Some(attempt));
        ps.modify_ack_deadline("p", "sub", &[m.ack_id], Duration::ZERO).await.unwrap();
    }
    assert!(ps.pull("p", "sub", 1).await.unwrap().is_empty());
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
    ps.fail_next(PubSubOp::Pull, 1, ErrorKind::Unavailable);
    assert_eq!(kind(ps.pull("p", "sub", 1).await), ErrorKind::Unavailable);
    assert_eq!(ps.pull("p", "sub", 1).await.unwrap().len(), 1);
    assert_eq!(ps.calls.get(PubSubOp::Publish), 2);
    assert_eq!(ps.calls.get(PubSubOp::Pull), 2);
    assert!(ps.remove_subscription("p", "sub"));
    assert_eq!(kind(ps.pull("p", "sub", 1).await), ErrorKind::NotFound, "the subscription is gone");
}
