//! What the fuzz targets (fuzz/, built by cargo-fuzz with `--cfg fuzzing`)
//! run: each document a user can write, from arbitrary bytes, through the
//! parser and the checks the namespace applies to it before anything is
//! sent; and `ciofs import`'s reading and plan of an arbitrary archive.
//! Each returns normally for any input: a panic is a finding. Where a
//! document parses, rendering it and parsing that again must give the
//! same settings.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciofs_backends::bigquery::{DatasetMeta, DatasetSettings, SchemaField, TableMeta, TableSettings};
use ciofs_backends::gcs::BucketMeta;
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub};
use ciofs_backends::pubsub::{SubscriptionMeta, SubscriptionSettings, TopicMeta, TopicSettings};

use crate::archive::import::{self, ArchiveFile, ImportOptions, OnConflict};
use crate::bigquery::documents::{
    parse_dataset, parse_schema, parse_table_config, render_dataset, render_schema, render_table_config,
};
use crate::bigquery::rules::{check_config_change, check_new_table_config, check_schema, check_schema_change};
use crate::core::rules::{Problems, label_problems, refuse_if_any};
use crate::namespace::{Namespace, Options, Services};
use crate::pubsub::documents::{
    parse_subscription_config, parse_topic_config, render_subscription_config, render_topic_config,
};
use crate::pubsub::rules::{check_subscription_change, check_topic_settings};
use crate::storage::documents::{bucket_document, parse_bucket_document, parse_object_document};

/// A fixed "now", so that a run does not depend on the day.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// `schema.json` of a table whose columns are `id` and `tags`.
pub fn schema_json(data: &[u8]) {
    let Ok(fields) = parse_schema(data) else { return };
    check_schema(&fields).expect("parse_schema checked the columns");
    let current = [SchemaField::new("id", "INTEGER", "REQUIRED"), SchemaField::new("tags", "STRING", "REPEATED")];
    let _ = check_schema_change(&current, &fields);
    assert_eq!(parse_schema(&render_schema(&fields)).ok(), Some(fields), "schema.json round trip");
}

/// `config.json` of a table, new or existing.
pub fn table_config_json(data: &[u8]) {
    let current = TableSettings::default();
    let Ok(settings) = parse_table_config(data, &current) else { return };
    let _ = check_new_table_config(&settings, now());
    let _ = check_config_change("TABLE", &current, &settings, now());
    // config.json shows the query of a view (or materialized view) only.
    let table_type = match (&settings.view_query, &settings.materialized_view_query) {
        (Some(_), _) => "VIEW",
        (None, Some(_)) => "MATERIALIZED_VIEW",
        (None, None) => "TABLE",
    };
    let meta = TableMeta { table_type: table_type.to_string(), settings: settings.clone(), ..TableMeta::default() };
    let shown = TableSettings {
        materialized_view_query: settings.materialized_view_query.clone().filter(|_| table_type != "VIEW"),
        ..settings
    };
    let again = parse_table_config(&render_table_config(&meta), &current);
    assert_eq!(again.ok(), Some(shown), "config.json round trip");
}

/// `.meta/_dataset.json`.
pub fn dataset_json(data: &[u8]) {
    let current = DatasetSettings::default();
    let Ok(settings) = parse_dataset(data, &current) else { return };
    let mut problems = Problems::default();
    label_problems("BigQuery", &settings.labels, &mut problems);
    let _ = refuse_if_any(problems);
    let meta = DatasetMeta { settings: settings.clone(), ..DatasetMeta::default() };
    let again = parse_dataset(&render_dataset(&meta), &current);
    assert_eq!(again.ok(), Some(settings), "_dataset.json round trip");
}

/// `config.json` of a topic.
pub fn topic_config_json(data: &[u8]) {
    let current = TopicSettings::default();
    let Ok(settings) = parse_topic_config(data, &current) else { return };
    let _ = check_topic_settings(None, &settings);
    let _ = check_topic_settings(Some(&current), &settings);
    let meta = TopicMeta { settings: settings.clone(), ..TopicMeta::default() };
    let again = parse_topic_config(&render_topic_config(&meta), &current);
    assert_eq!(again.ok(), Some(settings), "topic config.json round trip");
}

/// `config.json` of a subscription of `projects/p/topics/t`.
pub fn subscription_config_json(data: &[u8]) {
    let (project, topic) = ("p", "projects/p/topics/t");
    let current = SubscriptionSettings::default();
    let Ok(settings) = parse_subscription_config(project, topic, data, &current) else { return };
    let _ = check_subscription_change(None, &settings);
    let _ = check_subscription_change(Some(&current), &settings);
    let meta = SubscriptionMeta { topic: topic.to_string(), settings: settings.clone(), ..SubscriptionMeta::default() };
    let again = parse_subscription_config(project, topic, &render_subscription_config(project, &meta), &current);
    assert_eq!(again.ok(), Some(settings), "subscription config.json round trip");
}

/// `.meta/_bucket.json` of a bucket in EU.
pub fn bucket_json(data: &[u8]) {
    let current = BucketMeta {
        name: "b".to_string(),
        location: "EU".to_string(),
        storage_class: "STANDARD".to_string(),
        ..BucketMeta::default()
    };
    let Ok(settings) = parse_bucket_document(data, "_bucket.json", &current) else { return };
    let mut problems = Problems::default();
    label_problems("Cloud Storage", &settings.labels, &mut problems);
    let _ = refuse_if_any(problems);
    let meta = BucketMeta {
        location: settings.location.clone().unwrap_or_default(),
        storage_class: settings.storage_class.clone().unwrap_or_default(),
        labels: settings.labels.clone(),
        versioning: settings.versioning,
        ..current.clone()
    };
    let again = parse_bucket_document(&bucket_document(&meta), "_bucket.json", &current);
    assert_eq!(again.ok(), Some(settings), "_bucket.json round trip");
}

/// `.meta/OBJECT.json`.
pub fn object_json(data: &[u8]) {
    let _ = parse_object_document(data, "object.json");
}

/// A project `q` on the in-memory services, with a bucket `existing`: the
/// target of `import_archive`. Made once per process.
struct Target {
    runtime: tokio::runtime::Runtime,
    namespace: Arc<Namespace>,
    dir: std::path::PathBuf,
}

static TARGET: LazyLock<Target> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket_of("q", "existing");
    let services = Services { gcs, bigquery: Arc::new(MemoryBigQuery::new()), pubsub: Arc::new(MemoryPubSub::new()) };
    let dir = std::env::temp_dir().join(format!("ciofs-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let options = Options { staging_dir: dir.join("staging"), ..Options::default() };
    let namespace = {
        let _entered = runtime.enter();
        Arc::new(Namespace::new(vec!["q".to_string()], services, options))
    };
    Target { runtime, namespace, dir }
});

/// `ciofs import --dry-run` of `data` as an archive: read and planned
/// against project `q`; nothing is applied.
pub fn import_archive(data: &[u8]) {
    let target = &*TARGET;
    let path = target.dir.join("archive.tar");
    std::fs::write(&path, data).expect("the archive is written");
    let Ok(file) = ArchiveFile::new(&path) else { return };
    let options = ImportOptions {
        dry_run: true,
        on_conflict: OnConflict::Skip,
        map_bucket: vec![("old".to_string(), "new".to_string())],
        upload_macos_files: false,
    };
    let Ok(mut planned) = import::read_archive(&file, &options) else { return };
    let _ = import::plan(&target.namespace, target.runtime.handle(), "q", &mut planned);
    let _ = import::summarize(&planned);
}
