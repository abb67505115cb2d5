//! One streaming pull, on the crate's `MessageStream`. A task reads the
//! stream and hands each message with its handler over a channel, so that
//! `next(wait)` only ever waits on the channel: giving up on a wait never
//! cancels a read of the stream (which could lose messages it had taken).
//!
//! The crate's handlers carry the service's ack id privately; ciofs hands
//! out its own ack ids (`<n>:<message id>`, unique per subscriber) and
//! keeps the handler of each until it is acked or nacked. Dropping the
//! subscriber closes the stream and then gives back what it held (the
//! crate's shutdown nacks every message still under lease). Acks and nacks
//! are sent by the crate's lease loop, in the background, in batches.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::{mpsc, oneshot};

use super::backend_error;
use super::convert::received_message;
use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::pubsub::{ReceivedMessage, Subscriber};

type Delivery = Result<(Message, Handler), BackendError>;

/// The handlers of the messages a subscriber holds, by ciofs's ack id.
type Held = HashMap<String, Handler>;

pub(super) struct GoogleSubscriber {
    handlers: Held,
    deliveries: mpsc::Receiver<Delivery>,
    /// Tells the reader to close the stream, with the handlers still held.
    close: Option<oneshot::Sender<Held>>,
    /// Where the stream ended, once it has.
    ended: Option<BackendError>,
    /// Ack ids handed out.
    count: u64,
    what: String,
}

impl GoogleSubscriber {
    /// Starts reading `stream` in a task.
    pub(super) fn start(stream: MessageStream, what: String) -> Self {
        // One message waits in the channel at most; the rest wait in the
        // stream, counted by its flow control.
        let (tx, deliveries) = mpsc::channel(1);
        let (close, closed) = oneshot::channel();
        tokio::spawn(read(stream, tx, closed, what.clone()));
        Self { handlers: HashMap::new(), deliveries, close: Some(close), ended: None, count: 0, what }
    }

    fn hand_out(&mut self, message: Message, handler: Handler) -> ReceivedMessage {
        self.count += 1;
        let ack_id = format!("{}:{}", self.count, message.message_id);
        let delivery_attempt = handler.delivery_attempt();
        self.handlers.insert(ack_id.clone(), handler);
        received_message(ack_id, message, delivery_attempt)
    }

    fn ended(&mut self) -> BackendError {
        let what = &self.what;
        self.ended
            .get_or_insert_with(|| BackendError::new(ErrorKind::Unavailable, format!("{what}: the stream ended")))
            .clone()
    }
}

/// Reads the stream until it ends, fails, or the subscriber closes.
async fn read(mut stream: MessageStream, tx: mpsc::Sender<Delivery>, mut close: oneshot::Receiver<Held>, what: String) {
    let held = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            held = &mut close => break held.ok(),
        };
        let delivery = match next {
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => Err(backend_error(&what, &e)),
            None => break None,
        };
        if let Err(e) = &delivery {
            tracing::debug!(what, error = %e, "streaming pull failed");
        }
        let failed = delivery.is_err();
        tokio::select! {
            sent = tx.send(delivery) => if sent.is_err() || failed { break (&mut close).await.ok() },
            held = &mut close => break held.ok(),
        }
    };
    // The gRPC stream is closed before the messages go back: the emulator
    // delivers a nacked message again at once to a stream still open, where
    // nobody would read it (it would then wait for its ack deadline). The
    // shutdown nacks all messages under lease, held ones included.
    let token = stream.shutdown_token();
    drop(stream);
    token.shutdown().await;
    drop(held);
}

#[async_trait]
impl Subscriber for GoogleSubscriber {
    async fn next(&mut self, wait: Duration) -> BackendResult<Option<ReceivedMessage>> {
        if self.ended.is_some() {
            return Err(self.ended());
        }
        match tokio::time::timeout(wait, self.deliveries.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok((message, handler)))) => Ok(Some(self.hand_out(message, handler))),
            Ok(Some(Err(e))) => {
                self.ended = Some(e.clone());
                Err(e)
            }
            Ok(None) => Err(self.ended()),
        }
    }

    /// Unknown ack ids (already acked or nacked, or not this subscriber's)
    /// are ignored, as the service ignores expired ones.
    async fn ack(&mut self, ack_ids: &[String]) -> BackendResult<()> {
        for id in ack_ids {
            match self.handlers.remove(id) {
                Some(handler) => handler.ack(),
                None => tracing::debug!(what = self.what, ack_id = id, "ack of an unknown ack id"),
            }
        }
        Ok(())
    }

    async fn nack(&mut self, ack_ids: &[String]) -> BackendResult<()> {
        for id in ack_ids {
            match self.handlers.remove(id) {
                Some(handler) => handler.nack(),
                None => tracing::debug!(what = self.what, ack_id = id, "nack of an unknown ack id"),
            }
        }
        Ok(())
    }
}

impl Drop for GoogleSubscriber {
    fn drop(&mut self) {
        // The reader closes the stream, then gives back what is held.
        if let Some(close) = self.close.take() {
            let _ = close.send(std::mem::take(&mut self.handlers));
        }
    }
}
