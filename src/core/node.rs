//! Which resource a path is. A `Node` is the authority on names: its path
//! from the mount root identifies it, and its inode number derives from
//! that path.

use std::fmt;

use ciofs_frontends::{VfsError, VfsResult};
use serde::{Deserialize, Serialize};

/// The directory that holds metadata documents in a bucket or prefix.
pub const META_DIR: &str = ".meta";
/// The bucket's own document in the bucket root's `.meta/`.
pub const BUCKET_META: &str = "_bucket.json";
/// Suffix of an object's document in `.meta/`.
pub const META_SUFFIX: &str = ".json";
/// A dataset's own document in the dataset's `.meta/`.
pub const DATASET_META: &str = "_dataset.json";
/// ciofs's own directory at the mount root, and the file in it that tells
/// why recent writes were refused or failed.
pub const CONTROL_DIR: &str = ".ciofs";
pub const ERRORS_FILE: &str = "errors";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Service {
    Storage,
    BigQuery,
    PubSub,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Storage, Service::BigQuery, Service::PubSub];

    pub fn dir_name(self) -> &'static str {
        match self {
            Service::Storage => "storage",
            Service::BigQuery => "bigquery",
            Service::PubSub => "pubsub",
        }
    }

    pub fn from_dir_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.dir_name() == name)
    }
}

/// The files of a table directory, in listing order: the settings first
/// (config.json before schema.json, so that `tar x` creates a table with its
/// configuration), then the generated status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TableFile {
    Config,
    Schema,
    Status,
}

impl TableFile {
    pub const ALL: [TableFile; 3] = [TableFile::Config, TableFile::Schema, TableFile::Status];

    pub fn file_name(self) -> &'static str {
        match self {
            TableFile::Config => "config.json",
            TableFile::Schema => "schema.json",
            TableFile::Status => "_status.json",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.file_name() == name)
    }

    /// Whether writing the file changes the table (else it is ignored).
    pub fn is_editable(self) -> bool {
        !matches!(self, TableFile::Status)
    }
}

/// The files of a topic directory, in listing order (settings first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicFile {
    Config,
    /// Writing it publishes one message (its whole content).
    Message,
    /// Writing it publishes one message per line.
    Messages,
}

impl TopicFile {
    pub const ALL: [TopicFile; 3] = [TopicFile::Config, TopicFile::Message, TopicFile::Messages];

    pub fn file_name(self) -> &'static str {
        match self {
            TopicFile::Config => "config.json",
            TopicFile::Message => "_message",
            TopicFile::Messages => "_messages",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.file_name() == name)
    }
}

/// The files of a subscription directory, in listing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubscriptionFile {
    Config,
    /// Reading it consumes messages, one line each.
    Stream,
    /// The same as JSON lines.
    StreamJson,
}

impl SubscriptionFile {
    pub const ALL: [SubscriptionFile; 3] =
        [SubscriptionFile::Config, SubscriptionFile::Stream, SubscriptionFile::StreamJson];

    pub fn file_name(self) -> &'static str {
        match self {
            SubscriptionFile::Config => "config.json",
            SubscriptionFile::Stream => "_stream",
            SubscriptionFile::StreamJson => "_stream.jsonl",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.file_name() == name)
    }
}

/// Pub/Sub's fixed names.
pub const TOPICS_DIR: &str = "topics";
pub const SUBSCRIPTIONS_DIR: &str = "subscriptions";
pub const QUOTAS_FILE: &str = "_quotas.json";

