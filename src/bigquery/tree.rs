//! BigQuery as files: datasets and tables are directories; a table holds
//! `config.json`, `schema.json` (edited to change the table, core/edits.rs) and a
//! generated `_status.json`; a dataset's `.meta/_dataset.json` shows it.
//!
//! Listings are fetched whole (all pages) and kept for the metadata TTL; a
//! table's three documents are rendered from one `tables.get`, cached the
//! same way, so the size a lookup reports is the size a read returns.
//! `mkdir` of a dataset makes a pending dataset (core/pending.rs), created at
//! its `.meta/_dataset.json` (the location can only be given at creation),
//! at its first table directory, or once it has waited; `mkdir` of a
//! table makes a pending directory that becomes a table when a schema.json
//! is written into it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::bigquery::{
    BigQuery, DatasetListEntry, DatasetMeta, DatasetSettings, TableListEntry, TableMeta, TableSettings, UpdateTable,
};
use ciofs_backends::sync::lock;
use ciofs_frontends::{Attr, DirEntry, DirPage, Fh, Ino, VfsError, VfsResult};

use super::documents::{
    parse_dataset, parse_schema, parse_table_config, render_dataset, render_schema, render_table_config,
    render_table_status,
};
use super::rules::{check_config_change, check_new_table_config, check_schema_change};
use crate::core::cache::Timed;
use crate::core::context::Context;
use crate::core::errors::vfs_error;
use crate::core::node::{DATASET_META, META_DIR, Node, Service, TableFile, check_name_length};
use crate::core::pages::all_pages;
use crate::core::pending::{Pending, PendingDue, Waiting};
use crate::core::rules::{Problems, label_problems, refuse_if_any};
use crate::core::slice::Slice;

/// A table as files: its metadata and the three documents rendered once.
pub struct TableView {
    pub meta: TableMeta,
    documents: [Bytes; 3],
}

impl TableView {
    pub fn document(&self, file: TableFile) -> Bytes {
        let at = TableFile::ALL.iter().position(|f| *f == file).unwrap_or(0);
        self.documents[at].clone()
    }

    fn new(meta: TableMeta) -> Self {
        let documents = [
            Bytes::from(render_table_config(&meta)),
            Bytes::from(render_schema(&meta.settings.schema)),
            Bytes::from(render_table_status(&meta)),
        ];
        Self { meta, documents }
    }

