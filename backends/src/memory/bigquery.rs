//! `MemoryBigQuery`: BigQuery's datasets and tables in memory, for unit
//! tests of the core. It answers as the real service does where the
//! emulator does not: a missing dataset's tables are NotFound, a non-empty
//! dataset is not deleted (400 "still in use"), an update at a stale etag is
//! refused, listings come in pages, and the schema and partitioning changes
//! BigQuery refuses are refused (see `check_update`). Every change sets a
//! new modification time and a new etag.
//!
//! It counts calls per kind (`calls`), can be told to fail the next calls
//! of a kind (`fail_next`), and can be changed behind the core's back
//! (`put_dataset`, `put_table`, `set_table_stats`, `remove_*`), which
//! counts no call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

mod rules;

use super::{InjectedFailures, page};
use crate::bigquery::{
    BigQuery, DatasetListEntry, DatasetMeta, DatasetSettings, Page, TableListEntry, TableMeta, TableSettings,
    UpdateTable,
};
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::sync::lock;
use rules::{check_new_table, check_update, table_type};

/// BigQuery's default page size for datasets.list and tables.list.
const DEFAULT_PAGE_SIZE: usize = 50;

/// How many calls of each kind a `MemoryBigQuery` served (failed ones
/// included).
#[derive(Debug, Default)]
pub struct BigQueryCallCounts {
    pub list_datasets: AtomicU64,
    pub get_dataset: AtomicU64,
    pub create_dataset: AtomicU64,
    pub update_dataset: AtomicU64,
    pub delete_dataset: AtomicU64,
    pub list_tables: AtomicU64,
    pub get_table: AtomicU64,
    pub create_table: AtomicU64,
    pub update_table: AtomicU64,
    pub delete_table: AtomicU64,
}

/// A kind of `BigQuery` call, to make it fail with
/// `MemoryBigQuery::fail_next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BigQueryOp {
    ListDatasets,
    GetDataset,
    CreateDataset,
    UpdateDataset,
    DeleteDataset,
    ListTables,
    GetTable,
    CreateTable,
    UpdateTable,
    DeleteTable,
}

impl BigQueryCallCounts {
    fn of(&self, op: BigQueryOp) -> &AtomicU64 {
        match op {
            BigQueryOp::ListDatasets => &self.list_datasets,
            BigQueryOp::GetDataset => &self.get_dataset,
            BigQueryOp::CreateDataset => &self.create_dataset,
            BigQueryOp::UpdateDataset => &self.update_dataset,
            BigQueryOp::DeleteDataset => &self.delete_dataset,
            BigQueryOp::ListTables => &self.list_tables,
            BigQueryOp::GetTable => &self.get_table,
            BigQueryOp::CreateTable => &self.create_table,
            BigQueryOp::UpdateTable => &self.update_table,
            BigQueryOp::DeleteTable => &self.delete_table,
        }
    }

    /// How many calls of kind `op` were made.
    pub fn get(&self, op: BigQueryOp) -> u64 {
        self.of(op).load(Ordering::SeqCst)
    }
}

struct Dataset {
    meta: DatasetMeta,
    tables: BTreeMap<String, TableMeta>,
}

impl Dataset {
    fn new(dataset: &str, settings: &DatasetSettings, now: SystemTime, etag: String) -> Self {
        let meta = DatasetMeta {
            dataset: dataset.to_string(),
            settings: DatasetSettings {
                // BigQuery's default location.
                location: Some(settings.location.clone().unwrap_or_else(|| "US".to_string())),
                ..settings.clone()
            },
            created: Some(now),
            modified: Some(now),
            etag,
        };
        Self { meta, tables: BTreeMap::new() }
    }
}

