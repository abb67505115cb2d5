//! ciofs's side that talks to Google: one small trait per service, the
//! implementation on Google's API, an in-memory implementation for unit
//! tests, a wrapper that injects failures into any of them (`fault`), and
//! one that records and logs every call to Google (`observed`).
//! Nothing here knows about files or frontends.

pub mod bigquery;
mod endpoint;
pub mod error;
pub mod fault;
mod gax_error;
pub mod gcs;
pub mod memory;
pub mod observed;
pub mod pubsub;
mod rest;
pub mod retry;
pub mod sync;

pub use error::{BackendError, BackendResult, ErrorKind};
