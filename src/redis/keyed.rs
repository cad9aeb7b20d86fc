//! [`RedisKeyedConcurrencyLimiter`]: one fleet-wide limit per key (a user, a tenant), each key
//! a [`RedisConcurrencyLimiter`](super::RedisConcurrencyLimiter) state of its own on the Redis
//! key `{prefix}:{key}`.
//!
//! In this process, a key's state (its limiter object) lives in a [`KeyedMap`] while it is in
//! use, exactly as the local keyed limiter's (see `keyed.rs`): while a permit, an acquire or a
//! slot held without a permit (the Python API) is alive. In Redis, every key of a limit expires
//! once idle (see `lua/prelude.lua`), so a million users leave neither memory here nor keys
//! there. A key's state subscribes to its wake-up channel only once a caller has to wait on it.

use super::error::RedisLimiterError;
use super::inner::{Inner, RedisCounts, resize_stamp};
use super::limiter::{Ready, RedisBuilder, RedisPermit};
use crate::keyed::{KeyState, KeyedMap};
use crate::waiters::Request;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

impl KeyState for Inner {
    fn in_use(&self) -> bool {
        self.holding() != 0
    }
}

/// One fleet-wide limit per key: `max_running` slots for each key, shared by every process that
/// uses the same prefix, with the semantics of
/// [`RedisConcurrencyLimiter`](super::RedisConcurrencyLimiter) for each key. Clones share the
/// same state.
///
/// ```no_run
/// use ferrolimit::RedisConcurrencyLimiter;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let per_user = RedisConcurrencyLimiter::builder("redis://127.0.0.1:6379", "llm:per-user", 2).build_keyed()?;
/// let permit = per_user.acquire("user-42", "chat").await?;
/// // ... at most 2 calls of user-42 at once, across the fleet
/// drop(permit);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisKeyedConcurrencyLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    ready: Ready,
    /// The limit given to keys made from now on (the built one, or the last resize), and when
    /// that resize was made (0: the built value): keys made from now on then store it over a
    /// built value or an earlier resize stored by another process, while they are idle (see
    /// `Inner`'s `own_resized_at`). Read and written together.
    limit: Mutex<(usize, u64)>,
    closed: AtomicBool,
    states: KeyedMap<String, Inner>,
    hasher: RandomState,
}

impl RedisBuilder {
    /// Creates a keyed limiter: one limit of `max_running` per key, on the Redis keys
    /// `{key}:{each key}` (the builder's key is their prefix). It connects lazily.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_keyed(self) -> Result<RedisKeyedConcurrencyLimiter, RedisLimiterError> {
        let ready = self.ready("key_prefix")?;
        Ok(RedisKeyedConcurrencyLimiter {
            shared: Arc::new(Shared {
                limit: Mutex::new((ready.builder.max_running, 0)),
                ready,
                closed: AtomicBool::new(false),
                states: KeyedMap::new(),
                hasher: RandomState::new(),
            }),
        })
    }
}

impl RedisKeyedConcurrencyLimiter {
    /// The state of `key` in this process (made if it is not in use).
    pub(crate) fn state(&self, key: &str) -> Arc<Inner> {
        let shared = &self.shared;
        shared.states.get_or_insert(
            shared.hasher.hash_one(key),
            key,
            || key.to_owned(),
            |_| false,
            || self.make(key),
        )
    }

    /// A limiter object for `key`, kept nowhere.
    fn make(&self, key: &str) -> Arc<Inner> {
        let shared = &self.shared;
        let (max_running, resized_at) = *shared.limit.lock();
        let inner = shared
            .ready
            .make(format!("{}:{key}", shared.ready.builder.key), max_running, resized_at);
        if shared.closed.load(Ordering::Acquire) {
            inner.close();
        }
        inner
    }

    /// The state of `key` if it is in use here, else one that is not kept.
    fn existing_or_transient(&self, key: &str) -> Arc<Inner> {
        let shared = &self.shared;
        shared
            .states
            .get(shared.hasher.hash_one(key), key)
            .unwrap_or_else(|| self.make(key))
    }

    /// What the callers of `key` did since its state was made here (zeros if not in use).
    #[cfg(feature = "python")]
    pub(crate) fn totals(&self, key: &str) -> super::inner::Totals {
        let shared = &self.shared;
        let state = shared.states.get(shared.hasher.hash_one(key), key);
        let totals = state.as_ref().map(|s| s.totals()).unwrap_or_default();
        if let Some(state) = state {
            self.done(key, state);
        }
        totals
    }

