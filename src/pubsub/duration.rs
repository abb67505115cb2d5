//! Durations as protobuf's JSON writes them (`"600s"`, `"1.5s"`), in the
//! documents and in the rules' messages.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A duration as protobuf's JSON writes it: `"600s"`, `"1.5s"`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", duration.as_secs());
    }
    let fraction = format!("{nanos:09}");
    format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
}

/// `"86400s"` or `"1.5s"` (at most 9 fractional digits); None otherwise.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    let seconds = whole.parse::<u64>().ok()?;
    let nanos = format!("{fraction:0<9}").parse::<u32>().ok()?;
    Some(Duration::new(seconds, nanos))
}

pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_duration(&text)
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{text:?} is not a duration in seconds like \"86400s\" or \"1.5s\"")))
}

pub fn present_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Duration>>, D::Error> {
    optional_duration(d).map(Some)
}
