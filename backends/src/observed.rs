//! `Observed`: what ciofs asks of Google, seen in one place. A decorator
//! over the three backend traits that records each call through the
//! `metrics` facade (`ciofs_api_requests_total{service,method,status}`,
//! `ciofs_api_request_duration_seconds{service,method}`, bytes read and
//! written, Pub/Sub messages published, delivered and given back, uploads
//! in flight) and writes one line per call to the API log (`--api-log`):
//! its final status, its whole duration and how many attempts it took.
//!
//! The retry layer (`retry.rs`) learns which call it serves through a
//! tokio task-local (`CALL`) that the decorator sets around the call, so
//! that it counts the call's retries without a parameter in every backend
//! method. It only counts: the line is the decorator's, written once the
//! call has answered, whatever requests the call was made of (a generation
//! check before an upload, the chunks of a resumable upload) and whether
//! or not it went through the retry layer at all.
//!
//! Nothing here costs anything until the shell starts recording
//! (`start_recording`) or gives an API log: building a metric's labels
//! allocates even for the facade's no-op recorder.
//!
//! A log line names the call's resource (bucket/object, project/dataset/
//! table, project/topic or subscription), never a URL, a query, a header or
//! an error message, so no credential, token or upload session URL can
//! reach it.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;

use crate::bigquery::{
    BigQuery, DatasetListEntry, DatasetMeta, DatasetSettings, Page as BqPage, TableListEntry, TableMeta, TableSettings,
    UpdateTable,
};
use crate::error::BackendResult;
use crate::gcs::{
    BucketChange, BucketMeta, BucketPage, BucketSettings, CopyObject, ListObjects, NotificationConfig, ObjectBody,
    ObjectMeta, ObjectPage, ObjectStore, PatchObjectMetadata, ReadObject, StreamedUpload, Upload,
};
use crate::pubsub::{
    CreateSubscription, OutgoingMessage, Page, PubSub, ReceivedMessage, SubscriptionMeta, SubscriptionSettings,
    TopicMeta, TopicSettings,
};

/// Whether a recorder takes what is recorded (see the module's header).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Uploads sent and not yet answered, whatever records them: the shell
/// reads it at each scrape (`uploads_in_flight`).
static UPLOADS_IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

/// Called by the shell once it has installed a recorder.
pub fn start_recording() {
    RECORDING.store(true, Ordering::Relaxed);
}

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// How many uploads are sent and not yet answered now.
pub fn uploads_in_flight() -> i64 {
    UPLOADS_IN_FLIGHT.load(Ordering::Relaxed)
}

/// Lines waiting for the log's writer; more are dropped (and counted)
/// rather than let a slow disk hold a call to Google.
const LOG_BACKLOG: usize = 8192;

/// Where the API log goes: a channel to a thread that writes the lines, so
/// that no call waits on the disk. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiLog {
    lines: mpsc::SyncSender<Entry>,
}

/// What the log's thread is sent.
#[derive(Debug)]
enum Entry {
    Line(String),
    /// Answer once every line sent before is written and flushed.
    Flush(mpsc::SyncSender<()>),
}

impl ApiLog {
    /// Writes the log to `out` from a thread of its own, which ends when
    /// the last handle is dropped. Each batch of lines is flushed once the
    /// channel is empty.
    pub fn to_writer(out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let (lines, received) = mpsc::sync_channel::<Entry>(LOG_BACKLOG);
        std::thread::Builder::new().name("ciofs-api-log".to_string()).spawn(move || write_lines(received, out))?;
        Ok(Self { lines })
    }

    fn write(&self, line: String) {
        if self.lines.try_send(Entry::Line(line)).is_err() && recording() {
            metrics::counter!("ciofs_api_log_dropped_lines_total").increment(1);
        }
    }

