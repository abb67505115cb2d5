//! The namespace's BigQuery logic against the in-memory BigQuery: which
//! calls listings and edits make, when an edit is applied, what a refusal
//! leaves behind.

use std::sync::Arc;
use std::time::Duration;

use ciofs_backends::bigquery::{SchemaField, TableSettings};
use ciofs_backends::memory::{BigQueryOp, MemoryBigQuery, MemoryGcs};
use ciofs_frontends::{Ino, OpenFlags, Vfs};

use super::tests::{test_options, walk};
use super::{Namespace, Services};

pub(super) fn column(name: &str, mode: &str) -> SchemaField {
    SchemaField::new(name, "STRING", mode)
}

/// A namespace on an in-memory BigQuery with dataset `ds` holding `tables`
/// tables `t00`.. of columns `id` (REQUIRED) and `name`.
fn fixture(tables: usize) -> (Arc<MemoryBigQuery>, Namespace) {
    let bigquery = Arc::new(MemoryBigQuery::new());
    for i in 0..tables {
        let settings = TableSettings {
            schema: vec![column("id", "REQUIRED"), column("name", "NULLABLE")],
            description: Some("a table".to_string()),
            ..TableSettings::default()
        };
        bigquery.put_table("p", "ds", &format!("t{i:02}"), settings);
    }
    let services = Services {
        gcs: Arc::new(MemoryGcs::new()),
        bigquery: bigquery.clone(),
        pubsub: Arc::new(ciofs_backends::memory::MemoryPubSub::new()),
    };
    (bigquery, Namespace::new(vec!["p".to_string()], services, test_options()))
}

async fn read_all(ns: &Namespace, ino: Ino) -> Vec<u8> {
    let opened = ns.open(ino, OpenFlags::default()).await.unwrap();
    let (data, eof) = ns.read(ino, Some(opened.fh), 0, 1 << 20).await.unwrap();
    assert!(eof);
    ns.release(ino, opened.fh).await.unwrap();
    data.to_vec()
}

/// Writes `data` as the whole file through a handle (open with O_TRUNC,
/// write, close); close()'s result.
async fn write_whole(ns: &Namespace, ino: Ino, data: &[u8]) -> Result<(), i32> {
    let flags = OpenFlags { write: true, truncate: true, ..OpenFlags::default() };
    let opened = ns.open(ino, flags).await.map_err(|e| e.errno())?;
    ns.write(ino, Some(opened.fh), 0, data).await.map_err(|e| e.errno())?;
    let closed = ns.flush(ino, opened.fh).await.map_err(|e| e.errno());
    ns.release(ino, opened.fh).await.map_err(|e| e.errno())?;
    closed
}

#[tokio::test]
async fn a_dataset_listing_makes_one_list_call_per_page_and_no_get_per_table() {
    let (bigquery, ns) = fixture(120);
    bigquery.set_page_size(50);
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let page = ns.readdir(dataset, None, 0, 1000).await.unwrap();
    assert_eq!(page.entries.len(), 121, ".meta and every table");
    assert_eq!(page.entries[0].name, ".meta");
    assert_eq!(page.entries[120].name, "t99", "in byte order: t100..t119 come before t11");
    for entry in &page.entries[1..] {
        ns.lookup(dataset, &entry.name).await.unwrap();
        ns.getattr(entry.attr.ino).await.unwrap();
    }
    assert_eq!(bigquery.calls.get(BigQueryOp::ListTables), 3, "120 tables, 50 a page");
    assert_eq!(bigquery.calls.get(BigQueryOp::GetTable), 0, "no get per table");
}

#[tokio::test]
async fn a_table_directory_costs_one_get_and_reports_exact_sizes() {
    let (bigquery, ns) = fixture(1);
    let table = walk(&ns, "p/bigquery/ds/t00").await;
    let page = ns.readdir(table, None, 0, 100).await.unwrap();
    let names: Vec<&str> = page.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["config.json", "schema.json", "_status.json"]);
    for entry in &page.entries {
        assert_eq!(read_all(&ns, entry.attr.ino).await.len() as u64, entry.attr.size, "{}", entry.name);
    }
    assert_eq!(bigquery.calls.get(BigQueryOp::GetTable), 1);
}

#[tokio::test]
async fn an_unchanged_document_written_back_makes_no_call() {
    let (bigquery, ns) = fixture(1);
    for file in ["schema.json", "config.json"] {
        let ino = walk(&ns, &format!("p/bigquery/ds/t00/{file}")).await;
        let document = read_all(&ns, ino).await;
        write_whole(&ns, ino, &document).await.unwrap();
    }
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 0);
}

#[tokio::test]
async fn an_added_column_is_sent_once_at_close() {
    let (bigquery, ns) = fixture(1);
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let document = br#"{"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"},
        {"name": "name", "type": "STRING"}, {"name": "extra", "type": "STRING", "mode": "REPEATED"}]}"#;
    write_whole(&ns, ino, document).await.unwrap();
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 1);
    let table = bigquery.table("p", "ds", "t00").unwrap();
    assert_eq!(table.settings.schema.len(), 3);
    assert_eq!(table.settings.description.as_deref(), Some("a table"), "the rest is kept");
    // The file shows the new schema at once.
    assert!(String::from_utf8(read_all(&ns, ino).await).unwrap().contains("extra"));
}