/// A resource, or a part of the tree ciofs makes up around resources.
///
/// Object names and prefixes are full Cloud Storage names; a prefix ends with
/// `/` (or is empty for the bucket root).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Node {
    Root,
    Project {
        project: String,
    },
    Service {
        project: String,
        service: Service,
    },
    /// A bucket's root directory, or a prefix inside it.
    Dir {
        project: String,
        bucket: String,
        prefix: String,
    },
    Object {
        project: String,
        bucket: String,
        name: String,
    },
    /// The `.meta/` of the directory at `prefix`.
    MetaDir {
        project: String,
        bucket: String,
        prefix: String,
    },
    ObjectMeta {
        project: String,
        bucket: String,
        name: String,
    },
    BucketMeta {
        project: String,
        bucket: String,
    },
    /// A BigQuery dataset's directory.
    Dataset {
        project: String,
        dataset: String,
    },
    /// A dataset's `.meta/`, holding `_dataset.json`.
    DatasetMetaDir {
        project: String,
        dataset: String,
    },
    DatasetMeta {
        project: String,
        dataset: String,
    },
    /// A table's (or view's) directory, also one made by mkdir that has no
    /// table yet.
    Table {
        project: String,
        dataset: String,
        table: String,
    },
    TableFile {
        project: String,
        dataset: String,
        table: String,
        file: TableFile,
    },
    /// Any other file in a directory of documents (a table, topic or
    /// subscription directory): an editor's swap file, `sed -i`'s temporary
    /// file; and a macOS metadata file in any directory (core/macos.rs).
    /// Kept locally, never sent to Google.
    Scratch {
        dir: Box<Node>,
        name: String,
    },
    /// A directory kept locally, never sent to Google: one of macOS's
    /// (`.Trashes`, `.Spotlight-V100` ...), and any directory inside one
    /// (core/macos.rs).
    LocalDir {
        dir: Box<Node>,
        name: String,
    },
    /// `pubsub/.meta/`, holding `_quotas.json`.
    PubSubMetaDir {
        project: String,
    },
    Quotas {
        project: String,
    },
    /// `pubsub/topics/`.
    Topics {
        project: String,
    },
    Topic {
        project: String,
        topic: String,
    },
    TopicFile {
        project: String,
        topic: String,
        file: TopicFile,
    },
    /// A topic's `subscriptions/`.
    Subscriptions {
        project: String,
        topic: String,
    },
    Subscription {
        project: String,
        topic: String,
        subscription: String,
    },
    SubscriptionFile {
        project: String,
        topic: String,
        subscription: String,
        file: SubscriptionFile,
    },
    /// `.ciofs/` at the mount root.
    Control,
    /// `.ciofs/errors`.
    ErrorLog,
}

impl Node {
    /// A file whose writes are kept locally and applied whole at close (or
    /// when idle, over NFS) by core/edits.rs, and the directories holding such
    /// files: all of BigQuery and Pub/Sub, and an object's `.meta/` document.
    pub fn holds_documents(&self) -> bool {
        matches!(self.service(), Some(Service::BigQuery | Service::PubSub))
            || matches!(self, Node::ObjectMeta { .. } | Node::BucketMeta { .. } | Node::Scratch { .. })
    }