    /// Waits up to `limit` for the lines sent so far to be written: the
    /// process is about to end, and would take them with it.
    /// The channel may be full with nobody reading it (`--api-log -` to a
    /// pipe nobody drains): the flush is offered until the deadline, never
    /// waited on past it.
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (done, flushed) = mpsc::sync_channel(1);
        let mut entry = Entry::Flush(done);
        loop {
            match self.lines.try_send(entry) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if Instant::now() < deadline => {
                    entry = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = flushed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

fn write_lines(received: mpsc::Receiver<Entry>, out: impl Write) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(entry) = received.recv() {
        let mut flushed = Vec::new();
        let mut next = Some(entry);
        let mut written = Ok(());
        // Everything waiting is written before the one flush.
        while let Some(entry) = next.take() {
            match entry {
                Entry::Line(line) => written = written.and_then(|()| out.write_all(line.as_bytes())),
                Entry::Flush(done) => flushed.push(done),
            }
            next = received.try_recv().ok();
        }
        if let Err(e) = written.and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "the API log cannot be written; it stops here");
            return;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// The API log the shell gave for every `Observed` made after it.
static INSTALLED_LOG: std::sync::OnceLock<ApiLog> = std::sync::OnceLock::new();

/// Makes `log` the API log of every `Observed::new` from now on (once: a
/// second call is refused).
pub fn install_api_log(log: ApiLog) -> Result<(), String> {
    INSTALLED_LOG.set(log).map_err(|_| "an API log is already installed".to_string())
}

/// Writes out what the installed API log was sent (see `ApiLog::flush`).
pub fn flush_api_log(limit: Duration) {
    if let Some(log) = INSTALLED_LOG.get() {
        log.flush(limit);
    }
}

/// The call an observed backend is serving, for the retry layer.
struct Call {
    service: &'static str,
    method: &'static str,
    /// Retries the retry layer made for the call, whichever of its
    /// requests they were of.
    retries: Cell<u32>,
}

tokio::task_local! {
    static CALL: Call;
}

/// The retry layer tries a request of an observed call again: counted.
pub(crate) fn retrying() {
    let _ = CALL.try_with(|call| {
        call.retries.set(call.retries.get() + 1);
        if recording() {
            metrics::counter!("ciofs_api_retries_total", "service" => call.service, "method" => call.method)
                .increment(1);
        }
    });
}

/// What the API log says of one call once it has answered.
struct Outcome<'a> {
    service: &'static str,
    method: &'static str,
    resource: &'a str,
    bytes: u64,
    status: &'static str,
    took: Duration,
    attempts: u32,
}

impl ApiLog {
    fn log_call(&self, outcome: &Outcome<'_>) {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "-".to_string());
        let Outcome { service, method, resource, bytes, status, took, attempts } = outcome;
        self.write(format!(
            "time={time} service={service} method={method} resource={resource:?} status={status} bytes={bytes} \
             duration={:.6} attempt={attempts}\n",
            took.as_secs_f64(),
        ));
    }
}

/// `ok`, or the error's kind as a label.
fn status<T>(result: &BackendResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind.label(),
    }
}

/// A call to observe: which, on what, how many bytes it sends or asks for.
struct Request<R> {
    service: &'static str,
    method: &'static str,
    resource: R,
    bytes: u64,
}

const STORAGE: &str = "storage";
const BIGQUERY: &str = "bigquery";
const PUBSUB: &str = "pubsub";

/// Wraps a backend and observes every call it makes (see the header).
pub struct Observed<T: ?Sized> {
    inner: Arc<T>,
    log: Option<ApiLog>,
}

impl<T: ?Sized> Observed<T> {
    /// Observes `inner`, logging to the installed API log if any.
    pub fn new(inner: Arc<T>) -> Self {
        Self::logging_to(inner, INSTALLED_LOG.get().cloned())
    }

    /// Observes `inner`, logging to `log`.
    pub fn logging_to(inner: Arc<T>, log: Option<ApiLog>) -> Self {
        Self { inner, log }
    }

