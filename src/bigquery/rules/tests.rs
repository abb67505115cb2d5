use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ciofs_backends::bigquery::{RangePartitioning, SchemaField, TableSettings, TimePartitioning};
use ciofs_frontends::VfsError;

use super::*;
use crate::core::errors::refused_message;

fn rec(name: &str, mode: &str, fields: Vec<SchemaField>) -> SchemaField {
    SchemaField { fields, ..SchemaField::new(name, "RECORD", mode) }
}

fn described(field: SchemaField, description: &str) -> SchemaField {
    SchemaField { description: Some(description.into()), ..field }
}

/// id, name, tags, active, data { value, inner { x, y } }: RECORDs at two
/// levels.
fn base() -> Vec<SchemaField> {
    vec![
        SchemaField::new("id", "INTEGER", "REQUIRED"),
        SchemaField::new("name", "STRING", "NULLABLE"),
        SchemaField::new("tags", "STRING", "REPEATED"),
        SchemaField::new("active", "BOOLEAN", "NULLABLE"),
        rec(
            "data",
            "NULLABLE",
            vec![
                SchemaField::new("value", "STRING", "NULLABLE"),
                rec(
                    "inner",
                    "NULLABLE",
                    vec![SchemaField::new("x", "INTEGER", "REQUIRED"), SchemaField::new("y", "FLOAT", "NULLABLE")],
                ),
            ],
        ),
    ]
}

/// `base()` with `edit` applied to it.
fn edited(edit: impl FnOnce(&mut Vec<SchemaField>)) -> Vec<SchemaField> {
    let mut schema = base();
    edit(&mut schema);
    schema
}

fn data(schema: &mut [SchemaField]) -> &mut Vec<SchemaField> {
    &mut schema[4].fields
}

fn inner(schema: &mut [SchemaField]) -> &mut Vec<SchemaField> {
    &mut schema[4].fields[1].fields
}

/// A schema change and what must come of it: `None` when allowed, else
/// substrings the EINVAL's message must contain (the column first).
struct Row {
    what: &'static str,
    new: Vec<SchemaField>,
    refused: Option<&'static [&'static str]>,
}

fn allowed(what: &'static str, new: Vec<SchemaField>) -> Row {
    Row { what, new, refused: None }
}