    /// The documents' time: the table's last change.
    pub fn mtime(&self) -> SystemTime {
        self.meta.modified.or(self.meta.created).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The directory's time: the table's creation (the one time that a list
    /// and a get both give).
    fn created(&self) -> Option<SystemTime> {
        self.meta.created
    }
}

/// A table directory made by mkdir whose table does not exist yet: the
/// configuration written into it so far, used when schema.json arrives.
#[derive(Clone)]
pub struct PendingTable {
    pub settings: TableSettings,
    pub config_written: bool,
    /// When the directory was made: its time, and its files'.
    pub made: SystemTime,
}

impl PendingTable {
    fn new() -> Self {
        Self { settings: TableSettings::default(), config_written: false, made: SystemTime::now() }
    }
}

type TableKey = (String, String, String);

/// What ciofs knows of BigQuery, and the client to ask.
pub struct BigQueryTree {
    cx: Arc<Context>,
    api: Arc<dyn BigQuery>,
    datasets: Timed<String, Arc<Vec<DatasetListEntry>>>,
    tables: Timed<(String, String), Arc<Vec<TableListEntry>>>,
    views: Timed<TableKey, Arc<TableView>>,
    dataset_views: Timed<(String, String), Arc<(DatasetMeta, Bytes)>>,
    pending: Mutex<HashMap<TableKey, PendingTable>>,
    /// Datasets made by mkdir, waiting for their `_dataset.json`.
    pending_datasets: Pending<(String, String), (), DatasetSettings>,
}

impl BigQueryTree {
    pub fn new(cx: Arc<Context>, api: Arc<dyn BigQuery>) -> Self {
        let ttl = cx.options.metadata_ttl;
        Self {
            cx,
            api,
            datasets: Timed::new(ttl),
            tables: Timed::new(ttl),
            views: Timed::new(ttl),
            dataset_views: Timed::new(ttl),
            pending: Mutex::new(HashMap::new()),
            pending_datasets: Pending::default(),
        }
    }

    fn pending_dataset(&self, project: &str, dataset: &str) -> Option<Waiting<(), DatasetSettings>> {
        self.pending_datasets.get(&(project.to_string(), dataset.to_string()))
    }

    pub fn pending(&self, project: &str, dataset: &str, table: &str) -> Option<PendingTable> {
        let pending = lock(&self.pending);
        pending.get(&table_key(project, dataset, table)).cloned()
    }

    fn pending_in(&self, project: &str, dataset: &str) -> Vec<(String, PendingTable)> {
        let pending = lock(&self.pending);
        pending
            .iter()
            .filter(|((p, d, _), _)| p == project && d == dataset)
            .map(|((_, _, t), pending)| (t.clone(), pending.clone()))
            .collect()
    }

    fn set_pending(&self, project: &str, dataset: &str, table: &str, value: Option<PendingTable>) {
        let mut pending = lock(&self.pending);
        let key = table_key(project, dataset, table);
        match value {
            Some(value) => pending.insert(key, value),
            None => pending.remove(&key),
        };
    }

    /// Drops what is cached of a dataset's table list and of one table.
    fn forget_table(&self, project: &str, dataset: &str, table: &str) {
        self.tables.forget(&(project.to_string(), dataset.to_string()));
        self.views.forget(&table_key(project, dataset, table));
    }
}

fn table_key(project: &str, dataset: &str, table: &str) -> TableKey {
    (project.to_string(), dataset.to_string(), table.to_string())
}

/// Dataset names: letters, digits and underscores, at most 1024 bytes.
fn check_dataset_name(name: &str) -> VfsResult<()> {
    if name.is_empty() || name.len() > 1024 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(VfsError::invalid(format!(
            "`{name}` cannot name a dataset: use letters, digits and underscores (at most 1024)"
        )));
    }
    Ok(())
}

/// Table names: letters, marks, digits, connectors, dashes and spaces, at
/// most 1024 bytes (BigQuery's rule).
fn check_table_name(name: &str) -> VfsResult<()> {
    // Not `$`: `table$20240101` names a partition, and deleting it deletes
    // that partition's rows.
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ');
    if name.is_empty() || name.len() > 1024 || !name.chars().all(allowed) {
        return Err(VfsError::invalid(format!(
            "`{name}` cannot name a table: use letters, digits, `_`, `-` and spaces (at most 1024 bytes)"
        )));
    }
    Ok(())
}

impl BigQueryTree {
    /// The entry of a file in a BigQuery directory, if it is to be seen:
    /// not removed, and (in a pending table) written.
    async fn visible_file_entry(&self, node: Node) -> VfsResult<Option<DirEntry>> {
        if self.cx.local.is_hidden(&node) {
            return Ok(None);
        }
        if let Some((size, mtime)) = self.cx.local.stat(&node) {
            return Ok(Some(self.cx.entry(node, size, mtime)));
        }
        if let Node::TableFile { project, dataset, table, .. } = &node
            && self.pending(project, dataset, table).is_some()
        {
            // A pending table shows only the files written into it.
            return match self.document(&node).await {
                Ok((document, mtime)) => Ok(Some(self.cx.entry(node, document.len() as u64, mtime))),
                Err(e) if e.errno() == libc::ENOENT => Ok(None),
                Err(e) => Err(e),
            };
        }
        if matches!(node, Node::Scratch { .. }) {
            return Ok(None);
        }
        let (document, mtime) = self.document(&node).await?;
        Ok(Some(self.cx.entry(node, document.len() as u64, mtime)))
    }