    /// Runs `call`, recorded and logged as `request` says. `resource` is
    /// only made when something records or logs.
    async fn observe<R, F>(&self, request: Request<impl FnOnce() -> String>, call: F) -> BackendResult<R>
    where
        F: Future<Output = BackendResult<R>>,
    {
        if !recording() && self.log.is_none() {
            return call.await;
        }
        let Request { service, method, resource, bytes } = request;
        let started = Instant::now();
        let watched = Call { service, method, retries: Cell::new(0) };
        let (result, retries) = CALL
            .scope(watched, async {
                let result = call.await;
                (result, CALL.with(|call| call.retries.get()))
            })
            .await;
        let took = started.elapsed();
        let status = status(&result);
        if let Some(log) = &self.log {
            let resource = &resource();
            log.log_call(&Outcome { service, method, resource, bytes, status, took, attempts: retries + 1 });
        }
        if recording() {
            metrics::counter!("ciofs_api_requests_total", "service" => service, "method" => method, "status" => status)
                .increment(1);
            metrics::histogram!("ciofs_api_request_duration_seconds", "service" => service, "method" => method)
                .record(took.as_secs_f64());
        }
        result
    }
}

fn storage<R: FnOnce() -> String>(method: &'static str, resource: R) -> Request<R> {
    Request { service: STORAGE, method, resource, bytes: 0 }
}

fn bigquery<R: FnOnce() -> String>(method: &'static str, resource: R) -> Request<R> {
    Request { service: BIGQUERY, method, resource, bytes: 0 }
}

fn pubsub<R: FnOnce() -> String>(method: &'static str, resource: R) -> Request<R> {
    Request { service: PUBSUB, method, resource, bytes: 0 }
}

fn count_bytes(name: &'static str, service: &'static str, bytes: u64) {
    if recording() {
        metrics::counter!(name, "service" => service).increment(bytes);
    }
}

fn count_messages(name: &'static str, messages: usize) {
    if recording() {
        metrics::counter!(name).increment(messages as u64);
    }
}

/// An upload between its start and its answer (`ciofs_uploads_in_flight`).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        UPLOADS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        UPLOADS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<T: ObjectStore + ?Sized> ObjectStore for Observed<T> {
    async fn list_buckets(
        &self,
        project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage> {
        let request = storage("list_buckets", || project.to_string());
        self.observe(request, self.inner.list_buckets(project, page_token, page_size)).await
    }

    async fn get_bucket(&self, bucket: &str) -> BackendResult<BucketMeta> {
        self.observe(storage("get_bucket", || bucket.to_string()), self.inner.get_bucket(bucket)).await
    }

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage> {
        let observed = storage("list_objects", || format!("{}/{}", request.bucket, request.prefix));
        self.observe(observed, self.inner.list_objects(request)).await
    }

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta> {
        self.observe(storage("get_object", || format!("{bucket}/{name}")), self.inner.get_object(bucket, name)).await
    }

    async fn read_object(&self, request: &ReadObject) -> BackendResult<ObjectBody> {
        let asked = request.range.end.saturating_sub(request.range.start);
        let observed = Request { bytes: asked, ..storage("read", || format!("{}/{}", request.bucket, request.name)) };
        let body = self.observe(observed, self.inner.read_object(request)).await?;
        if !recording() {
            return Ok(body);
        }
        // The bytes are counted as they come, after the call has answered.
        let read = metrics::counter!("ciofs_api_read_bytes_total", "service" => STORAGE);
        let bytes = body.bytes.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                read.increment(chunk.len() as u64);
            }
        });
        Ok(ObjectBody { generation: body.generation, bytes: Box::pin(bytes) })
    }

    async fn upload_object(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        let _in_flight = InFlight::start();
        let observed =
            Request { bytes: upload.size, ..storage("upload", || format!("{}/{}", upload.bucket, upload.name)) };
        let meta = self.observe(observed, self.inner.upload_object(upload)).await?;
        count_bytes("ciofs_api_written_bytes_total", STORAGE, meta.size);
        Ok(meta)
    }

    async fn upload_streamed(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta> {
        let _in_flight = InFlight::start();
        if !recording() && self.log.is_none() {
            return self.inner.upload_streamed(streamed).await;
        }
        // The resource is made before the upload takes `streamed`.
        let resource = format!("{}/{}", streamed.upload.bucket, streamed.upload.name);
        let meta = self.observe(storage("upload_streamed", || resource), self.inner.upload_streamed(streamed)).await?;
        count_bytes("ciofs_api_written_bytes_total", STORAGE, meta.size);
        Ok(meta)
    }

    async fn delete_object(&self, bucket: &str, name: &str, if_generation_match: Option<i64>) -> BackendResult<()> {
        let observed = storage("delete_object", || format!("{bucket}/{name}"));
        self.observe(observed, self.inner.delete_object(bucket, name, if_generation_match)).await
    }

    async fn copy_object(&self, request: &CopyObject) -> BackendResult<ObjectMeta> {
        let observed = storage("copy_object", || format!("{}/{}", request.bucket, request.source));
        self.observe(observed, self.inner.copy_object(request)).await
    }

    async fn patch_object_metadata(&self, request: &PatchObjectMetadata) -> BackendResult<ObjectMeta> {
        let observed = storage("patch_object", || format!("{}/{}", request.bucket, request.name));
        self.observe(observed, self.inner.patch_object_metadata(request)).await
    }

    async fn create_bucket(&self, project: &str, bucket: &str, settings: &BucketSettings) -> BackendResult<BucketMeta> {
        let observed = storage("create_bucket", || bucket.to_string());
        self.observe(observed, self.inner.create_bucket(project, bucket, settings)).await
    }

    async fn update_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta> {
        let observed = storage("update_bucket", || bucket.to_string());
        self.observe(observed, self.inner.update_bucket(bucket, change, if_metageneration_match)).await
    }

    async fn delete_bucket(&self, bucket: &str) -> BackendResult<()> {
        self.observe(storage("delete_bucket", || bucket.to_string()), self.inner.delete_bucket(bucket)).await
    }

    async fn list_notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>> {
        let observed = storage("list_notifications", || bucket.to_string());
        self.observe(observed, self.inner.list_notifications(bucket)).await
    }

    async fn create_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig> {
        let observed = storage("create_notification", || bucket.to_string());
        self.observe(observed, self.inner.create_notification(bucket, topic, event_types)).await
    }
}

