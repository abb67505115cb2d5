//! `BigQuery` on Google's REST API with the official crate
//! `google-cloud-bigquery-v2` (DatasetService, TableService);
//! `convert.rs` maps the API's resources to ciofs's types.
//!
//! The two updates (`tables.update`, `datasets.update`: PUT) and the `get`
//! that reads the resource they replace are sent as plain JSON (`Rest`).
//! Why: a PUT replaces the whole resource, so a setting being removed must
//! be sent as removed. The crate's encoding leaves out empty label maps and
//! unset fields, which BigQuery reads as "clear" on a PUT but bqemulator as
//! "keep" (and on a patch both keep them). Sending `"labels": {}` and
//! `"description": null` is right on both. The resource is read as JSON too,
//! so the fields ciofs does not manage (access lists, encryption, ...) go
//! back exactly as the service gave them.
//!
//! The crate's own retries are off (it would retry idempotent calls up to
//! 10 times within a minute): every call goes through ciofs's
//! `RetryPolicy`, which bounds each attempt and the attempts.

mod convert;

use async_trait::async_trait;
use google_cloud_bigquery_v2::client::{DatasetService, TableService};
use google_cloud_gax::retry_policy::NeverRetry;
use serde_json::Value;

use super::{
    BigQuery, DatasetListEntry, DatasetMeta, DatasetSettings, Page, TableListEntry, TableMeta, TableSettings,
    UpdateTable,
};
use crate::endpoint;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::rest::Rest;
use crate::retry::RetryPolicy;
use convert::{api_dataset, api_table, dataset_list_entry, dataset_meta, from_json, table_list_entry, table_meta};

/// Google's BigQuery endpoint.
const GOOGLE_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// Entries per listing page. BigQuery's default is 50; a larger page makes
/// fewer calls for a big dataset (the service caps it as it sees fit).
const LIST_PAGE_SIZE: u32 = 1000;

/// Where and how to reach BigQuery.
#[derive(Clone, Debug, Default)]
pub struct BigQueryConfig {
    /// An emulator's base URL (`http://127.0.0.1:9050`): anonymous access.
    /// `None`: Google's endpoint with Application Default Credentials.
    pub emulator: Option<String>,
    pub retry: RetryPolicy,
}

impl BigQueryConfig {
    /// Reads `BIGQUERY_EMULATOR_HOST` (`http://` is added when missing).
    pub fn from_env() -> Self {
        Self { emulator: endpoint::emulator_from_env("BIGQUERY_EMULATOR_HOST"), retry: RetryPolicy::default() }
    }
}

pub struct GoogleBigQuery {
    datasets: DatasetService,
    tables: TableService,
    rest: Rest,
    retry: RetryPolicy,
}

impl GoogleBigQuery {
    pub async fn connect(config: BigQueryConfig) -> BackendResult<Self> {
        let credentials = endpoint::credentials(config.emulator.as_deref(), "BigQuery")?;
        let emulator = endpoint::base_url(config.emulator.as_deref());
        tracing::debug!(endpoint = emulator.as_deref().unwrap_or(GOOGLE_ENDPOINT), "connecting to BigQuery");
        // The crate's own endpoint unless an emulator is named (it knows
        // about universe domains; ours would override that).
        let mut datasets =
            DatasetService::builder().with_credentials(credentials.clone()).with_retry_policy(NeverRetry);
        let mut tables = TableService::builder().with_credentials(credentials.clone()).with_retry_policy(NeverRetry);
        if let Some(endpoint) = &emulator {
            datasets = datasets.with_endpoint(endpoint.clone());
            tables = tables.with_endpoint(endpoint.clone());
        }
        let datasets = datasets
            .build()
            .await
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("BigQuery dataset client: {e}")))?;
        let tables = tables
            .build()
            .await
            .map_err(|e| BackendError::new(ErrorKind::Other, format!("BigQuery table client: {e}")))?;
        let endpoint = emulator.as_deref().unwrap_or(GOOGLE_ENDPOINT);
        let rest = Rest::new(endpoint, &["bigquery", "v2"], credentials, config.retry.stall_timeout)?;
        Ok(Self { datasets, tables, rest, retry: config.retry })
    }

    /// The resource as JSON, for a whole-resource update.
    async fn get_json(&self, what: &str, segments: &[&str]) -> BackendResult<Value> {
        self.retry.run(what, || self.rest.get(what, segments)).await
    }
}

