//! Bounded waits on Google, bounded by progress rather than by size. An
//! attempt fails once it has made no progress for `stall_timeout` (an
//! upload's progress is its body being read, or its answer); a failed
//! attempt is tried again with jittered exponential backoff, but no new
//! attempt starts once `window` has passed since the failures began. So a
//! call that stalls fails within `window + stall_timeout` of the stall,
//! whatever it sends, and one that keeps moving at any rate is never cut.
//! A stalled request would otherwise park a FUSE worker thread, and the
//! user cannot interrupt it (fuser answers FUSE INTERRUPT with ENOSYS).
//!
//! Each retry of a call that `observed.rs` watches is told to it (the call
//! is known through its task-local), so that retries are counted per call
//! and its one API log line says how many attempts it took. The failures
//! retried are logged here, at debug, not in the API log.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

use crate::error::{BackendError, BackendResult, ErrorKind};
use crate::observed;
use crate::sync::lock;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long an attempt may make no progress before it counts as
    /// unavailable. For a call that reports no progress (metadata, listings,
    /// the start of a read) this is the attempt's timeout; the bytes of a
    /// read fail after this long without a chunk (the HTTP client's read
    /// timeout, set to it).
    pub stall_timeout: Duration,
    /// No attempt starts once this long has passed since the failures
    /// began: since the first failed attempt began, or since it last made
    /// progress (an upload that moved for an hour and then broke still gets
    /// its retries).
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Up to 5 attempts with waits of about 0.1, 0.2, 0.4 and 0.8 s
        // between them, so an unreachable service answers EIO within about
        // two seconds plus the connect timeouts; a service that takes
        // requests and never answers fails within 60 + 30 s.
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(30),
            window: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails with a permanent error, or no
    /// attempt may start any more. Each attempt fails after
    /// `stall_timeout`. `what` names the call in logs.
    pub async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> BackendResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        self.run_watched(what, |_| call()).await
    }

    /// As `run`, for a call of a Google client crate: its error becomes
    /// ours (`ClientError`, with `what`) before the policy looks at it, so
    /// that the transient ones are retried.
    pub(crate) async fn call<T, E, F, Fut>(&self, what: &str, mut call: F) -> BackendResult<T>
    where
        E: ClientError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(what, || {
            let attempt = call();
            async move { attempt.await.map_err(|e| e.into_backend_error(what)) }
        })
        .await
    }

    /// As `run`, for a call that reports its progress: each attempt gets a
    /// new `Progress` and fails once it has not moved for `stall_timeout`.
    pub(crate) async fn run_watched<T, F, Fut>(&self, what: &str, mut call: F) -> BackendResult<T>
    where
        F: FnMut(Progress) -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        let mut attempt = 1;
        // When the failures began: the window runs from here.
        let mut failing_since = None;
        loop {
            let progress = Progress::new();
            let result = self.unless_stalled(what, &progress, call(progress.clone())).await;
            let error = match result {
                Err(e) if e.kind.is_transient() => e,
                other => return other,
            };
            let since = *failing_since.get_or_insert_with(|| progress.last_move());
            match self.next_wait(attempt, since) {
                Some(wait) => {
                    tracing::debug!(what, attempt, error = %error, "retrying");
                    observed::retrying();
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => {
                    tracing::warn!(what, attempts = attempt, error = %error, "giving up");
                    return Err(error);
                }
            }
        }
    }

    /// Runs one attempt to its end, or fails it once `progress` has not
    /// moved for `stall_timeout` (the clock stops while a `Hold` is held).
    pub(crate) async fn unless_stalled<T>(
        &self,
        what: &str,
        progress: &Progress,
        attempt: impl Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        tokio::pin!(attempt);
        loop {
            let wake = match progress.stalls_at(self.stall_timeout) {
                // Held: look again later; the release counts as a move.
                None => Instant::now() + self.stall_timeout,
                Some(at) if at <= Instant::now() => {
                    return Err(BackendError::new(
                        ErrorKind::Stalled,
                        format!("{what}: no progress for {:?}", self.stall_timeout),
                    ));
                }
                Some(at) => at,
            };
            tokio::select! {
                biased;
                result = &mut attempt => return result,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The wait before attempt `attempt + 1`, or `None` when it may not
    /// start: the attempts are spent, or it would start after the window
    /// that began at `failing_since`.
    fn next_wait(&self, attempt: u32, failing_since: Instant) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let wait = self.backoff(attempt);
        (Instant::now() + wait < failing_since + self.window).then_some(wait)
    }

    /// The wait after failed attempt `attempt` (1 for the first): equal
    /// jitter, a random point in the upper half of the exponential backoff.
    /// Jitter, so that the many calls an outage fails at once do not all
    /// come back at the same instants; equal rather than full jitter, so
    /// that a retry never follows its failure at once: a service that just
    /// refused a connection gets at least half the backoff to come back
    /// (the attempts span at least 0.75 s by default, not maybe nothing).
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let nominal = self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff);
        let half = nominal / 2;
        half + half.mul_f64(random_fraction())
    }
}

