//! `--watch`: the mount subscribes to Cloud Storage's Pub/Sub notifications
//! of the buckets it serves, and what another mount or writer changes is
//! dropped from its caches within a poll (`invalidation.rs`), rather than
//! shown stale for up to the metadata TTL.
//!
//! Where the notifications come from: `--watch-topic` names a topic the
//! buckets already publish to (the emulator's, or one an operator set up);
//! without it, each bucket's notification configs are read, and one that
//! publishes the changes ciofs needs is used, or one is made to the topic
//! `ciofs-watch` of the bucket's project. Each topic gets a subscription of
//! this mount's own, with an expiration policy (a mount that dies leaves it
//! behind for a day at most) and deleted at unmount.
//!
//! Lost or late notifications cost freshness, never correctness: the TTL
//! still applies. A gap (the subscription deleted behind the mount's back,
//! or pulls failing longer than the subscription keeps messages) drops
//! everything known of the buckets the subscription covers, once, with a
//! warning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ciofs_backends::gcs::{NotificationConfig, ObjectStore};
use ciofs_backends::pubsub::{CreateSubscription, PubSub, ReceivedMessage, SubscriptionSettings, TopicSettings};
use ciofs_backends::sync::lock;
use ciofs_backends::{BackendError, ErrorKind};

use super::invalidation::Invalidated;
use super::notifications::{NotChange, ObjectChange};
use super::tree::StorageTree;

/// The changes `--watch` needs a bucket to publish.
pub const EVENTS: [&str; 3] = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_METADATA_UPDATE"];
/// What a config ciofs makes publishes: those, and OBJECT_ARCHIVE, which is
/// all a removal in a versioned bucket sends.
pub const EVENTS_MADE: [&str; 4] = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"];
/// How long stopping may take (Pub/Sub unreachable at unmount: the
/// subscription then expires by itself).
const STOP_WAIT: Duration = Duration::from_secs(10);
/// The topic a bucket without a suitable notification config publishes to.
pub const WATCH_TOPIC: &str = "ciofs-watch";
/// How long a subscription keeps messages not pulled: Pub/Sub's minimum.
/// Pulls failing for longer than this are a gap.
const RETENTION: Duration = Duration::from_secs(600);
/// The most messages one pull takes.
const PULL_BATCH: usize = 500;
/// Between pulls that found nothing; pulls that found some go on at once.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait between pulls that fail.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a mount watches (`ciofs mount --watch`).
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// `--watch-topic`, full (`projects/P/topics/T`) or short (a topic of
    /// the first mounted project); None: the buckets' notification configs.
    pub topic: Option<String>,
    /// How long the subscription outlives a mount that died without
    /// deleting it (Pub/Sub's minimum is a day).
    pub expiration: Duration,
}

/// One subscription of this mount's, to one topic.
struct Subscription {
    project: String,
    name: String,
    /// Full name.
    topic: String,
    /// The buckets whose notifications it gets; None: any.
    buckets: Option<Vec<String>>,
    state: std::sync::Mutex<PullState>,
}

/// How the pulls of a subscription went.
struct PullState {
    /// The last pull that answered.
    answered: Instant,
    /// Consecutive failures.
    failures: u32,
}

/// A mount's subscriptions, and what their pulls do.
pub struct Watcher {
    pubsub: Arc<dyn PubSub>,
    subscriptions: Vec<Subscription>,
    expiration: Duration,
}

impl Watcher {
    /// Finds the topics of the mounted buckets and subscribes to each. An
    /// error says what is missing (a topic, a permission).
    pub async fn start(storage: &StorageTree, pubsub: Arc<dyn PubSub>, options: &WatchOptions) -> Result<Self, String> {
        let topics = match &options.topic {
            Some(topic) => BTreeMap::from([(full_topic(topic, &storage.cx.projects)?, None)]),
            None => bucket_topics(storage, pubsub.as_ref()).await?,
        };
        let mut watcher = Watcher { pubsub, subscriptions: Vec::new(), expiration: options.expiration };
        for (index, (topic, buckets)) in topics.into_iter().enumerate() {
            let (project, _) = split_topic(&topic)?;
            let subscription = Subscription {
                project: project.to_string(),
                name: subscription_name(index),
                topic,
                buckets,
                state: std::sync::Mutex::new(PullState { answered: Instant::now(), failures: 0 }),
            };
            if let Err(e) = watcher.create(&subscription).await {
                watcher.stop().await;
                return Err(e);
            }
            tracing::info!(topic = %subscription.topic, subscription = %subscription.name, "watching for changes");
            watcher.subscriptions.push(subscription);
        }
        Ok(watcher)
    }

