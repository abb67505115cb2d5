//! `MemoryPubSub`: Pub/Sub's topics, subscriptions and messages in memory,
//! for unit tests of the core. Each subscription keeps its own queue of the
//! messages published to its topic after it was made; delivery is
//! at-least-once: a pulled message is outstanding until acked, and comes
//! back (first in line) when given back (`modify_ack_deadline` zero) or
//! when its ack deadline passed, as on Pub/Sub. With a dead-letter
//! policy, a message nacked `max_delivery_attempts` times moves to the
//! dead-letter topic, and `delivery_attempt` is reported, as on Pub/Sub.
//!
//! It counts calls per kind (`calls`), can be told to fail the next calls
//! of a kind (`fail_next`) or to lose the answer of the next publishes
//! (`lose_next_publish_answers`: published, and answered with an error), and can be seeded and inspected behind the
//! core's back (`put_topic`, `put_subscription`, `acked`, `backlog`), which
//! counts no call.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::{InjectedFailures, page};
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::pubsub::{
    CreateSubscription, OutgoingMessage, Page, PubSub, ReceivedMessage, SubscriptionMeta, SubscriptionSettings,
    TopicMeta, TopicSettings, is_valid_name,
};
use crate::sync::lock;

/// Pub/Sub's default page size for listings.
const DEFAULT_PAGE_SIZE: usize = 100;

/// What a subscription's topic reads once the topic is deleted.
const DELETED_TOPIC: &str = "_deleted-topic_";

/// A kind of `PubSub` call, to count it or make it fail
/// with `MemoryPubSub::fail_next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PubSubOp {
    ListTopics,
    GetTopic,
    CreateTopic,
    UpdateTopic,
    DeleteTopic,
    ListTopicSubscriptions,
    GetSubscription,
    CreateSubscription,
    UpdateSubscription,
    DeleteSubscription,
    Publish,
    Pull,
    Acknowledge,
    ModifyAckDeadline,
}

const OPS: usize = 14;

/// How many calls of each kind a `MemoryPubSub` served (failed ones
/// included).
#[derive(Debug, Default)]
pub struct PubSubCallCounts {
    counts: [AtomicU64; OPS],
}

impl PubSubCallCounts {
    /// How many calls of kind `op` were made.
    pub fn get(&self, op: PubSubOp) -> u64 {
        self.counts[op as usize].load(Ordering::SeqCst)
    }
}

/// A message in a subscription's queue.
#[derive(Clone, Debug)]
struct Stored {
    message: ReceivedMessage,
    /// Deliveries so far.
    attempts: i32,
    /// When an outstanding message comes back if not acked.
    expires: Instant,
}

#[derive(Debug)]
struct Subscription {
    meta: SubscriptionMeta,
    queue: VecDeque<Stored>,
    /// Handed out and not yet acked or nacked, by ack id.
    outstanding: BTreeMap<String, Stored>,
    acked: Vec<ReceivedMessage>,
}

/// Topics and subscriptions by (project, name).
#[derive(Default)]
struct State {
    topics: BTreeMap<(String, String), TopicMeta>,
    subscriptions: BTreeMap<(String, String), Subscription>,
    message_ids: u64,
    ack_ids: u64,
}

impl State {
    fn topic(&self, project: &str, topic: &str) -> BackendResult<&TopicMeta> {
        self.topics.get(&key(project, topic)).ok_or_else(|| not_found("Topic", project, topic))
    }

    fn subscription(&self, project: &str, subscription: &str) -> BackendResult<&Subscription> {
        let found = self.subscriptions.get(&key(project, subscription));
        found.ok_or_else(|| not_found("Subscription", project, subscription))
    }

    fn subscription_mut(&mut self, project: &str, subscription: &str) -> BackendResult<&mut Subscription> {
        let found = self.subscriptions.get_mut(&key(project, subscription));
        found.ok_or_else(|| not_found("Subscription", project, subscription))
    }

    /// Appends a message to the queue of every subscription of `topic`
    /// (full name); returns its id.
    fn publish(&mut self, topic: &str, message: OutgoingMessage) -> String {
        self.message_ids += 1;
        let message = ReceivedMessage {
            ack_id: String::new(),
            message_id: self.message_ids.to_string(),
            data: message.data,
            attributes: message.attributes,
            ordering_key: message.ordering_key,
            publish_time: Some(SystemTime::now()),
            delivery_attempt: None,
        };
        for s in self.subscriptions.values_mut().filter(|s| s.meta.topic == topic) {
            s.queue.push_back(Stored { message: message.clone(), attempts: 0, expires: Instant::now() });
        }
        message.message_id
    }

