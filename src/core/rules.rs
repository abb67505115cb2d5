//! Rules that Google's services share, and how ciofs reports what breaks
//! them: every check collects its problems and `refuse_if_any` turns them
//! into one EINVAL, joined by "; " (at most `MAX_REPORTED`, then "and N
//! more"), so a user fixes a file in one round. Google's label rules are the
//! same for BigQuery and Pub/Sub (and the rest of Google Cloud).

use std::collections::BTreeMap;

use ciofs_frontends::VfsError;

const MAX_LABELS: usize = 64;
const MAX_LABEL_CHARS: usize = 63;
/// More problems than this in one document are summarized as "and N more".
pub const MAX_REPORTED: usize = 10;

/// Ok when nothing was found, else one EINVAL listing the problems.
pub fn refuse_if_any(problems: Vec<String>) -> Result<(), VfsError> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = problems.iter().take(MAX_REPORTED).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > MAX_REPORTED {
        message.push_str(&format!("; and {} more", problems.len() - MAX_REPORTED));
    }
    Err(VfsError::invalid(message))
}

/// Google's label rules: at most 64 labels; keys 1–63 characters starting
/// with a lowercase letter; values 0–63 characters; lowercase letters,
/// digits, `_` and `-` only. `service` (BigQuery, Pub/Sub) names who
/// refuses in the message. International letters count as lowercase
/// letters when they have no case (Google's pattern is `[\p{Ll}\p{Lo}]`
/// first, `[\p{Ll}\p{Lo}\p{N}_-]` after); an uppercase letter never does.
pub fn label_problems(service: &str, labels: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    if labels.len() > MAX_LABELS {
        problems.push(format!("labels: {} labels, {service} allows at most {MAX_LABELS}", labels.len()));
    }
    for (key, value) in labels {
        let key_chars = key.chars().count();
        if key_chars == 0 {
            problems.push("labels: a label key cannot be empty".into());
            continue;
        }
        if key_chars > MAX_LABEL_CHARS {
            problems.push(format!(
                "label `{key}`: the key is {key_chars} characters long, at most {MAX_LABEL_CHARS} allowed"
            ));
        }
        if !key.chars().next().is_some_and(label_letter) {
            problems.push(format!("label `{key}`: a key must start with a lowercase letter"));
        }
        // The first character was judged just above.
        if let Some(bad) = key.chars().skip(1).find(|&c| !label_char(c)) {
            problems.push(format!("label `{key}`: {bad:?} in the key ({LABEL_CHARS})"));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_LABEL_CHARS {
            problems.push(format!(
                "label `{key}`: the value is {value_chars} characters long, at most {MAX_LABEL_CHARS} allowed"
            ));
        }
        if let Some(bad) = value.chars().find(|&c| !label_char(c)) {
            problems.push(format!("label `{key}`: {bad:?} in the value {value:?} ({LABEL_CHARS})"));
        }
    }
}

const LABEL_CHARS: &str = "label keys and values may contain only lowercase letters, digits, `_` and `-`";

/// A letter without case (Chinese, Arabic...) or a lowercase one.
fn label_letter(c: char) -> bool {
    c.is_lowercase() || (!c.is_ascii() && c.is_alphabetic() && !c.is_uppercase())
}

fn label_char(c: char) -> bool {
    label_letter(c) || c.is_numeric() || c == '_' || c == '-'
}
