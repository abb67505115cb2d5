//! Pub/Sub on Google's API with the official crate `google-cloud-pubsub`:
//! `TopicAdmin` and `SubscriptionAdmin` (REST) for topics and
//! subscriptions, the batching `Publisher` (gRPC) for publishing; unary
//! pull, acknowledge and modifyAckDeadline as plain REST calls (`pull.rs`),
//! which the crate does not offer. `convert.rs` maps the API's resources to
//! ciofs's types.
//!
//! The crate's own retries are off: every call goes through ciofs's
//! `RetryPolicy`, which bounds each attempt and the attempts. A pull retried
//! after a lost answer loses nothing: what the lost answer held comes back
//! after its ack deadline.
//!
//! Updates send a field mask naming only the fields that changed, read
//! from the resource first: the emulator answers 400 to any update naming
//! `labels`, so a config.json change that leaves labels alone works there.

mod convert;
mod pull;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_pubsub::client::{BasePublisher, Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model;

use super::{
    CreateSubscription, OutgoingMessage, Page, PubSub, ReceivedMessage, SubscriptionMeta, SubscriptionSettings,
    TopicMeta, TopicSettings,
};
use crate::endpoint;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::gax_error::backend_error;
use crate::rest::Rest;
use crate::retry::RetryPolicy;
use crate::sync::{self, lock};
use convert::{
    api_message, api_subscription, api_subscription_update, api_topic, field_mask, short_name_in, subscription_mask,
    subscription_meta, subscription_name, topic_mask, topic_meta, topic_name,
};
use pull::MAX_ACK_IDS;

/// Entries per listing page (the service's maximum).
const LIST_PAGE_SIZE: i32 = 1000;

const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// Where and how to reach Pub/Sub.
#[derive(Clone, Debug, Default)]
pub struct PubSubConfig {
    /// An emulator's base URL (`http://127.0.0.1:8085`): anonymous access.
    /// `None`: Google's endpoint with Application Default Credentials.
    pub emulator: Option<String>,
    pub retry: RetryPolicy,
}

impl PubSubConfig {
    /// Reads `PUBSUB_EMULATOR_HOST` (`127.0.0.1:8085`; `http://` is added
    /// when missing).
    pub fn from_env() -> Self {
        Self { emulator: endpoint::emulator_from_env("PUBSUB_EMULATOR_HOST"), retry: RetryPolicy::default() }
    }
}

pub struct GooglePubSub {
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    publisher: BasePublisher,
    /// One batching publisher per topic (full name), made at first use.
    publishers: Mutex<HashMap<String, Publisher>>,
    /// Pull, acknowledge, modifyAckDeadline.
    rest: Rest,
    retry: RetryPolicy,
}

impl GooglePubSub {
    pub async fn connect(config: PubSubConfig) -> BackendResult<Self> {
        let credentials = endpoint::credentials(config.emulator.as_deref(), "Pub/Sub")?;
        let endpoint = endpoint::base_url(config.emulator.as_deref());
        tracing::debug!(endpoint = endpoint.as_deref().unwrap_or("Google"), "connecting to Pub/Sub");
        let topics = topic_admin(&credentials, endpoint.as_deref()).await?;
        let subscriptions = subscription_admin(&credentials, endpoint.as_deref()).await?;
        let mut publisher =
            BasePublisher::builder().with_credentials(credentials.clone()).with_retry_policy(NeverRetry);
        if let Some(endpoint) = &endpoint {
            publisher = publisher.with_endpoint(endpoint.clone());
        }
        let publisher = publisher.build().await.map_err(|e| client_error("publisher", &e))?;
        let rest = Rest::new(
            endpoint.as_deref().unwrap_or(GOOGLE_ENDPOINT),
            &["v1"],
            credentials,
            config.retry.stall_timeout,
        )?;
        Ok(Self { topics, subscriptions, publisher, publishers: Mutex::default(), rest, retry: config.retry })
    }

    fn publisher_for(&self, topic: String) -> Publisher {
        let mut publishers = lock(&self.publishers);
        publishers.entry(topic).or_insert_with_key(|topic| self.publisher.publisher(topic.clone()).build()).clone()
    }

