//! What the frontends record of each filesystem operation, through the
//! `metrics` facade (nothing until the shell installs a recorder with
//! `--metrics-addr`): `ciofs_fs_ops_total` and
//! `ciofs_fs_op_duration_seconds` by frontend and op, and
//! `ciofs_fs_errors_total` by frontend, op and errno.

use std::time::Instant;

/// An operation being answered: counted, with its latency, when dropped.
pub struct OpTimer {
    frontend: &'static str,
    pub op: &'static str,
    started: Instant,
}

impl OpTimer {
    pub fn start(frontend: &'static str, op: &'static str) -> Self {
        Self { frontend, op, started: Instant::now() }
    }

    /// The operation failed with `errno`.
    pub fn failed(&self, errno: i32) {
        op_failed(self.frontend, self.op, errno);
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        op_done(self.frontend, self.op, self.started);
    }
}

/// An operation of `frontend` ("fuse", "nfs") answered, `started` when.
pub fn op_done(frontend: &'static str, op: &'static str, started: Instant) {
    metrics::counter!("ciofs_fs_ops_total", "frontend" => frontend, "op" => op).increment(1);
    metrics::histogram!("ciofs_fs_op_duration_seconds", "frontend" => frontend, "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// An operation answered with `errno`.
pub fn op_failed(frontend: &'static str, op: &'static str, errno: i32) {
    metrics::counter!("ciofs_fs_errors_total", "frontend" => frontend, "op" => op, "errno" => errno.to_string())
        .increment(1);
}
