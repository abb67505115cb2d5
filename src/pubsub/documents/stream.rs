//! The lines `_stream` shows, one per message, in two formats.
//!
//! Text (the seed's): `[<publish time, RFC 3339>] <message id>: <data>\n`.
//! The data is shown as it is when it is UTF-8 text without control
//! characters other than tab, so that one message is always one line; one
//! trailing newline is not shown (what `echo hello > _message` published
//! reads `hello`; `_stream.jsonl` has the exact bytes). Anything else
//! (binary, a newline inside, text that itself starts with `base64:`) is
//! shown as `base64:` and the standard base64 of its bytes.
//!
//! JSON lines: one compact object per message with every field, the data
//! both as text (null when it is not UTF-8) and in base64.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ciofs_backends::pubsub::ReceivedMessage;
use serde::Serialize;

use crate::core::document::rfc3339;

const BASE64_PREFIX: &str = "base64:";

/// `[2026-01-17T12:00:00Z] msg-12345: hello world\n`. The caller passes the
/// time it received the message when the service gave no publish time.
pub fn format_stream_line(publish_time: SystemTime, message_id: &str, data: &[u8]) -> Vec<u8> {
    let shown = match std::str::from_utf8(data.strip_suffix(b"\n").unwrap_or(data)) {
        Ok(text) if is_one_line(text) => text.to_string(),
        _ => format!("{BASE64_PREFIX}{}", base64(data)),
    };
    format!("[{}] {message_id}: {shown}\n", rfc3339(publish_time)).into_bytes()
}

/// Text that reads back as itself on one line: no control character but
/// tab, and not mistakable for the base64 form.
fn is_one_line(text: &str) -> bool {
    !text.starts_with(BASE64_PREFIX) && !text.chars().any(|c| c.is_control() && c != '\t')
}

#[derive(Serialize)]
struct JsonLine<'a> {
    message_id: &'a str,
    publish_time: Option<String>,
    data: Option<&'a str>,
    data_base64: String,
    attributes: &'a BTreeMap<String, String>,
    ordering_key: &'a str,
    delivery_attempt: Option<i32>,
}

/// One message as a line of JSON (compact, newline-terminated).
pub fn format_stream_json_line(message: &ReceivedMessage) -> Vec<u8> {
    let line = JsonLine {
        message_id: &message.message_id,
        publish_time: message.publish_time.map(rfc3339),
        data: std::str::from_utf8(&message.data).ok(),
        data_base64: base64(&message.data),
        attributes: &message.attributes,
        ordering_key: &message.ordering_key,
        delivery_attempt: message.delivery_attempt,
    };
    let mut out = serde_json::to_vec(&line).unwrap_or_else(|e| {
        // Serializing strings and maps cannot fail; keep the stream going.
        tracing::error!(error = %e, "rendering a stream line");
        b"{}".to_vec()
    });
    out.push(b'\n');
    out
}

/// Standard base64 (RFC 4648 section 4) with padding.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
