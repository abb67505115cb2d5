//! Between ciofs's BigQuery types and the API's resources (crate
//! `google-cloud-bigquery-v2`'s `model`, or the JSON of `tables.update`),
//! field by field. Every rule of the API's encoding is here: absent mode is
//! NULLABLE, times are milliseconds since the epoch, int64 fields of a
//! range are decimal strings, an empty string means "not set".

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use google_cloud_bigquery_v2::model;
use serde_json::{Map, Value};

use crate::bigquery::{
    DatasetListEntry, DatasetMeta, DatasetSettings, RangePartitioning, SchemaField, TableListEntry, TableMeta,
    TableSettings, TimePartitioning,
};
use crate::error::{BackendError, BackendResult, ErrorKind};

/// The table keys `update_table` replaces: what `TableSettings` holds.
/// Everything else in the resource is sent back as it was read.
const TABLE_SETTINGS_KEYS: &[&str] = &[
    "schema",
    "description",
    "friendlyName",
    "labels",
    "expirationTime",
    "requirePartitionFilter",
    "timePartitioning",
    "rangePartitioning",
    "clustering",
    "view",
    "materializedView",
];

/// Settings whose object is merged into the current one rather than
/// replacing it: a view's user-defined functions, a materialized view's
/// refresh settings are kept.
const MERGED_KEYS: &[&str] = &["view", "materializedView"];

/// The dataset keys `update_dataset` replaces.
const DATASET_SETTINGS_KEYS: &[&str] = &["description", "friendlyName", "labels", "defaultTableExpirationMs"];

