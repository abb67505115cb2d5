//! A project as a tar archive without a mount: `ciofs export` walks the same
//! `Vfs` the frontends serve, so its archive holds what `tar c` of the mount
//! holds (the same paths, contents, modes and times, in listing order).

mod export;

pub use export::{ExportOptions, ExportSummary, export_project};