    /// The next queued message of a subscription, handed out until its ack
    /// deadline.
    fn deliver(&mut self, project: &str, subscription: &str) -> BackendResult<Option<ReceivedMessage>> {
        self.ack_ids += 1;
        let ack_id = format!("{subscription}:{}", self.ack_ids);
        let s = self.subscription_mut(project, subscription)?;
        let Some(mut stored) = s.queue.pop_front() else { return Ok(None) };
        stored.attempts += 1;
        let deadline = u64::try_from(s.meta.settings.ack_deadline_seconds).unwrap_or(0).max(10);
        stored.expires = Instant::now() + Duration::from_secs(deadline);
        let mut message = stored.message.clone();
        message.ack_id = ack_id.clone();
        message.delivery_attempt = s.meta.settings.dead_letter_policy.as_ref().map(|_| stored.attempts);
        s.outstanding.insert(ack_id, stored);
        Ok(Some(message))
    }

    /// Gives back the outstanding messages whose ack deadline passed.
    fn expire(&mut self, project: &str, subscription: &str) {
        let now = Instant::now();
        let Ok(s) = self.subscription(project, subscription) else { return };
        let expired: Vec<String> =
            s.outstanding.iter().filter(|(_, stored)| stored.expires <= now).map(|(id, _)| id.clone()).collect();
        for ack_id in expired.iter().rev() {
            self.give_back(project, subscription, ack_id);
        }
    }