/// A time the API gives in milliseconds since the epoch; 0 (or absent) is
/// none.
pub(super) fn time_from_ms(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok().filter(|ms| *ms > 0)?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Milliseconds since the epoch, as the API wants them (before the epoch: 0).
pub(super) fn ms_from_time(time: SystemTime) -> i64 {
    let ms = time.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

fn sorted(labels: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

// ---------------------------------------------------------------- schema ---

pub(super) fn schema_fields(fields: Vec<model::TableFieldSchema>) -> Vec<SchemaField> {
    fields.into_iter().map(schema_field).collect()
}

fn schema_field(field: model::TableFieldSchema) -> SchemaField {
    SchemaField {
        name: field.name,
        field_type: field.r#type,
        // The API leaves the mode out for NULLABLE columns.
        mode: non_empty(field.mode).unwrap_or_else(|| "NULLABLE".to_string()),
        description: field.description,
        fields: schema_fields(field.fields),
    }
}

pub(super) fn api_fields(fields: &[SchemaField]) -> Vec<model::TableFieldSchema> {
    fields.iter().map(api_field).collect()
}

fn api_field(field: &SchemaField) -> model::TableFieldSchema {
    model::TableFieldSchema::new()
        .set_name(field.name.clone())
        .set_type(field.field_type.clone())
        .set_mode(field.mode.clone())
        .set_or_clear_description(field.description.clone())
        .set_fields(api_fields(&field.fields))
}

// ---------------------------------------------------------------- tables ---

/// A table as ciofs shows it. `dataset` and `table` name it when the
/// resource's reference is missing.
pub(super) fn table_meta(dataset: &str, table: &str, api: model::Table) -> BackendResult<TableMeta> {
    let what = format!("table {dataset}.{table}");
    let reference = api.table_reference.clone().unwrap_or_default();
    let settings = table_settings(&api, &what)?;
    Ok(TableMeta {
        dataset: non_empty(reference.dataset_id).unwrap_or_else(|| dataset.to_string()),
        table: non_empty(reference.table_id).unwrap_or_else(|| table.to_string()),
        // The API's default type.
        table_type: non_empty(api.r#type).unwrap_or_else(|| "TABLE".to_string()),
        settings,
        num_rows: api.num_rows,
        num_bytes: api.num_bytes.and_then(|n| u64::try_from(n).ok()),
        created: time_from_ms(api.creation_time),
        modified: time_from_ms(i64::try_from(api.last_modified_time).unwrap_or(i64::MAX)),
        location: non_empty(api.location),
        etag: api.etag,
    })
}

fn table_settings(api: &model::Table, what: &str) -> BackendResult<TableSettings> {
    let time_partitioning = api.time_partitioning.as_ref();
    Ok(TableSettings {
        schema: schema_fields(api.schema.clone().unwrap_or_default().fields),
        description: api.description.clone(),
        friendly_name: api.friendly_name.clone(),
        labels: sorted(api.labels.clone()),
        expiration_time: api.expiration_time.and_then(time_from_ms),
        // Either spelling: the top-level field, or the deprecated one inside
        // timePartitioning (which the crate keeps among unknown fields).
        require_partition_filter: api.require_partition_filter.unwrap_or(false)
            || time_partitioning.is_some_and(deprecated_require_partition_filter),
        time_partitioning: time_partitioning.map(|tp| TimePartitioning {
            partition_type: tp.r#type.clone(),
            field: tp.field.clone().filter(|f| !f.is_empty()),
            expiration_ms: tp.expiration_ms,
        }),
        range_partitioning: api.range_partitioning.as_ref().map(|rp| range_partitioning(rp, what)).transpose()?,
        clustering: api.clustering.as_ref().map(|c| c.fields.clone()).unwrap_or_default(),
        view_query: api.view.as_ref().and_then(|v| non_empty(v.query.clone())),
        materialized_view_query: api.materialized_view.as_ref().and_then(|v| non_empty(v.query.clone())),
    })
}

/// `timePartitioning.requirePartitionFilter`, which the crate's model no
/// longer names: read back from the JSON it would send.
fn deprecated_require_partition_filter(tp: &model::TimePartitioning) -> bool {
    serde_json::to_value(tp).ok().and_then(|v| v.get("requirePartitionFilter")?.as_bool()).unwrap_or(false)
}

fn range_partitioning(api: &model::RangePartitioning, what: &str) -> BackendResult<RangePartitioning> {
    let range = api.range.clone().unwrap_or_default();
    let number = |name: &str, value: &str| {
        value.parse::<i64>().map_err(|_| {
            BackendError::new(
                ErrorKind::Other,
                format!("{what}: range partitioning {name} {value:?} is not an integer"),
            )
        })
    };
    Ok(RangePartitioning {
        field: api.field.clone(),
        start: number("start", &range.start)?,
        end: number("end", &range.end)?,
        interval: number("interval", &range.interval)?,
    })
}

/// The resource `tables.insert` takes for `settings`.
pub(super) fn api_table(project: &str, dataset: &str, table: &str, settings: &TableSettings) -> model::Table {
    let reference = model::TableReference::new().set_project_id(project).set_dataset_id(dataset).set_table_id(table);
    let schema = Some(&settings.schema)
        .filter(|s| !s.is_empty())
        .map(|fields| model::TableSchema::new().set_fields(api_fields(fields)));
    let clustering = Some(&settings.clustering)
        .filter(|c| !c.is_empty())
        .map(|fields| model::Clustering::new().set_fields(fields.clone()));
    model::Table::new()
        .set_table_reference(reference)
        .set_or_clear_schema(schema)
        .set_or_clear_description(settings.description.clone())
        .set_or_clear_friendly_name(settings.friendly_name.clone())
        .set_labels(settings.labels.clone())
        .set_or_clear_expiration_time(settings.expiration_time.map(ms_from_time))
        .set_or_clear_require_partition_filter(settings.require_partition_filter.then_some(true))
        .set_or_clear_time_partitioning(settings.time_partitioning.as_ref().map(api_time_partitioning))
        .set_or_clear_range_partitioning(settings.range_partitioning.as_ref().map(api_range_partitioning))
        .set_or_clear_clustering(clustering)
        .set_or_clear_view(settings.view_query.as_deref().map(api_view))
        .set_or_clear_materialized_view(
            settings.materialized_view_query.as_ref().map(|q| model::MaterializedViewDefinition::new().set_query(q)),
        )
}

fn api_time_partitioning(tp: &TimePartitioning) -> model::TimePartitioning {
    model::TimePartitioning::new()
        .set_type(tp.partition_type.clone())
        .set_or_clear_field(tp.field.clone())
        .set_or_clear_expiration_ms(tp.expiration_ms)
}

fn api_range_partitioning(rp: &RangePartitioning) -> model::RangePartitioning {
    let range = model::range_partitioning::Range::new()
        .set_start(rp.start.to_string())
        .set_end(rp.end.to_string())
        .set_interval(rp.interval.to_string());
    model::RangePartitioning::new().set_field(rp.field.clone()).set_range(range)
}

/// Views are always standard SQL: the API's default is legacy SQL.
fn api_view(query: &str) -> model::ViewDefinition {
    model::ViewDefinition::new().set_query(query).set_use_legacy_sql(false)
}

pub(super) fn table_list_entry(dataset: &str, api: model::ListFormatTable) -> TableListEntry {
    let reference = api.table_reference.unwrap_or_default();
    TableListEntry {
        dataset: non_empty(reference.dataset_id).unwrap_or_else(|| dataset.to_string()),
        table: reference.table_id,
        table_type: non_empty(api.r#type).unwrap_or_else(|| "TABLE".to_string()),
        created: time_from_ms(api.creation_time),
    }
}

// -------------------------------------------------------------- datasets ---

pub(super) fn dataset_meta(dataset: &str, api: model::Dataset) -> DatasetMeta {
    let reference = api.dataset_reference.unwrap_or_default();
    DatasetMeta {
        dataset: non_empty(reference.dataset_id).unwrap_or_else(|| dataset.to_string()),
        settings: DatasetSettings {
            location: non_empty(api.location),
            description: api.description,
            friendly_name: api.friendly_name,
            labels: sorted(api.labels),
            default_table_expiration_ms: api.default_table_expiration_ms,
        },
        created: time_from_ms(api.creation_time),
        modified: time_from_ms(api.last_modified_time),
        etag: api.etag,
    }
}

/// The resource `datasets.insert` takes for `settings`.
pub(super) fn api_dataset(project: &str, dataset: &str, settings: &DatasetSettings) -> model::Dataset {
    let reference = model::DatasetReference::new().set_project_id(project).set_dataset_id(dataset);
    model::Dataset::new()
        .set_dataset_reference(reference)
        .set_location(settings.location.clone().unwrap_or_default())
        .set_or_clear_description(settings.description.clone())
        .set_or_clear_friendly_name(settings.friendly_name.clone())
        .set_labels(settings.labels.clone())
        .set_or_clear_default_table_expiration_ms(settings.default_table_expiration_ms)
}

pub(super) fn dataset_list_entry(api: model::ListFormatDataset) -> DatasetListEntry {
    DatasetListEntry {
        dataset: api.dataset_reference.unwrap_or_default().dataset_id,
        location: non_empty(api.location),
    }
}

// ------------------------------------------------ whole-resource updates ---

/// Replaces, in `current` (a table resource as `tables.get` returned it),
/// every setting with `settings`' value. A setting that is not set is sent
/// as null and labels always as a map, even empty: the crate's encoding
/// leaves both out, and a PUT that leaves a field out keeps it on
/// bqemulator (BigQuery clears it), so a description or the last label
/// could not be removed. The schema is kept when `settings` has none (a
/// view's schema comes from its query).
pub(super) fn overlay_table(current: &mut Value, settings: &TableSettings) -> BackendResult<()> {
    let wanted = to_json(&api_table("", "", "", settings))?;
    let keys = TABLE_SETTINGS_KEYS.iter().filter(|key| **key != "schema" || !settings.schema.is_empty());
    overlay(current, &wanted, keys)
}

/// As `overlay_table`, for a dataset resource and its settings (the
/// location is fixed at creation and left as it is).
pub(super) fn overlay_dataset(current: &mut Value, settings: &DatasetSettings) -> BackendResult<()> {
    let wanted = to_json(&api_dataset("", "", &DatasetSettings { location: None, ..settings.clone() }))?;
    overlay(current, &wanted, DATASET_SETTINGS_KEYS.iter())
}

fn overlay<'a>(current: &mut Value, wanted: &Value, keys: impl Iterator<Item = &'a &'a str>) -> BackendResult<()> {
    let Some(current) = current.as_object_mut() else {
        return Err(BackendError::new(ErrorKind::Other, "the service's resource is not a JSON object"));
    };
    for key in keys {
        let value = match (wanted.get(*key), *key) {
            (Some(Value::Object(fields)), key) if MERGED_KEYS.contains(&key) => {
                let mut merged = current.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
                merged.extend(fields.clone());
                Value::Object(merged)
            }
            (Some(value), _) => value.clone(),
            (None, "labels") => Value::Object(Map::new()),
            (None, _) => Value::Null,
        };
        current.insert(key.to_string(), value);
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(resource: &T) -> BackendResult<Value> {
    serde_json::to_value(resource)
        .map_err(|e| BackendError::new(ErrorKind::Other, format!("encoding a BigQuery resource: {e}")))
}

/// A resource from the service's JSON (a PUT's answer).
pub(super) fn from_json<T: serde::de::DeserializeOwned>(what: &str, json: Value) -> BackendResult<T> {
    serde_json::from_value(json)
        .map_err(|e| BackendError::new(ErrorKind::Other, format!("{what}: the answer could not be decoded: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str, field_type: &str, mode: &str, fields: Vec<SchemaField>) -> SchemaField {
        SchemaField {
            name: name.to_string(),
            field_type: field_type.to_string(),
            mode: mode.to_string(),
            description: Some(format!("about {name}")),
            fields,
        }
    }

    fn settings() -> TableSettings {
        TableSettings {
            schema: vec![
                field("id", "INTEGER", "REQUIRED", vec![]),
                field("r", "RECORD", "REPEATED", vec![field("x", "STRING", "NULLABLE", vec![])]),
            ],
            description: Some("d".to_string()),
            friendly_name: Some("f".to_string()),
            labels: [("a".to_string(), "1".to_string())].into(),
            expiration_time: time_from_ms(4_102_444_800_000),
            require_partition_filter: true,
            time_partitioning: Some(TimePartitioning {
                partition_type: "DAY".to_string(),
                field: Some("ts".to_string()),
                expiration_ms: Some(86_400_000),
            }),
            range_partitioning: None,
            clustering: vec!["id".to_string()],
            view_query: None,
            materialized_view_query: None,
        }
    }

    #[test]
    fn table_settings_round_trip_through_the_api_resource() {
        let api = api_table("p", "d", "t", &settings());
        let meta = table_meta("d", "t", api).unwrap();
        assert_eq!(meta.settings, settings());
        assert_eq!((meta.dataset.as_str(), meta.table.as_str(), meta.table_type.as_str()), ("d", "t", "TABLE"));
    }

    #[test]
    fn the_api_encoding_is_as_documented() {
        let view = TableSettings { view_query: Some("SELECT 1".to_string()), ..TableSettings::default() };
        let json = to_json(&api_table("p", "d", "v", &view)).unwrap();
        assert_eq!(json["view"], json!({"query": "SELECT 1", "useLegacySql": false}));
        let range = TableSettings {
            range_partitioning: Some(RangePartitioning { field: "n".to_string(), start: 0, end: 100, interval: 10 }),
            ..settings()
        };
        let json = to_json(&api_table("p", "d", "t", &range)).unwrap();
        assert_eq!(
            json["rangePartitioning"],
            json!({"field": "n", "range": {"start": "0", "end": "100", "interval": "10"}})
        );
        assert_eq!(json["expirationTime"], json!("4102444800000"));
        assert_eq!(json["requirePartitionFilter"], json!(true));
        assert_eq!(json["timePartitioning"], json!({"type": "DAY", "field": "ts", "expirationMs": "86400000"}));
        let meta = table_meta("d", "t", from_json("t", json).unwrap()).unwrap();
        assert_eq!(meta.settings, range);
    }

    #[test]
    fn an_absent_mode_is_nullable_and_the_deprecated_partition_filter_is_read() {
        let api: model::Table = from_json(
            "t",
            json!({
                "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
                "schema": {"fields": [{"name": "a", "type": "STRING"}]},
                "timePartitioning": {"type": "DAY", "requirePartitionFilter": true},
                "creationTime": "1000", "lastModifiedTime": "2000", "numRows": "3", "numBytes": "4",
                "etag": "\"e\"", "location": "EU"
            }),
        )
        .unwrap();
        let meta = table_meta("d", "t", api).unwrap();
        assert_eq!(meta.settings.schema[0].mode, "NULLABLE");
        assert!(meta.settings.require_partition_filter);
        assert_eq!(meta.created, time_from_ms(1000));
        assert_eq!(meta.modified, time_from_ms(2000));
        assert_eq!((meta.num_rows, meta.num_bytes), (Some(3), Some(4)));
        assert_eq!((meta.etag.as_str(), meta.location.as_deref()), ("\"e\"", Some("EU")));
    }

    #[test]
    fn an_overlay_replaces_settings_and_keeps_the_rest() {
        let mut current = json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
            "description": "old", "labels": {"a": "1", "b": "2"}, "clustering": {"fields": ["x"]},
            "schema": {"fields": [{"name": "x", "type": "STRING"}]},
            "encryptionConfiguration": {"kmsKeyName": "k"}, "etag": "\"e\""
        });
        let schema = vec![field("x", "STRING", "NULLABLE", vec![])];
        let wanted = TableSettings { schema: schema.clone(), ..TableSettings::default() };
        overlay_table(&mut current, &wanted).unwrap();
        assert_eq!(current["labels"], json!({}), "no label left: sent as an empty map");
        assert_eq!(current["description"], Value::Null);
        assert_eq!(current["clustering"], Value::Null);
        assert_eq!(current["encryptionConfiguration"], json!({"kmsKeyName": "k"}));
        assert_eq!(current["schema"]["fields"][0]["mode"], "NULLABLE");

        let mut view = json!({
            "schema": {"fields": [{"name": "c", "type": "INTEGER"}]},
            "view": {"query": "q", "userDefinedFunctionResources": [{"inlineCode": "f"}]}
        });
        overlay_table(&mut view, &TableSettings { view_query: Some("q2".to_string()), ..TableSettings::default() })
            .unwrap();
        assert_eq!(view["schema"]["fields"][0]["name"], "c", "a view's derived schema is kept");
        assert_eq!(
            view["view"],
            json!({"query": "q2", "useLegacySql": false, "userDefinedFunctionResources": [{"inlineCode": "f"}]})
        );
    }

    #[test]
    fn dataset_settings_map_both_ways() {
        let settings = DatasetSettings {
            location: Some("EU".to_string()),
            description: Some("d".to_string()),
            friendly_name: None,
            labels: [("k".to_string(), "v".to_string())].into(),
            default_table_expiration_ms: Some(3_600_000),
        };
        let meta = dataset_meta("d", api_dataset("p", "d", &settings));
        assert_eq!(meta.settings, settings);
        let mut current =
            json!({"location": "EU", "labels": {"k": "v"}, "friendlyName": "f", "access": [{"role": "OWNER"}]});
        overlay_dataset(&mut current, &DatasetSettings::default()).unwrap();
        assert_eq!(current["labels"], json!({}));
        assert_eq!(current["friendlyName"], Value::Null);
        assert_eq!(current["location"], "EU");
        assert_eq!(current["access"], json!([{"role": "OWNER"}]));
    }
}
