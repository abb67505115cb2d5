//! Cloud Storage's Pub/Sub notifications as the emulators make them
//! (fake-gcs-server publishing to the Pub/Sub emulator, as a bucket's
//! notification config makes Cloud Storage do), read by ciofs's reader of
//! them: a write, an overwrite, a metadata change and a delete, each a
//! change of the right kind, object and generation. Their order is not
//! kept (the emulator sends an update before its finalize), so they are
//! compared as a set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use ciofs::storage::notifications::{ChangeKind, ObjectChange};
use common::*;
use serde_json::Value;

const TOPIC: &str = "gcs-events";
const SUBSCRIPTION: &str = "gcs-events-test";

/// The generation of `bucket`/`name` as the emulator has it now.
fn generation(gcs: &PrivateGcs, bucket: &str, name: &str) -> i64 {
    let meta: Value =
        serde_json::from_slice(&curl(&[&format!("{}/storage/v1/b/{bucket}/o/{}", gcs.url(), encode(name))]))
            .expect("object metadata");
    meta["generation"].as_str().and_then(|g| g.parse().ok()).expect("a generation")
}

/// Pulls (and acknowledges) messages until `enough` holds of them or 20 s
/// pass; their attributes.
fn pull(pubsub: &PrivatePubSub, enough: impl Fn(&[BTreeMap<String, String>]) -> bool) -> Vec<BTreeMap<String, String>> {
    let url = format!("{}/subscriptions/{SUBSCRIPTION}", pubsub.project_url());
    let json = "content-type: application/json";
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !enough(&got) && Instant::now() < deadline {
        let body: Value = serde_json::from_slice(&curl(&[
            "-X",
            "POST",
            "-H",
            json,
            &format!("{url}:pull"),
            "-d",
            r#"{"maxMessages":100,"returnImmediately":true}"#,
        ]))
        .expect("pull answer");
        let received = body["receivedMessages"].as_array().cloned().unwrap_or_default();
        let ids: Vec<Value> = received.iter().map(|m| m["ackId"].clone()).collect();
        if !ids.is_empty() {
            let ack = serde_json::json!({ "ackIds": ids }).to_string();
            curl(&["-X", "POST", "-H", json, &format!("{url}:acknowledge"), "-d", &ack]);
        }
        for message in received {
            let data = message["message"]["data"].as_str().unwrap_or_default();
            assert!(base64::engine::general_purpose::STANDARD.decode(data).is_ok(), "a JSON_API_V1 payload");
            let attributes = message["message"]["attributes"].as_object().cloned().unwrap_or_default();
            got.push(attributes.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    got
}

#[test]
fn each_change_to_an_object_is_published_and_read_as_what_it_was() {
    let pubsub = PrivatePubSub::start();
    pubsub.create_topic_and_subscription(TOPIC, SUBSCRIPTION);
    let gcs = PrivateGcs::publishing_to(&pubsub, TOPIC);
    let url = gcs.url();
    curl(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", r#"{"name":"watched"}"#]);
    let put = |data: &str| {
        let upload = format!("{url}/upload/storage/v1/b/watched/o?uploadType=media&name={}", encode("dir/a b.txt"));
        curl(&["-X", "POST", &upload, "--data-binary", data]);
        generation(&gcs, "watched", "dir/a b.txt")
    };
    let first = put("one");
    let second = put("two");
    let object = format!("{url}/storage/v1/b/watched/o/{}", encode("dir/a b.txt"));
    let patch = r#"{"metadata":{"k":"v"}}"#;
    curl(&["-X", "PATCH", "-H", "content-type: application/json", &object, "-d", patch]);
    curl(&["-X", "DELETE", &object]);

    let name = "dir/a b.txt".to_string();
    let want: BTreeSet<_> = [
        (ChangeKind::Finalized, first),
        (ChangeKind::Finalized, second),
        (ChangeKind::MetadataUpdated, second),
        (ChangeKind::Deleted, second),
    ]
    .into_iter()
    .map(|(kind, generation)| (format!("{kind:?}"), name.clone(), Some(generation)))
    .collect();
    let read_all = |messages: &[BTreeMap<String, String>]| -> BTreeSet<(String, String, Option<i64>)> {
        messages
            .iter()
            .map(|attributes| {
                let change =
                    ObjectChange::from_attributes(attributes).unwrap_or_else(|e| panic!("{attributes:?}: {e:?}"));
                assert_eq!((change.bucket.as_str(), change.name.as_str()), ("watched", "dir/a b.txt"));
                (format!("{:?}", change.kind), change.name, change.generation)
            })
            .collect()
    };
    let read = read_all(&pull(&pubsub, |messages| want.is_subset(&read_all(messages))));
    assert!(want.is_subset(&read), "published and read: {read:?}\nwanted: {want:?}");
}