    /// Deletes the subscriptions (at unmount). One that cannot be deleted
    /// expires by itself.
    pub async fn stop(&self) {
        for sub in &self.subscriptions {
            let deleted = tokio::time::timeout(STOP_WAIT, self.pubsub.delete_subscription(&sub.project, &sub.name));
            let deleted = deleted.await.unwrap_or_else(|_| Err(BackendError::new(ErrorKind::Stalled, "no answer")));
            match deleted {
                Ok(()) => tracing::debug!(subscription = %sub.name, "subscription deleted"),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    subscription = %sub.name,
                    error = %e,
                    "cannot delete the --watch subscription: it expires after {} unused",
                    humantime(self.expiration)
                ),
            }
        }
    }

    /// Pulls what each subscription has and acts on it. How long to wait
    /// before the next pull.
    pub async fn pull_once(&self, storage: &StorageTree) -> Duration {
        let mut wait = POLL;
        for sub in &self.subscriptions {
            match self.pubsub.pull(&sub.project, &sub.name, PULL_BATCH).await {
                Ok(messages) => {
                    self.answered(storage, sub);
                    if !messages.is_empty() {
                        wait = Duration::ZERO;
                        self.act_on(storage, sub, messages).await;
                    }
                }
                Err(e) => wait = wait.max(self.failed(storage, sub, e).await),
            }
        }
        wait
    }

    async fn create(&self, sub: &Subscription) -> Result<(), String> {
        let (_, topic) = split_topic(&sub.topic)?;
        let request = CreateSubscription {
            project: sub.project.clone(),
            subscription: sub.name.clone(),
            topic: topic.to_string(),
            settings: SubscriptionSettings {
                message_retention_duration: Some(RETENTION),
                expiration_ttl: Some(self.expiration),
                ..Default::default()
            },
        };
        self.pubsub.create_subscription(&request).await.map(drop).map_err(|e| match e.kind {
            ErrorKind::NotFound => format!("--watch: no topic {} ({})", sub.topic, e.message),
            ErrorKind::PermissionDenied => format!(
                "--watch: cannot subscribe to {}: the permissions pubsub.subscriptions.create on project {} and \
                 pubsub.topics.attachSubscription on the topic are needed ({})",
                sub.topic, sub.project, e.message
            ),
            _ => format!("--watch: cannot subscribe to {}: {e}", sub.topic),
        })
    }

    /// A pull answered: after a long time without one (pulls failing, or
    /// the process suspended), what was missed is a gap.
    fn answered(&self, storage: &StorageTree, sub: &Subscription) {
        let mut state = lock(&sub.state);
        if state.answered.elapsed() > RETENTION {
            drop(state);
            self.gap(storage, sub, "no pull answered for longer than the subscription keeps messages");
            state = lock(&sub.state);
        }
        *state = PullState { answered: Instant::now(), failures: 0 };
    }

    /// A pull failed: a subscription deleted behind the mount's back is
    /// made again (a gap); anything else is tried again, later each time.
    async fn failed(&self, storage: &StorageTree, sub: &Subscription, e: BackendError) -> Duration {
        let failures = {
            let mut state = lock(&sub.state);
            state.failures += 1;
            state.failures
        };
        if e.kind == ErrorKind::NotFound {
            tracing::warn!(subscription = %sub.name, "the --watch subscription is gone: making it again");
            if let Err(why) = self.create(sub).await {
                tracing::warn!(subscription = %sub.name, "{why}; changes elsewhere show after the metadata TTL");
                return MAX_BACKOFF;
            }
            *lock(&sub.state) = PullState { answered: Instant::now(), failures: 0 };
            self.gap(storage, sub, "its subscription was made again");
            return POLL;
        }
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(subscription = %sub.name, error = %e, failures, "cannot pull --watch notifications; changes elsewhere show after the metadata TTL until it can");
        }
        (POLL * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF)
    }

    /// What changed while notifications were lost is not known: all that
    /// is known of the subscription's buckets goes, once.
    fn gap(&self, storage: &StorageTree, sub: &Subscription, why: &str) {
        metrics::counter!("ciofs_watch_gaps_total").increment(1);
        match &sub.buckets {
            Some(buckets) => buckets.iter().for_each(|bucket| storage.forget_bucket(Some(bucket))),
            None => storage.forget_bucket(None),
        }
        tracing::warn!(topic = %sub.topic, "--watch had a gap ({why}): the cached metadata of its buckets was dropped");
    }

    /// Acts on the changes pulled, then acknowledges them all (a message
    /// that is not a change is logged and acknowledged too).
    async fn act_on(&self, storage: &StorageTree, sub: &Subscription, messages: Vec<ReceivedMessage>) {
        let ack_ids: Vec<String> = messages.iter().map(|m| m.ack_id.clone()).collect();
        for message in &messages {
            act_on_message(storage, message);
        }
        if backlog_near_retention(&messages, SystemTime::now()) {
            self.gap(storage, sub, "the backlog reached the subscription's retention: older notifications may be gone");
        }
        if let Err(e) = self.pubsub.acknowledge(&sub.project, &sub.name, &ack_ids).await {
            tracing::debug!(error = %e, "cannot acknowledge notifications: they come again, and are known then");
        }
    }
}

