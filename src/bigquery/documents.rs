//! BigQuery's documents (the files README.md lists): `schema.json` and
//! `config.json`, which users edit and ciofs parses back, and the generated
//! `_status.json` and `.meta/_dataset.json`.
//!
//! Parsing is strict: unknown keys are refused, not ignored (a typo must not
//! silently drop a setting), and a JSON error names its line and column.
//! `config.json` merges at the top level: a key left out keeps the table's
//! current value, `null` clears it, and a present `labels` object replaces
//! all labels. BigQuery's rules (what may change) are `rules`'s
//! business; `parse_schema` runs its checks of a schema on its own.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::core::rules::Problems;
use chrono::DateTime;
use ciofs_backends::bigquery::{
    DatasetMeta, DatasetSettings, RangePartitioning, SchemaField, TableMeta, TableSettings, TimePartitioning,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::rules::{canonical_type, check_schema};
use crate::core::document::input::{check_header, parse_json, pick, present};
use crate::core::document::{VERSION, render, rfc3339};

const SCHEMA_TYPE: &str = "bigquery-schema";
const CONFIG_TYPE: &str = "bigquery-table-config";
const SCHEMA_FILE: &str = "schema.json";
const CONFIG_FILE: &str = "config.json";
const DATASET_TYPE: &str = "bigquery-dataset-metadata";
const DATASET_FILE: &str = "_dataset.json";

// ---------------------------------------------------------------------------
// schema.json

#[derive(Serialize)]
struct SchemaDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    fields: Vec<FieldDocument<'a>>,
}

#[derive(Serialize)]
struct FieldDocument<'a> {
    name: &'a str,
    r#type: &'a str,
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// Only a RECORD has (and shows) `fields`.
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<FieldDocument<'a>>>,
}

impl<'a> FieldDocument<'a> {
    fn new(field: &'a SchemaField) -> Self {
        let record = canonical_type(&field.field_type) == "RECORD";
        FieldDocument {
            name: &field.name,
            r#type: &field.field_type,
            // The API leaves the mode out for NULLABLE.
            mode: if field.mode.is_empty() { "NULLABLE" } else { &field.mode },
            description: field.description.as_deref(),
            fields: record.then(|| field.fields.iter().map(FieldDocument::new).collect()),
        }
    }
}

