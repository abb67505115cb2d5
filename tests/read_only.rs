//! `--read-only` through the real binary: every kind of change is refused
//! with EROFS, through FUSE and NFS, while reads go on; a recording proxy
//! in front of the emulator sees nothing but reads.
//!
//! Most refusals are made twice over (FUSE mounts read-only, so the kernel
//! answers EROFS; NFS's capabilities make nfsserve answer ROFS itself), so
//! each test also reads a Pub/Sub `_stream`: a read that acknowledges, a
//! change only ciofs itself can refuse (`Namespace::refuse_change`).

mod common;

use std::time::Duration;

use common::nfs::{connect, dirop, walk};
use common::proxy::RecordingProxy;
use common::*;
use nfs3_client::nfs3_types::nfs3::{
    ACCESS3_EXTEND, ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ, ACCESS3args, CREATE3args, MKDIR3args, Nfs3Result,
    READ3args, createhow3, nfsstat3, sattr3,
};

/// A topic and its subscription holding one message, published with curl.
fn topic_with_a_message(test: &str) -> (String, String) {
    let topic = pubsub_name(test);
    let subscription = format!("{topic}-sub");
    ps_create_topic(&topic);
    ps_create_subscription(&subscription, &topic);
    ps_publish(&topic, &[b"unread"]);
    (topic, subscription)
}

/// The message of `topic_with_a_message` was not acknowledged: curl pulls it.
fn assert_still_there(subscription: &str) {
    let pulled = ps_pull(subscription, 1, Duration::from_secs(15));
    assert_eq!(pulled, vec![b"unread".to_vec()], "the message was not acknowledged");
}

/// What the shell said when `script` failed (it must fail).
fn refused(script: &str) -> String {
    let output = sh(script);
    assert!(!output.status.success(), "{script} succeeded on a read-only mount");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn every_change_is_refused_with_erofs_and_only_reads_reach_google() {
    let bucket = bucket_name("readonly");
    create_bucket(&bucket);
    upload(&bucket, "dir/kept.txt", b"kept\n");
    let proxy = RecordingProxy::start(&gcs_url());
    let mount = FuseMount::start_with_env(&["--read-only"], &[("STORAGE_EMULATOR_HOST", proxy.url())]);
    let root = mount.path(PROJECT).display().to_string();
    let dir = format!("{root}/storage/{bucket}/dir");
    let (topic, subscription) = topic_with_a_message("readonly");
    let stream = format!("{root}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream");

    assert_eq!(ok(&format!("cat {dir}/kept.txt")), "kept\n", "reads go on");
    assert!(ok(&format!("ls {dir}/.meta")).contains("kept.txt.json"));
    for script in [
        format!("echo new > {dir}/new.txt"),
        format!("echo more >> {dir}/kept.txt"),
        format!("truncate -s 0 {dir}/kept.txt"),
        format!("touch {dir}/kept.txt"),
        format!("rm {dir}/kept.txt"),
        format!("mv {dir}/kept.txt {dir}/moved.txt"),
        format!("mkdir {dir}/sub"),
        format!("rmdir {dir}"),
        format!("echo '{{}}' > {dir}/.meta/kept.txt.json"),
        format!("mkdir {root}/storage/{bucket}-new"),
        format!("mkdir {root}/bigquery/read_only_dataset"),
        format!("mkdir {root}/pubsub/topics/read-only-topic"),
        // Reading it acknowledges: a change the kernel does not refuse.
        format!("timeout 20 head -n 1 {stream}"),
    ] {
        let stderr = refused(&script);
        assert!(stderr.contains("Read-only file system"), "{script}: {stderr}");
    }
    assert_eq!(ok(&format!("cat {dir}/kept.txt")), "kept\n", "nothing changed");
    assert_still_there(&subscription);
    let sent = proxy.sent();
    let requests: Vec<&str> = sent.lines().filter(|l| l.ends_with(" HTTP/1.1")).collect();
    assert!(!requests.is_empty(), "the reads went through the proxy");
    assert!(requests.iter().all(|r| r.starts_with("GET ")), "only reads: {requests:#?}");
}

#[tokio::test]
async fn an_nfs_server_with_read_only_answers_rofs() {
    let bucket = bucket_name("nfsreadonly");
    create_bucket(&bucket);
    upload(&bucket, "f.txt", b"kept\n");
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start_with_args(state.path(), &[], &["--read-only"]);
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
    // Told up front: ACCESS grants reading and lookup only.
    let asked = ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_EXTEND;
    let access = conn.access(&ACCESS3args { object: dir.clone(), access: asked }).await.unwrap().unwrap();
    assert_eq!(access.access, ACCESS3_READ | ACCESS3_LOOKUP);
    let how = createhow3::UNCHECKED(sattr3::default());
    let created = conn.create(&CREATE3args { where_: dirop(&dir, "new.txt"), how }).await.unwrap();
    assert!(matches!(created, Nfs3Result::Err((nfsstat3::NFS3ERR_ROFS, _))), "{created:?}");
    let made = conn.mkdir(&MKDIR3args { where_: dirop(&dir, "sub"), attributes: sattr3::default() }).await.unwrap();
    assert!(matches!(made, Nfs3Result::Err((nfsstat3::NFS3ERR_ROFS, _))), "{made:?}");

    // NFS has no open: a READ of `_stream` pulls and acknowledges, and
    // nothing but ciofs stands in its way.
    let (topic, subscription) = tokio::task::spawn_blocking(|| topic_with_a_message("nfsreadonly")).await.unwrap();
    let stream =
        walk(&mut conn, &format!("{PROJECT}/pubsub/topics/{topic}/subscriptions/{subscription}/_stream")).await;
    let read = conn.read(&READ3args { file: stream, offset: 0, count: 4096 }).await.unwrap();
    assert!(matches!(read, Nfs3Result::Err((nfsstat3::NFS3ERR_ROFS, _))), "{read:?}");
    tokio::task::spawn_blocking(move || assert_still_there(&subscription)).await.unwrap();
}