#[tokio::test]
async fn a_refused_change_sends_nothing_and_says_why_in_the_error_log() {
    let (bigquery, ns) = fixture(1);
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let before = read_all(&ns, ino).await;
    let dropped = br#"{"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"}]}"#;
    assert_eq!(write_whole(&ns, ino, dropped).await, Err(libc::EINVAL));
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 0);
    assert_eq!(read_all(&ns, ino).await, before, "the file shows the table as it is");
    let errors = walk(&ns, ".ciofs/errors").await;
    let text = String::from_utf8(read_all(&ns, errors).await).unwrap();
    assert!(text.contains("/p/bigquery/ds/t00/schema.json") && text.contains("name"), "{text}");
    assert!(text.contains("(EINVAL)"), "{text}");
}

#[tokio::test]
async fn a_pending_table_is_created_with_the_config_written_before_its_schema() {
    let (bigquery, ns) = fixture(0);
    bigquery.put_dataset("p", "ds", Default::default());
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let table = ns.mkdir(dataset, "new", 0o755).await.unwrap().ino;
    assert!(ns.readdir(table, None, 0, 10).await.unwrap().entries.is_empty());
    let (config, opened) = ns.create(table, "config.json", 0o644).await.unwrap();
    ns.write(config.ino, Some(opened.fh), 0, br#"{"description": "before the schema"}"#).await.unwrap();
    ns.flush(config.ino, opened.fh).await.unwrap();
    ns.release(config.ino, opened.fh).await.unwrap();
    assert!(bigquery.table("p", "ds", "new").is_none(), "still pending");
    let names: Vec<String> =
        ns.readdir(table, None, 0, 10).await.unwrap().entries.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["config.json"]);

    let (schema, opened) = ns.create(table, "schema.json", 0o644).await.unwrap();
    ns.write(schema.ino, Some(opened.fh), 0, br#"{"fields": [{"name": "x", "type": "INT64"}]}"#).await.unwrap();
    ns.flush(schema.ino, opened.fh).await.unwrap();
    ns.release(schema.ino, opened.fh).await.unwrap();
    let created = bigquery.table("p", "ds", "new").expect("created");
    assert_eq!(created.settings.description.as_deref(), Some("before the schema"));
    assert_eq!(created.settings.schema[0].name, "x");
    assert_eq!(bigquery.calls.get(BigQueryOp::CreateTable), 1);
}

#[tokio::test]
async fn writes_without_a_handle_are_applied_once_idle() {
    let (bigquery, ns) = fixture(1);
    let ino = walk(&ns, "p/bigquery/ds/t00/config.json").await;
    let document = br#"{"labels": {"team": "data"}}"#;
    ns.setattr(ino, ciofs_frontends::SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.write(ino, None, 0, document).await.unwrap();
    assert_eq!(ns.getattr(ino).await.unwrap().size, document.len() as u64, "the local edit is seen");
    ns.commit_idle(Duration::from_secs(60)).await;
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 0, "not idle yet");
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 1);
    let labels = bigquery.table("p", "ds", "t00").unwrap().settings.labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("data"));
}

#[tokio::test]
async fn rmdir_deletes_a_table_and_only_an_empty_dataset() {
    let (bigquery, ns) = fixture(2);
    let root = walk(&ns, "p/bigquery").await;
    let dataset = walk(&ns, "p/bigquery/ds").await;
    assert_eq!(ns.rmdir(root, "ds").await.unwrap_err().errno(), libc::ENOTEMPTY);
    ns.rmdir(dataset, "t00").await.unwrap();
    ns.rmdir(dataset, "t01").await.unwrap();
    assert!(bigquery.table("p", "ds", "t00").is_none());
    ns.rmdir(root, "ds").await.unwrap();
    assert!(bigquery.dataset("p", "ds").is_none());
    assert_eq!(ns.mkdir(root, "no-dashes", 0o755).await.unwrap_err().errno(), libc::EINVAL);
}

/// The emulator drops both settings, so their path to BigQuery is checked
/// here: a future expiration and the partition filter of a partitioned
/// table are sent; an expiration in the past is refused.
#[tokio::test]
async fn expiration_and_partition_filter_are_sent() {
    let (bigquery, ns) = fixture(0);
    let settings = TableSettings {
        schema: vec![column("day", "NULLABLE")],
        time_partitioning: Some(ciofs_backends::bigquery::TimePartitioning {
            partition_type: "DAY".to_string(),
            ..Default::default()
        }),
        ..TableSettings::default()
    };
    bigquery.put_table("p", "ds", "parted", settings);
    let ino = walk(&ns, "p/bigquery/ds/parted/config.json").await;
    let past = br#"{"expiration_time": "2001-01-01T00:00:00Z"}"#;
    assert_eq!(write_whole(&ns, ino, past).await, Err(libc::EINVAL));
    let future = br#"{"expiration_time": "2099-01-01T00:00:00Z", "require_partition_filter": true}"#;
    write_whole(&ns, ino, future).await.unwrap();
    let table = bigquery.table("p", "ds", "parted").unwrap();
    let expected = std::time::UNIX_EPOCH + Duration::from_secs(4_070_908_800);
    assert_eq!(table.settings.expiration_time, Some(expected));
    assert!(table.settings.require_partition_filter);
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 1);
}

