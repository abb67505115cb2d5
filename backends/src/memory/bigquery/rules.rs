//! What BigQuery refuses with a 400, for `MemoryBigQuery`: a new table's
//! settings as tables.insert checks them, and the changes tables.update
//! does not allow (a column dropped or retyped, a mode tightened, a
//! REQUIRED column added, partitioning changed, a table made a view).
//! bqemulator checks none of this; these rules follow BigQuery's
//! documentation on modifying table schemas and on partitioned and
//! clustered tables.

use crate::bigquery::{SchemaField, TableMeta, TableSettings};

/// What tables.get calls the type of a resource made with `settings`.
pub(super) fn table_type(settings: &TableSettings) -> &'static str {
    match (&settings.view_query, &settings.materialized_view_query) {
        (Some(_), _) => "VIEW",
        (None, Some(_)) => "MATERIALIZED_VIEW",
        (None, None) => "TABLE",
    }
}

/// A new table's settings as tables.insert checks them.
pub(super) fn check_new_table(settings: &TableSettings) -> Result<(), String> {
    if settings.view_query.is_some() && settings.materialized_view_query.is_some() {
        return Err("a table cannot be both a view and a materialized view".to_string());
    }
    check_fields(&settings.schema)?;
    let top = |name: &str| settings.schema.iter().find(|f| f.name.eq_ignore_ascii_case(name));
    if let Some(field) = settings.time_partitioning.as_ref().and_then(|tp| tp.field.as_deref()) {
        let ok = top(field).is_some_and(|f| matches!(f.field_type.as_str(), "TIMESTAMP" | "DATE" | "DATETIME"));
        ok.then_some(()).ok_or_else(|| format!("The field specified for partitioning cannot be found: {field}"))?;
    }
    if let Some(range) = &settings.range_partitioning {
        let ok = top(&range.field).is_some_and(|f| matches!(f.field_type.as_str(), "INTEGER" | "INT64"));
        ok.then_some(())
            .ok_or_else(|| format!("The field specified for partitioning cannot be found: {}", range.field))?;
    }
    if settings.clustering.len() > 4 {
        return Err("Too many clustering fields: at most 4".to_string());
    }
    match settings.clustering.iter().find(|c| top(c).is_none()) {
        Some(missing) => Err(format!("The field specified for clustering cannot be found in the schema: {missing}")),
        None => Ok(()),
    }
}

/// Names unique at each level (ignoring case), subfields exactly on RECORDs.
fn check_fields(fields: &[SchemaField]) -> Result<(), String> {
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|other| other.name.eq_ignore_ascii_case(&field.name)) {
            return Err(format!("Field {} already exists in schema", field.name));
        }
        if is_record(&field.field_type) == field.fields.is_empty() {
            return Err(format!("Field {}: only a RECORD has (and must have) subfields", field.name));
        }
        check_fields(&field.fields)?;
    }
    Ok(())
}

/// An update as tables.update checks it: a table stays a table (a view a
/// view), partitioning stays (its expiration may change), columns may only
/// be added (NULLABLE or REPEATED) or relaxed (REQUIRED to NULLABLE),
/// descriptions may change.
pub(super) fn check_update(current: &TableMeta, new: &TableSettings) -> Result<(), String> {
    let old = &current.settings;
    if table_type(new) != current.table_type {
        return Err(format!("Cannot change a {} into a {}", current.table_type, table_type(new)));
    }
    if new.materialized_view_query != old.materialized_view_query {
        return Err("A materialized view's query cannot be changed".to_string());
    }
    let spec = |s: &TableSettings| s.time_partitioning.as_ref().map(|tp| (tp.partition_type.clone(), tp.field.clone()));
    if spec(new) != spec(old) || new.range_partitioning != old.range_partitioning {
        return Err("Cannot change partitioning spec".to_string());
    }
    // A view's schema is its query's; an empty schema keeps the table's.
    if current.table_type == "TABLE" && !new.schema.is_empty() {
        check_fields(&new.schema)?;
        check_schema_change("", &old.schema, &new.schema)?;
    }
    Ok(())
}

fn check_schema_change(prefix: &str, old: &[SchemaField], new: &[SchemaField]) -> Result<(), String> {
    for before in old {
        let path = format!("{prefix}{}", before.name);
        let Some(after) = new.iter().find(|f| f.name.eq_ignore_ascii_case(&before.name)) else {
            return Err(format!("Provided Schema does not match Table. Field {path} is missing in new schema"));
        };
        if canonical_type(&before.field_type) != canonical_type(&after.field_type) {
            return Err(format!("Provided Schema does not match Table. Field {path} has changed type"));
        }
        let relaxed = before.mode == "REQUIRED" && after.mode == "NULLABLE";
        if before.mode != after.mode && !relaxed {
            return Err(format!("Provided Schema does not match Table. Field {path} has changed mode"));
        }
        check_schema_change(&format!("{path}."), &before.fields, &after.fields)?;
    }
    let added = new.iter().filter(|f| !old.iter().any(|o| o.name.eq_ignore_ascii_case(&f.name)));
    match added.into_iter().find(|f| f.mode == "REQUIRED") {
        Some(f) => Err(format!("Provided Schema does not match Table. Cannot add required field {prefix}{}", f.name)),
        None => Ok(()),
    }
}

