//! Pub/Sub as files: `pubsub/topics/T/` holds `config.json`, `_message`
//! (writing it publishes one message), `_messages` (one message per line)
//! and `subscriptions/S/` with `config.json`; `pubsub/.meta/_quotas.json`
//! shows the documented limits. `mkdir` makes topics and subscriptions,
//! `rmdir` deletes them; config.json edits go through core/edits.rs like
//! BigQuery's and are applied here.
//!
//! A topic or subscription made by `mkdir` waits (core/pending.rs) for the
//! config.json `tar x` writes next, some of whose settings only a creation
//! takes (a subscription's filter; on the emulator a topic's labels): it is
//! created with them, when something needs it (a subscription of the topic,
//! a publish, a read of the stream), or after `WAIT` with defaults. Topics
//! are created before their subscriptions.
//!
//! Listings are fetched whole (all pages) and kept for the metadata TTL.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::pubsub::{
    CreateSubscription, OutgoingMessage, PubSub, SubscriptionMeta, SubscriptionSettings, TopicMeta, TopicSettings,
};
use ciofs_frontends::{Attr, DirEntry, DirPage, Fh, Ino, VfsError, VfsResult};

use super::documents::{
    parse_subscription_config, parse_topic_config, render_quotas, render_subscription_config, render_topic_config,
};
use super::rules::{check_subscription_change, check_topic_settings};
use super::stream::StreamReader;
use super::stream_log::{StreamLog, StreamLogs};
use crate::core::cache::Timed;
use crate::core::context::Context;
use crate::core::errors::vfs_error;
use crate::core::node::{
    META_DIR, Node, QUOTAS_FILE, SUBSCRIPTIONS_DIR, SubscriptionFile, TOPICS_DIR, TopicFile, check_name_length,
};
use crate::core::pages::all_pages;
use crate::core::pending::{Pending, PendingDue, Waiting};
use crate::core::slice::Slice;

/// The most messages one publish call carries (Pub/Sub's request limit).
const PUBLISH_BATCH: usize = 1000;

/// How often the `_stream` logs NFS clients follow are tended: leases
/// renewed, idle logs given up (stream_log.rs).
const STREAM_LOG_TENDING: Duration = Duration::from_secs(1);

/// How long a subscription whose dead-letter topic does not exist yet waits
/// for it (`tar x` may bring that topic after the subscription).
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(30);

type TopicKey = (String, String);

/// What ciofs knows of Pub/Sub, and the client to ask.
pub struct PubSubTree {
    cx: Arc<Context>,
    api: Arc<dyn PubSub>,
    topics: Timed<String, Arc<Vec<TopicMeta>>>,
    subscriptions: Timed<TopicKey, Arc<Vec<String>>>,
    subscription_metas: Timed<TopicKey, Arc<SubscriptionMeta>>,
    /// `_stream` logs NFS clients follow (stream_log.rs).
    stream_logs: StreamLogs,
    /// Subscriptions made by `mkdir` and not created yet, by (project,
    /// subscription), with their topics (short names). A filter and
    /// message ordering can only be set at creation, so creation waits
    /// for the config.json that `tar x` writes next (core/pending.rs).
    pending: Pending<TopicKey, String, SubscriptionSettings>,
    /// Topics made by `mkdir` and not created yet, by (project, topic):
    /// the emulator takes labels only at creation, so creation waits for
    /// the config.json too.
    pending_topics: Pending<TopicKey, (), TopicSettings>,
}

impl PubSubTree {
    pub fn new(cx: Arc<Context>, api: Arc<dyn PubSub>) -> Self {
        let ttl = cx.options.metadata_ttl;
        Self {
            cx,
            api,
            topics: Timed::new(ttl),
            subscriptions: Timed::new(ttl),
            subscription_metas: Timed::new(ttl),
            stream_logs: StreamLogs::default(),
            pending: Pending::default(),
            pending_topics: Pending::default(),
        }
    }

    /// A pending topic's settings so far (kept from a creation that failed),
    /// or None if the topic is not pending.
    fn pending_topic_settings(&self, project: &str, topic: &str) -> Option<TopicSettings> {
        let waiting = self.pending_topics.get(&(project.to_string(), topic.to_string()))?;
        Some(waiting.settings.unwrap_or_default())
    }

