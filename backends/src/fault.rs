//! `Faulty`: a wrapper around any `ObjectStore` (and any `PubSub`'s publish)
//! that injects the failures a test asks for, so that the core's handling
//! of each can be checked against in-memory or real backends alike.
//!
//! A test arms a fault for the Nth call of a kind from now. The faults are
//! those a network and a service give: a call that fails and changes
//! nothing; a call that takes effect and whose answer is lost (the caller
//! sees `Unavailable`: it cannot know the outcome); a call that hangs until
//! the test releases it or the caller gives up (drops its future); a call
//! that starts late; and a body that comes in small pieces with delays
//! (reads), or an upload that reads its source slowly, so that what the
//! caller does meanwhile (writing the staging file) shows in what is stored.
//!
//! Each armed fault fires once. `fired` counts the faults that fired, so a
//! model-based test knows whether an outcome is ambiguous.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gcs::{
    BucketChange, BucketMeta, BucketPage, BucketSettings, ByteStream, CopyObject, ListObjects, NotificationConfig,
    ObjectBody, ObjectMeta, ObjectPage, ObjectStore, PatchObjectMetadata, ReadObject, StreamedUpload, Upload,
};
use crate::memory::Op;
use crate::pubsub::{
    CreateSubscription, OutgoingMessage, Page, PubSub, ReceivedMessage, SubscriptionMeta, SubscriptionSettings,
    TopicMeta, TopicSettings,
};
use crate::sync::lock;

/// A kind of call a fault can be armed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// An `ObjectStore` call (`upload_streamed` counts as `Op::Upload`).
    Gcs(Op),
    /// `PubSub::publish`.
    Publish,
}

/// What happens to the call a fault is armed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call is not made; it fails with this kind.
    Fail(ErrorKind),
    /// The call is made and takes effect; its answer is lost: the caller
    /// gets `Unavailable`.
    ApplyThenFail,
    /// The call waits until `release_stalls`, then is made; or forever, if
    /// its future is dropped first (nothing is done then).
    Stall,
    /// The call takes effect, then its answer waits as `Stall` does (the
    /// caller that gives up meanwhile never learns it succeeded).
    ApplyThenStall,
    /// The call waits this long, then is made.
    Delay(Duration),
    /// A read streams its bytes in pieces of this many bytes, `delay` apart;
    /// an upload reads its source that way before it is made (others: as
    /// `Delay`).
    SlowBody { piece: usize, delay: Duration },
    /// A read sends this many bytes of its body, then breaks off with
    /// `Unavailable` (other calls fail so).
    BreakBody { after: usize },
}

struct Armed {
    call: Call,
    /// Fires on this call of its kind (counted from the wrapper's start).
    at: u64,
    fault: Fault,
}

/// Wraps a backend and fails its calls as a test armed it to.
pub struct Faulty<T> {
    inner: Arc<T>,
    armed: Mutex<Vec<Armed>>,
    seen: Mutex<BTreeMap<Call, u64>>,
    fired: AtomicU64,
    /// Of those, the faults that changed an answer (not only its timing).
    failed: AtomicU64,
    stalled: AtomicU64,
    /// Bumped by `release_stalls`: stalled calls wait for a change.
    release: watch::Sender<u64>,
}

impl<T> Faulty<T> {
    pub fn new(inner: Arc<T>) -> Self {
        Faulty {
            inner,
            armed: Mutex::new(Vec::new()),
            seen: Mutex::new(BTreeMap::new()),
            fired: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            release: watch::channel(0).0,
        }
    }

    /// The wrapped backend (for changes behind the caller's back).
    pub fn inner(&self) -> &Arc<T> {
        &self.inner
    }

    /// Arms `fault` for the `nth` call of `call` from now (1: the next).
    pub fn arm(&self, call: Call, nth: u64, fault: Fault) {
        let at = lock(&self.seen).get(&call).copied().unwrap_or(0) + nth.max(1);
        lock(&self.armed).push(Armed { call, at, fault });
    }

    /// Forgets every armed fault that has not fired.
    pub fn disarm(&self) {
        lock(&self.armed).clear();
    }

