//! `GoogleBigQuery` against bqemulator at `BIGQUERY_EMULATOR_HOST`
//! (`scripts/emulators start`, then `eval "$(scripts/emulators env)"`).
//! Without a reachable emulator every test fails: none passes without the
//! thing it tests.
//!
//! The emulator is shared: each test works in its own project, named after
//! the test, the process and the time. What ciofs wrote is checked once more
//! with curl on the REST API, a client that shares no code with ciofs.
//!
//! bqemulator is not faithful everywhere (see the comments
//! below); those behaviours are not asserted here, and
//! `MemoryBigQuery`'s and `convert.rs`'s unit tests check what ciofs relies
//! on instead.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use ciofs_backends::ErrorKind;
use ciofs_backends::bigquery::{
    BigQuery, BigQueryConfig, DatasetSettings, GoogleBigQuery, SchemaField, TableSettings, TimePartitioning,
    UpdateTable,
};
use ciofs_backends::retry::RetryPolicy;
use serde_json::{Value, json};

/// A client of the emulator, checked to answer.
async fn bq() -> GoogleBigQuery {
    let config = BigQueryConfig::from_env();
    let Some(endpoint) = config.emulator.clone() else {
        panic!(
            "BIGQUERY_EMULATOR_HOST is not set: run scripts/emulators start, then eval \"$(scripts/emulators env)\""
        );
    };
    // Few, quick retries: an unreachable emulator fails the test fast.
    let retry = RetryPolicy { attempts: 2, stall_timeout: Duration::from_secs(20), ..RetryPolicy::default() };
    let bq = GoogleBigQuery::connect(BigQueryConfig { retry, ..config }).await.expect("client");
    if let Err(e) = bq.list_datasets("ciofs-probe", None).await {
        panic!("bqemulator at {endpoint} does not answer ({e}): run scripts/emulators start");
    }
    bq
}

/// A project of one test's own (bqemulator keeps projects apart and takes
/// any name).
fn project(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ciofs-{test}-{}-{nanos}", std::process::id())
}

/// A new dataset in a new project.
async fn new_dataset(bq: &GoogleBigQuery, test: &str) -> (String, String) {
    let project = project(test);
    let dataset = "d".to_string();
    bq.create_dataset(&project, &dataset, &DatasetSettings::default()).await.expect("create dataset");
    (project, dataset)
}

/// The resource at `path` (under `/bigquery/v2/projects/`) as the REST API
/// returns it to curl.
fn rest_get(path: &str) -> Value {
    let endpoint = std::env::var("BIGQUERY_EMULATOR_HOST").expect("BIGQUERY_EMULATOR_HOST");
    let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10"])
        .arg(format!("{endpoint}/bigquery/v2/projects/{path}"))
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "curl {path}: {body} {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&body).expect("JSON from curl")
}