    fn pending_subscription(&self, project: &str, subscription: &str) -> Option<Waiting<String, SubscriptionSettings>> {
        self.pending.get(&(project.to_string(), subscription.to_string()))
    }

    /// The topic (short name) of a pending subscription.
    fn pending_topic(&self, project: &str, subscription: &str) -> Option<String> {
        self.pending_subscription(project, subscription).map(|waiting| waiting.made_in)
    }

    /// Tends the `_stream` logs (NFS) in a task of its own, so that renewing
    /// the leases of what they hold never waits behind uploads and edits;
    /// it ends when the tree goes.
    pub fn spawn_stream_log_tending(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tree = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STREAM_LOG_TENDING);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(tree) = tree.upgrade() else { return };
                tree.tend_stream_logs().await;
            }
        })
    }

    /// Renews the leases of what stream logs hold, gives up idle ones.
    pub async fn tend_stream_logs(&self) {
        self.stream_logs.tend().await;
    }

    /// The log of a `_stream` node: started when `start`, else only if
    /// followed already.
    fn stream_log(&self, node: &Node, start: bool) -> Option<Arc<StreamLog>> {
        let Node::SubscriptionFile { project, subscription, file, .. } = node else { return None };
        let json = *file == SubscriptionFile::StreamJson;
        self.stream_logs.get(&self.api, project, subscription, json, start)
    }
}

/// Refuses, before asking Pub/Sub, a name it would refuse, saying why.
fn check_resource_name(kind: &str, name: &str) -> VfsResult<()> {
    if !ciofs_backends::pubsub::is_valid_name(name) {
        return Err(VfsError::invalid(format!(
            "`{name}` cannot name a {kind}: 3 to 255 letters, digits or `-_.~+%`, starting with a letter, not with `goog`"
        )));
    }
    Ok(())
}

impl PubSubTree {
    /// Size and time of a Pub/Sub node. Pub/Sub keeps no times: every
    /// node shows a constant one. `_message` and `_stream` are empty.
    pub async fn file_stat(&self, node: &Node) -> VfsResult<(u64, SystemTime)> {
        if let Some(stat) = self.cx.local.stat(node) {
            return Ok(stat);
        }
        match node {
            Node::Quotas { .. }
            | Node::TopicFile { file: TopicFile::Config, .. }
            | Node::SubscriptionFile { file: SubscriptionFile::Config, .. } => {
                Ok((self.document_bytes(node).await?.len() as u64, SystemTime::UNIX_EPOCH))
            }
            Node::Scratch { .. } => Err(VfsError::not_found(node.to_string())),
            // Over NFS a followed stream is a growing log; otherwise empty.
            node if node.is_stream() => match self.stream_log(node, false) {
                Some(log) => Ok((log.size().await?, SystemTime::now())),
                None => Ok((0, SystemTime::UNIX_EPOCH)),
            },
            _ => Ok((0, SystemTime::UNIX_EPOCH)),
        }
    }

    /// A reader for a `_stream` node opened for read (FUSE), after checking
    /// that the subscription exists; None for any other node.
    pub async fn stream_reader(&self, node: &Node) -> VfsResult<Option<Arc<StreamReader>>> {
        let Node::SubscriptionFile { project, topic, subscription, file } = node else { return Ok(None) };
        if !node.is_stream() {
            return Ok(None);
        }
        if self.pending_topic(project, subscription).is_some() {
            let _reported_in_the_error_log =
                self.create_due_subscriptions(PendingDue::Subscription(project, subscription)).await;
        }
        self.subscription_of(project, topic, subscription).await?;
        let json = *file == SubscriptionFile::StreamJson;
        Ok(Some(Arc::new(StreamReader::new(self.api.clone(), project, subscription, json))))
    }

    /// A READ of a `_stream` node without a handle (NFS): its log.
    pub async fn stream_log_read(&self, node: &Node, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        match self.stream_log(node, true) {
            Some(log) => log.read(offset, len).await,
            None => Err(VfsError::invalid(format!("{node}: not a stream"))),
        }
    }