#[async_trait]
impl<T: BigQuery + ?Sized> BigQuery for Observed<T> {
    async fn list_datasets(
        &self,
        project: &str,
        page_token: Option<String>,
    ) -> BackendResult<BqPage<DatasetListEntry>> {
        let observed = bigquery("list_datasets", || project.to_string());
        self.observe(observed, self.inner.list_datasets(project, page_token)).await
    }

    async fn get_dataset(&self, project: &str, dataset: &str) -> BackendResult<DatasetMeta> {
        let observed = bigquery("get_dataset", || format!("{project}/{dataset}"));
        self.observe(observed, self.inner.get_dataset(project, dataset)).await
    }

    async fn create_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        let observed = bigquery("create_dataset", || format!("{project}/{dataset}"));
        self.observe(observed, self.inner.create_dataset(project, dataset, settings)).await
    }

    async fn update_dataset(
        &self,
        project: &str,
        dataset: &str,
        settings: &DatasetSettings,
    ) -> BackendResult<DatasetMeta> {
        let observed = bigquery("update_dataset", || format!("{project}/{dataset}"));
        self.observe(observed, self.inner.update_dataset(project, dataset, settings)).await
    }

    async fn delete_dataset(&self, project: &str, dataset: &str) -> BackendResult<()> {
        let observed = bigquery("delete_dataset", || format!("{project}/{dataset}"));
        self.observe(observed, self.inner.delete_dataset(project, dataset)).await
    }

    async fn list_tables(
        &self,
        project: &str,
        dataset: &str,
        page_token: Option<String>,
    ) -> BackendResult<BqPage<TableListEntry>> {
        let observed = bigquery("list_tables", || format!("{project}/{dataset}"));
        self.observe(observed, self.inner.list_tables(project, dataset, page_token)).await
    }

    async fn get_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<TableMeta> {
        let observed = bigquery("get_table", || format!("{project}/{dataset}/{table}"));
        self.observe(observed, self.inner.get_table(project, dataset, table)).await
    }

    async fn create_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        settings: &TableSettings,
    ) -> BackendResult<TableMeta> {
        let observed = bigquery("create_table", || format!("{project}/{dataset}/{table}"));
        self.observe(observed, self.inner.create_table(project, dataset, table, settings)).await
    }

    async fn update_table(&self, request: &UpdateTable) -> BackendResult<TableMeta> {
        let observed =
            bigquery("update_table", || format!("{}/{}/{}", request.project, request.dataset, request.table));
        self.observe(observed, self.inner.update_table(request)).await
    }

    async fn delete_table(&self, project: &str, dataset: &str, table: &str) -> BackendResult<()> {
        let observed = bigquery("delete_table", || format!("{project}/{dataset}/{table}"));
        self.observe(observed, self.inner.delete_table(project, dataset, table)).await
    }
}

