//! BigQuery's rules for schemas and table settings, checked by ciofs before
//! it sends anything: the emulator accepts every change, real BigQuery does
//! not, and a user who saves `schema.json` in vim should learn what is wrong
//! from close()'s EINVAL and its message, whichever of the two is behind.
//!
//! Every check collects all the problems it finds and reports them in one
//! EINVAL, joined by "; " (at most `rules::MAX_REPORTED`, then "and N
//! more"), so a user fixes a file in one round. Each problem names the
//! column (dotted path, `data.value`), label or setting, and the rule.
//!
//! Where BigQuery's own limits are in characters, ciofs counts Unicode
//! scalar values (Rust `char`s), as BigQuery counts characters.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use ciofs_backends::bigquery::{RangePartitioning, SchemaField, TableSettings, TimePartitioning};

use crate::core::document::rfc3339;
use crate::core::rules::{Problems, label_problems, refuse_if_any};

/// The column types BigQuery knows, as `tables.insert` accepts them.
const TYPES: &[&str] = &[
    "STRING",
    "BYTES",
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "GEOGRAPHY",
    "JSON",
    "INTERVAL",
    "RANGE",
    "RECORD",
    "STRUCT",
];
const MODES: &[&str] = &["NULLABLE", "REQUIRED", "REPEATED"];
const MAX_COLUMN_NAME_CHARS: usize = 300;
/// BigQuery's limit of nested RECORDs: a RECORD may sit at most this deep
/// (a top-level column is at depth 1).
const MAX_RECORD_DEPTH: usize = 15;
const MAX_DESCRIPTION_CHARS: usize = 16384;
const MAX_FRIENDLY_NAME_CHARS: usize = 1024;
const MAX_CLUSTERING_COLUMNS: usize = 4;

/// The spelling BigQuery treats as the same type: INT64 is INTEGER, and so
/// on. Upper case, so that `int64` and `INTEGER` compare equal.
pub(crate) fn canonical_type(field_type: &str) -> String {
    let upper = field_type.to_ascii_uppercase();
    match upper.as_str() {
        "INT64" => "INTEGER".into(),
        "FLOAT64" => "FLOAT".into(),
        "BOOL" => "BOOLEAN".into(),
        "STRUCT" => "RECORD".into(),
        _ => upper,
    }
}

fn is_record(field: &SchemaField) -> bool {
    canonical_type(&field.field_type) == "RECORD"
}

/// The mode as BigQuery reads it: absent is NULLABLE.
fn mode(field: &SchemaField) -> String {
    if field.mode.is_empty() { "NULLABLE".into() } else { field.mode.to_ascii_uppercase() }
}

fn column_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

// ---------------------------------------------------------------------------
// A schema on its own

/// A schema as BigQuery accepts it for a new table or an update: at least
/// one column, known types and modes, RECORDs with fields and nothing else
/// with fields, names non-empty, at most 300 characters and unique within
/// their record regardless of letter case, RECORDs nested at most 15 deep.
pub fn check_schema(fields: &[SchemaField]) -> Result<(), Problems> {
    let mut problems = Problems::default();
    if fields.is_empty() {
        problems.add("", "the schema has no columns (a table needs at least one)");
    }
    check_columns(fields, "", 1, &mut problems);
    refuse_if_any(problems)
}

fn check_columns(fields: &[SchemaField], prefix: &str, depth: usize, problems: &mut Problems) {
    // BigQuery column names are case-insensitive: `Id` and `id` collide.
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (index, field) in fields.iter().enumerate() {
        if field.name.is_empty() {
            let place = if prefix.is_empty() { String::new() } else { format!(" of `{prefix}`") };
            problems.add(prefix, format!("column {}{place} has an empty name", index + 1));
            continue;
        }
        let path = column_path(prefix, &field.name);
        if let Some(first) = seen.insert(field.name.to_lowercase(), &field.name) {
            let first = column_path(prefix, first);
            problems.add(
                path.clone(),
                format!("columns `{first}` and `{path}` have the same name (BigQuery column names ignore letter case)"),
            );
        }
        check_column(field, &path, depth, problems);
    }
}