    /// A subscription's `_stream` or `_stream.jsonl`.
    pub fn is_stream(&self) -> bool {
        matches!(self, Node::SubscriptionFile { file: SubscriptionFile::Stream | SubscriptionFile::StreamJson, .. })
    }

    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Node::Root
                | Node::Project { .. }
                | Node::Service { .. }
                | Node::Dir { .. }
                | Node::MetaDir { .. }
                | Node::Dataset { .. }
                | Node::DatasetMetaDir { .. }
                | Node::Table { .. }
                | Node::PubSubMetaDir { .. }
                | Node::Topics { .. }
                | Node::Topic { .. }
                | Node::Subscriptions { .. }
                | Node::Subscription { .. }
                | Node::Control
                | Node::LocalDir { .. }
        )
    }

    /// The service a node belongs to (None above the services, and for
    /// ciofs's own files).
    pub fn service(&self) -> Option<Service> {
        match self {
            Node::Root | Node::Project { .. } | Node::Control | Node::ErrorLog => None,
            Node::Service { service, .. } => Some(*service),
            Node::Dir { .. }
            | Node::Object { .. }
            | Node::MetaDir { .. }
            | Node::ObjectMeta { .. }
            | Node::BucketMeta { .. } => Some(Service::Storage),
            Node::Dataset { .. }
            | Node::DatasetMetaDir { .. }
            | Node::DatasetMeta { .. }
            | Node::Table { .. }
            | Node::TableFile { .. } => Some(Service::BigQuery),
            Node::Scratch { dir, .. } | Node::LocalDir { dir, .. } => dir.service(),
            Node::PubSubMetaDir { .. }
            | Node::Quotas { .. }
            | Node::Topics { .. }
            | Node::Topic { .. }
            | Node::TopicFile { .. }
            | Node::Subscriptions { .. }
            | Node::Subscription { .. }
            | Node::SubscriptionFile { .. } => Some(Service::PubSub),
        }
    }

    /// The directory this node is in (the root is its own parent).
    pub fn parent(&self) -> Node {
        match self {
            Node::Root | Node::Project { .. } => Node::Root,
            Node::Service { project, .. } => Node::Project { project: project.clone() },
            Node::Dir { project, bucket, prefix } if prefix.is_empty() => {
                Node::Service { project: project.clone(), service: Service::Storage }
            }
            Node::Dir { project, bucket, prefix } => Node::Dir {
                project: project.clone(),
                bucket: bucket.clone(),
                prefix: split_name(prefix.trim_end_matches('/')).0.to_string(),
            },
            Node::Object { project, bucket, name } => {
                Node::Dir { project: project.clone(), bucket: bucket.clone(), prefix: split_name(name).0.to_string() }
            }
            Node::MetaDir { project, bucket, prefix } => {
                Node::Dir { project: project.clone(), bucket: bucket.clone(), prefix: prefix.clone() }
            }
            Node::ObjectMeta { project, bucket, name } => Node::MetaDir {
                project: project.clone(),
                bucket: bucket.clone(),
                prefix: split_name(name).0.to_string(),
            },
            Node::BucketMeta { project, bucket } => {
                Node::MetaDir { project: project.clone(), bucket: bucket.clone(), prefix: String::new() }
            }
            Node::Dataset { project, .. } => Node::Service { project: project.clone(), service: Service::BigQuery },
            Node::DatasetMetaDir { project, dataset } => {
                Node::Dataset { project: project.clone(), dataset: dataset.clone() }
            }
            Node::DatasetMeta { project, dataset } => {
                Node::DatasetMetaDir { project: project.clone(), dataset: dataset.clone() }
            }
            Node::Table { project, dataset, .. } => {
                Node::Dataset { project: project.clone(), dataset: dataset.clone() }
            }
            Node::Scratch { dir, .. } | Node::LocalDir { dir, .. } => (**dir).clone(),
            Node::TableFile { project, dataset, table, .. } => {
                Node::Table { project: project.clone(), dataset: dataset.clone(), table: table.clone() }
            }
            Node::PubSubMetaDir { project } | Node::Topics { project } => {
                Node::Service { project: project.clone(), service: Service::PubSub }
            }
            Node::Quotas { project } => Node::PubSubMetaDir { project: project.clone() },
            Node::Topic { project, .. } => Node::Topics { project: project.clone() },
            Node::TopicFile { project, topic, .. } | Node::Subscriptions { project, topic } => {
                Node::Topic { project: project.clone(), topic: topic.clone() }
            }
            Node::Subscription { project, topic, .. } => {
                Node::Subscriptions { project: project.clone(), topic: topic.clone() }
            }
            Node::SubscriptionFile { project, topic, subscription, .. } => Node::Subscription {
                project: project.clone(),
                topic: topic.clone(),
                subscription: subscription.clone(),
            },
            Node::Control => Node::Root,
            Node::ErrorLog => Node::Control,
        }
    }

    /// This node after the objects of `bucket` under `from` moved to `to`
    /// (both prefixes ending with `/`, or full object names), if it moves.
    pub fn moved(&self, in_bucket: &str, from: &str, to: &str) -> Option<Node> {
        let rename = |name: &str| name.strip_prefix(from).map(|rest| format!("{to}{rest}"));
        match self {
            Node::Dir { project, bucket, prefix } if bucket == in_bucket => {
                Some(Node::Dir { project: project.clone(), bucket: bucket.clone(), prefix: rename(prefix)? })
            }
            Node::MetaDir { project, bucket, prefix } if bucket == in_bucket => {
                Some(Node::MetaDir { project: project.clone(), bucket: bucket.clone(), prefix: rename(prefix)? })
            }
            Node::Object { project, bucket, name } if bucket == in_bucket => {
                Some(Node::Object { project: project.clone(), bucket: bucket.clone(), name: rename(name)? })
            }
            Node::ObjectMeta { project, bucket, name } if bucket == in_bucket => {
                Some(Node::ObjectMeta { project: project.clone(), bucket: bucket.clone(), name: rename(name)? })
            }
            _ => None,
        }
    }

    /// What identifies the node: its path, with a final `/` for a directory
    /// (an object `a` and a prefix `a/` can both exist, and must not share an
    /// inode).
    pub fn key(&self) -> String {
        let path = self.path();
        if self.is_dir() { path + "/" } else { path }
    }

    /// The node's name in its directory (the root has none).
    pub fn file_name(&self) -> Option<String> {
        let path = self.path();
        let name = path.rsplit('/').next().unwrap_or_default();
        (!name.is_empty()).then(|| name.to_string())
    }

    /// The path from the mount root, without a leading `/`. Unique per node
    /// but for an object and a prefix of the same name.
    pub fn path(&self) -> String {
        match self {
            Node::Root => String::new(),
            Node::Project { project } => project.clone(),
            Node::Service { project, service } => format!("{project}/{}", service.dir_name()),
            Node::Dir { project, bucket, prefix } => {
                format!("{project}/storage/{bucket}/{prefix}").trim_end_matches('/').to_string()
            }
            Node::Object { project, bucket, name } => format!("{project}/storage/{bucket}/{name}"),
            Node::MetaDir { project, bucket, prefix } => format!("{project}/storage/{bucket}/{prefix}{META_DIR}"),
            Node::ObjectMeta { project, bucket, name } => {
                let (dir, base) = split_name(name);
                format!("{project}/storage/{bucket}/{dir}{META_DIR}/{base}{META_SUFFIX}")
            }
            Node::BucketMeta { project, bucket } => format!("{project}/storage/{bucket}/{META_DIR}/{BUCKET_META}"),
            Node::Dataset { project, dataset } => format!("{project}/bigquery/{dataset}"),
            Node::DatasetMetaDir { project, dataset } => format!("{project}/bigquery/{dataset}/{META_DIR}"),
            Node::DatasetMeta { project, dataset } => {
                format!("{project}/bigquery/{dataset}/{META_DIR}/{DATASET_META}")
            }
            Node::Table { project, dataset, table } => format!("{project}/bigquery/{dataset}/{table}"),
            Node::TableFile { project, dataset, table, file } => {
                format!("{project}/bigquery/{dataset}/{table}/{}", file.file_name())
            }
            Node::Scratch { dir, name } | Node::LocalDir { dir, name } => match dir.path() {
                // At the mount root (`/.Trashes`): no leading `/`.
                parent if parent.is_empty() => name.clone(),
                parent => format!("{parent}/{name}"),
            },
            Node::PubSubMetaDir { project } => format!("{project}/pubsub/{META_DIR}"),
            Node::Quotas { project } => format!("{project}/pubsub/{META_DIR}/{QUOTAS_FILE}"),
            Node::Topics { project } => format!("{project}/pubsub/{TOPICS_DIR}"),
            Node::Topic { project, topic } => format!("{project}/pubsub/{TOPICS_DIR}/{topic}"),
            Node::TopicFile { project, topic, file } => {
                format!("{project}/pubsub/{TOPICS_DIR}/{topic}/{}", file.file_name())
            }
            Node::Subscriptions { project, topic } => {
                format!("{project}/pubsub/{TOPICS_DIR}/{topic}/{SUBSCRIPTIONS_DIR}")
            }
            Node::Subscription { project, topic, subscription } => {
                format!("{project}/pubsub/{TOPICS_DIR}/{topic}/{SUBSCRIPTIONS_DIR}/{subscription}")
            }
            Node::SubscriptionFile { project, topic, subscription, file } => {
                format!("{project}/pubsub/{TOPICS_DIR}/{topic}/{SUBSCRIPTIONS_DIR}/{subscription}/{}", file.file_name())
            }
            Node::Control => CONTROL_DIR.to_string(),
            Node::ErrorLog => format!("{CONTROL_DIR}/{ERRORS_FILE}"),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.path())
    }
}