#[async_trait]
impl BigQuery for GoogleBigQuery {
    async fn list_datasets(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<DatasetListEntry>> {
        let what = format!("list datasets of {project}");
        let list = self
            .retry
            .call(&what, || async {
                let call = self.datasets.list_datasets().set_project_id(project).set_max_results(LIST_PAGE_SIZE);
                let call = call.set_page_token(page_token.clone().unwrap_or_default());
                call.send().await
            })
            .await?;
        Ok(Page {
            items: list.datasets.into_iter().map(dataset_list_entry).collect(),
            next_page_token: Some(list.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn get_dataset(&self, project: &str, dataset: &str) -> BackendResult<DatasetMeta> {
        let what = format!("get dataset {project}.{dataset}");
        let api = self
            .retry
            .call(&what, || async {
                let call = self.datasets.get_dataset().set_project_id(project).set_dataset_id(dataset);
                call.send().await
            })
            .await?;
        Ok(dataset_meta(dataset, api))
    }

    async fn create_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        let what = format!("create dataset {project}.{dataset}");
        let resource = api_dataset(project, dataset, settings);
        // A retry after a lost answer may find the dataset made by the first
        // attempt: it then fails with AlreadyExists, as the caller would
        // expect of a second create.
        let api = self
            .retry
            .call(&what, || async {
                let call = self.datasets.insert_dataset().set_project_id(project).set_dataset(resource.clone());
                call.send().await
            })
            .await?;
        Ok(dataset_meta(dataset, api))
    }

    async fn update_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        let what = format!("update dataset {project}.{dataset}");
        let path = ["projects", project, "datasets", dataset];
        let mut resource = self.get_json(&what, &path).await?;
        convert::overlay_dataset(&mut resource, settings)?;
        let updated = self.retry.run(&what, || self.rest.put(&what, &path, &resource, None)).await?;
        Ok(dataset_meta(dataset, from_json(&what, updated)?))
    }

    async fn delete_dataset(&self, project: &str, dataset: &str) -> BackendResult<()> {
        let what = format!("delete dataset {project}.{dataset}");
        let deleted = self
            .retry
            .call(&what, || async {
                let call = self.datasets.delete_dataset().set_project_id(project).set_dataset_id(dataset);
                // Never the contents: only an empty dataset goes.
                call.set_delete_contents(false).send().await
            })
            .await;
        // BigQuery answers 400 "... is still in use"; bqemulator 404 "... is
        // not empty", which must not read as "gone". Neither is retried.
        deleted.map_err(|e| match e.kind {
            ErrorKind::NotFound if e.message.contains("not empty") => {
                BackendError::new(ErrorKind::InvalidArgument, e.message)
            }
            _ => e,
        })
    }

    async fn list_tables(
        &self,
        project: &str,
        dataset: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<TableListEntry>> {
        let what = format!("list tables of {project}.{dataset}");
        let list = self
            .retry
            .call(&what, || async {
                let call = self.tables.list_tables().set_project_id(project).set_dataset_id(dataset);
                let call = call.set_max_results(LIST_PAGE_SIZE).set_page_token(page_token.clone().unwrap_or_default());
                call.send().await
            })
            .await?;
        Ok(Page {
            items: list.tables.into_iter().map(|t| table_list_entry(dataset, t)).collect(),
            next_page_token: Some(list.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn get_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<TableMeta> {
        let what = format!("get table {project}.{dataset}.{table}");
        let api = self
            .retry
            .call(&what, || async {
                let call = self.tables.get_table().set_project_id(project).set_dataset_id(dataset);
                call.set_table_id(table).send().await
            })
            .await?;
        table_meta(dataset, table, api)
    }

    async fn create_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        settings: &TableSettings,
    ) -> BackendResult<TableMeta> {
        let what = format!("create table {project}.{dataset}.{table}");
        let resource = api_table(project, dataset, table, settings);
        let api = self
            .retry
            .call(&what, || async {
                let call = self.tables.insert_table().set_project_id(project).set_dataset_id(dataset);
                call.set_table(resource.clone()).send().await
            })
            .await?;
        table_meta(dataset, table, api)
    }

    /// Reads the table, replaces its settings, and PUTs it back whole. With
    /// an etag, the read must still be at it (bqemulator ignores If-Match,
    /// so this check is what holds there), and the PUT carries it in
    /// If-Match for the moment between the two. Without one, a change made
    /// between the read and the PUT to something ciofs does not manage
    /// would be overwritten; that window is one round trip.
    async fn update_table(&self, request: &UpdateTable) -> BackendResult<TableMeta> {
        let UpdateTable { project, dataset, table, settings, etag } = request;
        let etag = etag.as_deref();
        let what = format!("update table {project}.{dataset}.{table}");
        let path = ["projects", project.as_str(), "datasets", dataset, "tables", table];
        let mut resource = self.get_json(&what, &path).await?;
        let current = resource.get("etag").and_then(Value::as_str).unwrap_or_default();
        if let Some(expected) = etag.filter(|expected| *expected != current) {
            return Err(BackendError::new(
                ErrorKind::PreconditionFailed,
                format!("{what}: the table is at etag {current}, not {expected}"),
            ));
        }
        convert::overlay_table(&mut resource, settings)?;
        let updated = self.retry.run(&what, || self.rest.put(&what, &path, &resource, etag)).await?;
        table_meta(dataset, table, from_json(&what, updated)?)
    }

    async fn delete_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<()> {
        let what = format!("delete table {project}.{dataset}.{table}");
        self.retry
            .call(&what, || async {
                let call = self.tables.delete_table().set_project_id(project).set_dataset_id(dataset);
                call.set_table_id(table).send().await
            })
            .await
    }
}