fn is_record(field_type: &str) -> bool {
    matches!(field_type, "RECORD" | "STRUCT")
}

/// A type's name without its legacy/standard SQL spelling difference.
fn canonical_type(field_type: &str) -> &str {
    match field_type {
        "INT64" => "INTEGER",
        "FLOAT64" => "FLOAT",
        "BOOL" => "BOOLEAN",
        "STRUCT" => "RECORD",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::bigquery::{RangePartitioning, SchemaField, TimePartitioning, UpdateTable};

    fn table(schema: Vec<SchemaField>) -> TableSettings {
        TableSettings { schema, ..TableSettings::default() }
    }

    fn kind<T: std::fmt::Debug>(result: BackendResult<T>) -> ErrorKind {
        result.unwrap_err().kind
    }

    #[tokio::test]
    async fn updates_bigquery_refuses_are_refused() {
        let bq = MemoryBigQuery::new();
        let partitioned = TableSettings {
            time_partitioning: Some(TimePartitioning {
                partition_type: "DAY".to_string(),
                field: Some("at".to_string()),
                expiration_ms: None,
            }),
            ..table(vec![
                SchemaField::new("at", "TIMESTAMP", "NULLABLE"),
                SchemaField {
                    fields: vec![SchemaField::new("a", "STRING", "REQUIRED")],
                    ..SchemaField::new("r", "RECORD", "NULLABLE")
                },
            ])
        };
        bq.put_table("p", "d", "t", partitioned.clone());
        let refused = |settings: TableSettings| {
            let bq = &bq;
            async move {
                kind(
                    bq.update_table(&UpdateTable {
                        project: "p".to_string(),
                        dataset: "d".to_string(),
                        table: "t".to_string(),
                        settings: settings.clone(),
                        ..Default::default()
                    })
                    .await,
                )
            }
        };
        let mut dropped = partitioned.clone();
        dropped.schema.pop();
        assert_eq!(refused(dropped).await, ErrorKind::InvalidArgument, "a dropped column");
        let mut retyped = partitioned.clone();
        retyped.schema[0].field_type = "DATE".to_string();
        assert_eq!(refused(retyped).await, ErrorKind::InvalidArgument, "a changed type");
        let mut nested_drop = partitioned.clone();
        nested_drop.schema[1].fields[0].name = "b".to_string();
        assert_eq!(refused(nested_drop).await, ErrorKind::InvalidArgument, "a renamed nested column");
        let mut required = partitioned.clone();
        required.schema.push(SchemaField::new("z", "STRING", "REQUIRED"));
        assert_eq!(refused(required).await, ErrorKind::InvalidArgument, "a new REQUIRED column");
        let repartitioned = TableSettings { time_partitioning: None, ..partitioned.clone() };
        assert_eq!(refused(repartitioned).await, ErrorKind::InvalidArgument, "partitioning removed");
        let into_view = TableSettings { view_query: Some("SELECT 1".to_string()), ..partitioned.clone() };
        assert_eq!(refused(into_view).await, ErrorKind::InvalidArgument, "a table made a view");

        // Allowed: an alias of the same type, a new expiration, clustering.
        let mut fine = partitioned.clone();
        fine.schema[1].field_type = "STRUCT".to_string();
        fine.clustering = vec!["at".to_string()];
        if let Some(tp) = fine.time_partitioning.as_mut() {
            tp.expiration_ms = Some(1000);
        }
        bq.update_table(&UpdateTable {
            project: "p".to_string(),
            dataset: "d".to_string(),
            table: "t".to_string(),
            settings: fine.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn new_tables_bigquery_refuses_are_refused() {
        let bq = MemoryBigQuery::new();
        bq.put_dataset("p", "d", DatasetSettings::default());
        let create = |settings: TableSettings| {
            let bq = &bq;
            async move { kind(bq.create_table("p", "d", "t", &settings).await) }
        };
        let twice =
            table(vec![SchemaField::new("x", "STRING", "NULLABLE"), SchemaField::new("X", "INTEGER", "NULLABLE")]);
        assert_eq!(create(twice).await, ErrorKind::InvalidArgument);
        let empty_record = table(vec![SchemaField::new("r", "RECORD", "NULLABLE")]);
        assert_eq!(create(empty_record).await, ErrorKind::InvalidArgument);
        let unknown_clustering = TableSettings { clustering: vec!["nope".to_string()], ..table(vec![]) };
        assert_eq!(create(unknown_clustering).await, ErrorKind::InvalidArgument);
        let range = TableSettings {
            range_partitioning: Some(RangePartitioning { field: "s".to_string(), start: 0, end: 10, interval: 1 }),
            ..table(vec![SchemaField::new("s", "STRING", "NULLABLE")])
        };
        assert_eq!(create(range).await, ErrorKind::InvalidArgument, "range partitioning needs an integer");
        assert!(bq.table("p", "d", "t").is_none());
        assert_eq!(bq.calls.get(BigQueryOp::CreateTable), 4);
    }
}