    /// The current rendering of a Pub/Sub document (empty for `_message`,
    /// `_messages` and the streams, which have no content of their own).
    pub async fn document_bytes(&self, node: &Node) -> VfsResult<Bytes> {
        match node {
            Node::Quotas { project } => Ok(Bytes::from(render_quotas(project))),
            Node::TopicFile { project, topic, file: TopicFile::Config } => {
                Ok(Bytes::from(render_topic_config(&self.topic(project, topic).await?)))
            }
            Node::SubscriptionFile { project, topic, subscription, file: SubscriptionFile::Config } => {
                let meta = self.subscription_of(project, topic, subscription).await?;
                Ok(Bytes::from(render_subscription_config(project, &meta)))
            }
            Node::TopicFile { .. } | Node::SubscriptionFile { .. } => Ok(Bytes::new()),
            Node::Scratch { .. } => Err(VfsError::not_found(node.to_string())),
            _ => Err(VfsError::is_dir(format!("{node}: not a document"))),
        }
    }

    /// Every entry of a Pub/Sub directory, in listing order.
    pub async fn children(&self, dir: &Node) -> VfsResult<Vec<DirEntry>> {
        let nodes: Vec<Node> = match dir {
            Node::Service { project, .. } => {
                vec![Node::PubSubMetaDir { project: project.clone() }, Node::Topics { project: project.clone() }]
            }
            Node::PubSubMetaDir { project } => vec![Node::Quotas { project: project.clone() }],
            Node::Topics { project } => self
                .topics(project)
                .await?
                .iter()
                .map(|t| Node::Topic { project: project.clone(), topic: t.topic.clone() })
                .collect(),
            Node::Topic { project, topic } => {
                let files = TopicFile::ALL.into_iter().map(|file| Node::TopicFile {
                    project: project.clone(),
                    topic: topic.clone(),
                    file,
                });
                files.chain([Node::Subscriptions { project: project.clone(), topic: topic.clone() }]).collect()
            }
            Node::Subscriptions { project, topic } => {
                let mut names: Vec<String> = self.subscriptions(project, topic).await?.to_vec();
                let of_topic = self.pending.filter(|(p, _), waiting| p == project && waiting.made_in == *topic);
                names.extend(of_topic.into_iter().map(|((_, name), _)| name));
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .map(|s| Node::Subscription { project: project.clone(), topic: topic.clone(), subscription: s })
                    .collect()
            }
            Node::Subscription { project, topic, subscription } => SubscriptionFile::ALL
                .into_iter()
                .map(|file| Node::SubscriptionFile {
                    project: project.clone(),
                    topic: topic.clone(),
                    subscription: subscription.clone(),
                    file,
                })
                .collect(),
            _ => return Err(VfsError::not_dir(format!("{dir}: not a directory"))),
        };
        let mut entries = Vec::new();
        for node in nodes.into_iter().filter(|n| !self.cx.local.is_hidden(n)) {
            let (size, mtime) = if node.is_dir() { (0, SystemTime::UNIX_EPOCH) } else { self.file_stat(&node).await? };
            entries.push(self.cx.entry(node, size, mtime));
        }
        for (node, size, mtime) in self.cx.local.scratch_in(dir) {
            entries.push(self.cx.entry(node, size, mtime));
        }
        Ok(entries)
    }

    /// A project's topics, pending ones included, by name.
    async fn topics(&self, project: &str) -> VfsResult<Arc<Vec<TopicMeta>>> {
        let listed = self.listed_topics(project).await?;
        let pending = self.pending_topics.filter(|(p, _), _| p == project);
        if pending.is_empty() {
            return Ok(listed);
        }
        let mut topics = listed.to_vec();
        let waiting = pending
            .into_iter()
            .map(|((_, topic), waiting)| TopicMeta { topic, settings: waiting.settings.unwrap_or_default() });
        topics.extend(waiting);
        // Stable: a listed topic comes before a pending one of its name.
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        topics.dedup_by(|later, earlier| later.topic == earlier.topic);
        Ok(Arc::new(topics))
    }

    /// A project's topics as Pub/Sub lists them, all pages, by name.
    async fn listed_topics(&self, project: &str) -> VfsResult<Arc<Vec<TopicMeta>>> {
        if let Some(topics) = self.topics.get(&project.to_string()) {
            return Ok(topics);
        }
        let mut topics = all_pages(|token| async move {
            self.api.list_topics(project, token).await.map(|page| (page.items, page.next_page_token))
        })
        .await?;
        topics.retain(|t| check_name_length(&t.topic).is_ok());
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let topics = Arc::new(topics);
        self.topics.put(project.to_string(), topics.clone());
        Ok(topics)
    }