    /// Whether a fault is armed and has not fired.
    pub fn is_armed(&self) -> bool {
        !lock(&self.armed).is_empty()
    }

    /// Lets every call stalled now go on.
    pub fn release_stalls(&self) {
        self.release.send_modify(|n| *n += 1);
    }

    /// How many faults fired so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    /// How many of the faults that fired changed an answer: `Fail`,
    /// `ApplyThenFail`, `ApplyThenStall` (the others only delay it).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// How many calls wait in a stall now.
    pub fn stalled(&self) -> u64 {
        self.stalled.load(Ordering::SeqCst)
    }

    /// How many calls of `call` were made through the wrapper.
    pub fn calls(&self, call: Call) -> u64 {
        lock(&self.seen).get(&call).copied().unwrap_or(0)
    }

    /// Counts a call of `call` and takes the fault armed for it, if any.
    fn take(&self, call: Call) -> Option<Fault> {
        let n = {
            let mut seen = lock(&self.seen);
            let n = seen.entry(call).or_insert(0);
            *n += 1;
            *n
        };
        let mut armed = lock(&self.armed);
        let at = armed.iter().position(|a| a.call == call && a.at == n)?;
        let fault = armed.remove(at).fault;
        self.fired.fetch_add(1, Ordering::SeqCst);
        if matches!(fault, Fault::Fail(_) | Fault::ApplyThenFail | Fault::ApplyThenStall) {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        Some(fault)
    }

    /// Waits until `release_stalls` is called (or forever, if dropped).
    async fn stall(&self) {
        let mut release = self.release.subscribe();
        self.stalled.fetch_add(1, Ordering::SeqCst);
        // Counted down even when the caller drops this future.
        let _count = Uncount(&self.stalled);
        let _ = release.changed().await;
    }

    /// Runs `make` with `fault` applied (not `SlowBody`'s reshaping of bodies,
    /// which the calls that have one do themselves).
    async fn around<R, F>(&self, call: Call, fault: Option<Fault>, make: F) -> BackendResult<R>
    where
        F: std::future::Future<Output = BackendResult<R>>,
    {
        match fault {
            None => make.await,
            Some(Fault::Fail(kind)) => Err(injected(call, kind)),
            Some(Fault::BreakBody { .. }) => Err(injected(call, ErrorKind::Unavailable)),
            Some(Fault::ApplyThenFail) => {
                let _lost = make.await;
                Err(BackendError::new(ErrorKind::Unavailable, format!("{call:?}: answer lost (injected)")))
            }
            Some(Fault::Stall) => {
                self.stall().await;
                make.await
            }
            Some(Fault::ApplyThenStall) => {
                let made = make.await;
                self.stall().await;
                made
            }
            Some(Fault::Delay(delay) | Fault::SlowBody { delay, .. }) => {
                tokio::time::sleep(delay).await;
                make.await
            }
        }
    }

    /// Runs a call of `call` with the fault armed for it.
    async fn run<R, F>(&self, call: Call, make: F) -> BackendResult<R>
    where
        F: std::future::Future<Output = BackendResult<R>>,
    {
        let fault = self.take(call);
        self.around(call, fault, make).await
    }
}

struct Uncount<'a>(&'a AtomicU64);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn injected(call: Call, kind: ErrorKind) -> BackendError {
    BackendError::new(kind, format!("{call:?}: failure injected by the test"))
}

