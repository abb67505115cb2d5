//! `.ciofs/errors`: why recent writes were refused or failed. close() can
//! carry only an errno, and some writers never see even that (bash's `echo
//! x > f`, vim's "write error", an NFS client whose upload fails after the
//! write was acknowledged). The reasons are logged and kept here, newest
//! last, so that a user can read them from inside the mount, one line each
//! with control characters escaped.

use ciofs_backends::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

use crate::core::document::rfc3339;
use crate::core::printable::printable;

/// The most lines kept; older ones are dropped.
const MAX_LINES: usize = 100;
/// The longest message kept on one line.
const MAX_LINE: usize = 2000;

#[derive(Default)]
pub struct ErrorLog {
    lines: Mutex<(VecDeque<String>, Option<SystemTime>)>,
}

impl ErrorLog {
    /// Records that writing `path` failed with `message` (and logs it).
    pub fn record(&self, path: &str, errno: i32, message: &str) {
        tracing::warn!(path, errno, message, "write refused or failed");
        let now = SystemTime::now();
        let mut message: String = message.replace('\n', " ");
        if message.len() > MAX_LINE {
            let cut = (0..=MAX_LINE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            message.truncate(cut);
            message.push_str("...");
        }
        // Names come from outside: no escape sequence reaches a terminal.
        let (path, message) = (printable(path), printable(&message));
        let line = format!("{} {path}: {message} ({})\n", rfc3339(now), errno_name(errno));
        let mut lines = lock(&self.lines);
        if lines.0.len() == MAX_LINES {
            lines.0.pop_front();
        }
        lines.0.push_back(line);
        lines.1 = Some(now);
    }

    /// The file's content and its modification time (the last error's).
    pub fn render(&self) -> (Bytes, SystemTime) {
        let lines = lock(&self.lines);
        let text: String = lines.0.iter().map(String::as_str).collect();
        (Bytes::from(text), lines.1.unwrap_or(SystemTime::UNIX_EPOCH))
    }
}

/// The symbolic name of the errnos ciofs answers with.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EINVAL => "EINVAL",
        libc::EIO => "EIO",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::EBUSY => "EBUSY",
        libc::EFBIG => "EFBIG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_on_one_line_each() {
        let log = ErrorLog::default();
        assert_eq!(log.render().0.len(), 0);
        for i in 0..(MAX_LINES + 5) {
            log.record(&format!("/p/f{i}"), libc::EINVAL, "bad\nthing");
        }
        let (text, mtime) = log.render();
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert_eq!(text.lines().count(), MAX_LINES);
        assert!(text.lines().next().unwrap().contains("/p/f5: bad thing (EINVAL)"));
        assert!(text.ends_with("/p/f104: bad thing (EINVAL)\n"));
        assert!(mtime > SystemTime::UNIX_EPOCH);
    }

    /// Names come from outside (an object's name, an archive's entry):
    /// `cat .ciofs/errors` must never send a terminal an escape sequence,
    /// nor a newline that fakes a line.
    #[test]
    fn control_characters_of_names_and_messages_are_escaped() {
        let log = ErrorLog::default();
        log.record("/p/storage/b/\x1b]0;title\x07x\ny", libc::EINVAL, "object `\u{9b}2J\u{202e}` refused");
        let text = String::from_utf8(log.render().0.to_vec()).unwrap();
        let controls: Vec<char> =
            text.trim_end_matches('\n').chars().filter(|c| c.is_control() || *c == '\u{202e}').collect();
        assert_eq!(controls, Vec::<char>::new(), "{text:?}");
        assert!(
            text.contains(r"/p/storage/b/\u{1b}]0;title\u{7}x\u{a}y: object `\u{9b}2J\u{202e}` refused (EINVAL)"),
            "{text}"
        );
    }
}