    /// A topic, pending or from the listing if it is fresh, else asked.
    async fn topic(&self, project: &str, topic: &str) -> VfsResult<TopicMeta> {
        if let Some(settings) = self.pending_topic_settings(project, topic) {
            return Ok(TopicMeta { topic: topic.to_string(), settings });
        }
        let listed = self.topics.get(&project.to_string());
        if let Some(meta) = listed.as_ref().and_then(|l| l.iter().find(|t| t.topic == topic)) {
            return Ok(meta.clone());
        }
        self.api.get_topic(project, topic).await.map_err(vfs_error)
    }

    /// A topic's subscriptions (short names, this project's), by name.
    async fn subscriptions(&self, project: &str, topic: &str) -> VfsResult<Arc<Vec<String>>> {
        if self.pending_topic_settings(project, topic).is_some() {
            // Not created yet: only its pending subscriptions.
            return Ok(Arc::default());
        }
        let key = (project.to_string(), topic.to_string());
        if let Some(names) = self.subscriptions.get(&key) {
            return Ok(names);
        }
        let mut names = all_pages(|token| async move {
            self.api
                .list_topic_subscriptions(project, topic, token)
                .await
                .map(|page| (page.items, page.next_page_token))
        })
        .await?;
        names.retain(|n| check_name_length(n).is_ok());
        names.sort();
        let names = Arc::new(names);
        self.subscriptions.put(key, names.clone());
        Ok(names)
    }

    /// A subscription of `topic` (ENOENT if it is another topic's).
    async fn subscription_of(
        &self,
        project: &str,
        topic: &str,
        subscription: &str,
    ) -> VfsResult<Arc<SubscriptionMeta>> {
        if let Some(waiting) = self.pending_subscription(project, subscription)
            && waiting.made_in == topic
        {
            let mut meta = pending_meta(project, topic, subscription);
            if let Some(settings) = waiting.settings {
                meta.settings = settings;
            }
            return Ok(Arc::new(meta));
        }
        let key = (project.to_string(), subscription.to_string());
        let meta = match self.subscription_metas.get(&key) {
            Some(meta) => meta,
            None => {
                let meta = Arc::new(self.api.get_subscription(project, subscription).await.map_err(vfs_error)?);
                self.subscription_metas.put(key, meta.clone());
                meta
            }
        };
        if meta.topic != full_topic(project, topic) {
            return Err(VfsError::not_found(format!("subscription {subscription} of topic {topic}")));
        }
        Ok(meta)
    }

