//! BigQuery through a real FUSE mount with real tools (ls, cat, vim, sed,
//! cp, tar, mkdir, rmdir), every effect checked with curl on the emulator's
//! REST API (a client that is not ciofs). The emulator accepts any schema
//! change, so refusals here are ciofs's own validation at work.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// A nested schema: REQUIRED, REPEATED, a RECORD in a RECORD, descriptions.
fn nested_schema() -> Value {
    json!({"fields": [
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED", "description": "Unique identifier"},
        {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        {"name": "data", "type": "RECORD", "mode": "NULLABLE", "fields": [
            {"name": "value", "type": "STRING", "mode": "NULLABLE"},
            {"name": "parts", "type": "RECORD", "mode": "REPEATED", "fields": [
                {"name": "n", "type": "FLOAT", "mode": "NULLABLE", "description": "a number"}
            ]}
        ]}
    ]})
}

struct Fixture {
    dataset: String,
    mount: FuseMount,
}

impl Fixture {
    /// A dataset with table `t` (nested schema, description, labels).
    fn new(test: &str) -> Self {
        let dataset = dataset_name(test);
        bq_create_dataset(&dataset);
        let table =
            json!({"schema": nested_schema(), "description": "first", "labels": {"env": "dev", "team": "data"}});
        bq_create_table(&dataset, "t", table);
        Fixture { dataset, mount: FuseMount::start(&[]) }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.mount.path(&format!("{PROJECT}/bigquery/{}/{relative}", self.dataset))
    }

    /// The dataset's directory, as a shell word.
    fn dir(&self) -> String {
        self.mount.path(&format!("{PROJECT}/bigquery/{}", self.dataset)).display().to_string()
    }

    fn table(&self, table: &str) -> Value {
        bq_table(&self.dataset, table).unwrap_or_else(|| panic!("table {table} does not exist"))
    }

    fn read_json(&self, relative: &str) -> Value {
        let text = std::fs::read(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// What `.ciofs/errors` at the mount root says.
    fn errors(&self) -> String {
        std::fs::read_to_string(self.mount.path(".ciofs/errors")).expect(".ciofs/errors")
    }
}

/// The REST schema's fields with every absent mode made NULLABLE, as
/// schema.json shows them.
fn with_modes(fields: &Value) -> Value {
    let mut fields = fields.clone();
    for field in fields.as_array_mut().into_iter().flatten() {
        if field.get("mode").is_none() {
            field["mode"] = json!("NULLABLE");
        }
        if let Some(nested) = field.get("fields") {
            field["fields"] = with_modes(nested);
        }
    }
    fields
}

#[test]
fn datasets_tables_and_views_are_directories_of_documents() {
    let f = Fixture::new("bq_read");
    let view = json!({"view": {"query": "SELECT 1 AS x", "useLegacySql": false}});
    bq_create_table(&f.dataset, "v", view);
    let root = f.mount.path(&format!("{PROJECT}/bigquery")).display().to_string();
    assert!(ok(&format!("ls {root}")).lines().any(|l| l == f.dataset));
    // ciofs's own order (tar archives in it): settings first.
    assert_eq!(ok(&format!("ls -f {}", f.dir())), ".meta\nt\nv\n");
    assert_eq!(ok(&format!("ls -f {}/t", f.dir())), "config.json\nschema.json\n_status.json\n");

    let rest = f.table("t");
    let schema = f.read_json("t/schema.json");
    assert_eq!((&schema["version"], &schema["type"]), (&json!("1"), &json!("bigquery-schema")));
    assert_eq!(schema["fields"], with_modes(&rest["schema"]["fields"]));
    let config = f.read_json("t/config.json");
    assert_eq!(config["type"], "bigquery-table-config");
    assert_eq!(config["description"], "first");
    assert_eq!(config["labels"], json!({"env": "dev", "team": "data"}));
    let status = f.read_json("t/_status.json");
    assert_eq!((&status["type"], &status["table_type"]), (&json!("bigquery-table-status"), &json!("TABLE")));
    assert_eq!(status["etag"], rest["etag"]);
    // bqemulator never returns a view's query, so only the key is there.
    assert!(f.read_json("v/config.json").get("view_query").is_some());
    assert_eq!(f.read_json("v/_status.json")["table_type"], "VIEW");
    let dataset = f.read_json(".meta/_dataset.json");
    assert_eq!((&dataset["type"], &dataset["dataset_id"]), (&json!("bigquery-dataset-metadata"), &json!(f.dataset)));

    // Exact sizes, and mtimes from the table's modification time.
    for file in ["config.json", "schema.json", "_status.json"] {
        let path = f.path(&format!("t/{file}"));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), std::fs::read(&path).unwrap().len() as u64, "{file}");
        let mtime = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(mtime.to_string(), rest["lastModifiedTime"].as_str().unwrap(), "{file}");
    }
    assert!(!f.path("missing").exists());
    assert!(!f.path("t/missing.json").exists());
}

#[test]
fn vim_adds_a_column_in_both_backupcopy_modes() {
    let f = Fixture::new("bq_vim");
    let d = f.dir();
    let etag = f.table("t")["etag"].clone();
    for (mode, column) in [("yes", "added_yes"), ("no", "added_no")] {
        // Insert a column after the `"fields": [` line; vim writes a swap
        // file, probes with `4913`, makes a backup and writes or renames.
        ok(&format!(
            "cd {d}/t && HOME=/nonexistent vim -u NONE -i NONE -N -es -c 'set backup backupcopy={mode}' \
             -c '/\"fields\": \\[/' \
             -c 'call append(line(\".\"), \"{{\\\"name\\\": \\\"{column}\\\", \\\"type\\\": \\\"STRING\\\"}},\")' \
             -c wq schema.json"
        ));
    }
    let rest = f.table("t");
    assert_ne!(rest["etag"], etag);
    let names: Vec<&str> =
        rest["schema"]["fields"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["added_no", "added_yes", "id", "tags", "data"]);
    assert_eq!(f.read_json("t/schema.json")["fields"], with_modes(&rest["schema"]["fields"]));
    let listing = ok(&format!("ls -a {d}/t"));
    assert!(!listing.contains("4913") && !listing.contains(".swp") && !listing.contains('~'), "{listing}");
}

#[test]
fn sed_and_cat_edit_config_json() {
    let f = Fixture::new("bq_sed");
    let d = f.dir();
    ok(&format!("sed -i 's/\"first\"/\"changed by sed\"/' {d}/t/config.json"));
    assert_eq!(f.table("t")["description"], "changed by sed");
    // Remove one label: the whole labels object is the table's labels.
    let mut config = f.read_json("t/config.json");
    config["labels"] = json!({"env": "prod"});
    assert_eq!(write_and_close_errno(&f.path("t/config.json"), config.to_string().as_bytes()), 0);
    assert_eq!(f.table("t")["labels"], json!({"env": "prod"}));
    // A partial document changes only what it names.
    ok(&format!("echo '{{\"description\": null}}' > {d}/t/config.json"));
    let rest = f.table("t");
    assert!(rest.get("description").is_none_or(Value::is_null), "{rest}");
    assert_eq!(rest["labels"], json!({"env": "prod"}));
}

#[test]
fn refused_edits_fail_close_and_say_why() {
    let f = Fixture::new("bq_refuse");
    let before = f.table("t");
    let schema = f.path("t/schema.json");
    let current = f.read_json("t/schema.json");
    let with_fields = |fields: Value| json!({"version": "1", "type": "bigquery-schema", "fields": fields}).to_string();

    let mut dropped = current["fields"].clone();
    dropped.as_array_mut().unwrap().remove(1);
    let mut retyped = current["fields"].clone();
    retyped[2]["fields"][0]["type"] = json!("INTEGER");
    let mut required = current["fields"].clone();
    required.as_array_mut().unwrap().push(json!({"name": "must", "type": "STRING", "mode": "REQUIRED"}));
    let refusals = [
        (with_fields(dropped), "tags"),
        (with_fields(retyped), "data.value"),
        (with_fields(required), "must"),
        ("{\"fields\": [\n  {\"name\": \"id\",, }\n]}".to_string(), "line 2"),
    ];
    for (document, named) in refusals {
        assert_eq!(write_and_close_errno(&schema, document.as_bytes()), libc::EINVAL, "{document}");
        let errors = f.errors();
        let last = errors.lines().last().unwrap_or_default();
        assert!(last.contains("schema.json") && last.contains(named), "{named} not in {last}");
    }
    let config = f.path("t/config.json");
    for (document, named) in [
        ("{\"labels\": {\"Bad Key\": \"x\"}}", "Bad Key"),
        ("{\"expiration_time\": \"2001-01-01T00:00:00Z\"}", "expiration"),
        ("{\"colour\": \"blue\"}", "colour"),
        ("{\"description\": 7}", "line 1"),
    ] {
        assert_eq!(write_and_close_errno(&config, document.as_bytes()), libc::EINVAL, "{document}");
        let errors = f.errors();
        assert!(errors.lines().last().unwrap_or_default().contains(named), "{named} not in {errors}");
    }
    // Nothing reached BigQuery, and the files show the table as it is.
    assert_eq!(f.table("t")["etag"], before["etag"]);
    assert_eq!(f.read_json("t/schema.json"), current);
}

#[test]
fn an_unchanged_document_written_back_changes_nothing() {
    let f = Fixture::new("bq_same");
    let before = f.table("t");
    let d = f.dir();
    ok(&format!("cp {d}/t/schema.json /tmp/{0}.json && cp /tmp/{0}.json {d}/t/schema.json", f.dataset));
    ok(&format!("cat {d}/t/config.json > /tmp/{0}.c && cat /tmp/{0}.c > {d}/t/config.json", f.dataset));
    let after = f.table("t");
    assert_eq!(after["etag"], before["etag"]);
    assert_eq!(after["lastModifiedTime"], before["lastModifiedTime"]);
}

#[test]
fn mkdir_and_rmdir_make_and_delete_datasets_and_tables() {
    let f = Fixture::new("bq_mkdir");
    let root = f.mount.path(&format!("{PROJECT}/bigquery")).display().to_string();
    // A new dataset is made at its `_dataset.json` (the location is given
    // only at creation), or by its first table, or after a second.
    let new_dataset = format!("{}_new", f.dataset);
    let document = r#"{"location": "EU", "description": "made by mkdir"}"#;
    ok(&format!("mkdir {root}/{new_dataset} && /bin/echo '{document}' > {root}/{new_dataset}/.meta/_dataset.json"));
    let made = bq_get(&format!("/datasets/{new_dataset}")).expect("the dataset was created");
    assert_eq!((&made["location"], &made["description"]), (&json!("EU"), &json!("made by mkdir")), "{made}");
    let waited = format!("{}_waited", f.dataset);
    ok(&format!("mkdir {root}/{waited}"));
    assert!(bq_get(&format!("/datasets/{waited}")).is_none(), "pending");
    wait_until("the dataset is made", std::time::Duration::from_secs(5), || {
        bq_get(&format!("/datasets/{waited}")).is_some()
    });
    ok(&format!("rmdir {root}/{waited}"));

    // A new table directory is pending until its schema.json arrives; a
    // config.json written before is used at creation.
    let table = format!("{root}/{new_dataset}/events");
    ok(&format!("mkdir {table}"));
    assert_eq!(ok(&format!("ls -A {table}")), "");
    assert!(bq_table(&new_dataset, "events").is_none());
    ok(&format!("echo '{{\"description\": \"made by mkdir\", \"labels\": {{\"k\": \"v\"}}}}' > {table}/config.json"));
    assert!(bq_table(&new_dataset, "events").is_none());
    let schema = r#"{"version":"1","type":"bigquery-schema","fields":[{"name":"id","type":"INTEGER"}]}"#;
    assert_eq!(write_and_close_errno(&PathBuf::from(format!("{table}/schema.json")), schema.as_bytes()), 0);
    let rest = bq_table(&new_dataset, "events").expect("the table was created");
    assert_eq!(rest["description"], "made by mkdir");
    assert_eq!(rest["labels"], json!({"k": "v"}));
    assert_eq!(rest["schema"]["fields"][0]["name"], "id");
    assert_eq!(ok(&format!("ls -f {table}")), "config.json\nschema.json\n_status.json\n");

    // A view: made from the query of its config.json; its schema.json
    // (as an export lists it, here empty) is not sent.
    let view = format!("{root}/{new_dataset}/big_events");
    ok(&format!("mkdir {view} && /bin/echo '{{\"view_query\": \"SELECT 1 AS x\"}}' > {view}/config.json"));
    assert_eq!(write_and_close_errno(&PathBuf::from(format!("{view}/schema.json")), br#"{"fields": []}"#), 0);
    let made = bq_table(&new_dataset, "big_events").expect("the view was created");
    assert_eq!(made["type"], "VIEW", "{made}");
    ok(&format!("rmdir {view}"));

    // A dataset with a table is not empty; rmdir of a table deletes it.
    let output = sh(&format!("rmdir {root}/{new_dataset}"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"), "{output:?}");
    ok(&format!("rmdir {table}"));
    assert!(bq_table(&new_dataset, "events").is_none());
    ok(&format!("rmdir {root}/{new_dataset}"));
    assert!(bq_get(&format!("/datasets/{new_dataset}")).is_none());

    // rm -r of a dataset with a table removes both.
    ok(&format!("rm -r {}", f.dir()));
    assert!(bq_table(&f.dataset, "t").is_none());
    assert!(bq_get(&format!("/datasets/{}", f.dataset)).is_none());
    assert!(!sh(&format!("mkdir {root}/bad-name")).status.success(), "a dataset name with a dash is refused");
}

#[test]
fn a_pending_table_directory_is_gone_after_a_remount() {
    let f = Fixture::new("bq_pending");
    ok(&format!("mkdir {}/later", f.dir()));
    assert!(f.path("later").is_dir());
    let Fixture { dataset, mount } = f;
    drop(mount);
    let mount = FuseMount::start(&[]);
    assert!(!mount.path(&format!("{PROJECT}/bigquery/{dataset}/later")).exists());
    assert!(mount.path(&format!("{PROJECT}/bigquery/{dataset}/t")).is_dir());
}

#[test]
fn generated_files_accept_writes_and_tar_x_of_a_table_succeeds_twice() {
    let f = Fixture::new("bq_tar");
    let before = f.table("t");
    let d = f.dir();
    ok(&format!("echo ignored > {d}/t/_status.json"));
    assert_eq!(f.read_json("t/_status.json")["etag"], before["etag"]);
    // tar c of the dataset, then tar x over it (as root: O_EXCL, unlink on
    // EEXIST, create, fchown, fchmod, utimensat), twice.
    let archive = format!("/tmp/{}.tar", f.dataset);
    ok(&format!("tar cf {archive} -C {d} ."));
    for _ in 0..2 {
        ok(&format!("tar xf {archive} -C {d}"));
    }
    let after = f.table("t");
    assert_eq!(after["etag"], before["etag"], "tar x of unchanged documents changes nothing");
    assert_eq!(ok(&format!("ls -f {d}/t")), "config.json\nschema.json\n_status.json\n");
    let _ = std::fs::remove_file(archive);
}

#[test]
fn dataset_json_edits_change_description_and_labels() {
    let f = Fixture::new("bq_dataset");
    let meta = f.path(".meta/_dataset.json");
    let before = f.read_json(".meta/_dataset.json");
    assert_eq!(before["description"], Value::Null);
    ok(&format!("sed -i 's/\"description\": null/\"description\": \"from sed\"/' {}", meta.display()));
    let dataset = bq_get(&format!("/datasets/{}", f.dataset)).unwrap();
    assert_eq!(dataset["description"], "from sed");
    assert_eq!(write_and_close_errno(&meta, br#"{"labels": {"team": "data"}}"#), 0);
    let dataset = bq_get(&format!("/datasets/{}", f.dataset)).unwrap();
    assert_eq!((&dataset["labels"], &dataset["description"]), (&json!({"team": "data"}), &json!("from sed")));
    assert_eq!(f.read_json(".meta/_dataset.json")["labels"], json!({"team": "data"}));
    // What only a creation sets is refused, and nothing changes.
    assert_eq!(write_and_close_errno(&meta, br#"{"location": "EU", "description": "no"}"#), libc::EINVAL);
    assert!(f.errors().lines().last().unwrap_or_default().contains("location"), "{}", f.errors());
    assert_eq!(bq_get(&format!("/datasets/{}", f.dataset)).unwrap()["description"], "from sed");
    // The document as read back (server fields included) is accepted as is.
    let current = std::fs::read(&meta).unwrap();
    assert_eq!(write_and_close_errno(&meta, &current), 0);
}