/// One notification: what it invalidates, and how late it came.
fn act_on_message(storage: &StorageTree, message: &ReceivedMessage) {
    let change = match ObjectChange::from_message(&message.attributes, &message.data) {
        Ok(change) => change,
        Err(NotChange::OtherEvent(event)) => {
            tracing::debug!(event, "notification skipped");
            metrics::counter!("ciofs_watch_notifications_total", "outcome" => "skipped").increment(1);
            return;
        }
        Err(NotChange::Malformed(why)) => {
            tracing::warn!(message_id = %message.message_id, why, "not a Cloud Storage notification: skipped");
            metrics::counter!("ciofs_watch_notifications_total", "outcome" => "skipped").increment(1);
            return;
        }
    };
    let outcome = match storage.changed_elsewhere(&change) {
        Invalidated::AlreadyKnown => "known",
        Invalidated::NotHeld => "not_held",
        Invalidated::Dropped => "dropped",
    };
    metrics::counter!("ciofs_watch_notifications_total", "outcome" => outcome).increment(1);
    let late = staleness(message);
    if let Some(late) = late {
        metrics::histogram!("ciofs_watch_staleness_seconds").record(late.as_secs_f64());
    }
    let late_ms = late.map(|late| late.as_millis() as u64);
    if late.is_some_and(|late| late > storage.cx.options.metadata_ttl) {
        tracing::info!(bucket = %change.bucket, late_ms, "a notification came after the metadata TTL had passed");
    }
    tracing::debug!(bucket = %change.bucket, kind = ?change.kind, generation = change.generation, outcome, late_ms, "notification");
}

/// Whether a notification pulled waited nearly as long as the subscription
/// keeps one: others, older, may have been dropped unread.
fn backlog_near_retention(messages: &[ReceivedMessage], now: SystemTime) -> bool {
    let oldest_kept = now.checked_sub(RETENTION - RETENTION / 10);
    messages.iter().any(|m| m.publish_time.zip(oldest_kept).is_some_and(|(published, oldest)| published < oldest))
}

/// How long after the change a notification is acted on: from the event's
/// time if it says, else from when it was published.
fn staleness(message: &ReceivedMessage) -> Option<Duration> {
    let event = message
        .attributes
        .get("eventTime")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(SystemTime::from)
        .or(message.publish_time)?;
    Some(SystemTime::now().duration_since(event).unwrap_or_default())
}

/// The topic each mounted bucket publishes its changes to, with the
/// buckets of each: found among the bucket's notification configs, or
/// made.
async fn bucket_topics(
    storage: &StorageTree,
    pubsub: &dyn PubSub,
) -> Result<BTreeMap<String, Option<Vec<String>>>, String> {
    let mut topics: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for project in &storage.cx.projects {
        let buckets = storage
            .list_project_buckets(project)
            .await
            .map_err(|e| format!("--watch: cannot list the buckets of {project}: {e}"))?;
        for bucket in buckets {
            let topic = bucket_topic(storage.gcs.as_ref(), pubsub, project, &bucket.name).await?;
            topics.entry(topic).or_insert_with(|| Some(Vec::new())).get_or_insert_default().push(bucket.name);
        }
    }
    Ok(topics)
}

/// The topic `bucket` publishes the changes `--watch` needs to: an
/// existing notification config's, or a new one's to `ciofs-watch`.
async fn bucket_topic(
    gcs: &dyn ObjectStore,
    pubsub: &dyn PubSub,
    project: &str,
    bucket: &str,
) -> Result<String, String> {
    let configs = gcs.list_notifications(bucket).await.map_err(|e| {
        needs(e, &format!("read the notification configs of bucket {bucket}"), "storage.buckets.get on the bucket")
    })?;
    if let Some(config) = configs.iter().find(|config| publishes_what_is_needed(config)) {
        return Ok(config.topic.clone());
    }
    match pubsub.create_topic(project, WATCH_TOPIC, &TopicSettings::default()).await {
        Ok(_) => tracing::info!(project, topic = WATCH_TOPIC, "topic made for --watch"),
        Err(e) if e.kind == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(needs(e, &format!("make the topic {WATCH_TOPIC}"), "pubsub.topics.create on the project"));
        }
    }
    let topic = format!("projects/{project}/topics/{WATCH_TOPIC}");
    let events: Vec<String> = EVENTS_MADE.iter().map(|e| e.to_string()).collect();
    gcs.create_notification(bucket, &topic, &events).await.map_err(|e| {
        needs(
            e,
            &format!("make a notification config of bucket {bucket} to {topic}"),
            "storage.buckets.update on the bucket, and pubsub.topics.publish on the topic for Cloud Storage's \
             service agent (gcloud storage service-agent)",
        )
    })?;
    tracing::info!(bucket, topic, "notification config made for --watch");
    Ok(topic)
}