    /// Every entry of a BigQuery directory, in listing order.
    pub async fn children(&self, dir: &Node) -> VfsResult<Vec<DirEntry>> {
        match dir {
            Node::Service { project, service: Service::BigQuery } => {
                let mut names: Vec<String> = self.datasets(project).await?.iter().map(|d| d.dataset.clone()).collect();
                let pending = self.pending_datasets.filter(|(of, _), _| of == project);
                names.extend(pending.into_iter().map(|((_, dataset), _)| dataset));
                names.sort();
                names.dedup();
                Ok(names
                    .into_iter()
                    .map(|dataset| self.cx.dir_entry(Node::Dataset { project: project.clone(), dataset }))
                    .collect())
            }
            Node::Dataset { project, dataset } => self.dataset_children(project, dataset).await,
            Node::DatasetMetaDir { project, dataset } => {
                let node = Node::DatasetMeta { project: project.clone(), dataset: dataset.clone() };
                let mut entries: Vec<DirEntry> = self.visible_file_entry(node).await?.into_iter().collect();
                for (node, size, mtime) in self.cx.local.scratch_in(dir) {
                    entries.push(self.cx.entry(node, size, mtime));
                }
                Ok(entries)
            }
            Node::Table { project, dataset, table } => {
                let mut entries = Vec::new();
                for file in TableFile::ALL {
                    let node = Node::TableFile {
                        project: project.clone(),
                        dataset: dataset.clone(),
                        table: table.clone(),
                        file,
                    };
                    entries.extend(self.visible_file_entry(node).await?);
                }
                for (node, size, mtime) in self.cx.local.scratch_in(dir) {
                    entries.push(self.cx.entry(node, size, mtime));
                }
                Ok(entries)
            }
            _ => Err(VfsError::not_dir(format!("{dir}: not a directory"))),
        }
    }

    /// `.meta`, then the tables (and pending table directories) by name.
    async fn dataset_children(&self, project: &str, dataset: &str) -> VfsResult<Vec<DirEntry>> {
        let mut children: Vec<(String, SystemTime)> = match self.pending_dataset(project, dataset) {
            Some(_) => Vec::new(),
            None => {
                let tables = self.tables(project, dataset).await?;
                tables.iter().map(|t| (t.table.clone(), t.created.unwrap_or(SystemTime::UNIX_EPOCH))).collect()
            }
        };
        for (table, pending) in self.pending_in(project, dataset) {
            if !children.iter().any(|(name, _)| *name == table) {
                children.push((table, pending.made));
            }
        }
        children.sort();
        let meta = Node::DatasetMetaDir { project: project.to_string(), dataset: dataset.to_string() };
        let mut entries = vec![self.cx.dir_entry(meta)];
        for (table, created) in children {
            let node = Node::Table { project: project.to_string(), dataset: dataset.to_string(), table };
            entries.push(self.cx.entry(node, 0, created));
        }
        Ok(entries)
    }

    /// A project's datasets, all pages, by name.
    async fn datasets(&self, project: &str) -> VfsResult<Arc<Vec<DatasetListEntry>>> {
        if let Some(datasets) = self.datasets.get(&project.to_string()) {
            return Ok(datasets);
        }
        let mut datasets = all_pages(|token| async move {
            self.api.list_datasets(project, token).await.map(|page| (page.items, page.next_page_token))
        })
        .await?;
        datasets.retain(|d| check_dataset_name(&d.dataset).is_ok());
        datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
        datasets.dedup_by(|a, b| a.dataset == b.dataset);
        let datasets = Arc::new(datasets);
        self.datasets.put(project.to_string(), datasets.clone());
        Ok(datasets)
    }

    /// A dataset's tables, all pages, by name.
    async fn tables(&self, project: &str, dataset: &str) -> VfsResult<Arc<Vec<TableListEntry>>> {
        let key = (project.to_string(), dataset.to_string());
        if let Some(tables) = self.tables.get(&key) {
            return Ok(tables);
        }
        let mut tables = all_pages(|token| async move {
            self.api.list_tables(project, dataset, token).await.map(|page| (page.items, page.next_page_token))
        })
        .await?;
        tables.retain(|t| match check_table_name(&t.table).and(check_name_length(&t.table)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(project, dataset, table = %t.table, error = %e, "table left out of the listing");
                false
            }
        });
        tables.sort_by(|a, b| a.table.cmp(&b.table));
        tables.dedup_by(|a, b| a.table == b.table);
        let tables = Arc::new(tables);
        self.tables.put(key, tables.clone());
        Ok(tables)
    }