    /// Creates a pending subscription with `settings`.
    async fn create_pending(
        &self,
        project: &str,
        subscription: &str,
        settings: &SubscriptionSettings,
    ) -> VfsResult<()> {
        if let Some(topic) = self.pending_topic(project, subscription) {
            self.ensure_topic(project, &topic).await?;
        }
        if let Some(dead_letter) = settings.dead_letter_policy.as_ref().and_then(|p| short_topic_in(project, p)) {
            self.ensure_topic(project, dead_letter).await?;
        }
        let _one_at_a_time = self.pending.creating().await;
        let key = (project.to_string(), subscription.to_string());
        let Some(topic) = self.pending_topic(project, subscription) else { return Ok(()) };
        let request = CreateSubscription {
            project: project.to_string(),
            subscription: subscription.to_string(),
            topic: topic.clone(),
            settings: settings.clone(),
        };
        let created = self.api.create_subscription(&request).await;
        let created = match created {
            Ok(created) => created,
            // Made meanwhile (by another client, or a create whose answer
            // was lost): it is not pending any more either way.
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.pending.remove(&key);
                return Err(vfs_error(e));
            }
            Err(e) => return Err(vfs_error(e)),
        };
        self.pending.remove(&key);
        self.subscriptions.forget(&(project.to_string(), topic.clone()));
        self.subscription_metas.put(key, Arc::new(created));
        tracing::info!(project, topic, subscription, "subscription created");
        Ok(())
    }

    /// Creates, with default settings, the pending topics and then the
    /// pending subscriptions whose config.json did not come within `WAIT`
    /// (called periodically), the subscription named now (its stream is
    /// used) with its topic, or all.
    pub async fn create_due_subscriptions(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        let mut failed = match which {
            PendingDue::Subscription(..) => Vec::new(),
            PendingDue::Waited | PendingDue::All => self.create_due_topics(which).await,
        };
        let due = match which {
            PendingDue::Subscription(project, subscription) => {
                self.pending.filter(|(p, s), _| p == project && s == subscription)
            }
            PendingDue::Waited | PendingDue::All => self.pending.due(which),
        };
        for ((project, subscription), waiting) in due {
            let topic = &waiting.made_in;
            let node = Node::Subscription {
                project: project.clone(),
                topic: topic.clone(),
                subscription: subscription.clone(),
            };
            let config = Node::SubscriptionFile {
                project: project.clone(),
                topic: topic.clone(),
                subscription: subscription.clone(),
                file: SubscriptionFile::Config,
            };
            if which == PendingDue::Waited && self.cx.local.stat(&config).is_some() {
                // Its config.json is being written (over NFS it applies
                // after a quiet second): that creates it.
                continue;
            }
            let settings = waiting.settings.clone().unwrap_or_default();
            let waits_for_topic = settings.dead_letter_policy.is_some();
            match self.create_pending(&project, &subscription, &settings).await {
                Ok(()) => {}
                Err(e)
                    if e.errno() == libc::ENOENT
                        && waits_for_topic
                        && which != PendingDue::All
                        && waiting.waited() < DEAD_LETTER_WAIT => {}
                Err(e) => {
                    self.pending.remove(&(project, subscription));
                    self.cx.error_log.record(&node.to_string(), e.errno(), e.message());
                    failed.push((node.to_string(), e));
                }
            }
        }
        failed
    }

    /// One message per non-empty line, in batches; a failed batch does not
    /// stop the others, and the error says how many messages failed.
    async fn publish_lines(&self, project: &str, topic: &str, data: &[u8]) -> VfsResult<()> {
        let lines: Vec<OutgoingMessage> = data
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| OutgoingMessage { data: Bytes::copy_from_slice(line), ..OutgoingMessage::default() })
            .collect();
        let total = lines.len();
        if total > 0 {
            self.ensure_publishable(project, topic).await?;
        }
        let (mut failed, mut last_error) = (0, None);
        for batch in lines.chunks(PUBLISH_BATCH) {
            if let Err(e) = self.api.publish(project, topic, batch.to_vec()).await {
                failed += batch.len();
                last_error = Some(vfs_error(e));
            }
        }
        match last_error {
            None => Ok(()),
            Some(e) => Err(VfsError::new(
                e.errno(),
                format!("{failed} of {total} messages were not published (the rest were): {}", e.message()),
            )),
        }
    }
}

impl PubSubTree {
    /// Creates a pending topic with `settings` (one creation at a time):
    /// the topic as made, or None when it was not pending (any more) or
    /// found made meanwhile (another client, or a create whose answer was
    /// lost). A transient failure leaves it pending with these settings, to
    /// try again; a refusal ends its pending.
    async fn create_pending_topic(
        &self,
        project: &str,
        topic: &str,
        settings: &TopicSettings,
    ) -> VfsResult<Option<TopicMeta>> {
        let _one_at_a_time = self.pending_topics.creating().await;
        let key = (project.to_string(), topic.to_string());
        if !self.pending_topics.contains(&key) {
            return Ok(None);
        }
        let created = self.api.create_topic(project, topic, settings).await;
        self.topics.forget(&project.to_string());
        match created {
            Ok(meta) => {
                self.pending_topics.remove(&key);
                tracing::info!(project, topic, "topic created");
                Ok(Some(meta))
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.pending_topics.remove(&key);
                Ok(None)
            }
            Err(e) if e.kind.is_transient() => {
                self.pending_topics.wait_again(&key, settings);
                Err(vfs_error(e))
            }
            Err(e) => {
                self.pending_topics.remove(&key);
                Err(vfs_error(e))
            }
        }
    }