#[tokio::test]
async fn datasets_are_listed_across_pages_in_name_order() {
    let (bigquery, ns) = fixture(0);
    bigquery.set_page_size(7);
    for i in (0..30).rev() {
        bigquery.put_dataset("p", &format!("d{i:02}"), Default::default());
    }
    let root = walk(&ns, "p/bigquery").await;
    let names: Vec<String> =
        ns.readdir(root, None, 0, 100).await.unwrap().entries.into_iter().map(|e| e.name).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("d{i:02}")).collect();
    assert_eq!(names, expected);
    assert_eq!(bigquery.calls.get(BigQueryOp::ListDatasets), 5, "30 datasets, 7 a page");
}

/// `mkdir` of a dataset waits for its `_dataset.json`: the location can
/// only be given at creation, and `tar x` of an export writes it next.
#[tokio::test]
async fn a_made_dataset_is_created_with_its_dataset_document() {
    let (bigquery, ns) = fixture(0);
    let root = walk(&ns, "p/bigquery").await;
    ns.mkdir(root, "eu_sales", 0o755).await.unwrap();
    assert_eq!(bigquery.calls.get(BigQueryOp::CreateDataset), 0, "pending");
    assert_eq!(ns.mkdir(root, "eu_sales", 0o755).await.unwrap_err().errno(), libc::EEXIST);
    let names: Vec<String> = ns.readdir(root, None, 0, 10).await.unwrap().entries.into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"eu_sales".to_string()), "{names:?}");
    let document = walk(&ns, "p/bigquery/eu_sales/.meta/_dataset.json").await;
    let written = br#"{"location": "EU", "description": "sales in Europe", "labels": {"team": "data"}}"#;
    write_whole(&ns, document, written).await.unwrap();
    let made = bigquery.dataset("p", "eu_sales").expect("created");
    assert_eq!(made.settings.location.as_deref(), Some("EU"));
    assert_eq!(made.settings.description.as_deref(), Some("sales in Europe"));
    assert_eq!(bigquery.calls.get(BigQueryOp::CreateDataset), 1);
    // Written again: unchanged, nothing sent; a new location is refused.
    write_whole(&ns, document, written).await.unwrap();
    assert_eq!(write_whole(&ns, document, br#"{"location": "US"}"#).await, Err(libc::EINVAL));
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateDataset), 0);
}

#[tokio::test]
async fn a_made_dataset_is_created_by_its_first_table_or_after_a_second() {
    let (bigquery, ns) = fixture(0);
    let root = walk(&ns, "p/bigquery").await;
    ns.mkdir(root, "first_table", 0o755).await.unwrap();
    let dataset = walk(&ns, "p/bigquery/first_table").await;
    ns.mkdir(dataset, "t", 0o755).await.unwrap();
    assert!(bigquery.dataset("p", "first_table").is_some(), "its first table made it");

    ns.mkdir(root, "waited", 0o755).await.unwrap();
    ns.mkdir(root, "removed", 0o755).await.unwrap();
    ns.rmdir(root, "removed").await.unwrap();
    ns.commit_idle(Duration::from_secs(60)).await;
    assert!(bigquery.dataset("p", "waited").is_none(), "not before a second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ns.commit_idle(Duration::from_secs(60)).await;
    assert!(bigquery.dataset("p", "waited").is_some());
    assert!(bigquery.dataset("p", "removed").is_none());
    assert_eq!(bigquery.calls.get(BigQueryOp::CreateDataset), 2);
}

/// A view made by `tar x`: its config.json carries the query, its
/// schema.json (the columns an export lists, or none) is not sent.
#[tokio::test]
async fn a_view_is_made_from_its_config_whatever_its_schema_says() {
    let (bigquery, ns) = fixture(0);
    bigquery.put_dataset("p", "ds", Default::default());
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let view = ns.mkdir(dataset, "v", 0o755).await.unwrap().ino;
    for (file, data) in
        [("config.json", &br#"{"view_query": "SELECT 1 AS x"}"#[..]), ("schema.json", &br#"{"fields": []}"#[..])]
    {
        let (attr, opened) = ns.create(view, file, 0o644).await.unwrap();
        ns.write(attr.ino, Some(opened.fh), 0, data).await.unwrap();
        ns.flush(attr.ino, opened.fh).await.unwrap();
        ns.release(attr.ino, opened.fh).await.unwrap();
    }
    let made = bigquery.table("p", "ds", "v").expect("created");
    assert_eq!(made.settings.view_query.as_deref(), Some("SELECT 1 AS x"));
    assert!(made.settings.schema.is_empty());
}
