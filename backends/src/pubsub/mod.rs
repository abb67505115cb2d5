//! Pub/Sub as ciofs needs it: topics and subscriptions with their settings,
//! publishing, and a unary pull whose messages the caller acks or gives back
//! one by one (ciofs acks a message only once a reader got it).
//!
//! Why unary pull and not a streaming pull: a streaming pull receives
//! messages ahead of the reader, and on the emulator what a closed stream
//! held comes back only after the ack deadline (10 s and more), even when
//! nacked; `modifyAckDeadline(0)` on pulled messages gives them back at
//! once, on the emulator and on Pub/Sub.
//!
//! Names in these types are short (`my-topic`), but references to other
//! resources inside settings (a subscription's topic, a dead-letter topic)
//! are full names (`projects/P/topics/T`), as the API has them.

mod google;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BackendResult;

pub use google::{GooglePubSub, PubSubConfig};

/// A new subscription (`PubSub::create_subscription`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateSubscription {
    pub project: String,
    pub subscription: String,
    /// Short name, in `project`.
    pub topic: String,
    pub settings: SubscriptionSettings,
}

/// A topic's schema settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaSettings {
    /// Full name: `projects/P/schemas/S`.
    pub schema: String,
    /// JSON or BINARY.
    pub encoding: String,
}

/// What a user can set on a topic (`config.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSettings {
    pub labels: BTreeMap<String, String>,
    /// None: the service's default (no retention beyond subscriptions').
    pub message_retention_duration: Option<Duration>,
    pub schema_settings: Option<SchemaSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicMeta {
    /// Short name.
    pub topic: String,
    pub settings: TopicSettings,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterPolicy {
    /// Full name: `projects/P/topics/T`.
    pub dead_letter_topic: String,
    pub max_delivery_attempts: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    pub minimum_backoff: Option<Duration>,
    pub maximum_backoff: Option<Duration>,
}

/// What a user can set on a subscription (`config.json`), and its
/// expiration policy. `filter`, `enable_message_ordering` and
/// `expiration_ttl` can only be set at creation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionSettings {
    pub labels: BTreeMap<String, String>,
    /// 0: the service's default (10 s).
    pub ack_deadline_seconds: i32,
    pub retain_acked_messages: bool,
    pub message_retention_duration: Option<Duration>,
    pub filter: String,
    pub enable_message_ordering: bool,
    pub dead_letter_policy: Option<DeadLetterPolicy>,
    pub retry_policy: Option<RetryPolicy>,
    /// How long the subscription may go unused before Pub/Sub deletes it
    /// (its expiration policy). None: the service's default (31 days).
    /// Pub/Sub's minimum is one day. Set only at creation here:
    /// `update_subscription` leaves it as it is. Read back, a subscription
    /// that never expires (a policy without a ttl) is None too.
    pub expiration_ttl: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionMeta {
    /// Short name.
    pub subscription: String,
    /// Full name of its topic: `projects/P/topics/T` (`_deleted-topic_` if
    /// the topic is gone).
    pub topic: String,
    pub settings: SubscriptionSettings,
}

/// Pub/Sub's rule for topic and subscription names: 3 to 255 characters,
/// starting with a letter, of letters, digits and `-_.~+%`, not `goog...`.
pub fn is_valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    (3..=255).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(allowed)
        && !name.starts_with("goog")
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// A message to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub data: Bytes,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: String,
}

/// A message received by a pull, to be acked or given back by its `ack_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub ack_id: String,
    pub message_id: String,
    pub data: Bytes,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: String,
    pub publish_time: Option<SystemTime>,
    pub delivery_attempt: Option<i32>,
}

/// The Pub/Sub calls ciofs makes. Every call is bounded in time and retried
/// on transient failures; what still fails is a `BackendError`.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    async fn list_topics(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<TopicMeta>>;

    async fn get_topic(&self, project: &str, topic: &str) -> BackendResult<TopicMeta>;

    /// Fails with `AlreadyExists` if the topic exists.
    async fn create_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta>;

    /// Replaces the topic's settings (a label left out is removed).
    async fn update_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta>;

    async fn delete_topic(&self, project: &str, topic: &str) -> BackendResult<()>;

    /// The short names of a topic's subscriptions (of this project).
    async fn list_topic_subscriptions(
        &self,
        project: &str,
        topic: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<String>>;

    async fn get_subscription(&self, project: &str, subscription: &str) -> BackendResult<SubscriptionMeta>;

    /// Creates a subscription of `topic` (short name, in `project`).
    async fn create_subscription(&self, request: &CreateSubscription) -> BackendResult<SubscriptionMeta>;

    /// Replaces the settings that can change after creation.
    async fn update_subscription(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> BackendResult<SubscriptionMeta>;

    async fn delete_subscription(&self, project: &str, subscription: &str) -> BackendResult<()>;

    /// Publishes messages and returns once the service acknowledged each,
    /// with their message ids in order. A failure means none of the
    /// returned ids exist; the messages may or may not have been published.
    async fn publish(&self, project: &str, topic: &str, messages: Vec<OutgoingMessage>) -> BackendResult<Vec<String>>;

    /// Pulls at most `max_messages` messages without waiting: none when
    /// none is available now (callers poll). A pulled message comes back to
    /// some puller after the subscription's ack deadline unless acked, or
    /// at once after `modify_ack_deadline` with zero.
    async fn pull(&self, project: &str, subscription: &str, max_messages: usize)
    -> BackendResult<Vec<ReceivedMessage>>;

    /// Acknowledges pulled messages: they are not delivered again. Ack ids
    /// whose deadline passed are ignored, as Pub/Sub ignores them.
    async fn acknowledge(&self, project: &str, subscription: &str, ack_ids: &[String]) -> BackendResult<()>;

    /// Sets the ack deadline of pulled messages to `deadline` from now:
    /// zero gives them back at once (a nack), more keeps them longer.
    async fn modify_ack_deadline(
        &self,
        project: &str,
        subscription: &str,
        ack_ids: &[String],
        deadline: Duration,
    ) -> BackendResult<()>;
}
