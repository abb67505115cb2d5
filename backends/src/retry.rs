//! Bounded waits on Google: every call gets a timeout per attempt and a
//! bounded number of attempts with exponential backoff. A stalled request
//! would otherwise park a FUSE worker thread forever.

use std::future::Future;
use std::time::Duration;

use crate::error::{BackendError, BackendResult, ErrorKind};

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one attempt may take before it counts as unavailable.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 5 attempts: waits of 0.1 + 0.2 + 0.4 + 0.8 s between them, so an
        // unreachable service answers EIO within about two seconds plus the
        // connect timeouts.
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails with a permanent error, or the
    /// attempts are spent. `what` names the call in logs.
    pub async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> BackendResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.attempt_timeout, call()).await {
                Ok(result) => result,
                Err(_) => Err(BackendError::new(
                    ErrorKind::Unavailable,
                    format!("{what}: no answer within {:?}", self.attempt_timeout),
                )),
            };
            match result {
                Err(e) if e.kind.is_transient() && attempt < self.attempts => {
                    tracing::debug!(what, attempt, error = %e, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
                Err(e) if e.kind.is_transient() => {
                    tracing::warn!(what, attempts = attempt, error = %e, "giving up");
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            attempt_timeout: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = fast()
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(BackendError::new(ErrorKind::Unavailable, "down"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let result: BackendResult<()> = fast()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(BackendError::new(ErrorKind::Unavailable, "down"))
            })
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::Unavailable));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: BackendResult<()> = fast()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(BackendError::not_found("x"))
            })
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::NotFound));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stalled_attempt_times_out() {
        let result: BackendResult<()> = fast()
            .run("test", || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::Unavailable));
    }
}