    /// One attempt: publishes the messages without an id yet, and records
    /// the ids the service gave. Fails with the first error.
    async fn publish_missing(
        &self,
        what: &str,
        publisher: &Publisher,
        messages: &[model::Message],
        ids: &Mutex<Vec<Option<String>>>,
    ) -> BackendResult<()> {
        let pending: Vec<usize> = lock(ids).iter().enumerate().filter(|(_, id)| id.is_none()).map(|(i, _)| i).collect();
        let futures = pending.iter().map(|&i| publisher.publish(messages[i].clone()));
        let results = futures::future::join_all(futures).await;
        let mut first_error: Option<BackendError> = None;
        for (i, result) in pending.into_iter().zip(results) {
            match result {
                Ok(id) => lock(ids)[i] = Some(id),
                Err(e) => {
                    let key = &messages[i].ordering_key;
                    if !key.is_empty() {
                        // The publisher paused the key to keep its order; the
                        // retry sends the rest in order again.
                        publisher.resume_publish(key.clone());
                    }
                    let error = publish_error(what, &e);
                    // A service error says more than the pauses it caused.
                    if first_error.as_ref().is_none_or(|f| f.kind.is_transient() && !error.kind.is_transient()) {
                        first_error = Some(error);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn topic_admin(credentials: &Credentials, endpoint: Option<&str>) -> BackendResult<TopicAdmin> {
    let mut builder = TopicAdmin::builder().with_credentials(credentials.clone()).with_retry_policy(NeverRetry);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder.build().await.map_err(|e| client_error("topic admin", &e))
}

async fn subscription_admin(credentials: &Credentials, endpoint: Option<&str>) -> BackendResult<SubscriptionAdmin> {
    let mut builder = SubscriptionAdmin::builder().with_credentials(credentials.clone()).with_retry_policy(NeverRetry);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder.build().await.map_err(|e| client_error("subscription admin", &e))
}

fn client_error(which: &str, error: &dyn std::fmt::Display) -> BackendError {
    BackendError::new(ErrorKind::Other, format!("Pub/Sub {which} client: {error}"))
}

fn publish_error(what: &str, error: &PublishError) -> BackendError {
    match error {
        PublishError::Rpc(e) => backend_error(what, e),
        // Paused after an earlier message of the key failed, or shut down:
        // another attempt may pass.
        other => BackendError::new(ErrorKind::Unavailable, format!("{what}: {other}")),
    }
}

#[async_trait]
impl PubSub for GooglePubSub {
    async fn list_topics(&self, project: &str, page_token: Option<String>) -> BackendResult<Page<TopicMeta>> {
        let what = format!("list topics of {project}");
        let list = self
            .retry
            .call(&what, || async {
                let call = self.topics.list_topics().set_project(format!("projects/{project}"));
                let call = call.set_page_size(LIST_PAGE_SIZE).set_page_token(page_token.clone().unwrap_or_default());
                call.send().await
            })
            .await?;
        Ok(Page {
            items: list.topics.iter().map(topic_meta).collect(),
            next_page_token: Some(list.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn get_topic(&self, project: &str, topic: &str) -> BackendResult<TopicMeta> {
        let what = format!("get topic {project}/{topic}");
        let api = self
            .retry
            .call(&what, || async {
                let call = self.topics.get_topic().set_topic(topic_name(project, topic));
                call.send().await
            })
            .await?;
        Ok(topic_meta(&api))
    }

    async fn create_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        let what = format!("create topic {project}/{topic}");
        let resource = api_topic(project, topic, settings);
        // A retry after a lost answer finds the topic made by the first
        // attempt: AlreadyExists, as a second create would.
        let api = self
            .retry
            .call(&what, || async {
                let call = self.topics.create_topic().with_request(resource.clone());
                call.send().await
            })
            .await?;
        Ok(topic_meta(&api))
    }

    async fn update_topic(&self, project: &str, topic: &str, settings: &TopicSettings) -> BackendResult<TopicMeta> {
        let what = format!("update topic {project}/{topic}");
        let current = self.get_topic(project, topic).await?;
        let mask = topic_mask(&current.settings, settings);
        if mask.is_empty() {
            return Ok(current);
        }
        let resource = api_topic(project, topic, settings);
        let api = self
            .retry
            .call(&what, || async {
                let call = self.topics.update_topic().set_topic(resource.clone()).set_update_mask(field_mask(&mask));
                call.send().await
            })
            .await?;
        Ok(topic_meta(&api))
    }

    async fn delete_topic(&self, project: &str, topic: &str) -> BackendResult<()> {
        let what = format!("delete topic {project}/{topic}");
        self.retry
            .call(&what, || async {
                let call = self.topics.delete_topic().set_topic(topic_name(project, topic));
                call.send().await
            })
            .await?;
        lock(&self.publishers).remove(&topic_name(project, topic));
        Ok(())
    }

    async fn list_topic_subscriptions(
        &self,
        project: &str,
        topic: &str,
        page_token: Option<String>,
    ) -> BackendResult<Page<String>> {
        let what = format!("list subscriptions of topic {project}/{topic}");
        let list = self
            .retry
            .call(&what, || async {
                let call = self.topics.list_topic_subscriptions().set_topic(topic_name(project, topic));
                let call = call.set_page_size(LIST_PAGE_SIZE).set_page_token(page_token.clone().unwrap_or_default());
                call.send().await
            })
            .await?;
        Ok(Page {
            items: list.subscriptions.iter().filter_map(|s| short_name_in(s, project, "subscriptions")).collect(),
            next_page_token: Some(list.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn get_subscription(&self, project: &str, subscription: &str) -> BackendResult<SubscriptionMeta> {
        let what = format!("get subscription {project}/{subscription}");
        let api = self
            .retry
            .call(&what, || async {
                let call =
                    self.subscriptions.get_subscription().set_subscription(subscription_name(project, subscription));
                call.send().await
            })
            .await?;
        Ok(subscription_meta(&api))
    }

    async fn create_subscription(&self, request: &CreateSubscription) -> BackendResult<SubscriptionMeta> {
        let CreateSubscription { project, subscription, topic, settings } = request;
        let what = format!("create subscription {project}/{subscription} of topic {topic}");
        let resource = api_subscription(project, subscription, topic, settings);
        let api = self
            .retry
            .call(&what, || async {
                let call = self.subscriptions.create_subscription().with_request(resource.clone());
                call.send().await
            })
            .await?;
        Ok(subscription_meta(&api))
    }

    async fn update_subscription(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> BackendResult<SubscriptionMeta> {
        let what = format!("update subscription {project}/{subscription}");
        let current = self.get_subscription(project, subscription).await?;
        let mask = subscription_mask(&current.settings, settings);
        if mask.is_empty() {
            return Ok(current);
        }
        let resource = api_subscription_update(project, subscription, &current.topic, settings);
        let api = self
            .retry
            .call(&what, || async {
                let call = self.subscriptions.update_subscription().set_subscription(resource.clone());
                call.set_update_mask(field_mask(&mask)).send().await
            })
            .await?;
        Ok(subscription_meta(&api))
    }

    async fn delete_subscription(&self, project: &str, subscription: &str) -> BackendResult<()> {
        let what = format!("delete subscription {project}/{subscription}");
        self.retry
            .call(&what, || async {
                let name = subscription_name(project, subscription);
                let call = self.subscriptions.delete_subscription().set_subscription(name);
                call.send().await
            })
            .await
    }

    /// The publisher batches (100 messages, 1 MB or 10 ms); each attempt
    /// sends only the messages the service has not acknowledged yet, so a
    /// retry duplicates at most those whose answer was lost.
    async fn publish(&self, project: &str, topic: &str, messages: Vec<OutgoingMessage>) -> BackendResult<Vec<String>> {
        let what = format!("publish {} messages to {project}/{topic}", messages.len());
        let publisher = self.publisher_for(topic_name(project, topic));
        let ids = Mutex::new(vec![None; messages.len()]);
        let messages: Vec<model::Message> = messages.into_iter().map(api_message).collect();
        self.retry.run(&what, || self.publish_missing(&what, &publisher, &messages, &ids)).await?;
        let ids = sync::into_inner(ids);
        Ok(ids.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn pull(
        &self,
        project: &str,
        subscription: &str,
        max_messages: usize,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let what = format!("pull from {project}/{subscription}");
        self.retry.run(&what, || pull::pull(&self.rest, &what, project, subscription, max_messages)).await
    }

    async fn acknowledge(&self, project: &str, subscription: &str, ack_ids: &[String]) -> BackendResult<()> {
        for chunk in ack_ids.chunks(MAX_ACK_IDS) {
            let what = format!("acknowledge {} messages of {project}/{subscription}", chunk.len());
            self.retry.run(&what, || pull::acknowledge(&self.rest, &what, project, subscription, chunk)).await?;
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
        for chunk in ack_ids.chunks(MAX_ACK_IDS) {
            let what = format!("set the ack deadline of {} messages of {project}/{subscription}", chunk.len());
            let call = || pull::modify_ack_deadline(&self.rest, &what, project, subscription, chunk, deadline);
            self.retry.run(&what, call).await?;
        }
        Ok(())
    }
}