    /// Gives up a reference to `key`'s state, removing the state if nothing uses it any more.
    pub(crate) fn done(&self, key: &str, state: Arc<Inner>) {
        let shared = &self.shared;
        shared.states.release_state(shared.hasher.hash_one(key), key, state);
    }

    /// Takes a slot of `key`; see [`acquire_with`](Self::acquire_with).
    ///
    /// # Errors
    ///
    /// As [`RedisConcurrencyLimiter::acquire`](super::RedisConcurrencyLimiter::acquire).
    pub async fn acquire(&self, key: &str, source: &str) -> Result<RedisPermit, RedisLimiterError> {
        self.acquire_with(key, source, 1, 0).await
    }

    /// Takes `weight` slots of `key` at `priority`, waiting in that key's fleet-wide queue, as
    /// [`RedisConcurrencyLimiter::acquire_with`](super::RedisConcurrencyLimiter::acquire_with).
    ///
    /// # Errors
    ///
    /// As [`RedisConcurrencyLimiter::acquire_with`](super::RedisConcurrencyLimiter::acquire_with).
    pub async fn acquire_with(
        &self,
        key: &str,
        source: &str,
        weight: u32,
        priority: i32,
    ) -> Result<RedisPermit, RedisLimiterError> {
        let state = self.state(key);
        let permit = RedisPermit::acquire(&state, source, Request { weight, priority }).await;
        self.done(key, state);
        permit
    }

    /// Takes `weight` free slots of `key` without waiting: `None` if too few are free, anybody
    /// is queued for the key, or the limiter is closed. One round trip.
    ///
    /// # Errors
    ///
    /// As [`RedisConcurrencyLimiter::try_acquire`](super::RedisConcurrencyLimiter::try_acquire).
    pub async fn try_acquire(&self, key: &str, weight: u32) -> Result<Option<RedisPermit>, RedisLimiterError> {
        let state = self.state(key);
        let permit = state
            .try_slot(weight)
            .await
            .map(|a| a.map(|a| RedisPermit::new(&state, a)));
        self.done(key, state);
        permit
    }

    /// Fleet-wide counts of `key`, read from Redis; a key nobody uses reads as zeros, and the
    /// read creates nothing, here or in Redis.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached.
    pub async fn counts(&self, key: &str) -> Result<RedisCounts, RedisLimiterError> {
        let state = self.existing_or_transient(key);
        let counts = state.counts().await;
        self.done(key, state);
        counts
    }

    /// How many keys are in use in this process (a holder, a waiter or an acquire of this
    /// limiter is alive); removes the states of the others.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.states.sweep()
    }

    /// Whether no key is in use in this process.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The limit each key gets: the one built with, or the last resize.
    #[must_use]
    pub fn max_running(&self) -> usize {
        self.shared.limit.lock().0
    }

    /// The per-key queue bound.
    #[must_use]
    pub fn max_queued(&self) -> Option<usize> {
        self.shared.ready.builder.max_queued
    }

    /// The name given to the builder.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.shared.ready.builder.name.as_deref()
    }

    /// Sets `max_running` for every key: fleet-wide for the keys in use here at once (as
    /// [`RedisConcurrencyLimiter::set_max_running`](super::RedisConcurrencyLimiter::set_max_running)),
    /// and for the keys this limiter uses from now on: stored when it is the first to use one,
    /// or when it finds one idle with the built value of another process or an earlier resize
    /// (a later resize made elsewhere is followed instead). A key that other processes keep busy, and this one does
    /// not use, keeps its limit: give every process the same value.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Config`] for a limit out of range,
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached.
    pub async fn set_max_running(&self, max_running: usize) -> Result<(), RedisLimiterError> {
        let max_running = super::limiter::checked_max_running(max_running)?;
        let at = resize_stamp();
        *self.shared.limit.lock() = (max_running, at);
        for state in self.shared.states.states() {
            state.resize(max_running, at).await?;
        }
        Ok(())
    }

    /// Stops admitting through this limiter (every key, in this process): as
    /// [`RedisConcurrencyLimiter::close`](super::RedisConcurrencyLimiter::close) for each key.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for state in self.shared.states.states() {
            state.close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Resolves once no slot of any key taken through this limiter is held.
    pub async fn wait_idle(&self) {
        loop {
            let busy: Vec<_> = self.shared.states.states().into_iter().filter(|s| s.in_use()).collect();
            if busy.is_empty() {
                return;
            }
            for state in busy {
                state.wait_idle().await;
            }
        }
    }
}