    /// Creates `topic` if it is pending (with the settings kept for it, or
    /// defaults): something needs it now.
    async fn ensure_topic(&self, project: &str, topic: &str) -> VfsResult<()> {
        match self.pending_topic_settings(project, topic) {
            Some(settings) => self.create_pending_topic(project, topic, &settings).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Before a publish to `topic`: the topic is created if pending, and so
    /// are its pending subscriptions (with what they have), which would
    /// otherwise miss the message; one whose config.json is being written
    /// waits for it. A subscription that cannot be made is logged; the
    /// publish goes on.
    async fn ensure_publishable(&self, project: &str, topic: &str) -> VfsResult<()> {
        self.ensure_topic(project, topic).await?;
        let of_topic = self.pending.filter(|(p, _), w| p == project && w.made_in == topic);
        for ((_, subscription), waiting) in of_topic {
            let config = Node::SubscriptionFile {
                project: project.to_string(),
                topic: topic.to_string(),
                subscription: subscription.clone(),
                file: SubscriptionFile::Config,
            };
            if self.cx.local.stat(&config).is_some() {
                continue;
            }
            let settings = waiting.settings.unwrap_or_default();
            if let Err(e) = self.create_pending(project, &subscription, &settings).await {
                self.cx.error_log.record(&config.parent().to_string(), e.errno(), e.message());
            }
        }
        Ok(())
    }

    /// Creates the pending topics that waited `WAIT` for their config.json
    /// (called periodically), or all; what failed, by path.
    async fn create_due_topics(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        let mut failed = Vec::new();
        for ((project, topic), _) in self.pending_topics.due(which) {
            let config = Node::TopicFile { project: project.clone(), topic: topic.clone(), file: TopicFile::Config };
            if which != PendingDue::All && self.cx.local.stat(&config).is_some() {
                // Its config.json is being written (over NFS it applies
                // after a quiet second): that creates it.
                continue;
            }
            if let Err(e) = self.ensure_topic(&project, &topic).await {
                let dir = Node::Topic { project, topic }.to_string();
                self.cx.error_log.record(&dir, e.errno(), e.message());
                failed.push((dir, e));
            }
        }
        failed
    }
}

/// Pub/Sub's answers to what the namespace asks of every service.
#[async_trait]
impl Slice for PubSubTree {
    /// Finds `name` in a Pub/Sub directory.
    async fn lookup(&self, dir: &Node, name: &str) -> VfsResult<DirEntry> {
        check_name_length(name)?;
        let missing = || VfsError::not_found(format!("{dir}/{name}"));
        let project = match dir {
            Node::Service { project, .. }
            | Node::PubSubMetaDir { project }
            | Node::Topics { project }
            | Node::Topic { project, .. }
            | Node::Subscriptions { project, .. }
            | Node::Subscription { project, .. } => project.clone(),
            _ => return Err(missing()),
        };
        let node = match dir {
            Node::Service { .. } if name == META_DIR => Node::PubSubMetaDir { project },
            Node::Service { .. } if name == TOPICS_DIR => Node::Topics { project },
            Node::PubSubMetaDir { .. } if name == QUOTAS_FILE => Node::Quotas { project },
            Node::Topics { .. } => {
                self.topic(&project, name).await?;
                Node::Topic { project, topic: name.to_string() }
            }
            Node::Topic { topic, .. } if name == SUBSCRIPTIONS_DIR => {
                Node::Subscriptions { project, topic: topic.clone() }
            }
            Node::Topic { topic, .. } => match TopicFile::from_file_name(name) {
                Some(file) => Node::TopicFile { project, topic: topic.clone(), file },
                None => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
            },
            Node::Subscriptions { topic, .. } => {
                self.subscription_of(&project, topic, name).await?;
                Node::Subscription { project, topic: topic.clone(), subscription: name.to_string() }
            }
            Node::Subscription { topic, subscription, .. } => match SubscriptionFile::from_file_name(name) {
                Some(file) => {
                    Node::SubscriptionFile { project, topic: topic.clone(), subscription: subscription.clone(), file }
                }
                None => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
            },
            _ => return Err(missing()),
        };
        let scratch_missing = matches!(node, Node::Scratch { .. }) && self.cx.local.stat(&node).is_none();
        if self.cx.local.is_hidden(&node) || scratch_missing {
            return Err(missing());
        }
        let (size, mtime) = self.file_stat(&node).await?;
        Ok(self.cx.entry(node, size, mtime))
    }

    async fn stat(&self, _ino: Ino, node: &Node) -> VfsResult<(u64, SystemTime)> {
        match node.is_dir() {
            true => Ok((0, SystemTime::UNIX_EPOCH)),
            false => self.file_stat(node).await,
        }
    }

    async fn readdir(&self, dir: &Node, _ino: Ino, _fh: Fh, after: Ino, max: usize) -> VfsResult<DirPage> {
        Ok(self.cx.page_after(self.children(dir).await?, after, max))
    }

    /// `mkdir pubsub/topics/NEW` creates a topic; `mkdir
    /// pubsub/topics/T/subscriptions/NEW` a subscription with default settings.
    async fn mkdir(&self, dir: &Node, name: &str) -> VfsResult<Attr> {
        check_name_length(name)?;
        let node = match dir {
            Node::Topics { project } => {
                check_resource_name("topic", name)?;
                let exists = match self.api.get_topic(project, name).await {
                    Ok(_) => true,
                    Err(e) if e.kind == ErrorKind::NotFound => self.pending_topic_settings(project, name).is_some(),
                    Err(e) => return Err(vfs_error(e)),
                };
                if exists {
                    return Err(VfsError::exists(format!("topic {name} exists")));
                }
                self.pending_topics.add((project.clone(), name.to_string()), ());
                tracing::info!(project, topic = name, "topic pending: created at its config.json");
                Node::Topic { project: project.clone(), topic: name.to_string() }
            }
            Node::Subscriptions { project, topic } => {
                check_resource_name("subscription", name)?;
                let exists = match self.api.get_subscription(project, name).await {
                    Ok(_) => true,
                    Err(e) if e.kind == ErrorKind::NotFound => self.pending_topic(project, name).is_some(),
                    Err(e) => return Err(vfs_error(e)),
                };
                if exists {
                    return Err(VfsError::exists(format!("subscription {name} exists")));
                }
                self.pending.add((project.clone(), name.to_string()), topic.clone());
                tracing::info!(project, topic, subscription = name, "subscription pending: created at its config.json");
                Node::Subscription { project: project.clone(), topic: topic.clone(), subscription: name.to_string() }
            }
            _ => return Err(VfsError::not_permitted(format!("{dir}: directories cannot be made here"))),
        };
        Ok(self.cx.dir_entry(node).attr)
    }

    /// `rmdir` of a topic deletes it (its subscriptions stay, detached, as in
    /// Pub/Sub), of a subscription deletes the subscription.
    async fn rmdir(&self, dir: &Node, name: &str) -> VfsResult<()> {
        check_name_length(name)?;
        match dir {
            Node::Topics { project } => {
                if self.pending_topics.remove(&(project.clone(), name.to_string())) {
                    // Never created, nor were its pending subscriptions.
                    let of_topic = self.pending.filter(|(p, _), w| p == project && w.made_in == name);
                    for (key, _) in of_topic {
                        self.pending.remove(&key);
                    }
                    return Ok(());
                }
                let deleted = self.api.delete_topic(project, name).await.map_err(vfs_error);
                self.topics.forget(&project.clone());
                deleted?;
                tracing::info!(project, topic = name, "topic deleted");
                Ok(())
            }
            Node::Subscriptions { project, topic } => {
                if self.pending.remove(&(project.clone(), name.to_string())) {
                    return Ok(());
                }
                self.subscription_of(project, topic, name).await?;
                let deleted = self.api.delete_subscription(project, name).await.map_err(vfs_error);
                self.subscriptions.forget(&(project.clone(), topic.clone()));
                self.subscription_metas.forget(&(project.clone(), name.to_string()));
                deleted?;
                tracing::info!(project, topic, subscription = name, "subscription deleted");
                Ok(())
            }
            // `rm -r` of a topic: its fixed directories hold nothing to delete.
            Node::Service { .. } | Node::Topic { .. } | Node::Subscription { .. } => Ok(()),
            _ => Err(VfsError::not_permitted(format!("{dir}/{name} cannot be removed"))),
        }
    }

    async fn document(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)> {
        Ok((self.document_bytes(node).await?, SystemTime::UNIX_EPOCH))
    }

    /// Applies a whole document written to `node`: a config, or messages to
    /// publish. Generated files are accepted and ignored.
    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()> {
        match node {
            Node::TopicFile { project, topic, file: TopicFile::Config }
                if let Some(current) = self.pending_topic_settings(project, topic) =>
            {
                let settings = parse_topic_config(data, &current)?;
                check_topic_settings(None, &settings)?;
                match self.create_pending_topic(project, topic, &settings).await? {
                    Some(_) => Ok(()),
                    // Made meanwhile: the settings are a change of it.
                    None => Box::pin(self.apply(node, data)).await,
                }
            }
            Node::TopicFile { project, topic, file: TopicFile::Config } => {
                let current = self.api.get_topic(project, topic).await.map_err(vfs_error)?;
                let settings = parse_topic_config(data, &current.settings)?;
                check_topic_settings(Some(&current.settings), &settings)?;
                if settings == current.settings {
                    return Ok(());
                }
                self.api.update_topic(project, topic, &settings).await.map_err(vfs_error)?;
                self.topics.forget(&project.clone());
                Ok(())
            }
            Node::SubscriptionFile { project, topic, subscription, file: SubscriptionFile::Config }
                if self.pending_topic(project, subscription).is_some() =>
            {
                let defaults = pending_meta(project, topic, subscription).settings;
                let settings = parse_subscription_config(project, &full_topic(project, topic), data, &defaults)?;
                check_subscription_change(None, &settings)?;
                match self.create_pending(project, subscription, &settings).await {
                    // Its dead-letter topic may come later in an archive:
                    // created once it exists (or the error logged).
                    Err(e) if e.errno() == libc::ENOENT && settings.dead_letter_policy.is_some() => {
                        self.pending.wait_again(&(project.clone(), subscription.clone()), &settings);
                        tracing::info!(project, subscription, "subscription waits for its dead-letter topic");
                        Ok(())
                    }
                    created => created,
                }
            }
            Node::SubscriptionFile { project, subscription, file: SubscriptionFile::Config, .. } => {
                let current = self.api.get_subscription(project, subscription).await.map_err(vfs_error)?;
                let settings = parse_subscription_config(project, &current.topic, data, &current.settings)?;
                check_subscription_change(Some(&current.settings), &settings)?;
                if settings == current.settings {
                    return Ok(());
                }
                let updated = self.api.update_subscription(project, subscription, &settings).await;
                let updated = updated.map_err(vfs_error)?;
                let key = (project.clone(), subscription.clone());
                self.subscription_metas.put(key, Arc::new(updated));
                Ok(())
            }
            Node::TopicFile { project, topic, file: TopicFile::Message } => {
                if data.is_empty() {
                    return Ok(());
                }
                self.ensure_publishable(project, topic).await?;
                let message = OutgoingMessage { data: Bytes::copy_from_slice(data), ..OutgoingMessage::default() };
                self.api.publish(project, topic, vec![message]).await.map_err(vfs_error)?;
                Ok(())
            }
            Node::TopicFile { project, topic, file: TopicFile::Messages } => {
                self.publish_lines(project, topic, data).await
            }
            _ => Ok(()),
        }
    }

    async fn create_due(&self, which: PendingDue<'_>) -> Vec<(String, VfsError)> {
        self.create_due_subscriptions(which).await
    }
}

/// The short name of a topic of `project` named in full, as a dead-letter
/// policy names it; None for another project's.
fn short_topic_in<'a>(project: &str, policy: &'a ciofs_backends::pubsub::DeadLetterPolicy) -> Option<&'a str> {
    let rest = policy.dead_letter_topic.strip_prefix("projects/")?.strip_prefix(project)?;
    rest.strip_prefix("/topics/")
}

/// A topic's full name.
pub fn full_topic(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

/// What a pending subscription shows until it is created: Pub/Sub's
/// defaults.
fn pending_meta(project: &str, topic: &str, subscription: &str) -> SubscriptionMeta {
    let settings = SubscriptionSettings {
        ack_deadline_seconds: 10,
        message_retention_duration: Some(Duration::from_secs(7 * 24 * 3600)),
        ..SubscriptionSettings::default()
    };
    SubscriptionMeta { subscription: subscription.to_string(), topic: full_topic(project, topic), settings }
}
