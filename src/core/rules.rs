//! What is wrong with a document a user wrote, or with the change it asks
//! for, and the rules that Google's services share. Every check collects
//! its `Problems` (each with the field it is about and a sentence for the
//! user) so that a user fixes a file in one round; `core::errors` turns them
//! into one EINVAL (at most `MAX_REPORTED`, then "and N more"). Google's
//! label rules are the same for BigQuery and Pub/Sub (and the rest of
//! Google Cloud).

use std::collections::BTreeMap;
use std::fmt;

const MAX_LABELS: usize = 64;
const MAX_LABEL_CHARS: usize = 63;
/// More problems than this in one document are summarized as "and N more".
pub const MAX_REPORTED: usize = 10;

/// One thing wrong with a document, or with the change it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The setting it is about, as a path into the document (`labels.env`,
    /// `time_partitioning.type`, a column as `a.b`); empty for the document
    /// as a whole.
    pub field: String,
    /// What is wrong, for a person: a sentence that names the setting.
    pub message: String,
}

/// Everything wrong with one document, in the order found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// One problem: a document refused for one reason.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut problems = Self::default();
        problems.add(field, message);
        problems
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into() });
    }

    pub fn list(&self) -> &[Problem] {
        &self.0
    }

    /// What the user is told (see `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// The problems' sentences joined by "; ", at most `MAX_REPORTED`.
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.0.iter().take(MAX_REPORTED).map(|p| p.message.as_str()).collect();
        f.write_str(&shown.join("; "))?;
        if self.0.len() > MAX_REPORTED {
            write!(f, "; and {} more", self.0.len() - MAX_REPORTED)?;
        }
        Ok(())
    }
}

/// Ok when nothing was found.
pub fn refuse_if_any(problems: Problems) -> Result<(), Problems> {
    match problems.0.is_empty() {
        true => Ok(()),
        false => Err(problems),
    }
}

/// Google's label rules: at most 64 labels; keys 1–63 characters starting
/// with a lowercase letter; values 0–63 characters; lowercase letters,
/// digits, `_` and `-` only. `service` (BigQuery, Pub/Sub) names who
/// refuses in the message. International letters count as lowercase
/// letters when they have no case (Google's pattern is `[\p{Ll}\p{Lo}]`
/// first, `[\p{Ll}\p{Lo}\p{N}_-]` after); an uppercase letter never does.
pub fn label_problems(service: &str, labels: &BTreeMap<String, String>, problems: &mut Problems) {
    if labels.len() > MAX_LABELS {
        problems.add("labels", format!("labels: {} labels, {service} allows at most {MAX_LABELS}", labels.len()));
    }
    for (key, value) in labels {
        let key_chars = key.chars().count();
        if key_chars == 0 {
            problems.add("labels", "labels: a label key cannot be empty");
            continue;
        }
        if key_chars > MAX_LABEL_CHARS {
            problems.add(
                format!("labels.{key}"),
                format!("label `{key}`: the key is {key_chars} characters long, at most {MAX_LABEL_CHARS} allowed"),
            );
        }
        if !key.chars().next().is_some_and(label_letter) {
            problems.add(format!("labels.{key}"), format!("label `{key}`: a key must start with a lowercase letter"));
        }
        // The first character was judged just above.
        if let Some(bad) = key.chars().skip(1).find(|&c| !label_char(c)) {
            problems.add(format!("labels.{key}"), format!("label `{key}`: {bad:?} in the key ({LABEL_CHARS})"));
        }
        let value_chars = value.chars().count();
        if value_chars > MAX_LABEL_CHARS {
            problems.add(
                format!("labels.{key}"),
                format!("label `{key}`: the value is {value_chars} characters long, at most {MAX_LABEL_CHARS} allowed"),
            );
        }
        if let Some(bad) = value.chars().find(|&c| !label_char(c)) {
            problems
                .add(format!("labels.{key}"), format!("label `{key}`: {bad:?} in the value {value:?} ({LABEL_CHARS})"));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each problem names the setting it is about, as a path into the
    /// document, beside the sentence the user reads.
    #[test]
    fn problems_carry_their_field_paths() {
        let labels = BTreeMap::from([("Env".to_string(), "x".to_string()), (String::new(), String::new())]);
        let mut problems = Problems::default();
        label_problems("BigQuery", &labels, &mut problems);
        let fields: Vec<&str> = problems.list().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["labels", "labels.Env"]);
        assert!(problems.list()[1].message.starts_with("label `Env`: a key must start with a lowercase letter"));
        assert_eq!(refuse_if_any(Problems::default()), Ok(()));
    }
}