/// `bigquery/<dataset>/<table>/schema.json`
pub fn render_schema(fields: &[SchemaField]) -> Vec<u8> {
    render(&SchemaDocument {
        version: VERSION,
        r#type: SCHEMA_TYPE,
        fields: fields.iter().map(FieldDocument::new).collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaInput {
    version: Option<String>,
    r#type: Option<String>,
    fields: Vec<FieldInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldInput {
    name: String,
    r#type: String,
    mode: Option<String>,
    description: Option<String>,
    fields: Option<Vec<FieldInput>>,
}

impl FieldInput {
    /// Type and mode in upper case (BigQuery accepts any case); an absent
    /// or empty mode is NULLABLE. The type keeps its spelling (INT64 stays
    /// INT64).
    fn into_field(self) -> SchemaField {
        SchemaField {
            name: self.name,
            field_type: self.r#type.to_ascii_uppercase(),
            mode: match self.mode {
                Some(mode) if !mode.is_empty() => mode.to_ascii_uppercase(),
                _ => "NULLABLE".to_string(),
            },
            description: self.description,
            fields: self.fields.unwrap_or_default().into_iter().map(FieldInput::into_field).collect(),
        }
    }
}

/// The columns of a written `schema.json`, checked on their own (known
/// types and modes, names, nesting) but not against the table's current
/// schema (`rules::check_schema_change` does that).
pub fn parse_schema(bytes: &[u8]) -> Result<Vec<SchemaField>, Problems> {
    let input: SchemaInput = parse_json(bytes, SCHEMA_FILE)?;
    check_header(SCHEMA_FILE, input.version.as_deref(), input.r#type.as_deref(), SCHEMA_TYPE)?;
    let fields: Vec<SchemaField> = input.fields.into_iter().map(FieldInput::into_field).collect();
    check_schema(&fields)?;
    Ok(fields)
}

// ---------------------------------------------------------------------------
// config.json

#[derive(Serialize)]
struct ConfigDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    description: Option<&'a str>,
    friendly_name: Option<&'a str>,
    expiration_time: Option<String>,
    labels: &'a BTreeMap<String, String>,
    require_partition_filter: bool,
    /// Always null: ciofs does not manage customer-managed keys.
    encryption: (),
    time_partitioning: Option<TimePartitioningDocument<'a>>,
    range_partitioning: Option<RangePartitioningDocument<'a>>,
    clustering: &'a [String],
    /// Shown (maybe as null) only for a VIEW.
    #[serde(skip_serializing_if = "Option::is_none")]
    view_query: Option<Option<&'a str>>,
    /// Shown (maybe as null) only for a MATERIALIZED_VIEW.
    #[serde(skip_serializing_if = "Option::is_none")]
    materialized_view_query: Option<Option<&'a str>>,
}

#[derive(Serialize)]
struct TimePartitioningDocument<'a> {
    r#type: &'a str,
    field: Option<&'a str>,
    expiration_ms: Option<i64>,
}

#[derive(Serialize)]
struct RangePartitioningDocument<'a> {
    field: &'a str,
    start: i64,
    end: i64,
    interval: i64,
}

/// `bigquery/<dataset>/<table>/config.json`
pub fn render_table_config(meta: &TableMeta) -> Vec<u8> {
    let settings = &meta.settings;
    let table_type = meta.table_type.as_str();
    render(&ConfigDocument {
        version: VERSION,
        r#type: CONFIG_TYPE,
        description: settings.description.as_deref(),
        friendly_name: settings.friendly_name.as_deref(),
        expiration_time: settings.expiration_time.map(rfc3339),
        labels: &settings.labels,
        require_partition_filter: settings.require_partition_filter,
        encryption: (),
        time_partitioning: settings.time_partitioning.as_ref().map(|t| TimePartitioningDocument {
            r#type: &t.partition_type,
            field: t.field.as_deref(),
            expiration_ms: t.expiration_ms,
        }),
        range_partitioning: settings.range_partitioning.as_ref().map(|r| RangePartitioningDocument {
            field: &r.field,
            start: r.start,
            end: r.end,
            interval: r.interval,
        }),
        clustering: &settings.clustering,
        view_query: (table_type == "VIEW").then_some(settings.view_query.as_deref()),
        materialized_view_query: (table_type == "MATERIALIZED_VIEW")
            .then_some(settings.materialized_view_query.as_deref()),
    })
}

/// A written `config.json`. Each settable key is `None` when absent and
/// `Some(None)` when null, which is how the merge tells "keep" from "clear".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigInput {
    version: Option<String>,
    r#type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    friendly_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present_time")]
    expiration_time: Option<Option<SystemTime>>,
    #[serde(default, deserialize_with = "present")]
    labels: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    require_partition_filter: Option<Option<bool>>,
    #[serde(default, deserialize_with = "null_encryption")]
    #[allow(dead_code)] // only its being null matters
    encryption: (),
    #[serde(default, deserialize_with = "present")]
    time_partitioning: Option<Option<TimePartitioningInput>>,
    #[serde(default, deserialize_with = "present")]
    range_partitioning: Option<Option<RangePartitioningInput>>,
    #[serde(default, deserialize_with = "present")]
    clustering: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    view_query: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    materialized_view_query: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimePartitioningInput {
    #[serde(deserialize_with = "partition_type")]
    r#type: String,
    field: Option<String>,
    expiration_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangePartitioningInput {
    field: String,
    start: i64,
    end: i64,
    interval: i64,
}

fn present_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<SystemTime>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(Some(None));
    };
    let time = DateTime::parse_from_rfc3339(&text).map_err(|_| {
        D::Error::custom(format!("expiration_time {text:?} is not an RFC 3339 time like \"2027-01-17T00:00:00Z\""))
    })?;
    Ok(Some(Some(time.into())))
}

fn null_encryption<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    match Option::<serde::de::IgnoredAny>::deserialize(d)? {
        None => Ok(()),
        Some(_) => Err(D::Error::custom("encryption: customer-managed encryption keys are not supported (use null)")),
    }
}

fn partition_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let kind = String::deserialize(d)?.to_ascii_uppercase();
    if ["DAY", "HOUR", "MONTH", "YEAR"].contains(&kind.as_str()) {
        Ok(kind)
    } else {
        Err(D::Error::custom(format!("time_partitioning.type {kind:?} is not one of DAY, HOUR, MONTH, YEAR")))
    }
}