fn check_column(field: &SchemaField, path: &str, depth: usize, problems: &mut Problems) {
    let chars = field.name.chars().count();
    if chars > MAX_COLUMN_NAME_CHARS {
        problems.add(
            path,
            format!(
                "column `{path}`: the name is {chars} characters long, BigQuery allows at most {MAX_COLUMN_NAME_CHARS}"
            ),
        );
    }
    let field_type = field.field_type.to_ascii_uppercase();
    if !TYPES.contains(&field_type.as_str()) {
        problems.add(
            path,
            format!("column `{path}`: unknown type {:?} (BigQuery's types: {})", field.field_type, TYPES.join(", ")),
        );
    }
    if !MODES.contains(&mode(field).as_str()) {
        problems.add(path, format!("column `{path}`: unknown mode {:?} (one of {})", field.mode, MODES.join(", ")));
    }
    if !is_record(field) {
        if !field.fields.is_empty() {
            problems.add(path, format!("column `{path}`: only a RECORD (STRUCT) has `fields`, not a {field_type}"));
        }
        return;
    }
    if field.fields.is_empty() {
        problems.add(path, format!("column `{path}`: a RECORD needs at least one field"));
    } else if depth > MAX_RECORD_DEPTH {
        problems.add(path, format!("column `{path}`: RECORDs nest at most {MAX_RECORD_DEPTH} levels deep in BigQuery"));
    } else {
        check_columns(&field.fields, path, depth + 1, problems);
    }
}

// ---------------------------------------------------------------------------
// A schema change

/// Whether BigQuery would accept `new` as the schema of a table whose schema
/// is `old`. Allowed: adding NULLABLE or REPEATED columns (at top level or
/// inside an existing RECORD; a new RECORD's own fields may be anything),
/// relaxing REQUIRED to NULLABLE, descriptions, order, and alias spellings
/// of a type (INT64 for INTEGER...). Everything else is refused: drops
/// (renames, letter case included), type changes, other mode changes,
/// new REQUIRED columns.
///
/// Problems are listed level by level in the old schema's order (a
/// RECORD's problems right after its own), then the additions at that level
/// in the new schema's order. `new` is assumed to pass `check_schema`.
pub fn check_schema_change(old: &[SchemaField], new: &[SchemaField]) -> Result<(), Problems> {
    let mut problems = Problems::default();
    compare_columns(old, new, "", &mut problems);
    refuse_if_any(problems)
}

fn compare_columns(old: &[SchemaField], new: &[SchemaField], prefix: &str, problems: &mut Problems) {
    let mut matched = HashSet::new();
    let mut dropped = Vec::new();
    for column in old {
        if let Some(index) = new.iter().position(|n| n.name == column.name) {
            matched.insert(index);
            compare_column(column, &new[index], &column_path(prefix, &column.name), problems);
        } else if let Some(index) = new.iter().position(|n| n.name.to_lowercase() == column.name.to_lowercase()) {
            matched.insert(index);
            problems.add(
                column_path(prefix, &column.name),
                format!(
                    "column `{}` renamed to `{}`: BigQuery does not rename columns, not even to change letter case \
                 (a rename is a drop plus an add, and BigQuery does not drop columns)",
                    column_path(prefix, &column.name),
                    new[index].name
                ),
            );
        } else {
            dropped.push(column);
        }
    }
    let added: Vec<&SchemaField> =
        new.iter().enumerate().filter(|(index, _)| !matched.contains(index)).map(|(_, f)| f).collect();
    for column in dropped {
        let path = column_path(prefix, &column.name);
        problems.add(path.clone(), dropped_message(&path, &added, prefix));
    }
    for column in added {
        if mode(column) == "REQUIRED" {
            problems.add(
                column_path(prefix, &column.name),
                format!(
                    "column `{}`: a new column cannot be REQUIRED (the table's existing rows have no value for it), \
                 add it as NULLABLE or REPEATED",
                    column_path(prefix, &column.name)
                ),
            );
        }
    }
}

/// A missing column; when columns were added beside it, it was probably
/// renamed, and the user should hear that a rename is a drop.
fn dropped_message(path: &str, added: &[&SchemaField], prefix: &str) -> String {
    if added.is_empty() {
        return format!(
            "column `{path}` was removed: BigQuery does not drop columns (put it back, or create a new table)"
        );
    }
    let names = added.iter().map(|f| format!("`{}`", column_path(prefix, &f.name))).collect::<Vec<_>>().join(", ");
    format!(
        "column `{path}` was removed and {names} added: if this is a rename, a rename is a drop plus an add, \
         and BigQuery does not drop columns (put `{path}` back)"
    )
}

fn compare_column(old: &SchemaField, new: &SchemaField, path: &str, problems: &mut Problems) {
    let (old_type, new_type) = (canonical_type(&old.field_type), canonical_type(&new.field_type));
    if old_type != new_type {
        problems.add(
            path,
            format!(
                "column `{path}`: type {} cannot change to {} (BigQuery does not change column types; \
             create a new table or column instead)",
                old.field_type.to_ascii_uppercase(),
                new.field_type.to_ascii_uppercase()
            ),
        );
    }
    if let Some(problem) = mode_change_problem(&mode(old), &mode(new)) {
        problems.add(path, format!("column `{path}`: {problem}"));
    }
    if old_type == "RECORD" && new_type == "RECORD" {
        compare_columns(&old.fields, &new.fields, path, problems);
    }
}

