//! What every document ciofs shows has in common: the `"version": "1"`
//! header, pretty JSON with a final newline, RFC 3339 times, and (`input`)
//! how a document a user wrote is read back.

pub mod input;

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub const VERSION: &str = "1";

/// Pretty JSON with a final newline, as a text editor would save it.
pub fn render(document: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(document).unwrap_or_else(|e| {
        // Serializing these plain structs cannot fail; keep serving anyway.
        tracing::error!(error = %e, "rendering a document");
        b"{}".to_vec()
    });
    out.push(b'\n');
    out
}

pub fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
