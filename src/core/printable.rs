//! Text from outside (object and entry names, messages that quote them)
//! made safe to show on a terminal: a name may hold an escape sequence that
//! would retitle the window, clear the screen or fake output, or a newline
//! that fakes a line. One function escapes them wherever such text is
//! shown: the plan of `ciofs import`, its errors, `.ciofs/errors`.

use std::borrow::Cow;

/// `text` with every character a terminal acts on written as `\u{XX}`
/// (its code point in hex, as Rust's `{:?}` writes it): C0 controls,
/// newline and tab included, DEL, C1 controls (U+0080 to U+009F; U+009B is
/// a CSI) and the bidirectional controls that reorder what is shown.
/// Everything else, backslashes included, is unchanged.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acted_on) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acted_on(c) {
            escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn acted_on(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("plain/näme ü.txt"), Cow::Borrowed("plain/näme ü.txt")));
        assert_eq!(printable("a\x1b[2Jb\x07"), r"a\u{1b}[2Jb\u{7}");
        assert_eq!(printable("x\ny\tz\r\x7f"), r"x\u{a}y\u{9}z\u{d}\u{7f}");
        assert_eq!(printable("\u{9b}31m \u{202e}fdp.exe \u{2066}"), r"\u{9b}31m \u{202e}fdp.exe \u{2066}");
        assert_eq!(printable(r"back\slash"), r"back\slash");
    }
}
