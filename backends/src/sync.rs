//! Locks that outlive a panic.
//!
//! A `Mutex` is poisoned when a thread panics while holding it. The state
//! behind the locks of this crate stays usable after such a panic: each
//! section under a lock is short and changes maps, vectors, counters and
//! fields one whole operation at a time (an insert, a remove, a push, an
//! assignment), so a panic inside one leaves at worst a change not made,
//! never a value half-written, and nothing outside the lock relies on two
//! such changes happening together. So the lock is taken as it is: a panic
//! in one caller (a bug, or a test's failed assertion) must not turn every
//! later call of every other caller into a panic too.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not (see the module's documentation).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value of `mutex`, poisoned or not.
pub(crate) fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|e| e.into_inner())
}