/// An error of a Google client crate, which maps it to ours
/// (`RetryPolicy::call`). The mappings live with the crates' clients.
pub(crate) trait ClientError {
    /// The error as ours, its message naming the call (`what`).
    fn into_backend_error(self, what: &str) -> BackendError;
}

/// The HTTP client settings every client of ciofs's own starts from: a
/// connect timeout, and the stall timeout as the kernel's bound on sent
/// bytes left unacknowledged (reqwest's default is a fixed 30 s), so that
/// a service that stopped reading is a stall on the same clock as the
/// progress watchdog's; either way the error is `ErrorKind::Stalled`.
pub(crate) fn http_client(stall_timeout: Duration) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let builder = builder.tcp_user_timeout(stall_timeout);
    #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
    let _ = stall_timeout;
    builder
}

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A number in [0, 1), different at each call: std's randomly keyed
/// hasher, keyed anew each time, hashing nothing.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// When an attempt last moved, shared by the attempt and its watchdog
/// (`RetryPolicy::unless_stalled`). An attempt moves when its request body
/// is read (`watch_stream`) and when its answer comes; it starts moved.
#[derive(Clone, Debug)]
pub(crate) struct Progress(Arc<Mutex<Moves>>);

#[derive(Debug)]
struct Moves {
    last: Instant,
    /// Holds alive: while any is, the attempt waits for something other
    /// than the service (a writer), and cannot stall.
    holds: usize,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(Moves { last: Instant::now(), holds: 0 })))
    }

    fn moves(&self) -> MutexGuard<'_, Moves> {
        lock(&self.0)
    }

    pub(crate) fn moved(&self) {
        self.moves().last = Instant::now();
    }

    fn last_move(&self) -> Instant {
        self.moves().last
    }

    /// When the attempt stalls unless it moves first; `None` while held.
    fn stalls_at(&self, stall_timeout: Duration) -> Option<Instant> {
        let moves = self.moves();
        (moves.holds == 0).then(|| moves.last + stall_timeout)
    }

    /// Stops the stall clock until the `Hold` is dropped, which counts as
    /// a move.
    pub(crate) fn hold(&self) -> Hold {
        self.moves().holds += 1;
        Hold(self.clone())
    }

    /// `stream` as a request body that moves the attempt each time it is
    /// polled: the HTTP client polls a body only when it can send more, so
    /// a body that is not polled is a request the service stopped reading.
    pub(crate) fn watch_stream<S: Stream>(&self, stream: S) -> Watched<S> {
        Watched { stream: Box::pin(stream), progress: self.clone() }
    }
}

/// See `Progress::hold`.
pub(crate) struct Hold(Progress);

impl Drop for Hold {
    fn drop(&mut self) {
        let mut moves = self.0.moves();
        moves.holds -= 1;
        moves.last = Instant::now();
    }
}

/// See `Progress::watch_stream`.
pub(crate) struct Watched<S> {
    stream: Pin<Box<S>>,
    progress: Progress,
}

