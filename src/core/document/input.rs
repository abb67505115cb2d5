//! Reading back a document a user wrote: strict JSON whose errors name the
//! line and column as an editor shows them, the `version`/`type` header
//! check, and the pieces of the top-level merge (a key absent keeps the
//! current value, `null` clears it) that every editable `config.json` uses.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::VERSION;
use crate::core::rules::Problems;

/// Deserializes a written document; any error is a problem naming the
/// file, the line and the column, as an editor shows them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T, Problems> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e, file))
}

fn json_error(error: &serde_json::Error, file: &str) -> Problems {
    // serde_json's Display appends " at line L column C"; say it our way.
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    let place = format!("line {}, column {}", error.line(), error.column());
    let message = if error.is_syntax() || error.is_eof() {
        format!("{file}: invalid JSON at {place}: {reason}")
    } else {
        format!("{file}: at {place}: {reason}")
    };
    Problems::one("", message)
}

/// `version` and `type` may be left out, but when present they must be
/// this ciofs's version and this file's type.
pub fn check_header(file: &str, version: Option<&str>, kind: Option<&str>, expected: &str) -> Result<(), Problems> {
    if let Some(version) = version.filter(|&v| v != VERSION) {
        let message = format!("{file}: version {version:?} is not supported (this ciofs reads version \"{VERSION}\")");
        return Err(Problems::one("version", message));
    }
    if let Some(kind) = kind.filter(|&k| k != expected) {
        let message = format!("{file}: type {kind:?} does not belong here (expected \"{expected}\")");
        return Err(Problems::one("type", message));
    }
    Ok(())
}

/// A key that is present, null or not: `Some(value)`. With
/// `#[serde(default)]`, an absent key stays `None`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The document's value when the key was there, else the current one.
pub fn pick<T: Clone>(given: Option<T>, current: &T) -> T {
    given.unwrap_or_else(|| current.clone())
}
