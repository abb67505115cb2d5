//! The tar round trip through `ciofs serve-nfs`: a project exported with
//! `ciofs export`, its archive's entries written by a userspace NFSv3
//! client (MKDIR, CREATE, WRITE: what a kernel NFS client sends for `tar
//! x`) into another project, applied after the writes go quiet (NFS has no
//! close), and checked with curl. A private Cloud Storage emulator holds
//! the one bucket, written back under a new name (names are global).

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{CREATE3args, MKDIR3args, Nfs3Result, createhow3, nfs_fh3, nfsstat3, sattr3};
use serde_json::json;

/// MKDIR, or the directory that is there.
async fn mkdir(conn: &mut Conn, dir: &nfs_fh3, name: &str) -> nfs_fh3 {
    let args = MKDIR3args { where_: dirop(dir, name), attributes: sattr3::default() };
    match conn.mkdir(&args).await.expect("mkdir call") {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => lookup(conn, dir, name).await.expect("existing directory"),
        Nfs3Result::Err((status, _)) => panic!("mkdir {name}: {status:?}"),
    }
}

/// CREATE (UNCHECKED: an existing file is opened) and WRITE.
async fn put_file(conn: &mut Conn, dir: &nfs_fh3, name: &str, data: &[u8]) {
    let args = CREATE3args { where_: dirop(dir, name), how: createhow3::UNCHECKED(sattr3::default()) };
    let file = match conn.create(&args).await.expect("create call") {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        Nfs3Result::Err((status, _)) => panic!("create {name}: {status:?}"),
    };
    if !data.is_empty() {
        write(conn, &file, 0, data).await;
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_export_written_entry_by_entry_over_nfs_recreates_datasets_tables_and_subscriptions() {
    let gcs = PrivateGcs::start();
    let pid = std::process::id();
    let source = format!("nfssrc-{pid}");
    let bq_source = bq_url_of(&source);
    let ps_source = pubsub_url_of(&source);
    let dataset = format!("nfs_tar_{pid}");
    post_json(
        &format!("{bq_source}/datasets"),
        json!({"datasetReference": {"projectId": source, "datasetId": dataset}, "labels": {"team": "ops"}}),
    );
    let schema = json!({"fields": [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}, {"name": "note", "type": "STRING", "mode": "NULLABLE"}]});
    post_json(
        &format!("{bq_source}/datasets/{dataset}/tables"),
        json!({"tableReference": {"projectId": source, "datasetId": dataset, "tableId": "t"}, "schema": schema, "description": "over nfs"}),
    );
    let topic = format!("nfs-tar-{pid}");
    put_json(&format!("{ps_source}/topics/{topic}"), json!({}));
    let filtered = format!("{topic}-filtered");
    put_json(
        &format!("{ps_source}/subscriptions/{filtered}"),
        json!({"topic": format!("projects/{source}/topics/{topic}"), "filter": "attributes.k = \"v\"", "ackDeadlineSeconds": 20}),
    );

    let bucket = format!("nfs-tar-src-{pid}");
    let copied = format!("nfs-tar-dst-{pid}");
    post_json(&format!("{}/storage/v1/b?project={source}", gcs.url()), json!({"name": bucket}));
    let object = json!({"name": "a.csv", "contentType": "text/csv", "metadata": {"owner": "ops"}});
    let body = format!(
        "--b\r\ncontent-type: application/json\r\n\r\n{object}\r\n--b\r\ncontent-type: text/csv\r\n\r\nid\n1\n\r\n--b--"
    );
    let upload = format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=multipart", gcs.url());
    curl(&["-X", "POST", "-H", "content-type: multipart/related; boundary=b", &upload, "--data-binary", &body]);

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("p.tar");
    let exported = ciofs()
        .args(["export", "--project", &source])
        .arg(&archive)
        .env("STORAGE_EMULATOR_HOST", gcs.url())
        .env("CIOFS_STATE_DIR", work.path().join("state"))
        .output()
        .expect("ciofs export runs");
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));

    let state = tempfile::tempdir().unwrap();
    let gcs_host = gcs.url();
    let server = NfsServer::start_with_env(state.path(), &[("STORAGE_EMULATOR_HOST", &gcs_host)]);
    let mut conn = connect(server.port).await;
    let target = walk(&mut conn, PROJECT).await;
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    let mut written = 0;
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        // Without the source project's name, as --strip-components=1.
        let Some((_, relative)) = path.split_once('/') else { continue };
        let relative =
            relative.trim_end_matches('/').replacen(&format!("storage/{bucket}"), &format!("storage/{copied}"), 1);
        let relative = relative.as_str();
        if relative.is_empty() {
            continue;
        }
        let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        let mut dir = target.clone();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            dir = lookup(&mut conn, &dir, part).await.unwrap_or_else(|e| panic!("{parent}: {e:?}"));
        }
        if entry.header().entry_type().is_dir() {
            mkdir(&mut conn, &dir, name).await;
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            put_file(&mut conn, &dir, name, &data).await;
        }
        written += 1;
    }
    assert!(written > 10, "the archive's entries were written: {written}");

    eventually("the table is created with its schema and description", || {
        bq_table(&dataset, "t").is_some_and(|t| t["schema"] == schema && t["description"] == "over nfs")
    })
    .await;
    eventually("the dataset has its labels", || {
        bq_get(&format!("/datasets/{dataset}")).is_some_and(|d| d["labels"] == json!({"team": "ops"}))
    })
    .await;
    eventually("the subscription is created with its filter", || {
        ps_get(&format!("/subscriptions/{filtered}"))
            .is_some_and(|s| s["filter"] == "attributes.k = \"v\"" && s["ackDeadlineSeconds"] == 20)
    })
    .await;
    assert_eq!(
        ps_get(&format!("/subscriptions/{filtered}")).unwrap()["topic"],
        format!("projects/{PROJECT}/topics/{topic}")
    );
    let url = format!("{}/storage/v1/b/{copied}/o/a.csv", gcs.url());
    eventually("the object is uploaded with its content type and metadata", || {
        get_json(&url).is_some_and(|o| o["contentType"] == "text/csv" && o["metadata"] == json!({"owner": "ops"}))
    })
    .await;
    assert_eq!(curl(&[&format!("{url}?alt=media")]), b"id\n1\n");
}