impl<S: Stream> Stream for Watched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.progress.moved();
        self.stream.as_mut().poll_next(cx)
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
            stall_timeout: Duration::from_millis(50),
            window: Duration::from_secs(10),
        }
    }

    /// Defaults but for the window and attempts under test.
    fn policy(attempts: u32, stall: u64, window: u64) -> RetryPolicy {
        RetryPolicy {
            attempts,
            stall_timeout: Duration::from_secs(stall),
            window: Duration::from_secs(window),
            ..RetryPolicy::default()
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

    #[tokio::test(start_paused = true)]
    async fn a_stalled_attempt_fails_after_the_stall_timeout() {
        let start = Instant::now();
        let result: BackendResult<()> = policy(1, 30, 60)
            .run("test", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Stalled);
        assert!(error.message.contains("no progress"), "{error}");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    /// With the defaults, a call that never answers fails within the window
    /// and one stall: attempts at 0 and ~30 s, none once 60 s have passed.
    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_after_the_window() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result: BackendResult<()> = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            })
            .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::Stalled));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the count (5) does not bound it, the window does");
        let elapsed = start.elapsed();
        assert!(elapsed > Duration::from_secs(60) && elapsed <= Duration::from_secs(90), "{elapsed:?}");
        // A shorter stall gets more attempts in the same window.
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let _ = policy(10, 10, 25)
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<BackendResult<()>>().await
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "attempts at 0, ~10 and ~20 s, none at ~30 s");
        assert!(start.elapsed() <= Duration::from_secs(25 + 10));
    }

    /// An attempt that keeps moving is never cut, however long it takes;
    /// one that stops moving fails a stall after its last move.
    #[tokio::test(start_paused = true)]
    async fn progress_keeps_an_attempt_alive() {
        let start = Instant::now();
        let moving = policy(1, 30, 60)
            .run_watched("test", |progress| async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    progress.moved();
                }
                Ok(())
            })
            .await;
        assert_eq!(moving, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(2000));
        let start = Instant::now();
        let stopping: BackendResult<()> = policy(1, 30, 60)
            .run_watched("test", |progress| async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    progress.moved();
                }
                std::future::pending().await
            })
            .await;
        assert_eq!(stopping.map_err(|e| e.kind), Err(ErrorKind::Stalled));
        assert_eq!(start.elapsed(), Duration::from_secs(100 + 30));
    }

    /// Waiting on a writer (a hold) is not a stall, however long.
    #[tokio::test(start_paused = true)]
    async fn a_held_attempt_does_not_stall() {
        let start = Instant::now();
        let result = policy(1, 30, 60)
            .run_watched("test", |progress| async move {
                let hold = progress.hold();
                tokio::time::sleep(Duration::from_secs(500)).await;
                drop(hold);
                tokio::time::sleep(Duration::from_secs(20)).await;
                Ok(())
            })
            .await;
        assert_eq!(result, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(520));
    }

    /// The window runs from the failing attempt's last move: an upload that
    /// moved for an hour and broke still gets its retries.
    #[tokio::test(start_paused = true)]
    async fn the_window_starts_when_the_failures_begin() {
        let calls = AtomicU32::new(0);
        let result = policy(3, 30, 60)
            .run_watched("test", |progress| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call > 0 {
                        return Ok(call);
                    }
                    for _ in 0..180 {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        progress.moved();
                    }
                    Err(BackendError::new(ErrorKind::Unavailable, "reset"))
                }
            })
            .await;
        assert_eq!(result, Ok(1));
    }

    /// Equal jitter: each wait lies in the upper half of its nominal
    /// backoff (0.1, 0.2, 0.4, 0.8 s ... up to 2 s), and the waits differ.
    #[tokio::test(start_paused = true)]
    async fn backoff_is_jittered_within_the_upper_half() {
        let policy = RetryPolicy { attempts: 7, ..RetryPolicy::default() };
        let mut seen = Vec::new();
        for _ in 0..20 {
            let starts = Mutex::new(Vec::new());
            let _: BackendResult<()> = policy
                .run("test", || {
                    starts.lock().unwrap().push(Instant::now());
                    async { Err(BackendError::new(ErrorKind::Unavailable, "down")) }
                })
                .await;
            let starts = starts.into_inner().unwrap();
            assert_eq!(starts.len(), 7);
            for (i, pair) in starts.windows(2).enumerate() {
                let wait = pair[1] - pair[0];
                let nominal = (Duration::from_millis(100) * (1 << i)).min(Duration::from_secs(2));
                assert!(wait >= nominal / 2 && wait <= nominal, "wait {i}: {wait:?} for {nominal:?}");
                seen.push(wait);
            }
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 50, "the waits vary: {} distinct of 120", seen.len());
    }

    #[test]
    fn random_fractions_lie_in_the_unit_interval() {
        for _ in 0..1000 {
            let x = random_fraction();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