/// A table as tables.insert makes it in `dataset`.
fn new_table_meta(
    dataset: &DatasetMeta,
    table: &str,
    settings: &TableSettings,
    now: SystemTime,
    etag: String,
) -> TableMeta {
    let table_type = table_type(settings);
    // A view holds no data; tables and materialized views start empty.
    let stats = (table_type != "VIEW").then_some(0);
    TableMeta {
        dataset: dataset.dataset.clone(),
        table: table.to_string(),
        table_type: table_type.to_string(),
        settings: settings.clone(),
        num_rows: stats,
        num_bytes: stats,
        created: Some(now),
        modified: Some(now),
        location: dataset.settings.location.clone(),
        etag,
    }
}

/// Datasets by (project, dataset): projects are apart, as on BigQuery.
#[derive(Default)]
struct State {
    datasets: BTreeMap<(String, String), Dataset>,
    /// The last time handed out, in ms since the epoch.
    clock_ms: u64,
    etags: u64,
}

impl State {
    /// Now, at BigQuery's resolution (ms), and later than any time handed
    /// out before: every change has its own modification time.
    fn now(&mut self) -> SystemTime {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        self.clock_ms = u64::try_from(now).unwrap_or(u64::MAX).max(self.clock_ms + 1);
        UNIX_EPOCH + Duration::from_millis(self.clock_ms)
    }

    /// An etag in BigQuery's form (a quoted hash), new at every change.
    fn etag(&mut self) -> String {
        self.etags += 1;
        format!("\"{:016x}\"", self.etags.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn dataset(&self, project: &str, dataset: &str) -> BackendResult<&Dataset> {
        self.datasets.get(&key(project, dataset)).ok_or_else(|| dataset_not_found(project, dataset))
    }

    fn dataset_mut(&mut self, project: &str, dataset: &str) -> BackendResult<&mut Dataset> {
        self.datasets.get_mut(&key(project, dataset)).ok_or_else(|| dataset_not_found(project, dataset))
    }

    fn new_dataset(&mut self, project: &str, dataset: &str, settings: &DatasetSettings) -> DatasetMeta {
        let d = Dataset::new(dataset, settings, self.now(), self.etag());
        let meta = d.meta.clone();
        self.datasets.insert(key(project, dataset), d);
        meta
    }

    /// The dataset, made (with default settings) if missing.
    fn dataset_or_new(&mut self, project: &str, dataset: &str) -> &mut Dataset {
        let (now, etag) = (self.now(), self.etag());
        let new = || Dataset::new(dataset, &DatasetSettings::default(), now, etag);
        self.datasets.entry(key(project, dataset)).or_insert_with(new)
    }

    /// A new table (or view) in an existing dataset.
    fn new_table(
        &mut self,
        project: &str,
        dataset: &str,
        table: &str,
        settings: &TableSettings,
    ) -> BackendResult<TableMeta> {
        let (now, etag) = (self.now(), self.etag());
        let d = self.dataset_mut(project, dataset)?;
        let meta = new_table_meta(&d.meta, table, settings, now, etag);
        d.tables.insert(table.to_string(), meta.clone());
        Ok(meta)
    }

    /// Replaces a table's settings as tables.update does; an empty schema
    /// keeps the table's (as `GoogleBigQuery` sends none then).
    fn replace_table(
        &mut self,
        project: &str,
        dataset: &str,
        table: &str,
        settings: &TableSettings,
    ) -> BackendResult<TableMeta> {
        let (now, etag) = (self.now(), self.etag());
        let meta = table_mut(self.dataset_mut(project, dataset)?, project, table)?;
        let schema = if settings.schema.is_empty() { meta.settings.schema.clone() } else { settings.schema.clone() };
        meta.settings = TableSettings { schema, ..settings.clone() };
        meta.modified = Some(now);
        meta.etag = etag;
        Ok(meta.clone())
    }
}

/// BigQuery in memory; see the module's documentation.
pub struct MemoryBigQuery {
    state: Mutex<State>,
    page_size: AtomicUsize,
    /// Calls still to fail, per kind: how many, and how.
    failures: InjectedFailures<BigQueryOp>,
    pub calls: BigQueryCallCounts,
}

impl Default for MemoryBigQuery {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            page_size: AtomicUsize::new(DEFAULT_PAGE_SIZE),
            failures: InjectedFailures::default(),
            calls: BigQueryCallCounts::default(),
        }
    }
}