/// A query through the REST API with curl; the rows' first column.
fn rest_query(project: &str, sql: &str) -> Vec<String> {
    let endpoint = std::env::var("BIGQUERY_EMULATOR_HOST").expect("BIGQUERY_EMULATOR_HOST");
    let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
    let body = json!({"query": sql, "useLegacySql": false}).to_string();
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10", "-H", "content-type: application/json", "-d", &body])
        .arg(format!("{endpoint}/bigquery/v2/projects/{project}/queries"))
        .output()
        .expect("run curl");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON from curl");
    assert!(output.status.success(), "query {sql}: {answer}");
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    rows.iter().map(|row| row["f"][0]["v"].as_str().unwrap_or_default().to_string()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn column(name: &str, field_type: &str, mode: &str, description: Option<&str>) -> SchemaField {
    SchemaField { description: description.map(str::to_string), ..SchemaField::new(name, field_type, mode) }
}

fn record(name: &str, mode: &str, description: Option<&str>, fields: Vec<SchemaField>) -> SchemaField {
    SchemaField { fields, ..column(name, "RECORD", mode, description) }
}

/// Three levels of RECORDs, every mode, descriptions here and there.
fn nested_schema() -> Vec<SchemaField> {
    vec![
        column("id", "INTEGER", "REQUIRED", Some("the key")),
        column("name", "STRING", "NULLABLE", None),
        column("tags", "STRING", "REPEATED", Some("free-form tags")),
        record(
            "address",
            "NULLABLE",
            Some("where"),
            vec![
                column("street", "STRING", "REQUIRED", None),
                record(
                    "geo",
                    "NULLABLE",
                    None,
                    vec![
                        column("lat", "FLOAT", "REQUIRED", Some("degrees")),
                        column("lon", "FLOAT", "REQUIRED", Some("degrees")),
                        record(
                            "source",
                            "REPEATED",
                            Some("who said so"),
                            vec![column("who", "STRING", "NULLABLE", None)],
                        ),
                    ],
                ),
            ],
        ),
        // Not `at`: bqemulator does not quote nested names in the DuckDB
        // table it makes, so a keyword there is a 500.
        record("events", "REPEATED", None, vec![column("happened", "TIMESTAMP", "REQUIRED", None)]),
    ]
}

/// `fields` as the REST API spells them (the mode always given, as the
/// emulator does).
fn rest_fields(fields: &[SchemaField]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                let mut json = json!({"name": f.name, "type": f.field_type, "mode": f.mode});
                if let Some(description) = &f.description {
                    json["description"] = json!(description);
                }
                if !f.fields.is_empty() {
                    json["fields"] = rest_fields(&f.fields);
                }
                json
            })
            .collect(),
    )
}

fn table_settings(schema: Vec<SchemaField>) -> TableSettings {
    TableSettings {
        schema,
        description: Some("first".to_string()),
        friendly_name: Some("People".to_string()),
        labels: labels(&[("env", "dev"), ("team", "data")]),
        ..TableSettings::default()
    }
}

#[tokio::test]
async fn datasets_are_created_listed_updated_and_deleted() {
    let bq = bq().await;
    let project = project("datasets");
    let settings = DatasetSettings {
        location: Some("US".to_string()),
        description: Some("for tests".to_string()),
        friendly_name: Some("Tests".to_string()),
        labels: labels(&[("a", "1"), ("b", "2")]),
        default_table_expiration_ms: Some(3_600_000),
    };
    let created = bq.create_dataset(&project, "ds", &settings).await.expect("create");
    assert_eq!((created.dataset.as_str(), &created.settings), ("ds", &settings));
    assert!(!created.etag.is_empty());
    assert!(created.created.is_some() && created.modified.is_some());
    let got = bq.get_dataset(&project, "ds").await.expect("get");
    assert_eq!(got, created);

    let again = bq.create_dataset(&project, "ds", &settings).await.expect_err("exists");
    assert_eq!(again.kind, ErrorKind::AlreadyExists, "{again}");
    assert!(again.message.contains("create dataset") && again.message.contains("ds"), "{again}");

    bq.create_dataset(&project, "other", &DatasetSettings::default()).await.expect("create another");
    let page = bq.list_datasets(&project, None).await.expect("list");
    let names: Vec<_> = page.items.iter().map(|d| d.dataset.as_str()).collect();
    assert_eq!(names, ["ds", "other"]);
    assert_eq!(page.items[0].location.as_deref(), Some("US"));
    // bqemulator has no paging (all in one page): no token to follow here.
    assert_eq!(page.next_page_token, None);

    // One label removed, one changed, the friendly name cleared.
    let changed = DatasetSettings {
        description: Some("changed".to_string()),
        friendly_name: None,
        labels: labels(&[("a", "one")]),
        default_table_expiration_ms: Some(7_200_000),
        ..settings.clone()
    };
    let updated = bq.update_dataset(&project, "ds", &changed).await.expect("update");
    assert_eq!(updated.settings, changed);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(bq.get_dataset(&project, "ds").await.expect("get").settings, changed);

    // The last label goes too (an empty label map is sent, not left out).
    let bare = DatasetSettings { labels: BTreeMap::new(), description: None, ..changed };
    bq.update_dataset(&project, "ds", &bare).await.expect("update");
    assert_eq!(bq.get_dataset(&project, "ds").await.expect("get").settings, bare);
    let rest = rest_get(&format!("{project}/datasets/ds"));
    assert_eq!((rest.get("labels"), rest.get("description")), (None, None), "{rest}");
    assert_eq!(rest["defaultTableExpirationMs"], "7200000");

    bq.delete_dataset(&project, "ds").await.expect("delete");
    assert_eq!(bq.get_dataset(&project, "ds").await.expect_err("deleted").kind, ErrorKind::NotFound);
    assert_eq!(bq.delete_dataset(&project, "ds").await.expect_err("gone").kind, ErrorKind::NotFound);
    let names: Vec<_> =
        bq.list_datasets(&project, None).await.expect("list").items.into_iter().map(|d| d.dataset).collect();
    assert_eq!(names, ["other"]);
}

