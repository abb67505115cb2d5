//! A bounded shutdown. At SIGTERM, SIGINT or `ciofs unmount`, a mount stops
//! taking changes (EROFS, but for writes through handles already open),
//! gives the files being written until a deadline (`--shutdown-timeout`)
//! to be uploaded, unmounts, and settles what waits for no close. What
//! could not be uploaded by then is kept in the state directory, where the
//! next start finds and uploads it, and the process ends with an error
//! naming each file. A second signal ends the wait at once.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use crate::namespace::Namespace;

/// How often the wait for unsaved files looks again.
const POLL: Duration = Duration::from_millis(50);

/// What settling gets past the deadline: a wait for uploads cut short
/// used the deadline up, and a bucket or dataset `mkdir` made is one call.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(2);

/// Why a wait for uploads ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// Nothing is left unsaved.
    Saved,
    /// The deadline passed first.
    Deadline,
    /// A second signal came first.
    Interrupted,
}

/// Waits until no file being written is unsaved, the deadline passes, or
/// `interrupt` resolves.
pub async fn wait_for_unsaved(namespace: &Namespace, deadline: Instant, interrupt: impl Future) -> Waited {
    let saved = async {
        while namespace.has_unsaved() {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        () = saved => Waited::Saved,
        () = tokio::time::sleep_until(deadline) => Waited::Deadline,
        _ = interrupt => Waited::Interrupted,
    }
}

/// After the frontend stopped: what was written without a close and the
/// resources that wait for their settings go up (`Namespace::settle`), by
/// the deadline or until `interrupt`. What is unsaved then is kept for the
/// next start; the error names each file, and where it is.
pub async fn finish(namespace: &Namespace, deadline: Instant, interrupt: impl Future) -> Result<(), String> {
    let until = deadline.max(Instant::now() + SETTLE_AT_LEAST);
    let unsettled = tokio::select! {
        failed = namespace.settle() => failed.iter().map(|(path, error)| format!("{path} ({error})")).collect(),
        () = tokio::time::sleep_until(until) => {
            tracing::warn!("the shutdown's deadline passed");
            vec!["what waited for its settings or a BigQuery edit (cut short at the deadline)".to_string()]
        }
        _ = interrupt => {
            tracing::warn!("a second signal: not waiting for uploads");
            vec!["what waited for its settings or a BigQuery edit (cut short by a signal)".to_string()]
        }
    };
    let kept = namespace.keep_unsaved();
    if kept.is_empty() && unsettled.is_empty() {
        return Ok(());
    }
    if kept.is_empty() {
        return Err(format!("not created or applied before the shutdown: {}", unsettled.join(", ")));
    }
    let mut named = Vec::new();
    for (file, outcome) in &kept {
        match outcome {
            Ok(place) => {
                tracing::error!(file, kept = %place, "not uploaded before the shutdown; the next start uploads it");
                named.push(format!("{file} (kept in {place})"));
            }
            Err(why) => {
                tracing::error!(file, error = %why, "not uploaded before the shutdown, and not kept");
                named.push(format!("{file} (lost: {why})"));
            }
        }
    }
    Err(format!(
        "{} file(s) were not uploaded before the shutdown; the next start with this state directory uploads \
         what was kept: {}",
        kept.len(),
        named.join(", ")
    ) + &unsettled.iter().map(|what| format!("; not created or applied: {what}")).collect::<String>())
}

/// SIGTERM, SIGINT and SIGHUP, caught from when this is made: one that
/// comes before anything waits for it is kept for `recv`, rather than
/// ending the process by its default action (a mount told to stop just as
/// it became ready would end without its drain).
pub struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    pub fn install() -> Result<Self, String> {
        let catch = |kind: SignalKind| signal(kind).map_err(|e| format!("cannot catch signals: {e}"));
        Ok(Self {
            term: catch(SignalKind::terminate())?,
            interrupt: catch(SignalKind::interrupt())?,
            hangup: catch(SignalKind::hangup())?,
        })
    }

    /// The next of them.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
