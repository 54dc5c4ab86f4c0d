//! Small synchronization helpers.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering it if a panic poisoned it: every critical section
/// in this crate leaves its data consistent at each step, so a panic elsewhere
/// must not disable the cache or the writers for good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
