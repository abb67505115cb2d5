//! Publishing through `_message` when Pub/Sub's answer is lost: the
//! publish took effect and ciofs was told it failed (`Faulty`'s
//! apply-then-fail). The message must be in the topic once: not twice
//! because ciofs tried again, and the failure reported where there is a
//! close to report it to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ciofs::namespace::{Namespace, Options, Services};
use ciofs_backends::fault::{Call, Fault, Faulty};
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub};
use ciofs_backends::pubsub::{SubscriptionSettings, TopicSettings};
use ciofs_frontends::{Ino, OpenFlags, ROOT_INO, Vfs};

struct Fixture {
    pubsub: Arc<Faulty<MemoryPubSub>>,
    ns: Namespace,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let memory = MemoryPubSub::new();
    memory.put_topic("p", "t", TopicSettings::default());
    memory.put_subscription("p", "s", "t", SubscriptionSettings::default());
    let pubsub = Arc::new(Faulty::new(Arc::new(memory)));
    let dir = tempfile::tempdir().unwrap();
    let services =
        Services { gcs: Arc::new(MemoryGcs::new()), bigquery: Arc::new(MemoryBigQuery::new()), pubsub: pubsub.clone() };
    let options = Options { staging_dir: dir.path().join("staging"), ..Options::default() };
    let ns = Namespace::new(vec!["p".to_string()], services, options);
    Fixture { pubsub, ns, _dir: dir }
}

impl Fixture {
    async fn message_file(&self) -> Ino {
        let mut ino = ROOT_INO;
        for part in ["p", "pubsub", "topics", "t", "_message"] {
            ino = self.ns.lookup(ino, part).await.unwrap_or_else(|e| panic!("{part}: {e}")).ino;
        }
        ino
    }

    fn published(&self) -> Vec<Bytes> {
        self.pubsub.inner().backlog("p", "s").into_iter().map(|m| m.data).collect()
    }
}

#[tokio::test]
async fn a_message_whose_publish_answer_is_lost_fails_close_and_is_published_once() {
    let f = fixture();
    let ino = f.message_file().await;
    f.pubsub.arm(Call::Publish, 1, Fault::ApplyThenFail);
    let opened = f.ns.open(ino, OpenFlags { write: true, truncate: true, append: false }).await.unwrap();
    f.ns.write(ino, Some(opened.fh), 0, b"hello").await.unwrap();
    let closed = f.ns.flush(ino, opened.fh).await;
    assert!(closed.is_err(), "close() reports that the outcome is not known");
    f.ns.release(ino, opened.fh).await.unwrap();
    f.ns.commit_idle(Duration::ZERO).await;
    f.ns.commit_idle(Duration::ZERO).await;
    assert_eq!(f.published(), vec![Bytes::from("hello")], "published once, not again behind the user's back");
    assert_eq!(f.pubsub.calls(Call::Publish), 1);
}

/// Over NFS there is no close: a failed publish is tried again at the next
/// idle commit. When the failure was a lost answer, that second try
/// publishes the message a second time.
#[tokio::test]
async fn an_nfs_message_whose_publish_answer_is_lost_is_not_published_twice() {
    let f = fixture();
    let ino = f.message_file().await;
    f.pubsub.arm(Call::Publish, 1, Fault::ApplyThenFail);
    f.ns.write(ino, None, 0, b"hello").await.unwrap();
    for _ in 0..3 {
        f.ns.commit_idle(Duration::ZERO).await;
    }
    assert_eq!(f.published(), vec![Bytes::from("hello")]);
}