/// Whether a config publishes every change `--watch` needs, of every
/// object (one limited to a prefix does not).
fn publishes_what_is_needed(config: &NotificationConfig) -> bool {
    config.object_name_prefix.is_empty()
        && (config.event_types.is_empty() || EVENTS.iter().all(|event| config.event_types.iter().any(|e| e == event)))
}

/// An error of a call `--watch` needs, naming the permission it takes.
fn needs(e: BackendError, what: &str, permission: &str) -> String {
    match e.kind {
        ErrorKind::PermissionDenied => format!("--watch: cannot {what}: {permission} is needed ({})", e.message),
        _ => format!("--watch: cannot {what}: {e} (--watch-topic names a topic the buckets publish to already)"),
    }
}

/// `--watch-topic` as a full name: a short one is a topic of the first
/// mounted project.
fn full_topic(topic: &str, projects: &[String]) -> Result<String, String> {
    if topic.starts_with("projects/") {
        split_topic(topic)?;
        return Ok(topic.to_string());
    }
    let project = projects.first().ok_or("--watch-topic: no project is mounted")?;
    if !ciofs_backends::pubsub::is_valid_name(topic) {
        return Err(format!("--watch-topic {topic}: not a topic name (projects/P/topics/T, or T)"));
    }
    Ok(format!("projects/{project}/topics/{topic}"))
}

/// `projects/P/topics/T` → (P, T).
fn split_topic(topic: &str) -> Result<(&str, &str), String> {
    match topic.split('/').collect::<Vec<_>>()[..] {
        ["projects", project, "topics", name] if !project.is_empty() && !name.is_empty() => Ok((project, name)),
        _ => Err(format!("--watch-topic {topic}: not a topic name (projects/P/topics/T, or T)")),
    }
}

/// A name no other mount has: the host, the process, the time, and which
/// of the mount's subscriptions it is.
fn subscription_name(index: usize) -> String {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let host: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(60).collect();
    let millis = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("ciofs-watch-{host}-{}-{millis}-{index}", std::process::id())
}

/// `86400s` as a person says it: `1 day`, `2 h`, `90 s`.
fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_named_in_full_or_in_the_first_project() {
        let projects = vec!["p1".to_string(), "p2".to_string()];
        assert_eq!(full_topic("events", &projects).unwrap(), "projects/p1/topics/events");
        assert_eq!(full_topic("projects/x/topics/t", &projects).unwrap(), "projects/x/topics/t");
        for bad in ["projects/x/topics/", "projects/x/t", "1bad", "projects//topics/t"] {
            assert!(full_topic(bad, &projects).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_is_used_only_if_it_publishes_every_change_needed() {
        let config = |events: &[&str]| NotificationConfig {
            event_types: events.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        };
        assert!(publishes_what_is_needed(&config(&[])), "no list: every kind");
        assert!(publishes_what_is_needed(&config(&["OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_FINALIZE"])));
        assert!(!publishes_what_is_needed(&config(&["OBJECT_FINALIZE"])), "the emulator's default");
        let prefixed = NotificationConfig { object_name_prefix: "logs/".into(), ..config(&[]) };
        assert!(!publishes_what_is_needed(&prefixed), "some objects only");
    }

    #[test]
    fn a_backlog_near_the_retention_is_a_gap() {
        let now = SystemTime::now();
        let published =
            |ago: u64| ReceivedMessage { publish_time: Some(now - Duration::from_secs(ago)), ..Default::default() };
        assert!(!backlog_near_retention(&[published(1), published(500)], now));
        assert!(backlog_near_retention(&[published(1), published(560)], now), "9 of its 10 minutes");
        assert!(!backlog_near_retention(&[ReceivedMessage::default()], now), "no publish time: not known");
    }

    #[test]
    fn a_subscription_name_is_one_pubsub_accepts() {
        let name = subscription_name(0);
        assert_ne!(name, subscription_name(1), "two subscriptions of one mount");
        assert!(ciofs_backends::pubsub::is_valid_name(&name), "{name}");
    }
}
