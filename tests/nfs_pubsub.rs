//! Pub/Sub through `ciofs serve-nfs` and a userspace NFSv3 client:
//! `_message` publishes what was written once the writes have been idle
//! (NFS has no close), a topic's config.json reads with its exact size, and
//! MKDIR makes a subscription. Checked with curl on the emulator.

mod common;

use std::time::Duration;

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{GETATTR3args, MKDIR3args, sattr3};

#[tokio::test]
async fn message_written_over_nfs_is_published_after_idle() {
    let topic = pubsub_name("nfs_ps");
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;

    let topic_fh = walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}")).await;
    let (names, _) = list(&mut conn, &topic_fh, 8192).await;
    assert_eq!(names, ["config.json", "_message", "_messages", "subscriptions"]);
    let config = lookup(&mut conn, &topic_fh, "config.json").await.unwrap();
    let attr = conn.getattr(&GETATTR3args { object: config.clone() }).await.unwrap().unwrap().obj_attributes;
    let (document, eof) = read(&mut conn, &config, 0, 1 << 20).await;
    assert!(eof);
    assert_eq!(attr.size as usize, document.len());

    let message = lookup(&mut conn, &topic_fh, "_message").await.unwrap();
    write(&mut conn, &message, 0, b"over nfs").await;
    let got = tokio::task::spawn_blocking(move || ps_pull(&subscription, 1, Duration::from_secs(15))).await.unwrap();
    assert_eq!(got, vec![b"over nfs".to_vec()]);

    let subscriptions = lookup(&mut conn, &topic_fh, "subscriptions").await.unwrap();
    let made = format!("{topic}-made");
    let mkdir = MKDIR3args { where_: dirop(&subscriptions, &made), attributes: sattr3::default() };
    conn.mkdir(&mkdir).await.expect("mkdir call").unwrap();
    let created = ps_get(&format!("/subscriptions/{made}")).expect("the subscription was created");
    assert_eq!(created["topic"], format!("projects/{PROJECT}/topics/{topic}"));
}