    /// A table directory's time, from the listing if it has the table (`ls
    /// -l` makes no call per table), else from a get.
    async fn table_created(&self, project: &str, dataset: &str, table: &str) -> VfsResult<SystemTime> {
        let key = (project.to_string(), dataset.to_string());
        let listed = self.tables.get(&key).and_then(|l| l.iter().find(|t| t.table == table).cloned());
        let created = match listed {
            Some(entry) => entry.created,
            None => self.table_view(project, dataset, table).await?.created(),
        };
        Ok(created.unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// A table's metadata and documents, from the cache or one get.
    pub async fn table_view(&self, project: &str, dataset: &str, table: &str) -> VfsResult<Arc<TableView>> {
        let key = table_key(project, dataset, table);
        if let Some(view) = self.views.get(&key) {
            return Ok(view);
        }
        let meta = self.api.get_table(project, dataset, table).await.map_err(vfs_error)?;
        Ok(self.remember_table(project, meta))
    }

    fn remember_table(&self, project: &str, meta: TableMeta) -> Arc<TableView> {
        let key = table_key(project, &meta.dataset, &meta.table);
        let view = Arc::new(TableView::new(meta));
        self.views.put(key, view.clone());
        view
    }

    async fn dataset_view(&self, project: &str, dataset: &str) -> VfsResult<Arc<(DatasetMeta, Bytes)>> {
        if let Some(pending) = self.pending_dataset(project, dataset) {
            // What it will be made with unless its `_dataset.json` says more.
            let meta = DatasetMeta {
                dataset: dataset.to_string(),
                created: Some(pending.made),
                modified: Some(pending.made),
                ..DatasetMeta::default()
            };
            let document = Bytes::from(render_dataset(&meta));
            return Ok(Arc::new((meta, document)));
        }
        let key = (project.to_string(), dataset.to_string());
        if let Some(view) = self.dataset_views.get(&key) {
            return Ok(view);
        }
        let meta = self.api.get_dataset(project, dataset).await.map_err(vfs_error)?;
        let document = Bytes::from(render_dataset(&meta));
        let view = Arc::new((meta, document));
        self.dataset_views.put(key, view.clone());
        Ok(view)
    }

    async fn delete_dataset(&self, project: &str, dataset: &str) -> VfsResult<()> {
        if !self.pending_in(project, dataset).is_empty() {
            return Err(VfsError::not_empty(format!("dataset {dataset} holds new table directories")));
        }
        if self.pending_datasets.remove(&(project.to_string(), dataset.to_string())) {
            return Ok(());
        }
        // Asked afresh: a cached listing may miss a table made elsewhere.
        let key = (project.to_string(), dataset.to_string());
        self.tables.forget(&key);
        if !self.tables(project, dataset).await?.is_empty() {
            return Err(VfsError::not_empty(format!("dataset {dataset} is not empty")));
        }
        let deleted = self.api.delete_dataset(project, dataset).await.map_err(vfs_error);
        self.datasets.forget(&project.to_string());
        self.dataset_views.forget(&key);
        self.tables.forget(&key);
        deleted?;
        tracing::info!(project, dataset, "dataset deleted");
        Ok(())
    }

    /// A written `_dataset.json`: description, friendly name, labels and
    /// default table expiration change; the rest must stay as it is.
    async fn apply_dataset(&self, project: &str, dataset: &str, data: &[u8]) -> VfsResult<()> {
        if self.pending_dataset(project, dataset).is_some() {
            let settings = parse_dataset(data, &DatasetSettings::default())?;
            let mut problems = Problems::default();
            label_problems("BigQuery", &settings.labels, &mut problems);
            refuse_if_any(problems)?;
            return self.create_pending_dataset(project, dataset, &settings).await;
        }
        let current = self.api.get_dataset(project, dataset).await.map_err(vfs_error)?;
        let settings = parse_dataset(data, &current.settings)?;
        if settings == current.settings {
            return Ok(());
        }
        let mut problems = Problems::default();
        if settings.labels != current.settings.labels {
            label_problems("BigQuery", &settings.labels, &mut problems);
        }
        refuse_if_any(problems)?;
        let meta = self.api.update_dataset(project, dataset, &settings).await.map_err(vfs_error)?;
        let document = Bytes::from(render_dataset(&meta));
        self.dataset_views.put((project.to_string(), dataset.to_string()), Arc::new((meta, document)));
        tracing::info!(project, dataset, "dataset updated");
        Ok(())
    }

    /// Creates `dataset` now if it is pending, with the settings it has
    /// (the defaults, unless a creation with its own failed for a while).
    async fn ensure_dataset(&self, project: &str, dataset: &str) -> VfsResult<()> {
        let Some(pending) = self.pending_dataset(project, dataset) else { return Ok(()) };
        self.create_pending_dataset(project, dataset, &pending.settings.unwrap_or_default()).await
    }

    /// Creates a pending dataset with `settings` (one creation at a time).
    /// A refusal ends its pending; a transient failure leaves it, to try
    /// again.
    async fn create_pending_dataset(&self, project: &str, dataset: &str, settings: &DatasetSettings) -> VfsResult<()> {
        let _one_at_a_time = self.pending_datasets.creating().await;
        let key = (project.to_string(), dataset.to_string());
        if !self.pending_datasets.contains(&key) {
            return Ok(());
        }
        let meta = match self.api.create_dataset(project, dataset, settings).await {
            Ok(meta) => meta,
            Err(e) if e.kind.is_transient() => {
                self.pending_datasets.wait_again(&key, settings);
                return Err(vfs_error(e));
            }
            Err(e) => {
                self.pending_datasets.remove(&key);
                return Err(vfs_error(e));
            }
        };
        self.pending_datasets.remove(&key);
        self.datasets.forget(&project.to_string());
        let document = Bytes::from(render_dataset(&meta));
        self.dataset_views.put(key, Arc::new((meta, document)));
        tracing::info!(project, dataset, "dataset created");
        Ok(())
    }

    /// Creates, with BigQuery's defaults, the pending datasets that waited
    /// long enough for their `_dataset.json` (called periodically), or all.
    pub async fn create_due_datasets(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        let mut failed = Vec::new();
        for ((project, dataset), _) in self.pending_datasets.due(which) {
            let document = Node::DatasetMeta { project: project.clone(), dataset: dataset.clone() };
            if which != PendingDue::All && self.cx.local.stat(&document).is_some() {
                // Being written (over NFS it applies after a quiet second).
                continue;
            }
            if let Err(e) = self.ensure_dataset(&project, &dataset).await {
                let dir = Node::Dataset { project, dataset }.to_string();
                self.cx.error_log.record(&dir, e.errno(), e.message());
                failed.push((dir, e));
            }
        }
        failed
    }

    /// Before a journaled edit of an earlier run is applied: a table that
    /// does not exist (yet) in an existing dataset is a directory made by
    /// mkdir, pending again.
    async fn pending_again(&self, node: &Node) -> VfsResult<()> {
        let Node::TableFile { project, dataset, table, .. } = node else { return Ok(()) };
        if self.pending(project, dataset, table).is_some() {
            return Ok(());
        }
        match self.table_view(project, dataset, table).await {
            Err(e) if e.errno() == libc::ENOENT => {
                self.dataset_view(project, dataset).await?;
                let pending = PendingTable::new();
                self.set_pending(project, dataset, table, Some(pending));
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// A pending table's config.json was removed: its settings go too.
    pub fn forget_pending_config(&self, project: &str, dataset: &str, table: &str) {
        if let Some(mut pending) = self.pending(project, dataset, table) {
            pending.settings = TableSettings::default();
            pending.config_written = false;
            self.set_pending(project, dataset, table, Some(pending));
        }
    }

    /// The table as it is now (an edit is checked against the current
    /// version, not a cached one).
    async fn fresh_table_view(&self, project: &str, dataset: &str, table: &str) -> VfsResult<Arc<TableView>> {
        self.views.forget(&table_key(project, dataset, table));
        self.table_view(project, dataset, table).await
    }

    /// Sends `settings` if they differ from the table's (an unchanged
    /// document makes no call).
    async fn update_table(&self, project: &str, view: &TableView, settings: TableSettings) -> VfsResult<()> {
        let meta = &view.meta;
        if settings == meta.settings {
            tracing::debug!(project, dataset = %meta.dataset, table = %meta.table, "unchanged; nothing sent");
            return Ok(());
        }
        let request = UpdateTable {
            project: project.to_string(),
            dataset: meta.dataset.clone(),
            table: meta.table.clone(),
            settings,
            etag: Some(meta.etag.clone()).filter(|e| !e.is_empty()),
        };
        let updated = self.api.update_table(&request).await;
        let updated = match updated {
            Ok(updated) => updated,
            Err(e) => {
                self.views.forget(&table_key(project, &meta.dataset, &meta.table));
                return Err(match e.kind {
                    ErrorKind::PreconditionFailed => VfsError::stale(format!(
                        "{}.{} changed in BigQuery while it was edited; not updated",
                        meta.dataset, meta.table
                    )),
                    _ => vfs_error(e),
                });
            }
        };
        tracing::info!(project, dataset = %meta.dataset, table = %meta.table, "table updated");
        self.remember_table(project, updated);
        Ok(())
    }

    async fn create_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        pending: PendingTable,
        data: &[u8],
    ) -> VfsResult<()> {
        let is_view = pending.settings.view_query.is_some() || pending.settings.materialized_view_query.is_some();
        // A view's columns are its query's: BigQuery derives them, and the
        // schema.json of an export (which lists them) is not sent.
        let schema = if is_view { Vec::new() } else { parse_schema(data)? };
        let settings = TableSettings { schema, ..pending.settings };
        let created = self.api.create_table(project, dataset, table, &settings).await.map_err(vfs_error)?;
        tracing::info!(project, dataset, table, "table created");
        self.set_pending(project, dataset, table, None);
        self.tables.forget(&(project.to_string(), dataset.to_string()));
        self.remember_table(project, created);
        Ok(())
    }
}

/// BigQuery's answers to what the namespace asks of every service.
#[async_trait]
impl Slice for BigQueryTree {
    /// Finds `name` in a BigQuery directory.
    async fn lookup(&self, dir: &Node, name: &str) -> VfsResult<DirEntry> {
        check_name_length(name)?;
        let missing = || VfsError::not_found(format!("{dir}/{name}"));
        match dir {
            Node::Service { project, service: Service::BigQuery } => {
                let listed = self.datasets.get(project).is_some_and(|l| l.iter().any(|d| d.dataset == name));
                if !listed {
                    self.dataset_view(project, name).await?;
                }
                Ok(self.cx.dir_entry(Node::Dataset { project: project.clone(), dataset: name.to_string() }))
            }
            Node::Dataset { project, dataset } => {
                if name == META_DIR {
                    return Ok(self
                        .cx
                        .dir_entry(Node::DatasetMetaDir { project: project.clone(), dataset: dataset.clone() }));
                }
                let node = Node::Table { project: project.clone(), dataset: dataset.clone(), table: name.to_string() };
                if let Some(pending) = self.pending(project, dataset, name) {
                    return Ok(self.cx.entry(node, 0, pending.made));
                }
                let created = self.table_created(project, dataset, name).await?;
                Ok(self.cx.entry(node, 0, created))
            }
            Node::DatasetMetaDir { project, dataset } => {
                let node = match name {
                    DATASET_META => Node::DatasetMeta { project: project.clone(), dataset: dataset.clone() },
                    // sed -i's temporary file, an editor's swap file.
                    _ => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
                };
                self.visible_file_entry(node).await?.ok_or_else(missing)
            }
            Node::Table { project, dataset, table } => {
                let node = match TableFile::from_file_name(name) {
                    Some(file) => Node::TableFile {
                        project: project.clone(),
                        dataset: dataset.clone(),
                        table: table.clone(),
                        file,
                    },
                    None => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
                };
                self.visible_file_entry(node).await?.ok_or_else(missing)
            }
            _ => Err(missing()),
        }
    }

    /// Size and time of a BigQuery node.
    async fn stat(&self, _ino: Ino, node: &Node) -> VfsResult<(u64, SystemTime)> {
        if let Some(stat) = self.cx.local.stat(node) {
            return Ok(stat);
        }
        match node {
            Node::Table { project, dataset, table } => {
                if let Some(pending) = self.pending(project, dataset, table) {
                    return Ok((0, pending.made));
                }
                Ok((0, self.table_created(project, dataset, table).await?))
            }
            Node::TableFile { project, dataset, table, file: TableFile::Status } => {
                match self.pending(project, dataset, table) {
                    // Created by tar in a new table directory: an empty file
                    // whose writes are ignored.
                    Some(pending) => Ok((0, pending.made)),
                    None => {
                        let (document, mtime) = self.document(node).await?;
                        Ok((document.len() as u64, mtime))
                    }
                }
            }
            Node::TableFile { .. } | Node::DatasetMeta { .. } => {
                let (document, mtime) = self.document(node).await?;
                Ok((document.len() as u64, mtime))
            }
            Node::Scratch { .. } => Err(VfsError::not_found(node.to_string())),
            _ => Ok((0, SystemTime::UNIX_EPOCH)),
        }
    }

    async fn readdir(&self, dir: &Node, _ino: Ino, _fh: Fh, after: Ino, max: usize) -> VfsResult<DirPage> {
        Ok(self.cx.page_after(self.children(dir).await?, after, max))
    }

    /// `mkdir bigquery/NEW` makes a pending dataset; `mkdir bigquery/DS/NEW`
    /// a pending table directory (and creates its dataset, if pending).
    async fn mkdir(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        check_name_length(name)?;
        match dir {
            Node::Service { project, service: Service::BigQuery } => {
                check_dataset_name(name)?;
                // A pending one's view is there too.
                let exists = match self.dataset_view(project, name).await {
                    Ok(_) => true,
                    Err(e) if e.errno() == libc::ENOENT => false,
                    Err(e) => return Err(e),
                };
                if exists {
                    return Err(VfsError::exists(format!("dataset {name} exists")));
                }
                let made = self.pending_datasets.add((project.clone(), name.to_string()), ());
                self.dataset_views.forget(&(project.clone(), name.to_string()));
                tracing::info!(project, dataset = name, "dataset pending: created at its .meta/_dataset.json");
                Ok(self.cx.entry(Node::Dataset { project: project.clone(), dataset: name.to_string() }, 0, made).attr)
            }
            Node::Dataset { project, dataset } => {
                check_table_name(name)?;
                self.ensure_dataset(project, dataset).await?;
                if self.pending(project, dataset, name).is_some() {
                    return Err(VfsError::exists(format!("{dir}/{name} exists")));
                }
                match self.table_view(project, dataset, name).await {
                    Ok(_) => return Err(VfsError::exists(format!("{dir}/{name}: the table exists"))),
                    Err(e) if e.errno() == libc::ENOENT => {}
                    Err(e) => return Err(e),
                }
                // The dataset must exist for the table to be made in it.
                self.dataset_view(project, dataset).await?;
                let pending = PendingTable::new();
                let made = pending.made;
                self.set_pending(project, dataset, name, Some(pending));
                let node = Node::Table { project: project.clone(), dataset: dataset.clone(), table: name.to_string() };
                Ok(self.cx.entry(node, 0, made).attr)
            }
            _ => Err(VfsError::not_permitted(format!("{dir}: directories cannot be made here"))),
        }
    }

    /// `rmdir` of a table deletes it (whatever files it shows); of a dataset,
    /// only an empty one.
    async fn rmdir(&self, dir: &Node, name: &str) -> VfsResult<()> {
        check_name_length(name)?;
        match dir {
            Node::Service { project, service: Service::BigQuery } => self.delete_dataset(project, name).await,
            // `rm -r` removes `.meta` after its (generated) file: nothing to do.
            Node::Dataset { .. } if name == META_DIR => Ok(()),
            Node::Dataset { project, dataset } => {
                let node = Node::Table { project: project.clone(), dataset: dataset.clone(), table: name.to_string() };
                self.cx.local.drop_under(&node);
                if self.pending(project, dataset, name).is_some() {
                    self.set_pending(project, dataset, name, None);
                    return Ok(());
                }
                let deleted = self.api.delete_table(project, dataset, name).await.map_err(vfs_error);
                self.forget_table(project, dataset, name);
                deleted?;
                tracing::info!(project, dataset, table = name, "table deleted");
                Ok(())
            }
            _ => Err(VfsError::not_permitted(format!("{dir}/{name} cannot be removed"))),
        }
    }

    /// The current rendering of a generated or editable document.
    async fn document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        match node {
            Node::TableFile { project, dataset, table, file } => {
                if let Some(pending) = self.pending(project, dataset, table) {
                    let made = pending.made;
                    return match file {
                        TableFile::Config if pending.config_written => {
                            let meta = TableMeta { settings: pending.settings, ..TableMeta::default() };
                            Ok((Bytes::from(render_table_config(&meta)), made))
                        }
                        _ => Err(VfsError::not_found(format!("{node} (the table has no schema.json yet)"))),
                    };
                }
                let view = self.table_view(project, dataset, table).await?;
                Ok((view.document(*file), view.mtime()))
            }
            Node::DatasetMeta { project, dataset } => {
                let view = self.dataset_view(project, dataset).await?;
                let mtime = view.0.modified.or(view.0.created).unwrap_or(SystemTime::UNIX_EPOCH);
                Ok((view.1.clone(), mtime))
            }
            _ => Err(VfsError::is_dir(format!("{node}: not a document"))),
        }
    }

    /// Applies a whole document written to `node`: validated, then sent if
    /// it changes anything. Generated documents are accepted and ignored.
    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()> {
        if let Node::DatasetMeta { project, dataset } = node {
            return self.apply_dataset(project, dataset, data).await;
        }
        let Node::TableFile { project, dataset, table, file } = node else {
            return Ok(());
        };
        match (file, self.pending(project, dataset, table)) {
            (TableFile::Status, _) => Ok(()),
            (TableFile::Schema, Some(pending)) => self.create_table(project, dataset, table, pending, data).await,
            (TableFile::Config, Some(mut pending)) => {
                pending.settings = parse_table_config(data, &pending.settings)?;
                check_new_table_config(&pending.settings, SystemTime::now())?;
                pending.config_written = true;
                self.set_pending(project, dataset, table, Some(pending));
                Ok(())
            }
            (TableFile::Schema, None) => {
                let view = self.fresh_table_view(project, dataset, table).await?;
                let schema = parse_schema(data)?;
                check_schema_change(&view.meta.settings.schema, &schema)?;
                let settings = TableSettings { schema, ..view.meta.settings.clone() };
                self.update_table(project, &view, settings).await
            }
            (TableFile::Config, None) => {
                let view = self.fresh_table_view(project, dataset, table).await?;
                let settings = parse_table_config(data, &view.meta.settings)?;
                check_config_change(&view.meta.table_type, &view.meta.settings, &settings, SystemTime::now())?;
                self.update_table(project, &view, settings).await
            }
        }
    }

    async fn prepare_replay(&self, node: &Node) -> VfsResult<()> {
        self.pending_again(node).await
    }

    /// The table must still exist for its files to be written.
    async fn check_dir_for_create(&self, dir: &Node) -> VfsResult<()> {
        if let Node::Table { project, dataset, table } = dir
            && self.pending(project, dataset, table).is_none()
        {
            self.table_view(project, dataset, table).await?;
        }
        Ok(())
    }

    /// A pending table forgets the configuration written into its
    /// config.json.
    fn document_removed(&self, node: &Node) {
        if let Node::TableFile { project, dataset, table, file: TableFile::Config } = node {
            self.forget_pending_config(project, dataset, table);
        }
    }

    async fn create_due(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        self.create_due_datasets(which).await
    }
}