fn mode_change_problem(old: &str, new: &str) -> Option<String> {
    if old == new || (old == "REQUIRED" && new == "NULLABLE") {
        return None;
    }
    let why = if new == "REQUIRED" {
        "BigQuery only relaxes REQUIRED to NULLABLE, never the other way"
    } else {
        "BigQuery does not change a column to or from REPEATED"
    };
    Some(format!("mode {old} cannot change to {new} ({why})"))
}

// ---------------------------------------------------------------------------
// Table settings

/// Whether BigQuery would accept `new` as the settings of an existing table
/// of type `table_type` (TABLE, VIEW, MATERIALIZED_VIEW...) whose settings
/// are `old`. Settings fixed at creation (partitioning, a materialized
/// view's query) must not change; labels, lengths and the expiration are
/// checked when they changed. The schema is not looked at
/// (`check_schema_change` does that).
pub fn check_config_change(
    table_type: &str,
    old: &TableSettings,
    new: &TableSettings,
    now: SystemTime,
) -> Result<(), Problems> {
    let mut problems = Problems::default();
    if new.labels != old.labels {
        label_problems("BigQuery", &new.labels, &mut problems);
    }
    if new.expiration_time != old.expiration_time {
        expiration_problems(new.expiration_time, now, &mut problems);
    }
    if new.clustering != old.clustering {
        clustering_problems(&new.clustering, &mut problems);
    }
    text_problems(new, &mut problems);
    partition_filter_problems(new, &mut problems);
    time_partitioning_change(old.time_partitioning.as_ref(), new.time_partitioning.as_ref(), &mut problems);
    range_partitioning_change(old.range_partitioning.as_ref(), new.range_partitioning.as_ref(), &mut problems);
    query_problems(table_type, old, new, &mut problems);
    refuse_if_any(problems)
}

/// The settings of a table about to be created: everything that
/// `check_config_change` checks on its own, plus the partitioning's values
/// (which an existing table cannot change, so they are only checked here).
/// A view is a table with a `view_query`.
pub fn check_new_table_config(settings: &TableSettings, now: SystemTime) -> Result<(), Problems> {
    let mut problems = Problems::default();
    label_problems("BigQuery", &settings.labels, &mut problems);
    expiration_problems(settings.expiration_time, now, &mut problems);
    clustering_problems(&settings.clustering, &mut problems);
    text_problems(settings, &mut problems);
    partition_filter_problems(settings, &mut problems);
    if let Some(time) = &settings.time_partitioning {
        time_partitioning_problems(time, &mut problems);
    }
    if let Some(range) = &settings.range_partitioning {
        range_partitioning_problems(range, &mut problems);
    }
    if settings.time_partitioning.is_some() && settings.range_partitioning.is_some() {
        problems.add("", "a table has either time_partitioning or range_partitioning, not both");
    }
    if settings.view_query.is_some() && settings.materialized_view_query.is_some() {
        problems.add("", "a table has either view_query or materialized_view_query, not both");
    }
    refuse_if_any(problems)
}

fn expiration_problems(expiration: Option<SystemTime>, now: SystemTime, problems: &mut Problems) {
    if let Some(time) = expiration.filter(|&t| t <= now) {
        problems.add(
            "expiration_time",
            format!(
                "expiration_time {} is in the past: BigQuery would delete the table at once \
             (give a future time, or null for no expiration)",
                rfc3339(time)
            ),
        );
    }
}

fn clustering_problems(columns: &[String], problems: &mut Problems) {
    if columns.len() > MAX_CLUSTERING_COLUMNS {
        problems.add(
            "clustering",
            format!("clustering: {} columns, BigQuery clusters by at most {MAX_CLUSTERING_COLUMNS}", columns.len()),
        );
    }
    let mut seen = HashSet::new();
    for column in columns {
        if column.is_empty() {
            problems.add("clustering", "clustering: a column name cannot be empty");
        } else if !seen.insert(column.to_lowercase()) {
            problems.add("clustering", format!("clustering: column `{column}` is listed twice"));
        }
    }
}

fn text_problems(settings: &TableSettings, problems: &mut Problems) {
    let lengths = [
        ("description", settings.description.as_deref(), MAX_DESCRIPTION_CHARS),
        ("friendly_name", settings.friendly_name.as_deref(), MAX_FRIENDLY_NAME_CHARS),
    ];
    for (key, text, max) in lengths {
        let chars = text.map_or(0, |t| t.chars().count());
        if chars > max {
            problems.add(key, format!("{key}: {chars} characters long, BigQuery allows at most {max}"));
        }
    }
}

