//! Cloud Storage as files: its tree (`tree`: buckets and prefixes as
//! directories, objects as files, lookups and listings), paged listings
//! (`listing`), object reads (`reader`, through the content cache of
//! `block_cache`; `walks` fetches the next small files of a directory read
//! in order), the writer of a file (`write`; the
//! writes NFS sends without an open are `nfs_writes` and `unattended`),
//! rename and removal (`mutate`), buckets made by `mkdir` (`buckets`), and
//! the `.meta/` documents (`documents`; `metadata` applies an object's,
//! `object_meta` keeps it for the object's next upload), and `--watch`:
//! the subscription to Cloud Storage's Pub/Sub notifications (`watch`),
//! what one says changed (`notifications`) and what that invalidates
//! (`invalidation`).
//!
//! It uses `core` and nothing else of the crate.

pub mod block_cache;
pub mod buckets;
pub mod documents;
pub mod files;
pub mod invalidation;
pub mod listing;
pub mod metadata;
pub mod mutate;
pub mod nfs_writes;
pub mod notifications;
pub mod object_meta;
pub mod reader;
pub mod tree;
pub mod unattended;
pub mod walks;
pub mod watch;
pub mod write;
pub mod writer;

pub use self::tree::StorageTree;