#[tokio::test]
async fn missing_datasets_and_tables_are_not_found() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "missing").await;
    let missing = bq.get_dataset(&project, "nope").await.expect_err("no dataset");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert!(missing.message.contains("get dataset") && missing.message.contains("nope"), "{missing}");
    let missing = bq.get_table(&project, &dataset, "nope").await.expect_err("no table");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert!(missing.message.contains("Not found"), "the service's message is kept: {missing}");
    assert_eq!(bq.get_table(&project, "nope", "t").await.expect_err("no dataset").kind, ErrorKind::NotFound);
    let update = bq
        .update_table(&UpdateTable {
            project: project.clone(),
            dataset: dataset.clone(),
            table: "nope".to_string(),
            ..Default::default()
        })
        .await;
    assert_eq!(update.expect_err("no table").kind, ErrorKind::NotFound);
    assert_eq!(bq.delete_table(&project, &dataset, "nope").await.expect_err("no table").kind, ErrorKind::NotFound);
    let update = bq.update_dataset(&project, "nope", &DatasetSettings::default()).await;
    assert_eq!(update.expect_err("no dataset").kind, ErrorKind::NotFound);
    // Not checked here: bqemulator lists a missing dataset's tables as an
    // empty list (BigQuery: 404), and creating a table in a missing dataset
    // is a 500 (BigQuery: 404).
}

#[tokio::test]
async fn a_nested_schema_comes_back_exactly() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "nested").await;
    let settings = table_settings(nested_schema());
    let created = bq.create_table(&project, &dataset, "people", &settings).await.expect("create");
    assert_eq!(created.settings, settings);
    assert_eq!((created.dataset.as_str(), created.table.as_str()), (dataset.as_str(), "people"));
    assert_eq!(created.table_type, "TABLE");
    assert_eq!((created.num_rows, created.num_bytes), (Some(0), Some(0)));
    assert!(created.created.is_some() && created.modified.is_some() && !created.etag.is_empty());

    let got = bq.get_table(&project, &dataset, "people").await.expect("get");
    assert_eq!(got.settings.schema, nested_schema());
    assert_eq!(got, created);
    // bqemulator never returns a table's location (BigQuery: the dataset's).

    // What the REST API gives another client.
    let rest = rest_get(&format!("{project}/datasets/{dataset}/tables/people"));
    assert_eq!(rest["schema"]["fields"], rest_fields(&nested_schema()));
    assert_eq!(rest["labels"], json!({"env": "dev", "team": "data"}));
    assert_eq!((&rest["description"], &rest["friendlyName"]), (&json!("first"), &json!("People")));
    assert_eq!(rest["etag"], json!(got.etag));
}