/// `stream` again, in pieces of `piece` bytes each `delay` after the last.
fn slow_stream(stream: ByteStream, piece: usize, delay: Duration) -> ByteStream {
    let piece = piece.max(1);
    let pieces = stream.flat_map(move |chunk| {
        let parts: Vec<BackendResult<Bytes>> = match chunk {
            Ok(bytes) => {
                (0..bytes.len()).step_by(piece).map(|at| Ok(bytes.slice(at..(at + piece).min(bytes.len())))).collect()
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(parts)
    });
    Box::pin(pieces.then(move |part| async move {
        tokio::time::sleep(delay).await;
        part
    }))
}

/// The first `after` bytes of `stream`, then an `Unavailable` error.
fn broken_stream(stream: ByteStream, after: usize) -> ByteStream {
    let pieces = stream.scan(Some(after), |left, chunk| {
        let Some(remaining) = *left else { return futures::future::ready(None) };
        let parts = match chunk {
            Ok(mut bytes) if bytes.len() >= remaining => {
                *left = None;
                bytes.truncate(remaining);
                let lost = BackendError::new(ErrorKind::Unavailable, "the body broke off (injected)");
                vec![Ok(bytes), Err(lost)]
            }
            Ok(bytes) => {
                *left = Some(remaining - bytes.len());
                vec![Ok(bytes)]
            }
            Err(e) => vec![Err(e)],
        };
        futures::future::ready(Some(futures::stream::iter(parts)))
    });
    Box::pin(pieces.flatten())
}

/// A copy of the upload's source read in pieces, `delay` apart, into an
/// unnamed file: what a slow connection would send of a source that changes
/// meanwhile.
async fn read_slowly(upload: &Upload, piece: usize, delay: Duration) -> BackendResult<Upload> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let local = |e: std::io::Error| BackendError::new(ErrorKind::Other, format!("slow upload copy: {e}"));
    let path = std::env::temp_dir().join(format!(
        "ciofs-faulty-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let mut copy = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(local)?;
    std::fs::remove_file(&path).map_err(local)?;
    let mut at = 0;
    while at < upload.size {
        tokio::time::sleep(delay).await;
        let mut buffer = vec![0; (piece.max(1) as u64).min(upload.size - at) as usize];
        // A source shorter than `size` is the upload's own failure to report.
        let n = upload.source.read_at(&mut buffer, at).map_err(local)?;
        if n == 0 {
            break;
        }
        copy.write_all(&buffer[..n]).map_err(local)?;
        at += n as u64;
    }
    Ok(Upload { source: Arc::new(copy), ..upload.clone() })
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for Faulty<T> {
    async fn list_buckets(
        &self,
        project: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> BackendResult<BucketPage> {
        self.run(Call::Gcs(Op::ListBuckets), self.inner.list_buckets(project, page_token, page_size)).await
    }

    async fn get_bucket(&self, bucket: &str) -> BackendResult<BucketMeta> {
        self.run(Call::Gcs(Op::GetBucket), self.inner.get_bucket(bucket)).await
    }

    async fn list_objects(&self, request: &ListObjects) -> BackendResult<ObjectPage> {
        self.run(Call::Gcs(Op::ListObjects), self.inner.list_objects(request)).await
    }

    async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<ObjectMeta> {
        self.run(Call::Gcs(Op::GetObject), self.inner.get_object(bucket, name)).await
    }

    async fn read_object(&self, request: &ReadObject) -> BackendResult<ObjectBody> {
        let call = Call::Gcs(Op::ReadObject);
        let fault = self.take(call);
        let before = fault.filter(|f| !matches!(f, Fault::SlowBody { .. } | Fault::BreakBody { .. }));
        let body = self.around(call, before, self.inner.read_object(request)).await?;
        let generation = body.generation;
        Ok(match fault {
            Some(Fault::SlowBody { piece, delay }) => {
                ObjectBody { generation, bytes: slow_stream(body.bytes, piece, delay) }
            }
            Some(Fault::BreakBody { after }) => ObjectBody { generation, bytes: broken_stream(body.bytes, after) },
            _ => body,
        })
    }

    async fn upload_object(&self, upload: &Upload) -> BackendResult<ObjectMeta> {
        let call = Call::Gcs(Op::Upload);
        match self.take(call) {
            Some(Fault::SlowBody { piece, delay }) => {
                let copy = read_slowly(upload, piece, delay).await?;
                self.inner.upload_object(&copy).await
            }
            fault => self.around(call, fault, self.inner.upload_object(upload)).await,
        }
    }

    async fn upload_streamed(&self, streamed: StreamedUpload) -> BackendResult<ObjectMeta> {
        let call = Call::Gcs(Op::Upload);
        let fault = self.take(call).filter(|f| !matches!(f, Fault::SlowBody { .. }));
        self.around(call, fault, self.inner.upload_streamed(streamed)).await
    }

    async fn delete_object(&self, bucket: &str, name: &str, if_generation_match: Option<i64>) -> BackendResult<()> {
        self.run(Call::Gcs(Op::DeleteObject), self.inner.delete_object(bucket, name, if_generation_match)).await
    }

    async fn copy_object(&self, request: &CopyObject) -> BackendResult<ObjectMeta> {
        self.run(Call::Gcs(Op::CopyObject), self.inner.copy_object(request)).await
    }

    async fn patch_object_metadata(&self, request: &PatchObjectMetadata) -> BackendResult<ObjectMeta> {
        self.run(Call::Gcs(Op::PatchObject), self.inner.patch_object_metadata(request)).await
    }

    async fn create_bucket(&self, project: &str, bucket: &str, settings: &BucketSettings) -> BackendResult<BucketMeta> {
        self.run(Call::Gcs(Op::CreateBucket), self.inner.create_bucket(project, bucket, settings)).await
    }

    async fn update_bucket(
        &self,
        bucket: &str,
        change: &BucketChange,
        if_metageneration_match: Option<i64>,
    ) -> BackendResult<BucketMeta> {
        self.run(Call::Gcs(Op::UpdateBucket), self.inner.update_bucket(bucket, change, if_metageneration_match)).await
    }

    async fn delete_bucket(&self, bucket: &str) -> BackendResult<()> {
        self.run(Call::Gcs(Op::DeleteBucket), self.inner.delete_bucket(bucket)).await
    }

    async fn list_notifications(&self, bucket: &str) -> BackendResult<Vec<NotificationConfig>> {
        self.run(Call::Gcs(Op::ListNotifications), self.inner.list_notifications(bucket)).await
    }

    async fn create_notification(
        &self,
        bucket: &str,
        topic: &str,
        event_types: &[String],
    ) -> BackendResult<NotificationConfig> {
        let call = Call::Gcs(Op::CreateNotification);
        self.run(call, self.inner.create_notification(bucket, topic, event_types)).await
    }
}

/// Only `publish` takes faults: it is the call whose outcome a lost answer
/// makes ambiguous (was the message published?); the rest pass through.
#[async_trait]
impl<T: PubSub> PubSub for Faulty<T> {
    async fn list_topics(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<TopicMeta>> {
        self.inner.list_topics(project, page_token).await
    }

    async fn get_topic(&self, project: &str, topic: &str) -> BackendResult<TopicMeta> {
        self.inner.get_topic(project, topic).await
    }

    async fn create_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        self.inner.create_topic(project, topic, settings).await
    }

    async fn update_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        self.inner.update_topic(project, topic, settings).await
    }

    async fn delete_topic(&self, project: &str, topic: &str) -> BackendResult<()> {
        self.inner.delete_topic(project, topic).await
    }

    async fn list_topic_subscriptions(
        &self,
        project: &str,
        topic: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<String>> {
        self.inner.list_topic_subscriptions(project, topic, page_token).await
    }

    async fn get_subscription(&self, project: &str, subscription: &str) -> BackendResult<SubscriptionMeta> {
        self.inner.get_subscription(project, subscription).await
    }

    async fn create_subscription(&self, request: &CreateSubscription) -> BackendResult<SubscriptionMeta> {
        self.inner.create_subscription(request).await
    }

    async fn update_subscription(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> BackendResult<SubscriptionMeta> {
        self.inner.update_subscription(project, subscription, settings).await
    }

    async fn delete_subscription(&self, project: &str, subscription: &str) -> BackendResult<()> {
        self.inner.delete_subscription(project, subscription).await
    }

    async fn publish(&self, project: &str, topic: &str, messages: Vec<OutgoingMessage>) -> BackendResult<Vec<String>> {
        self.run(Call::Publish, self.inner.publish(project, topic, messages)).await
    }

    async fn pull(
        &self,
        project: &str,
        subscription: &str,
        max_messages: usize,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        self.inner.pull(project, subscription, max_messages).await
    }

    async fn acknowledge(&self, project: &str, subscription: &str, ack_ids: &[String]) -> BackendResult<()> {
        self.inner.acknowledge(project, subscription, ack_ids).await
    }

    async fn modify_ack_deadline(
        &self,
        project: &str,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> BackendResult<()> {
        self.inner.modify_ack_deadline(project, subscription, ack_ids, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryGcs, MemoryPubSub};
    use futures::TryStreamExt;

    fn gcs() -> Faulty<MemoryGcs> {
        let memory = MemoryGcs::new();
        memory.add_bucket("b");
        Faulty::new(Arc::new(memory))
    }

    fn upload(data: &[u8]) -> Upload {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        Upload {
            bucket: "b".to_string(),
            name: "f".to_string(),
            source: Arc::new(file),
            size: data.len() as u64,
            content_type: None,
            custom_metadata: BTreeMap::new(),
            if_generation_match: None,
        }
    }

    fn stored(gcs: &Faulty<MemoryGcs>) -> Option<Vec<u8>> {
        gcs.inner().object_data("b", "f").map(|b| b.to_vec())
    }

    #[tokio::test]
    async fn the_nth_call_fails_and_is_not_made() {
        let gcs = gcs();
        gcs.arm(Call::Gcs(Op::Upload), 2, Fault::Fail(ErrorKind::PermissionDenied));
        gcs.upload_object(&upload(b"one")).await.unwrap();
        let failed = gcs.upload_object(&upload(b"two")).await.unwrap_err();
        assert_eq!(failed.kind, ErrorKind::PermissionDenied);
        assert_eq!(stored(&gcs).as_deref(), Some(&b"one"[..]), "the failed call changed nothing");
        gcs.upload_object(&upload(b"three")).await.unwrap();
        assert_eq!(stored(&gcs).as_deref(), Some(&b"three"[..]), "a fault fires once");
        assert_eq!((gcs.fired(), gcs.failed(), gcs.calls(Call::Gcs(Op::Upload))), (1, 1, 3));
        assert_eq!(
            gcs.inner().calls.upload_object.load(Ordering::SeqCst),
            2,
            "the failed call never reached the store"
        );
    }

    #[tokio::test]
    async fn faults_are_per_kind_and_disarm_forgets_them() {
        let gcs = gcs();
        gcs.arm(Call::Gcs(Op::GetObject), 1, Fault::Fail(ErrorKind::Unavailable));
        gcs.arm(Call::Gcs(Op::DeleteObject), 1, Fault::Fail(ErrorKind::Unavailable));
        gcs.upload_object(&upload(b"x")).await.unwrap();
        assert_eq!(gcs.get_object("b", "f").await.unwrap_err().kind, ErrorKind::Unavailable);
        assert!(gcs.is_armed());
        gcs.disarm();
        assert!(!gcs.is_armed());
        gcs.delete_object("b", "f", None).await.unwrap();
        assert_eq!(gcs.fired(), 1);
    }

    #[tokio::test]
    async fn apply_then_fail_makes_the_call_and_loses_its_answer() {
        let gcs = gcs();
        gcs.arm(Call::Gcs(Op::Upload), 1, Fault::ApplyThenFail);
        let lost = gcs.upload_object(&upload(b"new")).await.unwrap_err();
        assert_eq!(lost.kind, ErrorKind::Unavailable);
        assert_eq!(stored(&gcs).as_deref(), Some(&b"new"[..]), "the upload took effect");
        gcs.arm(Call::Gcs(Op::DeleteObject), 1, Fault::ApplyThenFail);
        assert!(gcs.delete_object("b", "f", None).await.is_err());
        assert_eq!(stored(&gcs), None, "the delete took effect");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_call_waits_for_release_and_a_dropped_one_does_nothing() {
        let gcs = Arc::new(gcs());
        gcs.arm(Call::Gcs(Op::Upload), 1, Fault::Stall);
        let dropped = tokio::time::timeout(Duration::from_secs(3600), gcs.upload_object(&upload(b"never"))).await;
        assert!(dropped.is_err(), "a stall lasts until released");
        assert_eq!((stored(&gcs), gcs.stalled()), (None, 0), "a dropped stalled call made nothing");

        gcs.arm(Call::Gcs(Op::Upload), 1, Fault::Stall);
        let waiting = tokio::spawn({
            let gcs = gcs.clone();
            async move { gcs.upload_object(&upload(b"later")).await }
        });
        while gcs.stalled() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(stored(&gcs), None);
        gcs.release_stalls();
        waiting.await.unwrap().unwrap();
        assert_eq!(stored(&gcs).as_deref(), Some(&b"later"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn apply_then_stall_takes_effect_before_the_caller_gives_up() {
        let gcs = gcs();
        gcs.arm(Call::Gcs(Op::Upload), 1, Fault::ApplyThenStall);
        let gave_up = tokio::time::timeout(Duration::from_secs(60), gcs.upload_object(&upload(b"made"))).await;
        assert!(gave_up.is_err());
        assert_eq!(stored(&gcs).as_deref(), Some(&b"made"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_comes_in_pieces_with_delays() {
        let gcs = gcs();
        gcs.upload_object(&upload(&[7; 10])).await.unwrap();
        let slow = Fault::SlowBody { piece: 3, delay: Duration::from_secs(1) };
        gcs.arm(Call::Gcs(Op::ReadObject), 1, slow);
        let started = tokio::time::Instant::now();
        let body = gcs
            .read_object(&ReadObject {
                bucket: "b".to_string(),
                name: "f".to_string(),
                range: 0..10,
                ..Default::default()
            })
            .await
            .unwrap();
        let pieces: Vec<Bytes> = body.bytes.try_collect().await.unwrap();
        assert_eq!(pieces.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        assert_eq!(pieces.concat(), vec![7; 10]);
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_stores_what_its_source_held_as_it_was_read() {
        let gcs = Arc::new(gcs());
        let request = upload(b"aaaaaa");
        let source = request.source.clone();
        gcs.arm(Call::Gcs(Op::Upload), 1, Fault::SlowBody { piece: 2, delay: Duration::from_secs(1) });
        let uploading = tokio::spawn({
            let gcs = gcs.clone();
            async move { gcs.upload_object(&request).await }
        });
        // After the first piece was read, the writer changes the rest.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        source.write_all_at(b"bbbbbb", 0).unwrap();
        uploading.await.unwrap().unwrap();
        assert_eq!(stored(&gcs).as_deref(), Some(&b"aabbbb"[..]), "a torn upload, as a slow link would send it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_makes_the_call_late() {
        let gcs = gcs();
        gcs.arm(Call::Gcs(Op::ListObjects), 1, Fault::Delay(Duration::from_secs(5)));
        let started = tokio::time::Instant::now();
        let listing = ListObjects { bucket: "b".to_string(), page_size: 10, ..Default::default() };
        gcs.list_objects(&listing).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!((gcs.fired(), gcs.failed()), (1, 0), "a delay changes no answer");
    }

    #[tokio::test]
    async fn publish_fails_or_publishes_once_with_its_answer_lost() {
        let pubsub = Faulty::new(Arc::new(MemoryPubSub::new()));
        pubsub.inner().put_topic("p", "t", TopicSettings::default());
        pubsub.inner().put_subscription("p", "s", "t", SubscriptionSettings::default());
        let message = |data: &'static str| vec![OutgoingMessage { data: Bytes::from(data), ..Default::default() }];
        pubsub.arm(Call::Publish, 1, Fault::Fail(ErrorKind::Unavailable));
        assert!(pubsub.publish("p", "t", message("failed")).await.is_err());
        pubsub.arm(Call::Publish, 1, Fault::ApplyThenFail);
        assert!(pubsub.publish("p", "t", message("lost answer")).await.is_err());
        pubsub.publish("p", "t", message("plain")).await.unwrap();
        let backlog: Vec<Bytes> = pubsub.inner().backlog("p", "s").into_iter().map(|m| m.data).collect();
        assert_eq!(backlog, vec![Bytes::from("lost answer"), Bytes::from("plain")]);
        assert_eq!(pubsub.fired(), 2);
    }
}
