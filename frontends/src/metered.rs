//! What the frontends record of each filesystem operation, through the
//! `metrics` facade (nothing until the shell installs a recorder with
//! `--metrics-addr`): `ciofs_fs_ops_total` and
//! `ciofs_fs_op_duration_seconds` by frontend and op, and
//! `ciofs_fs_errors_total` by frontend, op and errno.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics::{Counter, Histogram};

/// Whether a recorder takes what is recorded: until then an operation
/// costs nothing here (building a metric's labels allocates, even for the
/// facade's no-op recorder, on every FUSE read).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Called by the shell once it has installed a recorder.
pub fn start_recording() {
    RECORDING.store(true, Ordering::Relaxed);
}

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// An operation being answered: counted, with its latency, when dropped.
pub struct OpTimer {
    frontend: &'static str,
    op: &'static str,
    /// None while nothing records.
    started: Option<Instant>,
}

impl OpTimer {
    pub fn start(frontend: &'static str, op: &'static str) -> Self {
        Self { frontend, op, started: recording().then(Instant::now) }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let seconds = started.elapsed().as_secs_f64();
            with_op_metrics(self.frontend, self.op, |count, duration| {
                count.increment(1);
                duration.record(seconds);
            });
        }
    }
}

/// The handles of one (frontend, op): its count and its latency.
type OpMetrics = (Counter, Histogram);

thread_local! {
    /// Each thread's handles, by frontend and op. `counter!` builds its
    /// key and looks it up in the recorder's registry on every call
    /// (scripts/bench measured a warm `ls -lA` 10 % slower with metrics on
    /// that way); a kept handle is an atomic add.
    static OP_METRICS: RefCell<HashMap<(&'static str, &'static str), OpMetrics>> = RefCell::new(HashMap::new());
    /// Each thread's error counters, by frontend, op and errno: a failure
    /// builds no key and formats no errno once its counter is kept.
    static ERROR_COUNTERS: RefCell<HashMap<(&'static str, &'static str, i32), Counter>> =
        RefCell::new(HashMap::new());
}

fn with_op_metrics(frontend: &'static str, op: &'static str, record: impl FnOnce(&Counter, &Histogram)) {
    OP_METRICS.with_borrow_mut(|handles| {
        let (count, duration) = handles.entry((frontend, op)).or_insert_with(|| {
            (
                metrics::counter!("ciofs_fs_ops_total", "frontend" => frontend, "op" => op),
                metrics::histogram!("ciofs_fs_op_duration_seconds", "frontend" => frontend, "op" => op),
            )
        });
        record(count, duration);
    });
}

/// An operation of `frontend` answered with `errno`.
pub fn op_failed(frontend: &'static str, op: &'static str, errno: i32) {
    if !recording() {
        return;
    }
    ERROR_COUNTERS.with_borrow_mut(|counters| {
        counters
            .entry((frontend, op, errno))
            .or_insert_with(|| {
                let errno = errno.to_string();
                metrics::counter!("ciofs_fs_errors_total", "frontend" => frontend, "op" => op, "errno" => errno)
            })
            .increment(1);
    });
}