/// The settings a written `config.json` asks for: `current` with the
/// document's keys applied (absent keeps, null clears, `labels` replaces the
/// whole map). The schema is `current`'s. Whether BigQuery allows the
/// change is `rules::check_config_change`'s question.
pub fn parse_table_config(bytes: &[u8], current: &TableSettings) -> Result<TableSettings, Problems> {
    let input: ConfigInput = parse_json(bytes, CONFIG_FILE)?;
    check_header(CONFIG_FILE, input.version.as_deref(), input.r#type.as_deref(), CONFIG_TYPE)?;
    Ok(TableSettings {
        schema: current.schema.clone(),
        description: pick(input.description, &current.description),
        friendly_name: pick(input.friendly_name, &current.friendly_name),
        labels: pick(input.labels.map(Option::unwrap_or_default), &current.labels),
        expiration_time: pick(input.expiration_time, &current.expiration_time),
        require_partition_filter: pick(
            input.require_partition_filter.map(Option::unwrap_or_default),
            &current.require_partition_filter,
        ),
        time_partitioning: pick(input.time_partitioning.map(|t| t.map(time_partitioning)), &current.time_partitioning),
        range_partitioning: pick(
            input.range_partitioning.map(|r| r.map(range_partitioning)),
            &current.range_partitioning,
        ),
        clustering: pick(input.clustering.map(Option::unwrap_or_default), &current.clustering),
        view_query: pick(input.view_query, &current.view_query),
        materialized_view_query: pick(input.materialized_view_query, &current.materialized_view_query),
    })
}

fn time_partitioning(input: TimePartitioningInput) -> TimePartitioning {
    TimePartitioning { partition_type: input.r#type, field: input.field, expiration_ms: input.expiration_ms }
}

fn range_partitioning(input: RangePartitioningInput) -> RangePartitioning {
    RangePartitioning { field: input.field, start: input.start, end: input.end, interval: input.interval }
}

// ---------------------------------------------------------------------------
// _status.json (generated; writes are ignored) and _dataset.json

#[derive(Serialize)]
struct StatusDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    num_bytes: Option<u64>,
    num_rows: Option<u64>,
    created: Option<String>,
    modified: Option<String>,
    location: Option<&'a str>,
    /// The seed calls it a second `type`; JSON keys must be unique.
    table_type: &'a str,
    etag: &'a str,
}

/// `bigquery/<dataset>/<table>/_status.json`
pub fn render_table_status(meta: &TableMeta) -> Vec<u8> {
    render(&StatusDocument {
        version: VERSION,
        r#type: "bigquery-table-status",
        num_bytes: meta.num_bytes,
        num_rows: meta.num_rows,
        created: meta.created.map(rfc3339),
        modified: meta.modified.map(rfc3339),
        location: meta.location.as_deref(),
        table_type: &meta.table_type,
        etag: &meta.etag,
    })
}

#[derive(Serialize)]
struct DatasetDocument<'a> {
    version: &'static str,
    r#type: &'static str,
    dataset_id: &'a str,
    location: Option<&'a str>,
    description: Option<&'a str>,
    friendly_name: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    default_table_expiration_ms: Option<i64>,
    created: Option<String>,
    modified: Option<String>,
    etag: &'a str,
}

/// `bigquery/<dataset>/.meta/_dataset.json`
pub fn render_dataset(meta: &DatasetMeta) -> Vec<u8> {
    let settings = &meta.settings;
    render(&DatasetDocument {
        version: VERSION,
        r#type: "bigquery-dataset-metadata",
        dataset_id: &meta.dataset,
        location: settings.location.as_deref(),
        description: settings.description.as_deref(),
        friendly_name: settings.friendly_name.as_deref(),
        labels: &settings.labels,
        default_table_expiration_ms: settings.default_table_expiration_ms,
        created: meta.created.map(rfc3339),
        modified: meta.modified.map(rfc3339),
        etag: &meta.etag,
    })
}

#[cfg(test)]
mod tests;

/// A written `_dataset.json`: the settings, merged like config.json's;
/// the fields the service keeps (`dataset_id`, times, etag) are read and
/// ignored, so that a document read back is accepted as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetInput {
    version: Option<String>,
    r#type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    location: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    friendly_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    labels: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "present")]
    default_table_expiration_ms: Option<Option<i64>>,
    #[allow(dead_code)] // generated by the service
    dataset_id: Option<serde_json::Value>,
    #[allow(dead_code)]
    created: Option<serde_json::Value>,
    #[allow(dead_code)]
    modified: Option<serde_json::Value>,
    #[allow(dead_code)]
    etag: Option<serde_json::Value>,
}

/// The settings a written `_dataset.json` asks for: `current` with the
/// document's keys applied (absent keeps, null clears, `labels` replaces
/// the map). A location other than the dataset's is refused: BigQuery sets
/// it only at creation.
pub fn parse_dataset(bytes: &[u8], current: &DatasetSettings) -> Result<DatasetSettings, Problems> {
    let input: DatasetInput = parse_json(bytes, DATASET_FILE)?;
    check_header(DATASET_FILE, input.version.as_deref(), input.r#type.as_deref(), DATASET_TYPE)?;
    let location = pick(input.location, &current.location);
    if let (Some(old), Some(new)) = (&current.location, &location)
        && !old.eq_ignore_ascii_case(new)
    {
        let message =
            format!("{DATASET_FILE}: location cannot change from {old} to {new} (BigQuery sets it only at creation)");
        return Err(Problems::one("location", message));
    }
    Ok(DatasetSettings {
        location: current.location.clone().or(location),
        description: pick(input.description, &current.description),
        friendly_name: pick(input.friendly_name, &current.friendly_name),
        labels: pick(input.labels.map(Option::unwrap_or_default), &current.labels),
        default_table_expiration_ms: pick(input.default_table_expiration_ms, &current.default_table_expiration_ms),
    })
}