#[async_trait]
impl<T: PubSub + ?Sized> PubSub for Observed<T> {
    async fn list_topics(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<TopicMeta>> {
        self.observe(pubsub("list_topics", || project.to_string()), self.inner.list_topics(project, page_token)).await
    }

    async fn get_topic(&self, project: &str, topic: &str) -> BackendResult<TopicMeta> {
        let observed = pubsub("get_topic", || format!("{project}/{topic}"));
        self.observe(observed, self.inner.get_topic(project, topic)).await
    }

    async fn create_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        let observed = pubsub("create_topic", || format!("{project}/{topic}"));
        self.observe(observed, self.inner.create_topic(project, topic, settings)).await
    }

    async fn update_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        let observed = pubsub("update_topic", || format!("{project}/{topic}"));
        self.observe(observed, self.inner.update_topic(project, topic, settings)).await
    }

    async fn delete_topic(&self, project: &str, topic: &str) -> BackendResult<()> {
        let observed = pubsub("delete_topic", || format!("{project}/{topic}"));
        self.observe(observed, self.inner.delete_topic(project, topic)).await
    }

    async fn list_topic_subscriptions(
        &self,
        project: &str,
        topic: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<String>> {
        let observed = pubsub("list_topic_subscriptions", || format!("{project}/{topic}"));
        self.observe(observed, self.inner.list_topic_subscriptions(project, topic, page_token)).await
    }

    async fn get_subscription(&self, project: &str, subscription: &str) -> BackendResult<SubscriptionMeta> {
        let observed = pubsub("get_subscription", || format!("{project}/{subscription}"));
        self.observe(observed, self.inner.get_subscription(project, subscription)).await
    }

    async fn create_subscription(&self, request: &CreateSubscription) -> BackendResult<SubscriptionMeta> {
        let observed = pubsub("create_subscription", || format!("{}/{}", request.project, request.subscription));
        self.observe(observed, self.inner.create_subscription(request)).await
    }

    async fn update_subscription(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> BackendResult<SubscriptionMeta> {
        let observed = pubsub("update_subscription", || format!("{project}/{subscription}"));
        self.observe(observed, self.inner.update_subscription(project, subscription, settings)).await
    }

    async fn delete_subscription(&self, project: &str, subscription: &str) -> BackendResult<()> {
        let observed = pubsub("delete_subscription", || format!("{project}/{subscription}"));
        self.observe(observed, self.inner.delete_subscription(project, subscription)).await
    }

    async fn publish(&self, project: &str, topic: &str, messages: Vec<OutgoingMessage>) -> BackendResult<Vec<String>> {
        let bytes = messages.iter().map(|m| m.data.len() as u64).sum();
        let observed = Request { bytes, ..pubsub("publish", || format!("{project}/{topic}")) };
        let ids = self.observe(observed, self.inner.publish(project, topic, messages)).await?;
        count_messages("ciofs_pubsub_messages_published_total", ids.len());
        count_bytes("ciofs_api_written_bytes_total", PUBSUB, bytes);
        Ok(ids)
    }

    async fn pull(
        &self,
        project: &str,
        subscription: &str,
        max_messages: usize,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let observed = pubsub("pull", || format!("{project}/{subscription}"));
        let messages = self.observe(observed, self.inner.pull(project, subscription, max_messages)).await?;
        count_messages("ciofs_pubsub_messages_delivered_total", messages.len());
        count_bytes("ciofs_api_read_bytes_total", PUBSUB, messages.iter().map(|m| m.data.len() as u64).sum());
        Ok(messages)
    }

    async fn acknowledge(&self, project: &str, subscription: &str, ack_ids: &[String]) -> BackendResult<()> {
        let observed = pubsub("acknowledge", || format!("{project}/{subscription}"));
        self.observe(observed, self.inner.acknowledge(project, subscription, ack_ids)).await
    }

    async fn modify_ack_deadline(
        &self,
        project: &str,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> BackendResult<()> {
        let observed = pubsub("modify_ack_deadline", || format!("{project}/{subscription}"));
        self.observe(observed, self.inner.modify_ack_deadline(project, subscription, ack_ids, deadline)).await?;
        // A deadline of zero gives the messages back at once (a nack).
        if deadline.is_zero() {
            count_messages("ciofs_pubsub_messages_given_back_total", ack_ids.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::fault::{Call as FaultCall, Fault, Faulty};
    use crate::memory::{MemoryGcs, MemoryPubSub, Op};
    use crate::retry::RetryPolicy;
    use bytes::Bytes;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use std::sync::Mutex;

    /// What the log's thread wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        /// The lines written, once there are `n` of them.
        async fn lines(&self, n: usize) -> Vec<String> {
            for _ in 0..500 {
                let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                if lines.len() >= n {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("fewer than {n} lines: {:?}", String::from_utf8_lossy(&self.0.lock().unwrap()));
        }

        /// Every line `observed` logged so far, once its log is flushed.
        async fn all<T: ?Sized>(&self, observed: &Observed<T>) -> Vec<String> {
            observed.log.as_ref().expect("a log").flush(Duration::from_secs(10));
            self.lines(0).await
        }
    }

    /// A counter's name, labels and value.
    type Recorded = (String, Vec<(String, String)>, u64);

    /// The counters recorded so far, as (name, labels, value). A snapshot
    /// takes them: each is read once.
    fn counters(snapshotter: &Snapshotter) -> Vec<Recorded> {
        let snapshot = snapshotter.snapshot().into_vec().into_iter();
        snapshot
            .filter_map(|(key, .., value)| match value {
                DebugValue::Counter(n) => {
                    let key = key.key();
                    let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
                    Some((key.name().to_string(), labels, n))
                }
                _ => None,
            })
            .collect()
    }

    /// The value of counter `name` with all of `labels`, summed.
    fn counter(counters: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
        counters
            .iter()
            .filter(|(n, have, _)| {
                n == name && labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(.., value)| value)
            .sum()
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            stall_timeout: Duration::from_secs(5),
            window: Duration::from_secs(10),
        }
    }

    /// A call the retry layer serves, failing twice and then answering:
    /// one request, two retries, and one line with the final status and
    /// three attempts.
    #[tokio::test]
    async fn retries_are_counted_and_the_call_has_one_line() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        start_recording();
        let memory = MemoryGcs::new();
        memory.add_bucket("b");
        let faulty = Arc::new(Faulty::new(Arc::new(memory)));
        faulty.arm(FaultCall::Gcs(Op::GetObject), 1, Fault::Fail(ErrorKind::Unavailable));
        faulty.arm(FaultCall::Gcs(Op::GetObject), 2, Fault::Fail(ErrorKind::Unavailable));
        let written = Written::default();
        let observed = Observed::logging_to(faulty.clone(), Some(ApiLog::to_writer(written.clone()).unwrap()));
        let request = storage("get_object", || "b/f".to_string());
        let answer = observed.observe(request, fast().run("get", || faulty.get_object("b", "f"))).await;
        assert_eq!(answer.map_err(|e| e.kind).err(), Some(ErrorKind::NotFound), "the third attempt reached the store");
        assert_eq!(faulty.calls(FaultCall::Gcs(Op::GetObject)), 3);

        let labels = [("service", "storage"), ("method", "get_object")];
        let recorded = counters(&snapshotter);
        assert_eq!(counter(&recorded, "ciofs_api_retries_total", &labels), 2);
        assert_eq!(counter(&recorded, "ciofs_api_requests_total", &labels), 1);
        assert_eq!(counter(&recorded, "ciofs_api_requests_total", &[("status", "not_found")]), 1);
        let lines = written.all(&observed).await;
        assert_eq!(lines.len(), 1, "one line for the call: {lines:?}");
        let line = &lines[0];
        assert!(line.starts_with("time=20"), "{line}");
        assert!(line.contains(r#" service=storage method=get_object resource="b/f" status=not_found "#), "{line}");
        assert!(line.ends_with(" attempt=3"), "{line}");
    }

    /// A call made of several requests (an upload that checks the
    /// object's generation first) has one line, under its own method and
    /// with its own status, not one per request.
    #[tokio::test]
    async fn a_call_of_several_requests_has_one_line() {
        let memory = Arc::new(MemoryGcs::new());
        memory.add_bucket("b");
        let written = Written::default();
        let observed = Observed::logging_to(memory.clone(), Some(ApiLog::to_writer(written.clone()).unwrap()));
        let requests = async {
            let checked = fast().run("check", || memory.get_object("b", "f")).await;
            assert_eq!(checked.map_err(|e| e.kind).err(), Some(ErrorKind::NotFound));
            fast().run("upload", || async { Ok(()) }).await
        };
        let request = Request { bytes: 12, ..storage("upload", || "b/f".to_string()) };
        observed.observe(request, requests).await.unwrap();
        let lines = written.all(&observed).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(r#" method=upload resource="b/f" status=ok bytes=12 "#), "{lines:?}");
        assert!(lines[0].ends_with(" attempt=1"), "{lines:?}");
    }

    /// A call that never reaches the retry layer gets one line of its own;
    /// Pub/Sub messages are counted as published, delivered and given back.
    #[tokio::test]
    async fn calls_outside_the_retry_layer_and_messages() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        start_recording();
        let memory = MemoryPubSub::new();
        memory.put_topic("p", "t", TopicSettings::default());
        memory.put_subscription("p", "s", "t", SubscriptionSettings::default());
        let written = Written::default();
        let observed = Observed::logging_to(Arc::new(memory), Some(ApiLog::to_writer(written.clone()).unwrap()));
        let messages = (0..3).map(|i| OutgoingMessage { data: Bytes::from(format!("m{i}")), ..Default::default() });
        observed.publish("p", "t", messages.collect()).await.unwrap();
        let pulled = observed.pull("p", "s", 10).await.unwrap();
        let ack_ids: Vec<String> = pulled.iter().map(|m| m.ack_id.clone()).collect();
        observed.modify_ack_deadline("p", "s", &ack_ids[..2], Duration::ZERO).await.unwrap();
        observed.modify_ack_deadline("p", "s", &ack_ids[2..], Duration::from_secs(10)).await.unwrap();
        assert!(observed.get_topic("p", "absent").await.is_err());

        let recorded = counters(&snapshotter);
        assert_eq!(counter(&recorded, "ciofs_pubsub_messages_published_total", &[]), 3);
        assert_eq!(counter(&recorded, "ciofs_pubsub_messages_delivered_total", &[]), 3);
        assert_eq!(counter(&recorded, "ciofs_pubsub_messages_given_back_total", &[]), 2);
        assert_eq!(counter(&recorded, "ciofs_api_written_bytes_total", &[("service", "pubsub")]), 6);
        let not_found = [("method", "get_topic"), ("status", "not_found")];
        assert_eq!(counter(&recorded, "ciofs_api_requests_total", &not_found), 1);
        let lines = written.lines(5).await;
        assert!(lines[0].contains(r#"method=publish resource="p/t" status=ok bytes=6 "#), "{lines:?}");
        assert!(lines[4].contains(r#"method=get_topic resource="p/absent" status=not_found "#), "{lines:?}");
        assert!(lines.iter().all(|line| line.ends_with(" attempt=1")), "{lines:?}");
    }

    /// A flush returns once every line sent before it is written: what
    /// the process does before it ends.
    #[test]
    fn a_flush_waits_for_the_lines_sent_before_it() {
        let written = Written::default();
        let log = ApiLog::to_writer(written.clone()).unwrap();
        for i in 0..1000 {
            log.write(format!("line {i}\n"));
        }
        log.flush(Duration::from_secs(10));
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.ends_with("line 999\n"));
    }

    /// A flush gives up at its limit even when the log's channel is full
    /// and nobody drains it (its writer blocked, as on a pipe nobody
    /// reads).
    #[test]
    fn a_flush_does_not_wait_past_its_limit_on_a_full_channel() {
        let (lines, _kept) = mpsc::sync_channel::<Entry>(1);
        let log = ApiLog { lines };
        log.write("fills the channel\n".to_string());
        let started = Instant::now();
        log.flush(Duration::from_millis(200));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{took:?}");
    }

    /// A resource is quoted: a name with spaces, quotes or a newline stays
    /// on its one line.
    #[tokio::test]
    async fn a_line_stays_one_line_whatever_the_name() {
        let written = Written::default();
        let memory = MemoryGcs::new();
        memory.add_bucket("b");
        let observed = Observed::logging_to(Arc::new(memory), Some(ApiLog::to_writer(written.clone()).unwrap()));
        let _ = observed.get_object("b", "a \"name\"\nwith a newline").await;
        let lines = written.lines(1).await;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(r#"resource="b/a \"name\"\nwith a newline""#), "{lines:?}");
    }
}
