//! The only file that names the synchronisation primitives.
//!
//! Normal builds use `std` atomics and a `parking_lot` mutex; builds with `--cfg ferrolimit_loom`
//! swap in loom's model-checked versions (the same idea as tokio's `src/loom`). Both expose a
//! `Mutex` with one `lock()` signature so the rest of the crate does not care which it gets.

#[cfg(not(ferrolimit_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(ferrolimit_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[cfg(ferrolimit_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(ferrolimit_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A mutual-exclusion lock with an infallible `lock()`.
#[derive(Debug)]
pub(crate) struct Mutex<T>(
    #[cfg(not(ferrolimit_loom))] parking_lot::Mutex<T>,
    #[cfg(ferrolimit_loom)] loom::sync::Mutex<T>,
);

#[cfg(not(ferrolimit_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(ferrolimit_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(ferrolimit_loom))]
        return Self(parking_lot::Mutex::new(value));
        #[cfg(ferrolimit_loom)]
        return Self(loom::sync::Mutex::new(value));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(ferrolimit_loom))]
        return self.0.lock();
        // A poisoned lock means a panic inside a critical section, which the crate never does.
        #[cfg(ferrolimit_loom)]
        return self.0.lock().unwrap();
    }
}