/// Splits an object name into its directory prefix (ending with `/`, or
/// empty) and its last segment.
pub fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('/') {
        Some(at) => (&name[..=at], &name[at + 1..]),
        None => ("", name),
    }
}

/// Why a Cloud Storage name segment cannot be shown as a file name, if it
/// cannot. Such objects are left out of listings (and logged); see
/// docs/SEMANTICS.md.
pub fn unusable_segment(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        Some("empty path segment")
    } else if segment == "." || segment == ".." {
        Some("`.` or `..` segment")
    } else if segment.len() > NAME_MAX {
        Some("segment longer than 255 bytes")
    } else if segment.contains('\0') {
        Some("NUL byte in name")
    } else if segment == META_DIR {
        Some("`.meta` is reserved for metadata documents")
    } else {
        None
    }
}

/// The longest file name (as statfs reports it).
pub const NAME_MAX: usize = 255;

/// ENAMETOOLONG for a name past `NAME_MAX` bytes, which no lookup or
/// creation accepts.
pub fn check_name_length(name: &str) -> Result<(), ciofs_frontends::VfsError> {
    if name.len() > NAME_MAX {
        let shown: String = name.chars().take(40).collect();
        return Err(ciofs_frontends::VfsError::new(
            libc::ENAMETOOLONG,
            format!("{shown}...: name longer than {NAME_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Refuses a name a new entry of `dir` cannot have: too long
/// (ENAMETOOLONG), or one that cannot be a file name (EINVAL, saying why).
pub fn check_new_name(dir: &Node, name: &str) -> Result<(), ciofs_frontends::VfsError> {
    check_name_length(name)?;
    match unusable_segment(name) {
        Some(why) => Err(VfsError::invalid(format!("{dir}/{name}: {why}"))),
        None => Ok(()),
    }
}

impl Node {
    /// The node at `path` as `path()` prints it (from the mount root, no
    /// leading `/`); `dir` says whether it names a directory (an object
    /// and a prefix can share a path). None if no node is at that path.
    pub fn parse(path: &str, dir: bool) -> Option<Node> {
        let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some(last) = segments.pop() else { return dir.then_some(Node::Root) };
        let mut node = Node::Root;
        for segment in segments {
            node = node.child_dir(segment)?;
        }
        node.child(last, dir)
    }

    /// The directory (`dir`) or file `name` in this directory, by the
    /// grammar alone; None if it holds no such name.
    pub fn child(&self, name: &str, dir: bool) -> Option<Node> {
        match (dir, self) {
            (true, _) => self.child_dir(name),
            (false, Node::Control) => (name == ERRORS_FILE).then_some(Node::ErrorLog),
            (false, _) => Node::file_in(self, name).ok(),
        }
    }

    /// The directory `name` in this one, as `path()` prints it; None if
    /// this directory holds no directory of that name (by the grammar:
    /// whether Google has it is not asked).
    pub fn child_dir(&self, name: &str) -> Option<Node> {
        let name_ = name.to_string();
        Some(match self {
            Node::Root if name == CONTROL_DIR => Node::Control,
            Node::Root => Node::Project { project: name_ },
            Node::Project { project } => {
                Node::Service { project: project.clone(), service: Service::from_dir_name(name)? }
            }
            Node::Service { project, service: Service::Storage } => {
                Node::Dir { project: project.clone(), bucket: name_, prefix: String::new() }
            }
            Node::Dir { project, bucket, prefix } if name == META_DIR => {
                Node::MetaDir { project: project.clone(), bucket: bucket.clone(), prefix: prefix.clone() }
            }
            Node::Dir { project, bucket, prefix } => {
                Node::Dir { project: project.clone(), bucket: bucket.clone(), prefix: format!("{prefix}{name}/") }
            }
            Node::Service { project, service: Service::BigQuery } => {
                Node::Dataset { project: project.clone(), dataset: name_ }
            }
            Node::Dataset { project, dataset } if name == META_DIR => {
                Node::DatasetMetaDir { project: project.clone(), dataset: dataset.clone() }
            }
            Node::Dataset { project, dataset } => {
                Node::Table { project: project.clone(), dataset: dataset.clone(), table: name_ }
            }
            Node::Service { project, service: Service::PubSub } if name == META_DIR => {
                Node::PubSubMetaDir { project: project.clone() }
            }
            Node::Service { project, service: Service::PubSub } if name == TOPICS_DIR => {
                Node::Topics { project: project.clone() }
            }
            Node::Topics { project } => Node::Topic { project: project.clone(), topic: name_ },
            Node::Topic { project, topic } if name == SUBSCRIPTIONS_DIR => {
                Node::Subscriptions { project: project.clone(), topic: topic.clone() }
            }
            Node::Subscriptions { project, topic } => {
                Node::Subscription { project: project.clone(), topic: topic.clone(), subscription: name_ }
            }
            _ => return None,
        })
    }

    /// The file `name` in `dir`, as `create`, `unlink` and `rename` name
    /// it: an object or a document, or a scratch file (an editor's swap
    /// file, `sed -i`'s temporary file) beside the documents.
    pub fn file_in(dir: &Node, name: &str) -> VfsResult<Node> {
        check_name_length(name)?;
        match dir {
            Node::Table { project, dataset, table } => {
                let (project, dataset, table) = (project.clone(), dataset.clone(), table.clone());
                Ok(match TableFile::from_file_name(name) {
                    Some(file) => Node::TableFile { project, dataset, table, file },
                    None if name.contains('\0') || name == "." || name == ".." => {
                        return Err(VfsError::invalid(format!("{dir}/{name}: not a file name")));
                    }
                    None => Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() },
                })
            }
            Node::DatasetMetaDir { project, dataset } if name == DATASET_META => {
                Ok(Node::DatasetMeta { project: project.clone(), dataset: dataset.clone() })
            }
            Node::DatasetMetaDir { .. } => scratch(dir, name),
            Node::Topic { project, topic } => match TopicFile::from_file_name(name) {
                Some(file) => Ok(Node::TopicFile { project: project.clone(), topic: topic.clone(), file }),
                None => scratch(dir, name),
            },
            Node::Subscription { project, topic, subscription } => match SubscriptionFile::from_file_name(name) {
                Some(file) => Ok(Node::SubscriptionFile {
                    project: project.clone(),
                    topic: topic.clone(),
                    subscription: subscription.clone(),
                    file,
                }),
                None => scratch(dir, name),
            },
            Node::PubSubMetaDir { project } if name == QUOTAS_FILE => Ok(Node::Quotas { project: project.clone() }),
            _ if matches!(dir.service(), Some(Service::BigQuery | Service::PubSub)) => {
                Err(VfsError::not_permitted(format!("{dir}: files cannot be created here")))
            }
            // A name that cannot be a file is refused as such first, here as
            // in a bucket.
            _ => Self::file_in_bucket(dir, name),
        }
    }

    /// A file of a bucket directory or of its `.meta/`.
    fn file_in_bucket(dir: &Node, name: &str) -> VfsResult<Node> {
        check_new_name(dir, name)?;
        match dir {
            Node::Dir { project, bucket, prefix } => {
                Ok(Node::Object { project: project.clone(), bucket: bucket.clone(), name: format!("{prefix}{name}") })
            }
            Node::MetaDir { project, bucket, prefix } if prefix.is_empty() && name == BUCKET_META => {
                Ok(Node::BucketMeta { project: project.clone(), bucket: bucket.clone() })
            }
            Node::MetaDir { project, bucket, prefix } => match name.strip_suffix(META_SUFFIX) {
                Some(object) if unusable_segment(object).is_none() => Ok(Node::ObjectMeta {
                    project: project.clone(),
                    bucket: bucket.clone(),
                    name: format!("{prefix}{object}"),
                }),
                // sed -i's temporary file, an editor's swap file or backup:
                // kept locally (core/edits.rs); renamed onto a document, applied.
                _ => Ok(Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() }),
            },
            _ => Err(VfsError::not_permitted(format!("{dir}: files cannot be created here"))),
        }
    }
}

/// A scratch file `name` in a directory of documents.
fn scratch(dir: &Node, name: &str) -> VfsResult<Node> {
    if name.contains('\0') || name == "." || name == ".." {
        return Err(VfsError::invalid(format!("{dir}/{name}: not a file name")));
    }
    Ok(Node::Scratch { dir: Box::new(dir.clone()), name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node of every kind, with names a user may give.
    fn every_kind() -> Vec<Node> {
        let p = || "my-project".to_string();
        let b = || "a.bucket".to_string();
        let d = || "ds".to_string();
        let t = || "t".to_string();
        let s = || "sub".to_string();
        let table = Node::Table { project: p(), dataset: d(), table: t() };
        let topic = Node::Topic { project: p(), topic: t() };
        let meta = Node::MetaDir { project: p(), bucket: b(), prefix: "x/y/".into() };
        let mut nodes = vec![
            Node::Root,
            Node::Project { project: p() },
            Node::Control,
            Node::ErrorLog,
            Node::Dir { project: p(), bucket: b(), prefix: String::new() },
            Node::Dir { project: p(), bucket: b(), prefix: "x/y z/".into() },
            Node::Object { project: p(), bucket: b(), name: "x/y z/file.txt".into() },
            Node::Object { project: p(), bucket: b(), name: "top".into() },
            meta.clone(),
            Node::ObjectMeta { project: p(), bucket: b(), name: "x/y/file.txt".into() },
            Node::BucketMeta { project: p(), bucket: b() },
            Node::Scratch { dir: Box::new(meta), name: ".file.json.swp".into() },
            Node::Dataset { project: p(), dataset: d() },
            Node::DatasetMetaDir { project: p(), dataset: d() },
            Node::DatasetMeta { project: p(), dataset: d() },
            table.clone(),
            Node::Scratch { dir: Box::new(table), name: "sed1a2b3c".into() },
            Node::PubSubMetaDir { project: p() },
            Node::Quotas { project: p() },
            Node::Topics { project: p() },
            topic.clone(),
            Node::Scratch { dir: Box::new(topic), name: "notes".into() },
            Node::Subscriptions { project: p(), topic: t() },
            Node::Subscription { project: p(), topic: t(), subscription: s() },
        ];
        for service in Service::ALL {
            nodes.push(Node::Service { project: p(), service });
        }
        for file in TableFile::ALL {
            nodes.push(Node::TableFile { project: p(), dataset: d(), table: t(), file });
        }
        for file in TopicFile::ALL {
            nodes.push(Node::TopicFile { project: p(), topic: t(), file });
        }
        for file in SubscriptionFile::ALL {
            nodes.push(Node::SubscriptionFile { project: p(), topic: t(), subscription: s(), file });
        }
        nodes
    }

    #[test]
    fn every_path_parses_back_to_its_node() {
        for node in every_kind() {
            assert_eq!(Node::parse(&node.path(), node.is_dir()), Some(node.clone()), "{}", node.path());
        }
    }

    #[test]
    fn a_path_outside_the_grammar_is_no_node() {
        for (path, dir) in [
            ("p/nothing", true),
            ("p/storage", false),
            ("p/storage/b/.meta/sub", true),
            ("p/bigquery/ds/t/sub", true),
            ("p/pubsub/other", true),
            ("p/pubsub/.meta/other.json", false),
            (".ciofs/other", false),
            ("", false),
        ] {
            assert_eq!(Node::parse(path, dir), None, "{path}");
        }
    }

    fn dir(prefix: &str) -> Node {
        Node::Dir { project: "p".into(), bucket: "b".into(), prefix: prefix.into() }
    }

    #[test]
    fn paths_are_unique_and_readable() {
        assert_eq!(Node::Root.path(), "");
        assert_eq!(dir("").path(), "p/storage/b");
        assert_eq!(dir("a/c/").path(), "p/storage/b/a/c");
        let meta = Node::ObjectMeta { project: "p".into(), bucket: "b".into(), name: "a/x.txt".into() };
        assert_eq!(meta.path(), "p/storage/b/a/.meta/x.txt.json");
        let bucket_meta = Node::BucketMeta { project: "p".into(), bucket: "b".into() };
        assert_eq!(bucket_meta.path(), "p/storage/b/.meta/_bucket.json");
        assert_eq!(bucket_meta.parent().parent(), dir(""));
        assert_eq!(dir("a/c/").parent(), dir("a/"));
        assert_eq!(meta.parent().parent(), dir("a/"));
        assert_eq!(dir("").parent().parent().parent(), Node::Root);
    }

    #[test]
    fn unusable_segments_are_named() {
        assert!(unusable_segment("ok.txt").is_none());
        assert!(unusable_segment("").is_some());
        assert!(unusable_segment("..").is_some());
        assert!(unusable_segment(&"x".repeat(256)).is_some());
        assert!(unusable_segment(".meta").is_some());
        assert!(unusable_segment(&"x".repeat(255)).is_none());
    }

    #[test]
    fn split_name_separates_prefix() {
        assert_eq!(split_name("a/b/c"), ("a/b/", "c"));
        assert_eq!(split_name("c"), ("", "c"));
    }
}