fn refused(what: &'static str, new: Vec<SchemaField>, message: &'static [&'static str]) -> Row {
    Row { what, new, refused: Some(message) }
}

fn rows() -> Vec<Row> {
    vec![
        allowed("unchanged", base()),
        allowed("add a NULLABLE column", edited(|s| s.push(SchemaField::new("extra", "STRING", "NULLABLE")))),
        allowed("add a REPEATED column", edited(|s| s.push(SchemaField::new("extra", "INT64", "REPEATED")))),
        allowed(
            "add a NULLABLE column inside a RECORD",
            edited(|s| data(s).push(SchemaField::new("more", "DATE", "NULLABLE"))),
        ),
        allowed("add a column two RECORDs deep", edited(|s| inner(s).push(SchemaField::new("z", "JSON", "REPEATED")))),
        allowed(
            "add a NULLABLE RECORD whose own fields are REQUIRED",
            edited(|s| s.push(rec("extra", "NULLABLE", vec![SchemaField::new("must", "STRING", "REQUIRED")]))),
        ),
        allowed(
            "add a REPEATED RECORD",
            edited(|s| s.push(rec("extra", "REPEATED", vec![SchemaField::new("a", "STRING", "")]))),
        ),
        allowed("relax REQUIRED to NULLABLE", edited(|s| s[0].mode = "NULLABLE".into())),
        allowed("relax REQUIRED to NULLABLE two RECORDs deep", edited(|s| inner(s)[0].mode = "NULLABLE".into())),
        allowed(
            "change descriptions",
            edited(|s| {
                s[1] = described(s[1].clone(), "the name");
                inner(s)[1] = described(inner(s)[1].clone(), "why");
            }),
        ),
        allowed(
            "reorder columns at both levels",
            edited(|s| {
                inner(s).reverse();
                data(s).reverse();
                s.reverse();
            }),
        ),
        allowed(
            "alias spellings of types",
            edited(|s| {
                s[0].field_type = "INT64".into();
                s[3].field_type = "BOOL".into();
                s[4].field_type = "STRUCT".into();
                inner(s)[1].field_type = "FLOAT64".into();
            }),
        ),
        allowed("absent mode is NULLABLE", edited(|s| s[1].mode = String::new())),
        refused(
            "add a REQUIRED column",
            edited(|s| s.push(SchemaField::new("extra", "STRING", "REQUIRED"))),
            &["`extra`", "cannot be REQUIRED"],
        ),
        refused(
            "add a REQUIRED column two RECORDs deep",
            edited(|s| inner(s).push(SchemaField::new("z", "STRING", "REQUIRED"))),
            &["`data.inner.z`", "cannot be REQUIRED"],
        ),
        refused(
            "add a REQUIRED RECORD",
            edited(|s| s.push(rec("extra", "REQUIRED", vec![SchemaField::new("a", "STRING", "NULLABLE")]))),
            &["`extra`", "cannot be REQUIRED"],
        ),
        refused("drop a column", edited(|s| drop(s.remove(1))), &["`name` was removed", "does not drop columns"]),
        refused(
            "drop a column two RECORDs deep",
            edited(|s| drop(inner(s).remove(1))),
            &["`data.inner.y` was removed", "does not drop columns"],
        ),
        refused("drop a RECORD", edited(|s| drop(s.remove(4))), &["`data` was removed"]),
        refused(
            "rename a column",
            edited(|s| s[1].name = "full_name".into()),
            &["`name` was removed", "`full_name` added", "a rename is a drop plus an add"],
        ),
        refused(
            "rename a column inside a RECORD",
            edited(|s| data(s)[0].name = "val".into()),
            &["`data.value` was removed", "`data.val` added", "rename"],
        ),
        refused(
            "change a name's letter case",
            edited(|s| s[1].name = "Name".into()),
            &["`name` renamed to `Name`", "letter case"],
        ),
        refused(
            "change a type",
            edited(|s| s[0].field_type = "STRING".into()),
            &["column `id`: type INTEGER cannot change to STRING", "does not change column types"],
        ),
        refused(
            "change a type inside a RECORD",
            edited(|s| data(s)[0].field_type = "INTEGER".into()),
            &["column `data.value`: type STRING cannot change to INTEGER"],
        ),
        refused(
            "change a type two RECORDs deep, across alias spellings",
            edited(|s| inner(s)[0].field_type = "FLOAT64".into()),
            &["column `data.inner.x`: type INTEGER cannot change to FLOAT64"],
        ),
        refused(
            "a RECORD becomes a STRING",
            edited(|s| s[4] = SchemaField::new("data", "STRING", "NULLABLE")),
            &["`data`: type"],
        ),
        refused(
            "a STRING becomes a RECORD",
            edited(|s| s[1] = rec("name", "NULLABLE", vec![SchemaField::new("a", "STRING", "NULLABLE")])),
            &["`name`: type STRING cannot change to RECORD"],
        ),
        refused(
            "tighten NULLABLE to REQUIRED",
            edited(|s| s[1].mode = "REQUIRED".into()),
            &["`name`: mode NULLABLE cannot change to REQUIRED", "only relaxes"],
        ),
        refused(
            "NULLABLE to REPEATED",
            edited(|s| data(s)[0].mode = "REPEATED".into()),
            &["`data.value`: mode NULLABLE cannot change to REPEATED"],
        ),
        refused(
            "REPEATED to NULLABLE",
            edited(|s| s[2].mode = "NULLABLE".into()),
            &["`tags`: mode REPEATED cannot change to NULLABLE", "to or from REPEATED"],
        ),
        refused(
            "REQUIRED to REPEATED two RECORDs deep",
            edited(|s| inner(s)[0].mode = "REPEATED".into()),
            &["`data.inner.x`: mode REQUIRED cannot change to REPEATED"],
        ),
    ]
}

#[test]
fn schema_changes_follow_bigquerys_rules() {
    let rows = rows();
    assert!(rows.len() >= 20);
    for row in rows {
        let result = check_schema_change(&base(), &row.new);
        match (row.refused, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{}: refused: {e}", row.what),
            (Some(_), Ok(())) => panic!("{}: allowed", row.what),
            (Some(parts), Err(e)) => {
                let e = VfsError::from(e);
                assert_eq!(e.errno(), libc::EINVAL, "{}", row.what);
                for part in parts {
                    assert!(e.message().contains(part), "{}: {:?} lacks {part:?}", row.what, e.message());
                }
            }
        }
    }
}

#[test]
fn all_schema_problems_are_reported_in_schema_order() {
    let new = edited(|s| {
        s[0].field_type = "STRING".into();
        inner(s)[1].mode = "REQUIRED".into();
        s.remove(1);
    });
    let message = check_schema_change(&base(), &new).unwrap_err().message().to_string();
    // Problems inside `data` come where `data` is, drops after the level's
    // other columns.
    let order = ["column `id`: type", "; column `data.inner.y`: mode", "; column `name` was removed"];
    let positions: Vec<usize> = order.iter().map(|part| message.find(part).expect(part)).collect();
    assert!(positions.is_sorted() && positions[0] == 0, "{message}");
    assert_eq!(message.matches("; column `").count(), 2, "{message}");
}

#[test]
fn many_problems_are_summarized() {
    let old: Vec<SchemaField> = (0..15).map(|i| SchemaField::new(&format!("c{i}"), "STRING", "NULLABLE")).collect();
    let new: Vec<SchemaField> = (0..15).map(|i| SchemaField::new(&format!("c{i}"), "DATE", "NULLABLE")).collect();
    let message = check_schema_change(&old, &new).unwrap_err().message().to_string();
    assert_eq!(message.matches("cannot change").count(), 10);
    assert!(message.ends_with("; and 5 more"), "{message}");
}

fn schema_problem(fields: &[SchemaField]) -> String {
    refused_message(check_schema(fields))
}

#[test]
fn a_schema_on_its_own() {
    check_schema(&base()).unwrap();
    check_schema(&[SchemaField::new("a", "range", "repeated"), SchemaField::new("b", "bignumeric", "")]).unwrap();
    assert!(schema_problem(&[]).contains("no columns"));
    assert!(schema_problem(&[SchemaField::new("a", "TEXT", "NULLABLE")]).contains("column `a`: unknown type \"TEXT\""));
    assert!(
        schema_problem(&[SchemaField::new("a", "STRING", "OPTIONAL")])
            .contains("column `a`: unknown mode \"OPTIONAL\"")
    );
    assert!(schema_problem(&[rec("r", "NULLABLE", vec![])]).contains("column `r`: a RECORD needs at least one field"));
    let typed_with_fields = SchemaField {
        fields: vec![SchemaField::new("a", "STRING", "NULLABLE")],
        ..SchemaField::new("s", "STRING", "")
    };
    assert!(schema_problem(&[typed_with_fields]).contains("column `s`: only a RECORD"));
    assert!(
        schema_problem(&[SchemaField::new("a", "STRING", ""), SchemaField::new("", "STRING", "")])
            .contains("column 2 has an empty name")
    );
    let nested_empty = rec("r", "NULLABLE", vec![SchemaField::new("", "STRING", "")]);
    assert!(schema_problem(&[nested_empty]).contains("column 1 of `r` has an empty name"));
}

#[test]
fn column_names_are_unique_ignoring_case_within_their_record() {
    let duplicate =
        rec("r", "NULLABLE", vec![SchemaField::new("Id", "STRING", ""), SchemaField::new("id", "STRING", "")]);
    let message = schema_problem(&[SchemaField::new("id", "STRING", ""), duplicate]);
    assert!(message.contains("columns `r.Id` and `r.id` have the same name"), "{message}");
    // The same name in different records is fine.
    assert_eq!(message.matches("same name").count(), 1);
}

#[test]
fn column_names_have_at_most_300_characters() {
    check_schema(&[SchemaField::new(&"é".repeat(300), "STRING", "")]).unwrap();
    assert!(schema_problem(&[SchemaField::new(&"a".repeat(301), "STRING", "")]).contains("301 characters long"));
}

/// A chain of `depth` RECORDs with a STRING at the bottom.
fn nested(depth: usize) -> SchemaField {
    (1..depth).fold(rec("r", "NULLABLE", vec![SchemaField::new("leaf", "STRING", "")]), |inner, _| {
        rec("r", "NULLABLE", vec![inner])
    })
}

#[test]
fn records_nest_at_most_15_deep() {
    check_schema(&[nested(15)]).unwrap();
    let message = schema_problem(&[nested(16)]);
    assert!(message.contains(&format!("column `{}`", vec!["r"; 16].join("."))), "{message}");
    assert!(message.contains("at most 15 levels"), "{message}");
}

// ---------------------------------------------------------------------------
// Table settings

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_651_200)
}

