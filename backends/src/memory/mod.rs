//! In-memory implementations of the service traits, for unit tests of the
//! core's logic: `MemoryGcs` (Cloud Storage), `MemoryBigQuery` and `MemoryPubSub`. They
//! count calls so tests can check how many were made, can be told to fail
//! the next calls of a kind, and answer as the real services do (NotFound,
//! AlreadyExists, preconditions), including where the emulators do not.

pub mod bigquery;
mod gcs;
pub mod pubsub;

pub use bigquery::{BigQueryCallCounts, BigQueryOp, MemoryBigQuery};
pub use gcs::{CallCounts, MemoryGcs, Op};
pub use pubsub::{MemoryPubSub, PubSubCallCounts, PubSubOp};
