//! `--read-only` through the real binary: every kind of change is refused
//! with EROFS, through FUSE and NFS, while reads go on; a recording proxy
//! in front of the emulator sees nothing but reads.

mod common;

use common::nfs::{connect, dirop, walk};
use common::proxy::RecordingProxy;
use common::*;
use nfs3_client::nfs3_types::nfs3::{
    ACCESS3_EXTEND, ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ, ACCESS3args, CREATE3args, MKDIR3args, Nfs3Result,
    createhow3, nfsstat3, sattr3,
};

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
    ] {
        let stderr = refused(&script);
        assert!(stderr.contains("Read-only file system"), "{script}: {stderr}");
    }
    assert_eq!(ok(&format!("cat {dir}/kept.txt")), "kept\n", "nothing changed");
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
}