fn table() -> TableSettings {
    TableSettings { schema: base(), description: Some("d".into()), ..Default::default() }
}

fn partitioned() -> TableSettings {
    TableSettings {
        time_partitioning: Some(TimePartitioning {
            partition_type: "DAY".into(),
            field: Some("ts".into()),
            expiration_ms: None,
        }),
        ..table()
    }
}

fn config_problem(table_type: &str, old: &TableSettings, new: &TableSettings) -> String {
    refused_message(check_config_change(table_type, old, new, now()))
}

fn with_labels(labels: &[(&str, &str)]) -> TableSettings {
    TableSettings { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..table() }
}

#[test]
fn labels_follow_googles_rules() {
    let ok = [("env", "production"), ("a-b_c9", ""), ("日本", "値"), ("é", "ü-1")];
    check_config_change("TABLE", &table(), &with_labels(&ok), now()).unwrap();
    let key63 = "k".repeat(63);
    check_config_change("TABLE", &table(), &with_labels(&[(&key63, &"v".repeat(63))]), now()).unwrap();
    let refused: &[(&str, &str, &str)] = &[
        ("Env", "x", "label `Env`: a key must start with a lowercase letter"),
        ("env", "Prod", "label `env`: 'P' in the value"),
        ("9lives", "x", "label `9lives`: a key must start"),
        ("_x", "x", "a key must start"),
        ("", "x", "a label key cannot be empty"),
        ("a b", "x", "label `a b`: ' ' in the key"),
        ("aB", "x", "label `aB`: 'B' in the key"),
        ("env", "a.b", "'.' in the value"),
        ("Émile", "x", "label `Émile`: a key must start"),
    ];
    for (key, value, expected) in refused {
        let message = config_problem("TABLE", &table(), &with_labels(&[(key, value)]));
        assert!(message.contains(expected), "{key}={value}: {message}");
    }
    let long_key = "k".repeat(64);
    assert!(config_problem("TABLE", &table(), &with_labels(&[(&long_key, "")])).contains("64 characters long"));
    let long_value = "v".repeat(64);
    assert!(config_problem("TABLE", &table(), &with_labels(&[("k", &long_value)])).contains("value is 64"));
}