    /// Gives a message back: first in line again, or to the dead-letter
    /// topic once it was delivered as often as its policy allows.
    fn give_back(&mut self, project: &str, subscription: &str, ack_id: &str) {
        let Ok(s) = self.subscription_mut(project, subscription) else { return };
        let Some(stored) = s.outstanding.remove(ack_id) else { return };
        let dead_letter = s.meta.settings.dead_letter_policy.clone();
        match dead_letter.filter(|p| stored.attempts >= p.max_delivery_attempts) {
            Some(policy) => {
                let m = stored.message;
                let message = OutgoingMessage { data: m.data, attributes: m.attributes, ordering_key: m.ordering_key };
                self.publish(&policy.dead_letter_topic, message);
            }
            None => s.queue.push_front(stored),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    page_size: AtomicUsize,
    /// Calls still to fail, per kind: how many, and how.
    failures: InjectedFailures<PubSubOp>,
    /// Publishes still to store and then answer `Unavailable`.
    lost_publish_answers: AtomicU32,
    calls: Arc<PubSubCallCounts>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Counts a call, and fails it if `fail_next` said so.
    fn call(&self, op: PubSubOp) -> BackendResult<()> {
        self.calls.counts[op as usize].fetch_add(1, Ordering::SeqCst);
        self.failures.check(op)
    }
}

/// Pub/Sub in memory; see the module's documentation.
pub struct MemoryPubSub {
    shared: Arc<Shared>,
    pub calls: Arc<PubSubCallCounts>,
}

impl Default for MemoryPubSub {
    fn default() -> Self {
        let calls = Arc::new(PubSubCallCounts::default());
        let shared = Shared {
            state: Mutex::default(),
            page_size: AtomicUsize::new(DEFAULT_PAGE_SIZE),
            failures: InjectedFailures::default(),
            lost_publish_answers: AtomicU32::new(0),
            calls: calls.clone(),
        };
        Self { shared: Arc::new(shared), calls }
    }
}

impl MemoryPubSub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries per listing page (at least 1; 100 at first).
    pub fn set_page_size(&self, page_size: usize) {
        self.shared.page_size.store(page_size.max(1), Ordering::SeqCst);
    }

    /// Makes the next `times` calls of kind `op` fail with `kind` (they
    /// count as calls, and change nothing). Replaces what was set for `op`.
    pub fn fail_next(&self, op: PubSubOp, times: u32, kind: ErrorKind) {
        self.shared.failures.set(op, times, kind);
    }

    /// Makes the next `times` publishes store their messages and answer
    /// `Unavailable`, as a publish whose answer was lost on the way.
    pub fn lose_next_publish_answers(&self, times: u32) {
        self.shared.lost_publish_answers.store(times, Ordering::SeqCst);
    }

    /// Creates a topic or replaces its settings, behind the core's back.
    pub fn put_topic(&self, project: &str, topic: &str, settings: TopicSettings) -> TopicMeta {
        let meta = TopicMeta { topic: topic.to_string(), settings };
        self.shared.state().topics.insert(key(project, topic), meta.clone());
        meta
    }

    /// Creates a subscription of `topic` (short name; the topic is made if
    /// missing) or replaces its settings, behind the core's back. No rule is
    /// checked; an existing subscription keeps its messages.
    pub fn put_subscription(
        &self,
        project: &str,
        subscription: &str,
        topic: &str,
        settings: SubscriptionSettings,
    ) -> SubscriptionMeta {
        let mut state = self.shared.state();
        let topic_key = key(project, topic);
        state.topics.entry(topic_key).or_insert_with(|| TopicMeta { topic: topic.to_string(), ..Default::default() });
        let meta =
            SubscriptionMeta { subscription: subscription.to_string(), topic: topic_name(project, topic), settings };
        let new = || Subscription {
            meta: meta.clone(),
            queue: VecDeque::new(),
            outstanding: BTreeMap::new(),
            acked: Vec::new(),
        };
        state.subscriptions.entry(key(project, subscription)).or_insert_with(new).meta = meta.clone();
        meta
    }

    /// Removes a topic behind the core's back (its subscriptions stay, with
    /// `_deleted-topic_`); whether it was there.
    pub fn remove_topic(&self, project: &str, topic: &str) -> bool {
        remove_topic(&mut self.shared.state(), project, topic)
    }

    /// Removes a subscription behind the core's back; whether it was there.
    pub fn remove_subscription(&self, project: &str, subscription: &str) -> bool {
        self.shared.state().subscriptions.remove(&key(project, subscription)).is_some()
    }

    /// The messages acked on a subscription, in the order they
    /// were acked (empty for no such subscription).
    pub fn acked(&self, project: &str, subscription: &str) -> Vec<ReceivedMessage> {
        self.shared.state().subscription(project, subscription).map(|s| s.acked.clone()).unwrap_or_default()
    }

    /// The messages of a subscription not acked yet: those waiting, in
    /// delivery order, then those handed out (with their ack ids).
    pub fn backlog(&self, project: &str, subscription: &str) -> Vec<ReceivedMessage> {
        let state = self.shared.state();
        let Ok(s) = state.subscription(project, subscription) else { return Vec::new() };
        let waiting = s.queue.iter().map(|stored| stored.message.clone());
        let out = s
            .outstanding
            .iter()
            .map(|(ack_id, stored)| ReceivedMessage { ack_id: ack_id.clone(), ..stored.message.clone() });
        waiting.chain(out).collect()
    }

    /// A topic as it is now (no call is counted).
    pub fn topic(&self, project: &str, topic: &str) -> Option<TopicMeta> {
        self.shared.state().topic(project, topic).ok().cloned()
    }

    /// A subscription as it is now (no call is counted).
    pub fn subscription(&self, project: &str, subscription: &str) -> Option<SubscriptionMeta> {
        self.shared.state().subscription(project, subscription).ok().map(|s| s.meta.clone())
    }

    fn page_size(&self) -> usize {
        self.shared.page_size.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn list_topics(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<TopicMeta>> {
        self.shared.call(PubSubOp::ListTopics)?;
        let state = self.shared.state();
        let topics = state.topics.iter().filter(|((p, _), _)| p == project).map(|((_, name), t)| (name, t.clone()));
        let (items, next_page_token) = page(topics, page_token, self.page_size());
        Ok(Page { items, next_page_token })
    }

    async fn get_topic(&self, project: &str, topic: &str) -> BackendResult<TopicMeta> {
        self.shared.call(PubSubOp::GetTopic)?;
        self.shared.state().topic(project, topic).cloned()
    }

    async fn create_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        self.shared.call(PubSubOp::CreateTopic)?;
        check_name("topic", topic)?;
        let mut state = self.shared.state();
        if state.topic(project, topic).is_ok() {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("Topic already exists: {project}/{topic}"),
            ));
        }
        let meta = TopicMeta { topic: topic.to_string(), settings: settings.clone() };
        state.topics.insert(key(project, topic), meta.clone());
        Ok(meta)
    }

