use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ciofs_backends::bigquery::{
    DatasetMeta, DatasetSettings, RangePartitioning, SchemaField, TableMeta, TableSettings, TimePartitioning,
};

use super::*;

fn at(text: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(text).expect("a test time").into()
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("UTF-8")
}

use crate::core::errors::refused_message as einval;

/// The schema document of the format's specification, verbatim.
const SEED_SCHEMA: &str = r#"{
  "version": "1",
  "type": "bigquery-schema",
  "fields": [
    {
      "name": "id",
      "type": "INTEGER",
      "mode": "REQUIRED",
      "description": "Unique identifier"
    },
    {
      "name": "data",
      "type": "RECORD",
      "mode": "NULLABLE",
      "fields": [
        {
          "name": "value",
          "type": "STRING",
          "mode": "NULLABLE"
        }
      ]
    }
  ]
}
"#;

fn seed_fields() -> Vec<SchemaField> {
    vec![
        SchemaField { description: Some("Unique identifier".into()), ..SchemaField::new("id", "INTEGER", "REQUIRED") },
        SchemaField {
            fields: vec![SchemaField::new("value", "STRING", "NULLABLE")],
            ..SchemaField::new("data", "RECORD", "NULLABLE")
        },
    ]
}

#[test]
fn schema_renders_as_the_seed_shows_it() {
    assert_eq!(text(render_schema(&seed_fields())), SEED_SCHEMA);
    assert_eq!(parse_schema(SEED_SCHEMA.as_bytes()).unwrap(), seed_fields());
}

/// Two levels of RECORDs, descriptions (one with quotes and a newline),
/// alias spellings and every mode.
fn nested_schema() -> Vec<SchemaField> {
    let inner = SchemaField {
        description: Some("inner \"quoted\"\nsecond line".into()),
        fields: vec![SchemaField::new("x", "INT64", "REQUIRED"), SchemaField::new("y", "FLOAT64", "REPEATED")],
        ..SchemaField::new("inner", "STRUCT", "REPEATED")
    };
    vec![
        SchemaField { description: Some("Unique identifier".into()), ..SchemaField::new("id", "INTEGER", "REQUIRED") },
        SchemaField {
            description: Some("payload".into()),
            fields: vec![
                SchemaField::new("value", "STRING", "NULLABLE"),
                inner,
                SchemaField::new("at", "TIMESTAMP", "NULLABLE"),
            ],
            ..SchemaField::new("data", "RECORD", "NULLABLE")
        },
        SchemaField::new("flag", "BOOL", "NULLABLE"),
        SchemaField::new("ünïcode", "GEOGRAPHY", "NULLABLE"),
    ]
}

#[test]
fn schema_round_trips_exactly_and_renders_stably() {
    let fields = nested_schema();
    let rendered = render_schema(&fields);
    assert_eq!(parse_schema(&rendered).unwrap(), fields);
    assert_eq!(render_schema(&fields), rendered);
    assert_eq!(render_schema(&parse_schema(&rendered).unwrap()), rendered);
}

#[test]
fn schema_accepts_any_case_and_a_missing_mode_and_header() {
    let written =
        br#"{"fields": [{"name": "a", "type": "int64"}, {"name": "b", "type": "string", "mode": "repeated"}]}"#;
    assert_eq!(
        parse_schema(written).unwrap(),
        vec![SchemaField::new("a", "INT64", "NULLABLE"), SchemaField::new("b", "STRING", "REPEATED")]
    );
}

/// Found by fuzzing (fuzz/ schema_json): an empty mode is NULLABLE, as a
/// missing one is, so the schema parsed is the one rendered back.
#[test]
fn schema_reads_an_empty_mode_as_nullable() {
    let written = br#"{"fields": [{"name": "a", "type": "STRING", "mode": ""}]}"#;
    let parsed = parse_schema(written).unwrap();
    assert_eq!(parsed, vec![SchemaField::new("a", "STRING", "NULLABLE")]);
    assert_eq!(parse_schema(&render_schema(&parsed)).unwrap(), parsed);
}

#[test]
fn schema_json_errors_name_line_and_column() {
    let trailing_comma = "{\n  \"fields\": [\n    {\"name\": \"a\", \"type\": \"STRING\",}\n  ]\n}\n";
    let message = einval(parse_schema(trailing_comma.as_bytes()));
    assert_eq!(message, "schema.json: invalid JSON at line 3, column 36: trailing comma");
    let cut = "{\n  \"fields\": [\n";
    let message = einval(parse_schema(cut.as_bytes()));
    assert!(message.starts_with("schema.json: invalid JSON at line 3, column 0: EOF"), "{message}");
    let wrong_type = "{\"fields\": [\n  {\"name\": 7, \"type\": \"STRING\"}\n]}";
    let message = einval(parse_schema(wrong_type.as_bytes()));
    assert!(message.starts_with("schema.json: at line 2, column 12: invalid type: integer `7`"), "{message}");
}

