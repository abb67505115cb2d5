//! Locks that outlive a panic, for every crate of ciofs.
//!
//! A `Mutex` is poisoned when a thread panics while holding it. ciofs takes
//! a poisoned lock as it is: the sections under its locks are short and
//! panic only on a bug, and a bug in one caller (or a test's failed
//! assertion) must not turn every later call of every other caller into a
//! panic too. The backends' sections change maps, vectors, counters and
//! fields one whole operation at a time, so a panic there leaves at worst a
//! change not made.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not (see the module's documentation).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value of `mutex`, poisoned or not.
pub fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|e| e.into_inner())
}
