//! What every service slice may use, and nothing service-specific decides:
//! the path grammar (`node`), inode numbers (`inodes`), the metadata cache
//! (`cache`), creations that wait for their settings (`pending`), the
//! journal of local edits (`edit_journal`), macOS's metadata files kept
//! local (`macos`), `.ciofs/errors` (`error_log`),
//! the one errno table (`errors`), label rules shared by the documents
//! (`rules`), paged listings (`pages`), and the small helpers for names
//! shown on a terminal (`printable`) and private state files
//! (`private_files`).
//!
//! Nothing here imports a service slice or the namespace.

pub mod cache;
pub mod context;
pub mod document;
pub mod edit_journal;
pub mod edits;
pub mod error_log;
pub mod errors;
pub mod inodes;
pub mod macos;
pub mod node;
pub mod pages;
pub mod pending;
pub mod printable;
pub mod private_files;
pub mod rules;
pub mod slice;