#[test]
fn at_most_64_labels() {
    let labels = |n: usize| TableSettings {
        labels: (0..n).map(|i| (format!("k{i}"), String::new())).collect::<BTreeMap<_, _>>(),
        ..table()
    };
    check_config_change("TABLE", &table(), &labels(64), now()).unwrap();
    assert!(config_problem("TABLE", &table(), &labels(65)).contains("65 labels, BigQuery allows at most 64"));
}

#[test]
fn labels_are_checked_only_when_they_change() {
    let odd = with_labels(&[("Odd", "X")]);
    let new = TableSettings { description: Some("new".into()), ..odd.clone() };
    check_config_change("TABLE", &odd, &new, now()).unwrap();
}

#[test]
fn expiration_in_the_past_is_refused_when_it_changed() {
    let past = TableSettings { expiration_time: Some(now() - Duration::from_secs(1)), ..table() };
    let message = config_problem("TABLE", &table(), &past);
    assert!(message.contains("expiration_time 2026-01-17T11:59:59Z is in the past"), "{message}");
    // A table that already expired a moment ago may still get a description.
    let described = TableSettings { description: Some("x".into()), ..past.clone() };
    check_config_change("TABLE", &past, &described, now()).unwrap();
    let future = TableSettings { expiration_time: Some(now() + Duration::from_secs(60)), ..table() };
    check_config_change("TABLE", &table(), &future, now()).unwrap();
}

#[test]
fn require_partition_filter_needs_partitioning() {
    let unpartitioned = TableSettings { require_partition_filter: true, ..table() };
    assert!(config_problem("TABLE", &table(), &unpartitioned).contains("require_partition_filter"));
    let filtered = TableSettings { require_partition_filter: true, ..partitioned() };
    check_config_change("TABLE", &partitioned(), &filtered, now()).unwrap();
}

fn time_partitioned(edit: impl FnOnce(&mut TimePartitioning)) -> TableSettings {
    let mut settings = partitioned();
    if let Some(time) = settings.time_partitioning.as_mut() {
        edit(time);
    }
    settings
}

