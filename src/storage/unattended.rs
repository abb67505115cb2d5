//! What an unattended writer (one NFS WRITEs go into, without a handle)
//! carries besides its staged bytes: the files of its crash journal and
//! when it may try its upload again. Shared by the writer (write.rs) and
//! the NFS write path (nfs_writes.rs), which owns what they mean.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Upload attempts of one writer wait this long after a failure, doubling
/// up to `RETRY_MAX`, with jitter.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The files of an unattended writer: its staging file and its journal
/// record (the same name, `.json` for `.data`), and the project of the
/// object it writes (which the record names).
pub struct JournalFiles {
    pub data: PathBuf,
    pub record: PathBuf,
    pub project: String,
}

/// When an unattended writer may try its upload again.
#[derive(Default)]
pub struct Retry {
    failures: u32,
    next: Option<Instant>,
}

impl Retry {
    pub fn due(&self) -> bool {
        self.next.is_none_or(|next| Instant::now() >= next)
    }

    pub fn failed(&mut self) -> Duration {
        let wait = RETRY_FIRST.saturating_mul(1 << self.failures.min(10)).min(RETRY_MAX);
        // Equal jitter: half fixed, half random, so that writers that failed
        // together do not all come back at once.
        let wait = wait / 2 + wait.mul_f64(random_fraction() / 2.0);
        self.failures += 1;
        self.next = Some(Instant::now() + wait);
        wait
    }
}

/// A number in [0, 1), from std's randomly keyed hasher (no crate needed
/// for jitter).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) >> 11) as f64 / (1u64 << 53) as f64
}