#[test]
fn schema_refuses_unknown_keys() {
    let top = br#"{"version": "1", "feilds": []}"#;
    let message = einval(parse_schema(top));
    assert!(message.contains("unknown field `feilds`") && message.contains("line 1, column 25"), "{message}");
    let nested = br#"{"fields": [{"name": "a", "type": "RECORD", "fields": [{"name": "b", "type": "STRING", "descripton": "x"}]}]}"#;
    assert!(einval(parse_schema(nested)).contains("unknown field `descripton`"));
}

#[test]
fn schema_header_must_match_when_present() {
    let version = br#"{"version": "2", "fields": [{"name": "a", "type": "STRING"}]}"#;
    assert!(einval(parse_schema(version)).contains("version \"2\" is not supported"));
    let kind = br#"{"type": "bigquery-table-config", "fields": [{"name": "a", "type": "STRING"}]}"#;
    assert!(einval(parse_schema(kind)).contains("type \"bigquery-table-config\" does not belong here"));
}

#[test]
fn schema_is_validated_on_its_own() {
    let missing = br#"{"version": "1", "type": "bigquery-schema"}"#;
    assert!(einval(parse_schema(missing)).contains("missing field `fields`"));
    assert!(einval(parse_schema(br#"{"fields": []}"#)).contains("no columns"));
    let unknown = br#"{"fields": [{"name": "a", "type": "VARCHAR"}]}"#;
    assert!(einval(parse_schema(unknown)).contains("column `a`: unknown type \"VARCHAR\""));
    let duplicate = br#"{"fields": [{"name": "a", "type": "STRING"}, {"name": "A", "type": "STRING"}]}"#;
    assert!(einval(parse_schema(duplicate)).contains("columns `a` and `A` have the same name"));
    let empty_record = br#"{"fields": [{"name": "r", "type": "struct", "fields": []}]}"#;
    assert!(einval(parse_schema(empty_record)).contains("column `r`: a RECORD needs at least one field"));
}

// ---------------------------------------------------------------------------
// config.json

fn table_meta() -> TableMeta {
    TableMeta {
        dataset: "ds".into(),
        table: "t".into(),
        table_type: "TABLE".into(),
        settings: TableSettings {
            schema: seed_fields(),
            description: Some("User-facing description".into()),
            expiration_time: Some(at("2027-01-17T00:00:00Z")),
            labels: BTreeMap::from([("team".into(), "data".into()), ("env".into(), "production".into())]),
            ..TableSettings::default()
        },
        num_rows: Some(1_000_000),
        num_bytes: Some(1_073_741_824),
        created: Some(at("2026-01-17T12:00:00Z")),
        modified: Some(at("2026-01-17T14:30:00Z")),
        location: Some("europe-west3".into()),
        etag: "abc123".into(),
    }
}

/// The seed's 3.3 keys with its values, in its order, and the keys the
/// seed left out (friendly name, partitioning, clustering) in between.
const SEED_CONFIG: &str = r#"{
  "version": "1",
  "type": "bigquery-table-config",
  "description": "User-facing description",
  "friendly_name": null,
  "expiration_time": "2027-01-17T00:00:00Z",
  "labels": {
    "env": "production",
    "team": "data"
  },
  "require_partition_filter": false,
  "encryption": null,
  "time_partitioning": null,
  "range_partitioning": null,
  "clustering": []
}
"#;

#[test]
fn config_renders_as_the_seed_shows_it() {
    assert_eq!(text(render_table_config(&table_meta())), SEED_CONFIG);
    let meta = table_meta();
    assert_eq!(
        parse_table_config(SEED_CONFIG.as_bytes(), &TableSettings::default()).unwrap(),
        TableSettings { schema: Vec::new(), ..meta.settings }
    );
}

fn partitioned_meta() -> TableMeta {
    let mut meta = table_meta();
    meta.settings.friendly_name = Some("Events".into());
    meta.settings.require_partition_filter = true;
    meta.settings.time_partitioning =
        Some(TimePartitioning { partition_type: "DAY".into(), field: Some("ts".into()), expiration_ms: Some(5) });
    meta.settings.clustering = vec!["a".into(), "b".into()];
    meta
}

#[test]
fn config_shows_partitioning_and_clustering() {
    let value: serde_json::Value = serde_json::from_slice(&render_table_config(&partitioned_meta())).unwrap();
    assert_eq!(value["time_partitioning"], serde_json::json!({"type": "DAY", "field": "ts", "expiration_ms": 5}));
    assert_eq!(value["clustering"], serde_json::json!(["a", "b"]));
    let mut meta = table_meta();
    meta.settings.range_partitioning = Some(RangePartitioning { field: "n".into(), start: 0, end: 100, interval: 10 });
    let value: serde_json::Value = serde_json::from_slice(&render_table_config(&meta)).unwrap();
    let expected = serde_json::json!({"field": "n", "start": 0, "end": 100, "interval": 10});
    assert_eq!(value["range_partitioning"], expected);
}

#[test]
fn config_shows_a_query_only_for_views() {
    let mut meta = table_meta();
    meta.settings.view_query = Some("SELECT 1".into());
    meta.settings.materialized_view_query = Some("SELECT 2".into());
    let table = text(render_table_config(&meta));
    assert!(!table.contains("view_query"), "{table}");
    meta.table_type = "VIEW".into();
    let view = text(render_table_config(&meta));
    assert!(view.ends_with("  \"clustering\": [],\n  \"view_query\": \"SELECT 1\"\n}\n"), "{view}");
    assert!(!view.contains("materialized_view_query"));
    meta.table_type = "MATERIALIZED_VIEW".into();
    let materialized = text(render_table_config(&meta));
    assert!(materialized.ends_with("\"materialized_view_query\": \"SELECT 2\"\n}\n"), "{materialized}");
}

#[test]
fn config_round_trips() {
    let mut view = table_meta();
    view.table_type = "VIEW".into();
    view.settings.view_query = Some("SELECT 1".into());
    for meta in [table_meta(), partitioned_meta(), view] {
        let rendered = render_table_config(&meta);
        assert_eq!(parse_table_config(&rendered, &meta.settings).unwrap(), meta.settings);
        // Against an empty table too: every key is in the rendering.
        let fresh = parse_table_config(&rendered, &TableSettings::default()).unwrap();
        assert_eq!(TableSettings { schema: meta.settings.schema.clone(), ..fresh }, meta.settings);
        assert_eq!(render_table_config(&meta), rendered);
    }
}

#[test]
fn config_merges_at_the_top_level() {
    let current = partitioned_meta().settings;
    // Absent keys keep their value.
    assert_eq!(parse_table_config(b"{}", &current).unwrap(), current);
    let edited = br#"{"description": "new", "labels": {"env": "dev"}}"#;
    let merged = parse_table_config(edited, &current).unwrap();
    assert_eq!(merged.description.as_deref(), Some("new"));
    // A present `labels` replaces the map: `team` is gone.
    assert_eq!(merged.labels, BTreeMap::from([("env".to_string(), "dev".to_string())]));
    assert_eq!(
        merged,
        TableSettings { description: merged.description.clone(), labels: merged.labels.clone(), ..current.clone() }
    );
    // null clears.
    let cleared = br#"{"description": null, "friendly_name": null, "expiration_time": null,
        "time_partitioning": null, "labels": null, "clustering": null}"#;
    let cleared = parse_table_config(cleared, &current).unwrap();
    assert_eq!(cleared.description, None);
    assert_eq!(cleared.friendly_name, None);
    assert_eq!(cleared.expiration_time, None);
    assert_eq!(cleared.time_partitioning, None);
    assert!(cleared.labels.is_empty() && cleared.clustering.is_empty());
    assert!(cleared.require_partition_filter, "absent, so kept");
    assert_eq!(cleared.schema, current.schema);
}

#[test]
fn config_partitioning_type_is_upper_cased_and_checked() {
    let hourly = br#"{"time_partitioning": {"type": "hour"}}"#;
    let settings = parse_table_config(hourly, &TableSettings::default()).unwrap();
    assert_eq!(
        settings.time_partitioning,
        Some(TimePartitioning { partition_type: "HOUR".into(), ..Default::default() })
    );
    let weekly = br#"{"time_partitioning": {"type": "WEEK"}}"#;
    assert!(einval(parse_table_config(weekly, &TableSettings::default())).contains("\"WEEK\" is not one of DAY"));
}

#[test]
fn config_refusals_name_line_and_column() {
    let current = TableSettings::default();
    let refused: &[(&str, &str)] = &[
        (
            "{\n  \"require_partition_filter\": \"yes\"\n}",
            "config.json: at line 2, column 35: invalid type: string \"yes\", expected a boolean",
        ),
        ("{\n  \"labels\": {\"a\": 1}\n}", "config.json: at line 2, column 19: invalid type: integer `1`"),
        ("{\n  \"sheme\": 1\n}", "config.json: at line 2, column 9: unknown field `sheme`"),
        ("{\"time_partitioning\": {\"type\": \"DAY\", \"expire\": 1}}", "unknown field `expire`"),
        ("{\"encryption\": {\"kms_key_name\": \"k\"}}", "customer-managed encryption keys are not supported"),
        ("{\"expiration_time\": \"tomorrow\"}", "expiration_time \"tomorrow\" is not an RFC 3339 time"),
        ("{\"labels\": {}\n,}", "config.json: invalid JSON at line 2, column 2: trailing comma"),
        ("{\"type\": \"bigquery-schema\"}", "config.json: type \"bigquery-schema\" does not belong here"),
    ];
    for (document, expected) in refused {
        let message = einval(parse_table_config(document.as_bytes(), &current));
        assert!(message.starts_with(expected) || message.contains(expected), "{document}: {message}");
    }
    parse_table_config(br#"{"encryption": null}"#, &current).unwrap();
}

#[test]
fn config_expiration_keeps_its_offset_and_fraction() {
    let settings =
        parse_table_config(br#"{"expiration_time": "2027-01-17T01:00:00.5+01:00"}"#, &TableSettings::default());
    assert_eq!(settings.unwrap().expiration_time, Some(at("2027-01-17T00:00:00Z") + Duration::from_millis(500)));
}

// ---------------------------------------------------------------------------
// _status.json and _dataset.json

/// The table config document of the format's specification, with the second "type" named `table_type`.
const SEED_STATUS: &str = r#"{
  "version": "1",
  "type": "bigquery-table-status",
  "num_bytes": 1073741824,
  "num_rows": 1000000,
  "created": "2026-01-17T12:00:00Z",
  "modified": "2026-01-17T14:30:00Z",
  "location": "europe-west3",
  "table_type": "TABLE",
  "etag": "abc123"
}
"#;

#[test]
fn status_renders_as_the_seed_shows_it() {
    assert_eq!(text(render_table_status(&table_meta())), SEED_STATUS);
    let unknown = TableMeta { table_type: "VIEW".into(), etag: "e".into(), ..TableMeta::default() };
    let value: serde_json::Value = serde_json::from_slice(&render_table_status(&unknown)).unwrap();
    assert_eq!(value["num_rows"], serde_json::Value::Null);
    assert_eq!(value["created"], serde_json::Value::Null);
    assert_eq!(value["table_type"], "VIEW");
}

#[test]
fn dataset_has_the_documented_keys_in_order() {
    let meta = DatasetMeta {
        dataset: "sales".into(),
        settings: DatasetSettings {
            location: Some("EU".into()),
            description: Some("Sales data".into()),
            friendly_name: None,
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            default_table_expiration_ms: Some(3_600_000),
        },
        created: Some(at("2026-01-17T12:00:00Z")),
        modified: Some(at("2026-01-17T14:30:00.250Z")),
        etag: "etag1".into(),
    };
    let expected = r#"{
  "version": "1",
  "type": "bigquery-dataset-metadata",
  "dataset_id": "sales",
  "location": "EU",
  "description": "Sales data",
  "friendly_name": null,
  "labels": {
    "env": "prod"
  },
  "default_table_expiration_ms": 3600000,
  "created": "2026-01-17T12:00:00Z",
  "modified": "2026-01-17T14:30:00.250Z",
  "etag": "etag1"
}
"#;
    assert_eq!(text(render_dataset(&meta)), expected);
    assert_eq!(render_dataset(&meta), render_dataset(&meta.clone()));
}

#[test]
fn dataset_documents_merge_and_refuse_a_new_location() {
    let current = DatasetSettings {
        location: Some("US".to_string()),
        description: Some("old".to_string()),
        labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
        ..DatasetSettings::default()
    };
    let meta = DatasetMeta { dataset: "ds".to_string(), settings: current.clone(), ..DatasetMeta::default() };
    // As rendered (server fields included): unchanged.
    assert_eq!(parse_dataset(&render_dataset(&meta), &current).unwrap(), current);
    let labels_only = parse_dataset(br#"{"labels": {"team": "data"}}"#, &current).unwrap();
    assert_eq!(labels_only.description.as_deref(), Some("old"), "absent keeps");
    assert_eq!(labels_only.labels, BTreeMap::from([("team".to_string(), "data".to_string())]));
    assert_eq!(parse_dataset(br#"{"description": null}"#, &current).unwrap().description, None, "null clears");
    assert_eq!(parse_dataset(br#"{"location": "us"}"#, &current).unwrap(), current, "same location, any case");
    assert!(einval(parse_dataset(br#"{"location": "EU"}"#, &current)).contains("location cannot change"));
    assert!(einval(parse_dataset(br#"{"colour": "blue"}"#, &current)).contains("colour"));
}
