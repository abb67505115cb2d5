//! BigQuery through `ciofs serve-nfs` and a userspace NFSv3 client: the
//! three documents read, a schema change written (applied after the idle
//! time, NFS having no close), a refused one reported in `.ciofs/errors`,
//! and a table made with MKDIR + CREATE schema.json. Checked with curl on
//! the emulator's REST API.

mod common;

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, GETATTR3args, MKDIR3args, SETATTR3args, createhow3, nfs_fh3, sattr3, set_size3,
};
use serde_json::{Value, json};

/// Polls until `done` says yes about the table (the idle commit), or fails.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Replaces a file's whole content as an NFS client does: SETATTR size 0,
/// then WRITE from offset 0.
async fn replace(conn: &mut Conn, fh: &nfs_fh3, data: &[u8]) {
    let size = sattr3 { size: set_size3::Some(0), ..sattr3::default() };
    let args = SETATTR3args { object: fh.clone(), new_attributes: size, guard: Default::default() };
    conn.setattr(&args).await.expect("setattr call").unwrap();
    write(conn, fh, 0, data).await;
}

async fn read_json(conn: &mut Conn, fh: &nfs_fh3) -> Value {
    let (data, eof) = read(conn, fh, 0, 1 << 20).await;
    assert!(eof);
    serde_json::from_slice(&data).expect("a JSON document")
}

fn column_names(table: &Value) -> Vec<String> {
    let fields = table["schema"]["fields"].as_array().cloned().unwrap_or_default();
    fields.iter().map(|c| c["name"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn documents_read_and_schema_edits_applied_after_idle() {
    let dataset = dataset_name("nfs_bq");
    bq_create_dataset(&dataset);
    let schema = json!({"fields": [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}]});
    bq_create_table(&dataset, "t", json!({"schema": schema, "description": "over nfs"}));
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;

    let table = walk(&mut conn, &format!("{PROJECT}/bigquery/{dataset}/t")).await;
    let (names, _) = list(&mut conn, &table, 8192).await;
    assert_eq!(names, ["config.json", "schema.json", "_status.json"]);
    let schema_fh = lookup(&mut conn, &table, "schema.json").await.unwrap();
    let attr = conn.getattr(&GETATTR3args { object: schema_fh.clone() }).await.unwrap().unwrap().obj_attributes;
    let mut document = read_json(&mut conn, &schema_fh).await;
    assert_eq!(attr.size as usize, serde_json::to_vec_pretty(&document).unwrap().len() + 1, "exact size");
    assert_eq!(document["fields"][0]["name"], "id");
    let config_fh = lookup(&mut conn, &table, "config.json").await.unwrap();
    assert_eq!(read_json(&mut conn, &config_fh).await["description"], "over nfs");
    let status_fh = lookup(&mut conn, &table, "_status.json").await.unwrap();
    assert_eq!(read_json(&mut conn, &status_fh).await["table_type"], "TABLE");

    // A column added: applied once the writes have been idle.
    document["fields"].as_array_mut().unwrap().push(json!({"name": "note", "type": "STRING"}));
    replace(&mut conn, &schema_fh, &serde_json::to_vec_pretty(&document).unwrap()).await;
    eventually("the column is added", || column_names(&bq_table(&dataset, "t").unwrap_or_default()) == ["id", "note"])
        .await;

    // A dropped column is refused: the table keeps it, .ciofs/errors says why.
    let etag = bq_table(&dataset, "t").unwrap()["etag"].clone();
    document["fields"].as_array_mut().unwrap().remove(1);
    replace(&mut conn, &schema_fh, &serde_json::to_vec_pretty(&document).unwrap()).await;
    let errors = walk(&mut conn, ".ciofs/errors").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = String::from_utf8_lossy(&read(&mut conn, &errors, 0, 1 << 20).await.0).to_string();
        if text.contains("note") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the refusal is never reported: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(text.contains(&format!("{dataset}/t/schema.json")), "{text}");
    assert_eq!(bq_table(&dataset, "t").unwrap()["etag"], etag);
    assert_eq!(read_json(&mut conn, &schema_fh).await["fields"].as_array().unwrap().len(), 2);

    // MKDIR + CREATE schema.json + WRITE makes a table.
    let dataset_fh = walk(&mut conn, &format!("{PROJECT}/bigquery/{dataset}")).await;
    let mkdir = MKDIR3args { where_: dirop(&dataset_fh, "made"), attributes: sattr3::default() };
    let made = conn.mkdir(&mkdir).await.expect("mkdir call").unwrap().obj.unwrap();
    let create = CREATE3args { where_: dirop(&made, "schema.json"), how: createhow3::UNCHECKED(sattr3::default()) };
    let file = conn.create(&create).await.expect("create call").unwrap().obj.unwrap();
    write(&mut conn, &file, 0, br#"{"fields": [{"name": "x", "type": "STRING"}]}"#).await;
    eventually("the table is created", || bq_table(&dataset, "made").is_some_and(|t| column_names(&t) == ["x"])).await;
}

/// An edit acknowledged over NFS survives a crash within the idle time: it
/// is journaled, and applied at the next start with the same state.
#[tokio::test]
async fn an_edit_left_by_a_killed_server_is_applied_at_the_next_start() {
    let dataset = dataset_name("nfs_bq_crash");
    bq_create_dataset(&dataset);
    bq_create_table(&dataset, "t", json!({"schema": {"fields": [{"name": "id", "type": "INTEGER"}]}}));
    let state = tempfile::tempdir().unwrap();
    {
        let server = NfsServer::start(state.path());
        let mut conn = connect(server.port).await;
        let schema = walk(&mut conn, &format!("{PROJECT}/bigquery/{dataset}/t/schema.json")).await;
        let document = br#"{"fields": [{"name": "id", "type": "INTEGER"}, {"name": "late", "type": "STRING"}]}"#;
        replace(&mut conn, &schema, document).await;
        // SIGKILL well within the idle time: nothing was applied yet.
        drop(server);
    }
    assert_eq!(column_names(&bq_table(&dataset, "t").unwrap()), ["id"]);
    let _server = NfsServer::start(state.path());
    eventually("the journaled edit is applied", || {
        column_names(&bq_table(&dataset, "t").unwrap_or_default()) == ["id", "late"]
    })
    .await;
}
