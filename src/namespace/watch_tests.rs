//! `--watch` against the in-memory backends: where the notifications come
//! from (the buckets' configs, found or made), a missing permission named,
//! pulls that fail tried again, and a notification dropping what it names.
//! The end-to-end proof is tests/watch.rs, on the emulators.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciofs_backends::ErrorKind;
use ciofs_backends::gcs::ObjectStore;
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub, Op, PubSubOp};
use ciofs_backends::pubsub::{OutgoingMessage, PubSub, TopicSettings};
use ciofs_frontends::Vfs;

use super::tests::{test_options, walk};
use super::{Namespace, Services, WatchOptions};
use crate::storage::block_cache::BlockKey;

const DAY: Duration = Duration::from_secs(86_400);

fn watching_namespace(gcs: &Arc<MemoryGcs>, pubsub: &Arc<MemoryPubSub>) -> Arc<Namespace> {
    let services = Services { gcs: gcs.clone(), bigquery: Arc::new(MemoryBigQuery::new()), pubsub: pubsub.clone() };
    Arc::new(Namespace::new(vec!["p".to_string()], services, test_options()))
}

fn options(topic: Option<&str>) -> WatchOptions {
    WatchOptions { topic: topic.map(str::to_string), expiration: DAY }
}

#[tokio::test]
async fn each_bucket_publishes_to_its_own_config_or_gets_one_to_ciofs_watch() {
    let (gcs, pubsub) = (Arc::new(MemoryGcs::new()), Arc::new(MemoryPubSub::new()));
    gcs.add_bucket_of("p", "plain");
    gcs.add_bucket_of("p", "configured");
    pubsub.put_topic("p", "existing", TopicSettings::default());
    let every = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_METADATA_UPDATE"].map(String::from);
    gcs.create_notification("configured", "projects/p/topics/existing", &every).await.unwrap();
    let ns = watching_namespace(&gcs, &pubsub);

    let watching = ns.start_watching(&options(None)).await.expect("watching");
    let made = gcs.list_notifications("plain").await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].topic, "projects/p/topics/ciofs-watch");
    let made_events = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"];
    assert_eq!(made[0].event_types, made_events.map(String::from).to_vec(), "removals in versioned buckets too");
    assert_eq!(gcs.list_notifications("configured").await.unwrap().len(), 1, "its own config is used, not another");
    assert!(pubsub.topic("p", "ciofs-watch").is_some(), "the topic was made");
    let subscriptions = |topic: &str| {
        let pubsub = pubsub.clone();
        let topic = topic.to_string();
        async move { pubsub.list_topic_subscriptions("p", &topic, None).await.unwrap().items }
    };
    let ours = subscriptions("ciofs-watch").await;
    assert_eq!((ours.len(), subscriptions("existing").await.len()), (1, 1), "one subscription per topic");
    let settings = pubsub.subscription("p", &ours[0]).expect("made").settings;
    assert_eq!(settings.expiration_ttl, Some(DAY));

    watching.stop().await;
    assert!(subscriptions("ciofs-watch").await.is_empty() && subscriptions("existing").await.is_empty());
}

#[tokio::test]
async fn a_permission_missing_is_named_and_nothing_is_left_behind() {
    let (gcs, pubsub) = (Arc::new(MemoryGcs::new()), Arc::new(MemoryPubSub::new()));
    gcs.add_bucket_of("p", "b");
    gcs.fail_next(Op::CreateNotification, 1, ErrorKind::PermissionDenied);
    let ns = watching_namespace(&gcs, &pubsub);
    let refused = ns.start_watching(&options(None)).await.err().expect("refused");
    assert!(refused.contains("storage.buckets.update on the bucket"), "{refused}");

    pubsub.put_topic("p", "given", TopicSettings::default());
    pubsub.fail_next(PubSubOp::CreateSubscription, 1, ErrorKind::PermissionDenied);
    let refused = ns.start_watching(&options(Some("given"))).await.err().expect("refused");
    assert!(refused.contains("pubsub.subscriptions.create on project p"), "{refused}");
    assert!(pubsub.list_topic_subscriptions("p", "given", None).await.unwrap().items.is_empty());
    let refused = ns.start_watching(&options(Some("missing"))).await.err().expect("refused");
    assert!(refused.starts_with("--watch: no topic projects/p/topics/missing"), "{refused}");
}

/// A notification as Cloud Storage sends it of `name`'s `generation`.
fn finalized(name: &str, generation: i64) -> OutgoingMessage {
    let attributes = BTreeMap::from([
        ("eventType".to_string(), "OBJECT_FINALIZE".to_string()),
        ("bucketId".to_string(), "b".to_string()),
        ("objectId".to_string(), name.to_string()),
        ("objectGeneration".to_string(), generation.to_string()),
    ]);
    OutgoingMessage { attributes, ..Default::default() }
}

#[tokio::test]
async fn pulls_that_fail_are_tried_again_and_then_a_notification_drops_what_it_names() {
    let (gcs, pubsub) = (Arc::new(MemoryGcs::new()), Arc::new(MemoryPubSub::new()));
    gcs.add_bucket_of("p", "b");
    gcs.put_object("b", "a.txt", "old");
    gcs.put_object("b", "other.txt", "same");
    pubsub.put_topic("p", "events", TopicSettings::default());
    let ns = watching_namespace(&gcs, &pubsub);
    let file = walk(&ns, "p/storage/b/a.txt").await;
    let other = walk(&ns, "p/storage/b/other.txt").await;
    assert_eq!(ns.getattr(file).await.unwrap().size, 3);
    let old = gcs.object_meta("b", "a.txt").expect("stored");
    assert_eq!(&ns.read(file, None, 0, 100).await.unwrap().0[..], b"old");
    let old_block = BlockKey { bucket: "b".into(), name: "a.txt".into(), generation: old.generation, index: 0 };
    let blocks = ns.storage.content_cache_if_open().expect("opened by the read");
    assert!(blocks.contains(&old_block), "the read cached its block");
    pubsub.fail_next(PubSubOp::Pull, 3, ErrorKind::Unavailable);
    let watching = ns.start_watching(&options(Some("events"))).await.expect("watching");

    let newer = gcs.put_object("b", "a.txt", "newer");
    assert_eq!(ns.getattr(file).await.unwrap().size, 3, "cached: the old size until told");
    let gets_before = gcs.calls.get_object.load(std::sync::atomic::Ordering::SeqCst);
    pubsub.publish("p", "events", vec![finalized("a.txt", newer.generation)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.getattr(file).await.unwrap().size != 5 {
        assert!(Instant::now() < deadline, "the notification was not acted on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pubsub.calls.get(PubSubOp::Pull) > 3, "pulls went on after failing");
    assert!(!blocks.contains(&old_block), "the replaced generation's blocks went");
    ns.getattr(other).await.unwrap();
    assert_eq!(
        gcs.calls.get_object.load(std::sync::atomic::Ordering::SeqCst),
        gets_before + 1,
        "only the object named was asked for again"
    );
    // A notification of its own state (or an older one) again drops nothing.
    pubsub.publish("p", "events", vec![finalized("a.txt", newer.generation)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    ns.getattr(file).await.unwrap();
    assert_eq!(
        gcs.calls.get_object.load(std::sync::atomic::Ordering::SeqCst),
        gets_before + 1,
        "a known change is not dropped twice"
    );
    watching.stop().await;
}
