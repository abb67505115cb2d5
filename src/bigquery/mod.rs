//! BigQuery as files: its tree (`tree`: datasets and tables as directories,
//! `mkdir`/`rmdir`, `schema.json` and `config.json` applied, `_status.json`
//! generated), its documents (`documents`) and the rules a change must
//! follow before anything is sent (`rules`).
//!
//! It uses `core` and nothing else of the crate.

pub mod documents;
pub mod rules;
pub mod tree;

pub use self::tree::BigQueryTree;