fn partition_filter_problems(settings: &TableSettings, problems: &mut Problems) {
    if settings.require_partition_filter
        && settings.time_partitioning.is_none()
        && settings.range_partitioning.is_none()
    {
        problems.add(
            "require_partition_filter",
            "require_partition_filter: the table is not partitioned, so there is no partition to filter on \
             (set it to false)",
        );
    }
}

fn time_partitioning_problems(time: &TimePartitioning, problems: &mut Problems) {
    if !["DAY", "HOUR", "MONTH", "YEAR"].contains(&time.partition_type.as_str()) {
        problems.add(
            "time_partitioning.type",
            format!("time_partitioning.type {:?} is not one of DAY, HOUR, MONTH, YEAR", time.partition_type),
        );
    }
    if time.expiration_ms.is_some_and(|ms| ms <= 0) {
        problems.add(
            "time_partitioning.expiration_ms",
            "time_partitioning.expiration_ms must be positive (or null for none)",
        );
    }
}

fn range_partitioning_problems(range: &RangePartitioning, problems: &mut Problems) {
    if range.field.is_empty() {
        problems.add("range_partitioning.field", "range_partitioning.field cannot be empty");
    }
    if range.interval <= 0 {
        problems.add(
            "range_partitioning.interval",
            format!("range_partitioning.interval is {}, it must be positive", range.interval),
        );
    }
    if range.end <= range.start {
        problems.add(
            "range_partitioning.end",
            format!("range_partitioning.end ({}) must be above start ({})", range.end, range.start),
        );
    }
}

const FIXED_AT_CREATION: &str = "BigQuery sets a table's partitioning only when it creates the table";

/// An existing table keeps its time partitioning; only the partitions'
/// expiration may change.
fn time_partitioning_change(old: Option<&TimePartitioning>, new: Option<&TimePartitioning>, problems: &mut Problems) {
    match (old, new) {
        (None, None) => {}
        (Some(_), None) => {
            problems.add("time_partitioning", format!("time_partitioning cannot be removed ({FIXED_AT_CREATION})"))
        }
        (None, Some(_)) => problems.add(
            "time_partitioning",
            format!("time_partitioning cannot be added to an existing table ({FIXED_AT_CREATION})"),
        ),
        (Some(old), Some(new)) => {
            if !old.partition_type.eq_ignore_ascii_case(&new.partition_type) {
                problems.add(
                    "time_partitioning.type",
                    format!(
                        "time_partitioning.type {} cannot change to {} ({FIXED_AT_CREATION})",
                        old.partition_type, new.partition_type
                    ),
                );
            }
            if old.field != new.field {
                problems.add(
                    "time_partitioning.field",
                    format!(
                        "time_partitioning.field {} cannot change to {} ({FIXED_AT_CREATION})",
                        partition_field(&old.field),
                        partition_field(&new.field)
                    ),
                );
            }
            if new.expiration_ms != old.expiration_ms && new.expiration_ms.is_some_and(|ms| ms <= 0) {
                problems.add(
                    "time_partitioning.expiration_ms",
                    "time_partitioning.expiration_ms must be positive (or null for none)",
                );
            }
        }
    }
}

fn partition_field(field: &Option<String>) -> String {
    field.as_ref().map_or_else(|| "null (ingestion time)".to_string(), |f| format!("`{f}`"))
}

fn range_partitioning_change(
    old: Option<&RangePartitioning>,
    new: Option<&RangePartitioning>,
    problems: &mut Problems,
) {
    match (old, new) {
        (None, None) => {}
        (Some(_), None) => {
            problems.add("range_partitioning", format!("range_partitioning cannot be removed ({FIXED_AT_CREATION})"))
        }
        (None, Some(_)) => problems.add(
            "range_partitioning",
            format!("range_partitioning cannot be added to an existing table ({FIXED_AT_CREATION})"),
        ),
        (Some(old), Some(new)) if old != new => {
            problems.add("range_partitioning", format!("range_partitioning cannot change ({FIXED_AT_CREATION})"))
        }
        (Some(_), Some(_)) => {}
    }
}

fn query_problems(table_type: &str, old: &TableSettings, new: &TableSettings, problems: &mut Problems) {
    if new.materialized_view_query != old.materialized_view_query {
        problems.add(
            "materialized_view_query",
            "materialized_view_query cannot change (BigQuery fixes a materialized view's query when it creates \
             the view: create a new one instead)",
        );
    }
    let is_view = table_type.eq_ignore_ascii_case("VIEW");
    if !is_view && new.view_query.is_some() {
        problems.add("view_query", format!("view_query: only a VIEW has a query, and this is a {table_type}"));
    }
    if is_view && new.view_query.as_deref().is_none_or(|q| q.trim().is_empty()) {
        problems.add("view_query", "view_query: a view needs a query");
    }
}

#[cfg(test)]
mod tests;
