//! ciofs: a Google Cloud project as a filesystem.
//!
//! `namespace` implements the frontends' `Vfs` and dispatches to one slice
//! per service (`storage`, `bigquery`, `pubsub`), which use only `core`;
//! `archive` exports and imports over the `Vfs`; `cli`, `config` (the
//! configuration file), `mount_options` (mount(8)'s forms), `mount_point`, `shutdown`,
//! `operations` and `daemon` run it all, and `demo` serves it from memory.
//! `fuse_helper` is the privileged half of an unprivileged mount: it hands
//! a mounted /dev/fuse over as `fuse_handoff` says.
//! docs/ARCHITECTURE.md draws the layers. `fuzzing` (built only by
//! cargo-fuzz) is what fuzz/ runs.

pub mod archive;
pub mod bigquery;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod fuse_handoff;
pub mod fuse_helper;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod mount_options;
pub mod mount_point;
pub mod namespace;
pub mod operations;
pub mod pubsub;
pub mod shutdown;
pub mod storage;
