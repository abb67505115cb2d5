//! ciofs: a Google Cloud project as a filesystem.
//!
//! `namespace` implements the frontends' `Vfs` on top of the backends;
//! `documents` renders the JSON formats; `errors` maps Google's answers to
//! errnos; `cli` and `daemon` run it all; `printable` escapes names for a
//! terminal. `fuzzing` (built only by cargo-fuzz) is what fuzz/ runs.

pub mod archive;
pub mod bigquery;
pub mod cli;
pub mod core;
pub mod daemon;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod namespace;
pub mod pubsub;
pub mod storage;