#[tokio::test]
async fn an_update_adds_a_column_changes_the_description_and_removes_a_label() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "update").await;
    let schema = vec![column("id", "INTEGER", "REQUIRED", None), column("name", "STRING", "NULLABLE", None)];
    let created = bq.create_table(&project, &dataset, "t", &table_settings(schema.clone())).await.expect("create");

    let mut wider = schema.clone();
    wider.push(column("added", "STRING", "NULLABLE", Some("new column")));
    let changed = TableSettings {
        schema: wider.clone(),
        description: Some("second".to_string()),
        labels: labels(&[("env", "dev")]),
        ..created.settings.clone()
    };
    let updated = bq
        .update_table(&UpdateTable {
            project: project.clone(),
            dataset: dataset.clone(),
            table: "t".to_string(),
            settings: changed.clone(),
            etag: Some(created.etag.clone()),
        })
        .await
        .expect("update");
    assert_eq!(updated.settings, changed);
    assert_ne!(updated.etag, created.etag, "every change makes a new etag");
    assert_eq!(updated.created, created.created);
    assert!(updated.modified >= created.modified);
    let got = bq.get_table(&project, &dataset, "t").await.expect("get");
    assert_eq!(got, updated);
    let rest = rest_get(&format!("{project}/datasets/{dataset}/tables/t"));
    assert_eq!(rest["labels"], json!({"env": "dev"}));
    assert_eq!(rest["description"], "second");
    assert_eq!(rest["schema"]["fields"], rest_fields(&wider));

    // At an etag the table has left: refused, and nothing changes.
    // (bqemulator ignores If-Match; ciofs checks the etag it reads first.)
    let stale = TableSettings { description: Some("third".to_string()), ..changed.clone() };
    let refused = bq
        .update_table(&UpdateTable {
            project: project.clone(),
            dataset: dataset.clone(),
            table: "t".to_string(),
            settings: stale.clone(),
            etag: Some(created.etag.clone()),
        })
        .await
        .expect_err("stale");
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed, "{refused}");
    assert_eq!(bq.get_table(&project, &dataset, "t").await.expect("get"), updated);

    // Without an etag; the last label and the friendly name go.
    let bare = TableSettings { labels: BTreeMap::new(), friendly_name: None, ..changed };
    let updated = bq
        .update_table(&UpdateTable {
            project: project.clone(),
            dataset: dataset.clone(),
            table: "t".to_string(),
            settings: bare.clone(),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(updated.settings, bare);
    let rest = rest_get(&format!("{project}/datasets/{dataset}/tables/t"));
    assert_eq!((rest.get("labels"), rest.get("friendlyName")), (None, None), "{rest}");
    // Not checked here: bqemulator accepts any schema change (a dropped
    // column, a new type); BigQuery refuses them, and the core refuses them
    // before sending.
}

#[tokio::test]
async fn partitioning_and_clustering_are_kept() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "partition").await;
    let settings = TableSettings {
        time_partitioning: Some(TimePartitioning {
            partition_type: "DAY".to_string(),
            field: Some("at".to_string()),
            expiration_ms: Some(86_400_000),
        }),
        clustering: vec!["id".to_string()],
        // Sent, but bqemulator drops both (BigQuery keeps them); their
        // encoding is checked by convert.rs's unit tests.
        expiration_time: Some(SystemTime::now() + Duration::from_secs(86_400)),
        require_partition_filter: true,
        ..table_settings(vec![column("id", "INTEGER", "REQUIRED", None), column("at", "TIMESTAMP", "NULLABLE", None)])
    };
    let created = bq.create_table(&project, &dataset, "events", &settings).await.expect("create");
    let got = bq.get_table(&project, &dataset, "events").await.expect("get");
    assert_eq!(got, created);
    assert_eq!(got.settings.time_partitioning, settings.time_partitioning);
    assert_eq!(got.settings.clustering, ["id"]);
    let rest = rest_get(&format!("{project}/datasets/{dataset}/tables/events"));
    assert_eq!(rest["timePartitioning"]["field"], "at");
    assert_eq!(rest["clustering"], json!({"fields": ["id"]}));
    // Not checked here: range partitioning, which bqemulator drops too.
}

