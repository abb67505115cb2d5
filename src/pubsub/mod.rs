//! Pub/Sub as files: its tree (`tree`: topics and subscriptions as
//! directories, `mkdir`/`rmdir`, config.json applied, `_message` published),
//! its documents and their rules (`documents`, `rules`, `duration`), and
//! `_stream`: read through a FUSE handle (`stream`) or, without one, through
//! the log an NFS client follows (`stream_log`).
//!
//! It uses `core` and nothing else of the crate.

pub mod documents;
pub mod duration;
pub mod rules;
pub mod stream;
pub mod stream_log;
pub mod tree;

pub use self::tree::PubSubTree;