impl MemoryBigQuery {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries per listing page (at least 1; BigQuery's default, 50, at
    /// first).
    pub fn set_page_size(&self, page_size: usize) {
        self.page_size.store(page_size.max(1), Ordering::SeqCst);
    }

    /// Makes the next `times` calls of kind `op` fail with `kind` (they
    /// count as calls, and change nothing). Replaces what was set for `op`.
    pub fn fail_next(&self, op: BigQueryOp, times: u32, kind: ErrorKind) {
        self.failures.set(op, times, kind);
    }

    /// Creates a dataset, or replaces an existing one's settings (keeping
    /// its tables and location), as a change behind the core's back would.
    pub fn put_dataset(&self, project: &str, dataset: &str, settings: DatasetSettings) -> DatasetMeta {
        let mut state = self.state();
        let (now, etag) = (state.now(), state.etag());
        match state.datasets.get_mut(&key(project, dataset)) {
            Some(d) => {
                let location = d.meta.settings.location.clone();
                d.meta = DatasetMeta {
                    settings: DatasetSettings { location, ..settings },
                    modified: Some(now),
                    etag,
                    ..d.meta.clone()
                };
                d.meta.clone()
            }
            None => state.new_dataset(project, dataset, &settings),
        }
    }

    /// Creates a table (its dataset too, if missing), or replaces an
    /// existing one's settings and type, behind the core's back. No rule is
    /// checked: a test can set up what it likes.
    pub fn put_table(&self, project: &str, dataset: &str, table: &str, settings: TableSettings) -> TableMeta {
        let mut state = self.state();
        let (now, etag) = (state.now(), state.etag());
        let d = state.dataset_or_new(project, dataset);
        let new = new_table_meta(&d.meta, table, &settings, now, etag.clone());
        let meta = d.tables.entry(table.to_string()).or_insert(new);
        meta.table_type = table_type(&settings).to_string();
        (meta.settings, meta.modified, meta.etag) = (settings, Some(now), etag);
        meta.clone()
    }

    /// Sets a table's row and byte counts, as a load would (a new
    /// modification time and etag). None if there is no such table.
    pub fn set_table_stats(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        rows: u64,
        bytes: u64,
    ) -> Option<TableMeta> {
        let mut state = self.state();
        let (now, etag) = (state.now(), state.etag());
        let meta = state.datasets.get_mut(&key(project, dataset))?.tables.get_mut(table)?;
        (meta.num_rows, meta.num_bytes, meta.modified, meta.etag) = (Some(rows), Some(bytes), Some(now), etag);
        Some(meta.clone())
    }

    /// Removes a table behind the core's back; whether it was there.
    pub fn remove_table(&self, project: &str, dataset: &str, table: &str) -> bool {
        let mut state = self.state();
        state.datasets.get_mut(&key(project, dataset)).is_some_and(|d| d.tables.remove(table).is_some())
    }

    /// Removes a dataset and its tables behind the core's back; whether it
    /// was there.
    pub fn remove_dataset(&self, project: &str, dataset: &str) -> bool {
        self.state().datasets.remove(&key(project, dataset)).is_some()
    }

    /// A dataset as it is now (no call is counted).
    pub fn dataset(&self, project: &str, dataset: &str) -> Option<DatasetMeta> {
        self.state().dataset(project, dataset).ok().map(|d| d.meta.clone())
    }

    /// A table as it is now (no call is counted).
    pub fn table(&self, project: &str, dataset: &str, table: &str) -> Option<TableMeta> {
        self.state().dataset(project, dataset).ok()?.tables.get(table).cloned()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Counts a call, and fails it if `fail_next` said so.
    fn call(&self, op: BigQueryOp) -> BackendResult<()> {
        self.calls.of(op).fetch_add(1, Ordering::SeqCst);
        self.failures.check(op)
    }

    fn page_size(&self) -> usize {
        self.page_size.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl BigQuery for MemoryBigQuery {
    async fn list_datasets(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<DatasetListEntry>> {
        self.call(BigQueryOp::ListDatasets)?;
        let state = self.state();
        let datasets = state.datasets.iter().filter(|((p, _), _)| p == project).map(|((_, name), d)| {
            (name, DatasetListEntry { dataset: name.clone(), location: d.meta.settings.location.clone() })
        });
        let (items, next_page_token) = page(datasets, page_token, self.page_size());
        Ok(Page { items, next_page_token })
    }

    async fn get_dataset(&self, project: &str, dataset: &str) -> BackendResult<DatasetMeta> {
        self.call(BigQueryOp::GetDataset)?;
        Ok(self.state().dataset(project, dataset)?.meta.clone())
    }

    async fn create_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        self.call(BigQueryOp::CreateDataset)?;
        let mut state = self.state();
        if state.dataset(project, dataset).is_ok() {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("Already Exists: Dataset {project}:{dataset}"),
            ));
        }
        Ok(state.new_dataset(project, dataset, settings))
    }

    async fn update_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        self.call(BigQueryOp::UpdateDataset)?;
        let mut state = self.state();
        let (now, etag) = (state.now(), state.etag());
        let meta = &mut state.dataset_mut(project, dataset)?.meta;
        // The location is fixed at creation.
        meta.settings = DatasetSettings { location: meta.settings.location.clone(), ..settings.clone() };
        (meta.modified, meta.etag) = (Some(now), etag);
        Ok(meta.clone())
    }

    async fn delete_dataset(&self, project: &str, dataset: &str) -> BackendResult<()> {
        self.call(BigQueryOp::DeleteDataset)?;
        let mut state = self.state();
        if !state.dataset(project, dataset)?.tables.is_empty() {
            // BigQuery's answer: 400.
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("Dataset {project}:{dataset} is still in use"),
            ));
        }
        state.datasets.remove(&key(project, dataset));
        Ok(())
    }

    async fn list_tables(
        &self,
        project: &str,
        dataset: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<TableListEntry>> {
        self.call(BigQueryOp::ListTables)?;
        let state = self.state();
        let tables = state.dataset(project, dataset)?.tables.iter().map(|(name, meta)| {
            let entry = TableListEntry {
                dataset: dataset.to_string(),
                table: name.clone(),
                table_type: meta.table_type.clone(),
                created: meta.created,
            };
            (name, entry)
        });
        let (items, next_page_token) = page(tables, page_token, self.page_size());
        Ok(Page { items, next_page_token })
    }

    async fn get_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<TableMeta> {
        self.call(BigQueryOp::GetTable)?;
        let state = self.state();
        let d = state.dataset(project, dataset)?;
        d.tables.get(table).cloned().ok_or_else(|| table_not_found(project, dataset, table))
    }

    async fn create_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        settings: &TableSettings,
    ) -> BackendResult<TableMeta> {
        self.call(BigQueryOp::CreateTable)?;
        let mut state = self.state();
        if state.dataset(project, dataset)?.tables.contains_key(table) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("Already Exists: Table {project}:{dataset}.{table}"),
            ));
        }
        check_new_table(settings).map_err(invalid)?;
        state.new_table(project, dataset, table, settings)
    }

    async fn update_table(&self, request: &UpdateTable) -> BackendResult<TableMeta> {
        let UpdateTable { project, dataset, table, settings, etag } = request;
        self.call(BigQueryOp::UpdateTable)?;
        let mut state = self.state();
        let current = state.dataset(project, dataset)?.tables.get(table);
        let current = current.ok_or_else(|| table_not_found(project, dataset, table))?;
        if let Some(expected) = etag.as_ref().filter(|expected| **expected != current.etag) {
            return Err(BackendError::new(
                ErrorKind::PreconditionFailed,
                format!("Precondition check failed: table {project}:{dataset}.{table} is not at etag {expected}"),
            ));
        }
        check_update(current, settings).map_err(invalid)?;
        state.replace_table(project, dataset, table, settings)
    }

    async fn delete_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<()> {
        self.call(BigQueryOp::DeleteTable)?;
        let mut state = self.state();
        let d = state.dataset_mut(project, dataset)?;
        d.tables.remove(table).map(|_| ()).ok_or_else(|| table_not_found(project, dataset, table))
    }
}

