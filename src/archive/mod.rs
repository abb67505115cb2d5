//! A project as a tar archive without a mount: `ciofs export` walks the same
//! `Vfs` the frontends serve, so its archive holds what `tar c` of the mount
//! holds (the same paths, contents, modes and times, in listing order), and
//! `ciofs import` plans and applies an archive through it.

mod export;
pub mod import;

pub use export::{ExportOptions, ExportSummary, export_project};