#[test]
fn partitioning_is_fixed_but_its_expiration_is_not() {
    let old = partitioned();
    let expiring = time_partitioned(|t| t.expiration_ms = Some(86_400_000));
    check_config_change("TABLE", &old, &expiring, now()).unwrap();
    let hourly = time_partitioned(|t| t.partition_type = "HOUR".into());
    assert!(config_problem("TABLE", &old, &hourly).contains("time_partitioning.type DAY cannot change to HOUR"));
    let ingestion = time_partitioned(|t| t.field = None);
    assert!(config_problem("TABLE", &old, &ingestion).contains("field `ts` cannot change to null (ingestion time)"));
    assert!(config_problem("TABLE", &old, &table()).contains("time_partitioning cannot be removed"));
    assert!(config_problem("TABLE", &table(), &old).contains("cannot be added to an existing table"));
    let range = |interval| TableSettings {
        range_partitioning: Some(RangePartitioning { field: "n".into(), start: 0, end: 100, interval }),
        ..table()
    };
    assert!(config_problem("TABLE", &range(10), &range(20)).contains("range_partitioning cannot change"));
    assert!(config_problem("TABLE", &range(10), &table()).contains("range_partitioning cannot be removed"));
    check_config_change("TABLE", &range(10), &range(10), now()).unwrap();
}

#[test]
fn queries() {
    let view = |q: Option<&str>| TableSettings { view_query: q.map(String::from), ..TableSettings::default() };
    check_config_change("VIEW", &view(Some("SELECT 1")), &view(Some("SELECT 2")), now()).unwrap();
    assert!(config_problem("VIEW", &view(Some("SELECT 1")), &view(None)).contains("a view needs a query"));
    assert!(config_problem("TABLE", &table(), &view(Some("SELECT 1"))).contains("only a VIEW has a query"));
    let mv = |q: &str| TableSettings { materialized_view_query: Some(q.into()), ..TableSettings::default() };
    check_config_change("MATERIALIZED_VIEW", &mv("SELECT 1"), &mv("SELECT 1"), now()).unwrap();
    let message = config_problem("MATERIALIZED_VIEW", &mv("SELECT 1"), &mv("SELECT 2"));
    assert!(message.contains("materialized_view_query cannot change"), "{message}");
}

#[test]
fn description_and_friendly_name_lengths() {
    let text = |description: usize, friendly: usize| TableSettings {
        description: Some("d".repeat(description)),
        friendly_name: Some("f".repeat(friendly)),
        ..table()
    };
    check_config_change("TABLE", &table(), &text(16384, 1024), now()).unwrap();
    assert!(config_problem("TABLE", &table(), &text(16385, 1)).contains("description: 16385 characters long"));
    assert!(config_problem("TABLE", &table(), &text(1, 1025)).contains("friendly_name: 1025 characters long"));
}

#[test]
fn clustering_by_at_most_four_distinct_columns() {
    let clustered =
        |columns: &[&str]| TableSettings { clustering: columns.iter().map(|c| c.to_string()).collect(), ..table() };
    check_config_change("TABLE", &table(), &clustered(&["a", "b", "c", "d"]), now()).unwrap();
    assert!(config_problem("TABLE", &table(), &clustered(&["a", "b", "c", "d", "e"])).contains("at most 4"));
    assert!(config_problem("TABLE", &table(), &clustered(&["a", "A"])).contains("`A` is listed twice"));
}

#[test]
fn a_new_table_may_be_partitioned() {
    check_new_table_config(&partitioned(), now()).unwrap();
    let filtered = TableSettings { require_partition_filter: true, ..partitioned() };
    check_new_table_config(&filtered, now()).unwrap();
    let range = TableSettings {
        range_partitioning: Some(RangePartitioning { field: "n".into(), start: 10, end: 0, interval: 0 }),
        ..table()
    };
    let message = check_new_table_config(&range, now()).unwrap_err().message().to_string();
    assert!(message.contains("interval is 0") && message.contains("end (0) must be above start (10)"), "{message}");
    let both = TableSettings { range_partitioning: range.range_partitioning.clone(), ..partitioned() };
    assert!(check_new_table_config(&both, now()).unwrap_err().message().contains("not both"));
    let bad_labels = TableSettings { labels: BTreeMap::from([("A".into(), String::new())]), ..table() };
    assert!(check_new_table_config(&bad_labels, now()).is_err());
}

/// A column's problem is about the column's path in the schema.
#[test]
fn a_column_problem_names_the_column_path() {
    let record = SchemaField {
        fields: vec![SchemaField::new("b", "STRING", "OPTIONAL")],
        ..SchemaField::new("a", "RECORD", "NULLABLE")
    };
    let problems = check_schema(&[record]).unwrap_err();
    let fields: Vec<&str> = problems.list().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["a.b"]);
}