fn key(project: &str, dataset: &str) -> (String, String) {
    (project.to_string(), dataset.to_string())
}

fn table_mut<'a>(d: &'a mut Dataset, project: &str, table: &str) -> BackendResult<&'a mut TableMeta> {
    let dataset = d.meta.dataset.clone();
    d.tables.get_mut(table).ok_or_else(|| table_not_found(project, &dataset, table))
}

fn dataset_not_found(project: &str, dataset: &str) -> BackendError {
    BackendError::new(ErrorKind::NotFound, format!("Not found: Dataset {project}:{dataset}"))
}

fn table_not_found(project: &str, dataset: &str, table: &str) -> BackendError {
    BackendError::new(ErrorKind::NotFound, format!("Not found: Table {project}:{dataset}.{table}"))
}

fn invalid(message: String) -> BackendError {
    BackendError::new(ErrorKind::InvalidArgument, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigquery::SchemaField;

    fn table(schema: Vec<SchemaField>) -> TableSettings {
        TableSettings { schema, labels: [("a".to_string(), "1".to_string())].into(), ..TableSettings::default() }
    }

    fn kind<T: std::fmt::Debug>(result: BackendResult<T>) -> ErrorKind {
        result.unwrap_err().kind
    }

    #[tokio::test]
    async fn datasets_are_created_once_updated_whole_and_deleted_when_empty() {
        let bq = MemoryBigQuery::new();
        let settings = DatasetSettings { labels: [("k".to_string(), "v".to_string())].into(), ..Default::default() };
        let created = bq.create_dataset("p", "d", &settings).await.unwrap();
        assert_eq!(created.settings.location.as_deref(), Some("US"), "BigQuery's default location");
        assert_eq!(kind(bq.create_dataset("p", "d", &settings).await), ErrorKind::AlreadyExists);
        assert_eq!(kind(bq.get_dataset("other-project", "d").await), ErrorKind::NotFound, "projects are apart");

        let changed = DatasetSettings {
            location: Some("EU".to_string()),
            description: Some("x".to_string()),
            ..Default::default()
        };
        let updated = bq.update_dataset("p", "d", &changed).await.unwrap();
        assert!(updated.settings.labels.is_empty(), "a label left out is removed");
        assert_eq!(updated.settings.location.as_deref(), Some("US"), "the location is fixed");
        assert_ne!(updated.etag, created.etag);
        assert!(updated.modified > created.modified && updated.created == created.created);
        assert_eq!(bq.get_dataset("p", "d").await.unwrap(), updated);

        bq.create_table("p", "d", "t", &table(vec![SchemaField::new("x", "STRING", "NULLABLE")])).await.unwrap();
        let full = bq.delete_dataset("p", "d").await.unwrap_err();
        assert_eq!(full.kind, ErrorKind::InvalidArgument);
        assert!(full.message.contains("still in use"), "{full}");
        assert!(bq.table("p", "d", "t").is_some(), "contents are never deleted");
        bq.delete_table("p", "d", "t").await.unwrap();
        bq.delete_dataset("p", "d").await.unwrap();
        assert_eq!(kind(bq.delete_dataset("p", "d").await), ErrorKind::NotFound);
        assert_eq!(bq.calls.get(BigQueryOp::DeleteDataset), 3);
    }

    #[tokio::test]
    async fn listings_come_in_pages_in_name_order() {
        let bq = MemoryBigQuery::new();
        for name in ["c", "a", "b", "e", "d"] {
            bq.put_table("p", "ds", name, TableSettings::default());
        }
        bq.put_dataset("p", "ds2", DatasetSettings::default());
        bq.put_dataset("q", "elsewhere", DatasetSettings::default());
        bq.set_page_size(2);
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = bq.list_tables("p", "ds", token).await.unwrap();
            assert!(page.items.len() <= 2);
            names.extend(page.items.into_iter().map(|t| t.table));
            token = page.next_page_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!(bq.calls.get(BigQueryOp::ListTables), 3);
        let datasets = bq.list_datasets("p", None).await.unwrap();
        assert_eq!(datasets.items.iter().map(|d| d.dataset.as_str()).collect::<Vec<_>>(), ["ds", "ds2"]);
        assert_eq!(datasets.next_page_token, None, "exactly one page full: no token");
        assert_eq!(kind(bq.list_tables("p", "nope", None).await), ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn tables_views_and_their_metadata() {
        let bq = MemoryBigQuery::new();
        bq.put_dataset("p", "d", DatasetSettings { location: Some("EU".to_string()), ..Default::default() });
        let settings = table(vec![SchemaField::new("x", "STRING", "NULLABLE")]);
        assert_eq!(kind(bq.create_table("p", "nope", "t", &settings).await), ErrorKind::NotFound);
        let created = bq.create_table("p", "d", "t", &settings).await.unwrap();
        assert_eq!((created.table_type.as_str(), created.location.as_deref()), ("TABLE", Some("EU")));
        assert_eq!((created.num_rows, created.num_bytes), (Some(0), Some(0)));
        assert_eq!(created.settings, settings);
        assert_eq!(kind(bq.create_table("p", "d", "t", &settings).await), ErrorKind::AlreadyExists);
        assert_eq!(bq.get_table("p", "d", "t").await.unwrap(), created);

        let view = TableSettings { view_query: Some("SELECT 1".to_string()), ..TableSettings::default() };
        let v = bq.create_table("p", "d", "v", &view).await.unwrap();
        assert_eq!((v.table_type.as_str(), v.num_rows), ("VIEW", None));
        let listed = bq.list_tables("p", "d", None).await.unwrap().items;
        assert_eq!(
            listed.iter().map(|t| (t.table.as_str(), t.table_type.as_str())).collect::<Vec<_>>(),
            [("t", "TABLE"), ("v", "VIEW")]
        );
        assert_eq!(listed[0].created, created.created);

        let loaded = bq.set_table_stats("p", "d", "t", 10, 1234).unwrap();
        assert_eq!((loaded.num_rows, loaded.num_bytes), (Some(10), Some(1234)));
        assert_ne!(loaded.etag, created.etag);
        assert!(loaded.modified > created.modified);

        bq.delete_table("p", "d", "t").await.unwrap();
        assert_eq!(kind(bq.get_table("p", "d", "t").await), ErrorKind::NotFound);
        assert_eq!(kind(bq.delete_table("p", "d", "t").await), ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn an_update_replaces_the_settings_whole_at_the_given_etag() {
        let bq = MemoryBigQuery::new();
        let created = bq.put_table("p", "d", "t", table(vec![SchemaField::new("x", "STRING", "REQUIRED")]));
        let mut wider = vec![SchemaField::new("x", "STRING", "NULLABLE"), SchemaField::new("y", "INT64", "REPEATED")];
        wider[0].description = Some("relaxed".to_string());
        let changed = TableSettings { schema: wider, description: Some("d".to_string()), ..TableSettings::default() };
        let updated = bq
            .update_table(&UpdateTable {
                project: "p".to_string(),
                dataset: "d".to_string(),
                table: "t".to_string(),
                settings: changed.clone(),
                etag: Some(created.etag.clone()),
            })
            .await
            .unwrap();
        assert_eq!(updated.settings, changed, "the label left out is removed");
        assert_ne!(updated.etag, created.etag);
        assert!(updated.modified > created.modified);

        let stale = bq
            .update_table(&UpdateTable {
                project: "p".to_string(),
                dataset: "d".to_string(),
                table: "t".to_string(),
                settings: TableSettings::default(),
                etag: Some(created.etag.clone()),
            })
            .await;
        assert_eq!(kind(stale), ErrorKind::PreconditionFailed);
        assert_eq!(bq.table("p", "d", "t").unwrap(), updated, "a refused update changes nothing");
        let no_schema = TableSettings { description: Some("e".to_string()), ..TableSettings::default() };
        let kept = bq
            .update_table(&UpdateTable {
                project: "p".to_string(),
                dataset: "d".to_string(),
                table: "t".to_string(),
                settings: no_schema.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(kept.settings.schema, changed.schema, "no schema sent: the table's is kept");
        assert_eq!(
            kind(
                bq.update_table(&UpdateTable {
                    project: "p".to_string(),
                    dataset: "d".to_string(),
                    table: "nope".to_string(),
                    settings: no_schema.clone(),
                    ..Default::default()
                })
                .await
            ),
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn injected_failures_fail_the_next_calls_of_a_kind_and_change_nothing() {
        let bq = MemoryBigQuery::new();
        bq.put_dataset("p", "d", DatasetSettings::default());
        bq.fail_next(BigQueryOp::CreateTable, 2, ErrorKind::Unavailable);
        let settings = table(vec![SchemaField::new("x", "STRING", "NULLABLE")]);
        assert_eq!(kind(bq.create_table("p", "d", "t", &settings).await), ErrorKind::Unavailable);
        assert_eq!(kind(bq.get_table("p", "d", "t").await), ErrorKind::NotFound, "other kinds are not failed");
        assert_eq!(kind(bq.create_table("p", "d", "t", &settings).await), ErrorKind::Unavailable);
        bq.create_table("p", "d", "t", &settings).await.unwrap();
        assert_eq!(bq.calls.create_table.load(Ordering::SeqCst), 3, "failed calls count too");

        bq.fail_next(BigQueryOp::DeleteTable, 1, ErrorKind::PermissionDenied);
        assert_eq!(kind(bq.delete_table("p", "d", "t").await), ErrorKind::PermissionDenied);
        assert!(bq.table("p", "d", "t").is_some());
        bq.fail_next(BigQueryOp::ListDatasets, 1, ErrorKind::RateLimited);
        assert_eq!(kind(bq.list_datasets("p", None).await), ErrorKind::RateLimited);
        assert_eq!(bq.list_datasets("p", None).await.unwrap().items.len(), 1);
    }

    #[test]
    fn changes_behind_the_back_count_no_call_and_keep_what_they_should() {
        let bq = MemoryBigQuery::new();
        let first = bq.put_table("p", "d", "t", table(vec![]));
        let view =
            bq.put_table("p", "d", "t", TableSettings { view_query: Some("q".to_string()), ..Default::default() });
        assert_eq!(view.table_type, "VIEW");
        assert_eq!(view.created, first.created);
        assert_ne!(view.etag, first.etag);
        let d = bq.put_dataset("p", "d", DatasetSettings { location: Some("EU".to_string()), ..Default::default() });
        assert_eq!(d.settings.location.as_deref(), Some("US"), "the location stays");
        assert!(bq.table("p", "d", "t").is_some(), "the tables stay");
        assert!(bq.remove_table("p", "d", "t") && !bq.remove_table("p", "d", "t"));
        assert!(bq.remove_dataset("p", "d") && bq.dataset("p", "d").is_none());
        assert!(bq.set_table_stats("p", "d", "t", 1, 1).is_none());
        let calls = &bq.calls;
        assert_eq!(calls.get(BigQueryOp::GetTable) + calls.get(BigQueryOp::CreateTable), 0);
    }
}