    async fn update_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        self.shared.call(PubSubOp::UpdateTopic)?;
        let mut state = self.shared.state();
        let meta = state.topics.get_mut(&key(project, topic)).ok_or_else(|| not_found("Topic", project, topic))?;
        meta.settings = settings.clone();
        Ok(meta.clone())
    }

    async fn delete_topic(&self, project: &str, topic: &str) -> BackendResult<()> {
        self.shared.call(PubSubOp::DeleteTopic)?;
        let mut state = self.shared.state();
        state.topic(project, topic)?;
        remove_topic(&mut state, project, topic);
        Ok(())
    }

    async fn list_topic_subscriptions(
        &self,
        project: &str,
        topic: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<String>> {
        self.shared.call(PubSubOp::ListTopicSubscriptions)?;
        let state = self.shared.state();
        state.topic(project, topic)?;
        let full = topic_name(project, topic);
        let subscriptions = state
            .subscriptions
            .iter()
            .filter(|((p, _), s)| p == project && s.meta.topic == full)
            .map(|((_, name), _)| (name, name.clone()));
        let (items, next_page_token) = page(subscriptions, page_token, self.page_size());
        Ok(Page { items, next_page_token })
    }

    async fn get_subscription(&self, project: &str, subscription: &str) -> BackendResult<SubscriptionMeta> {
        self.shared.call(PubSubOp::GetSubscription)?;
        Ok(self.shared.state().subscription(project, subscription)?.meta.clone())
    }

    async fn create_subscription(&self, request: &CreateSubscription) -> BackendResult<SubscriptionMeta> {
        let CreateSubscription { project, subscription, topic, settings } = request;
        self.shared.call(PubSubOp::CreateSubscription)?;
        check_name("subscription", subscription)?;
        check_subscription_settings(settings)?;
        let mut state = self.shared.state();
        if state.subscription(project, subscription).is_ok() {
            let message = format!("Subscription already exists: {project}/{subscription}");
            return Err(BackendError::new(ErrorKind::AlreadyExists, message));
        }
        state.topic(project, topic)?;
        let meta = SubscriptionMeta {
            subscription: subscription.to_string(),
            topic: topic_name(project, topic),
            settings: with_defaults(settings),
        };
        let new =
            Subscription { meta: meta.clone(), queue: VecDeque::new(), outstanding: BTreeMap::new(), acked: vec![] };
        state.subscriptions.insert(key(project, subscription), new);
        Ok(meta)
    }

    async fn update_subscription(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> BackendResult<SubscriptionMeta> {
        self.shared.call(PubSubOp::UpdateSubscription)?;
        check_subscription_settings(settings)?;
        let mut state = self.shared.state();
        let s = state.subscription_mut(project, subscription)?;
        // The filter and ordering are fixed at creation; the expiration is
        // set only then (as the Google backend does).
        let current = &s.meta.settings;
        let fixed = (current.filter.clone(), current.enable_message_ordering, current.expiration_ttl);
        s.meta.settings = with_defaults(settings);
        (s.meta.settings.filter, s.meta.settings.enable_message_ordering, s.meta.settings.expiration_ttl) = fixed;
        Ok(s.meta.clone())
    }

    async fn delete_subscription(&self, project: &str, subscription: &str) -> BackendResult<()> {
        self.shared.call(PubSubOp::DeleteSubscription)?;
        let mut state = self.shared.state();
        state.subscription(project, subscription)?;
        state.subscriptions.remove(&key(project, subscription));
        Ok(())
    }

    async fn publish(&self, project: &str, topic: &str, messages: Vec<OutgoingMessage>) -> BackendResult<Vec<String>> {
        self.shared.call(PubSubOp::Publish)?;
        let ids = {
            let mut state = self.shared.state();
            state.topic(project, topic)?;
            let full = topic_name(project, topic);
            messages.into_iter().map(|m| state.publish(&full, m)).collect()
        };
        let lost =
            self.shared.lost_publish_answers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lost.is_ok() {
            return Err(BackendError::new(ErrorKind::Unavailable, "publish: answer lost (injected by the test)"));
        }
        Ok(ids)
    }

    async fn pull(
        &self,
        project: &str,
        subscription: &str,
        max_messages: usize,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        self.shared.call(PubSubOp::Pull)?;
        let mut state = self.shared.state();
        state.subscription(project, subscription)?;
        state.expire(project, subscription);
        let mut pulled = Vec::new();
        while pulled.len() < max_messages.max(1)
            && let Some(message) = state.deliver(project, subscription)?
        {
            pulled.push(message);
        }
        Ok(pulled)
    }

    /// Ack ids not outstanding (acked, given back, expired, unknown) are
    /// ignored, as Pub/Sub ignores expired ones.
    async fn acknowledge(&self, project: &str, subscription: &str, ack_ids: &[String]) -> BackendResult<()> {
        self.shared.call(PubSubOp::Acknowledge)?;
        let mut state = self.shared.state();
        let s = state.subscription_mut(project, subscription)?;
        for id in ack_ids {
            if let Some(stored) = s.outstanding.remove(id) {
                s.acked.push(ReceivedMessage { ack_id: id.clone(), ..stored.message });
            }
        }
        Ok(())
    }

    async fn modify_ack_deadline(
        &self,
        project: &str,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> BackendResult<()> {
        self.shared.call(PubSubOp::ModifyAckDeadline)?;
        let mut state = self.shared.state();
        state.subscription(project, subscription)?;
        if deadline.is_zero() {
            // In reverse, so that the first given back is first in line.
            for id in ack_ids.iter().rev() {
                state.give_back(project, subscription, id);
            }
            return Ok(());
        }
        let s = state.subscription_mut(project, subscription)?;
        for id in ack_ids {
            if let Some(stored) = s.outstanding.get_mut(id) {
                stored.expires = Instant::now() + deadline;
            }
        }
        Ok(())
    }
}

fn key(project: &str, name: &str) -> (String, String) {
    (project.to_string(), name.to_string())
}

fn topic_name(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

fn remove_topic(state: &mut State, project: &str, topic: &str) -> bool {
    let full = topic_name(project, topic);
    for s in state.subscriptions.values_mut().filter(|s| s.meta.topic == full) {
        s.meta.topic = DELETED_TOPIC.to_string();
    }
    state.topics.remove(&key(project, topic)).is_some()
}

fn not_found(kind: &str, project: &str, name: &str) -> BackendError {
    BackendError::new(ErrorKind::NotFound, format!("{kind} not found: {project}/{name}"))
}

fn invalid(message: String) -> BackendError {
    BackendError::new(ErrorKind::InvalidArgument, message)
}

/// Pub/Sub's answer to a name it does not take.
fn check_name(kind: &str, name: &str) -> BackendResult<()> {
    if is_valid_name(name) { Ok(()) } else { Err(invalid(format!("Invalid {kind} name: {name}"))) }
}

/// The ranges Pub/Sub accepts.
fn check_subscription_settings(settings: &SubscriptionSettings) -> BackendResult<()> {
    let deadline = settings.ack_deadline_seconds;
    if deadline != 0 && !(10..=600).contains(&deadline) {
        return Err(invalid(format!("Invalid ack deadline {deadline}: must be between 10 and 600 seconds")));
    }
    if let Some(policy) = &settings.dead_letter_policy
        && !(5..=100).contains(&policy.max_delivery_attempts)
    {
        return Err(invalid("max_delivery_attempts must be between 5 and 100".to_string()));
    }
    if let Some(policy) = &settings.retry_policy {
        let (min, max) = (policy.minimum_backoff, policy.maximum_backoff);
        let too_long = [min, max].into_iter().flatten().any(|d| d > Duration::from_secs(600));
        if too_long || min.zip(max).is_some_and(|(min, max)| min > max) {
            return Err(invalid("Invalid retry policy backoffs".to_string()));
        }
    }
    if settings.expiration_ttl.is_some_and(|ttl| ttl < Duration::from_secs(24 * 3600)) {
        return Err(invalid("Invalid expiration policy: the ttl must be at least 1 day".to_string()));
    }
    Ok(())
}

/// The settings as Pub/Sub reports them: the default ack deadline (10 s)
/// and retention (7 days) spelled out.
fn with_defaults(settings: &SubscriptionSettings) -> SubscriptionSettings {
    let mut settings = settings.clone();
    if settings.ack_deadline_seconds == 0 {
        settings.ack_deadline_seconds = 10;
    }
    settings.message_retention_duration.get_or_insert(Duration::from_secs(7 * 24 * 3600));
    settings
}

#[cfg(test)]
mod tests;