#[tokio::test]
async fn a_view_is_created_with_its_query() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "view").await;
    let settings = TableSettings {
        view_query: Some("SELECT 1 AS x".to_string()),
        description: Some("a view".to_string()),
        ..TableSettings::default()
    };
    let created = bq.create_table(&project, &dataset, "v", &settings).await.expect("create view");
    assert_eq!(created.table_type, "VIEW");
    let got = bq.get_table(&project, &dataset, "v").await.expect("get");
    assert_eq!((got.table_type.as_str(), got.settings.description.as_deref()), ("VIEW", Some("a view")));
    // bqemulator keeps a view's query but never returns it in tables.get
    // (BigQuery returns `view.query`); that the query reached it, as
    // standard SQL, shows in INFORMATION_SCHEMA and in the view's rows.
    let definitions = rest_query(&project, &format!("SELECT view_definition FROM {dataset}.INFORMATION_SCHEMA.VIEWS"));
    assert_eq!(definitions, ["SELECT 1 AS x"]);
    assert_eq!(rest_query(&project, &format!("SELECT x FROM {dataset}.v")), ["1"]);
    let listed = bq.list_tables(&project, &dataset, None).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!((listed.items[0].table.as_str(), listed.items[0].table_type.as_str()), ("v", "VIEW"));
}

#[tokio::test]
async fn tables_are_listed_and_deleted_and_a_full_dataset_stays() {
    let bq = bq().await;
    let (project, dataset) = new_dataset(&bq, "tables").await;
    for table in ["b", "a"] {
        bq.create_table(&project, &dataset, table, &table_settings(vec![column("x", "STRING", "NULLABLE", None)]))
            .await
            .expect("create");
    }
    let again = bq.create_table(&project, &dataset, "a", &TableSettings::default()).await.expect_err("exists");
    assert_eq!(again.kind, ErrorKind::AlreadyExists, "{again}");
    let page = bq.list_tables(&project, &dataset, None).await.expect("list");
    let mut names: Vec<_> = page.items.iter().map(|t| t.table.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert!(page.items.iter().all(|t| t.table_type == "TABLE" && t.created.is_some() && t.dataset == dataset));
    assert_eq!(page.next_page_token, None);

    let full = bq.delete_dataset(&project, &dataset).await.expect_err("not empty");
    assert_eq!(full.kind, ErrorKind::InvalidArgument, "{full}");
    assert!(bq.get_table(&project, &dataset, "a").await.is_ok(), "contents are never deleted");

    bq.delete_table(&project, &dataset, "a").await.expect("delete");
    assert_eq!(bq.get_table(&project, &dataset, "a").await.expect_err("deleted").kind, ErrorKind::NotFound);
    assert_eq!(bq.delete_table(&project, &dataset, "a").await.expect_err("gone").kind, ErrorKind::NotFound);
    bq.delete_table(&project, &dataset, "b").await.expect("delete");
    assert!(bq.list_tables(&project, &dataset, None).await.expect("list").items.is_empty());
    bq.delete_dataset(&project, &dataset).await.expect("delete the empty dataset");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_bounded_time() {
    let retry = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        stall_timeout: Duration::from_secs(2),
        window: Duration::from_secs(10),
    };
    // Port 9 (discard) has no listener: connections are refused.
    let config = BigQueryConfig { emulator: Some("http://127.0.0.1:9".to_string()), retry };
    let bq = GoogleBigQuery::connect(config).await.expect("a client connects lazily");
    let started = Instant::now();
    let error = bq.get_dataset("p", "d").await.expect_err("nothing listens");
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.message.contains("get dataset p.d"), "{error}");
    let error = bq
        .update_table(&UpdateTable {
            project: "p".to_string(),
            dataset: "d".to_string(),
            table: "t".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("nothing listens");
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
