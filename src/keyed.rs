//! One limit per key ([`KeyedConcurrencyLimiter`]), with the state of a key alive only while it
//! is in use, and the map that keeps those states ([`KeyedMap`], shared with the Python glue).
//!
//! Each key in use has a limiter of its own, created on first use (under the keyed limiter's
//! `parent`, if any) and kept in the map behind an `Arc`. A key's state is *unused* once the map
//! holds the only reference to it (no future, context or waiter of the key is alive: every user
//! clones the reference under the map's lock first) and its limiter has no holder and no waiter.
//! Unused states are removed:
//!
//! * by every lookup that creates a key: it also checks the next two entries in a round-robin
//!   order (entries sit in a vector, so a cursor walks them). Unused states are so reclaimed
//!   twice as fast as new keys arrive: they never outnumber the peak of keys in use, and a
//!   million keys used one after another leave a handful behind at any moment, not a million;
//! * when a key's slots are released through the keyed limiter (that key is checked at once);
//! * by [`KeyedMap::sweep`], which checks every entry (`len()` does that: it is exact).
//!
//! Whatever a removal drops (a limiter, in the Python glue also references to Python objects) is
//! dropped after the map's lock is released. An unused state that a creation removes serves the
//! new key instead, made as new ([`KeySettings::recycle`]), when nothing else refers to it: keys
//! used one after another then cost no allocation of a state.

use crate::error::{AcquireError, LimitError};
use crate::limiter::{Builder, ConcurrencyLimiter};
use crate::permit::Permit;
use crate::stats::LimiterStats;
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::{check_max_queued, check_max_running};
use hashbrown::HashTable;
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hash};

/// A key's state as the map sees it: whether holders or waiters keep it in use (besides the
/// references to it, which the map counts itself).
pub(crate) trait KeyState {
    fn in_use(&self) -> bool;
}

/// A key's state over a local limiter: in use while that limiter has a holder or a waiter.
pub(crate) trait KeyLimiter {
    fn limiter(&self) -> &ConcurrencyLimiter;
    fn limiter_mut(&mut self) -> &mut ConcurrencyLimiter;
}

impl<T: KeyLimiter> KeyState for T {
    fn in_use(&self) -> bool {
        let limiter = self.limiter();
        limiter.running_count() != 0 || limiter.waiting_count() != 0
    }
}

impl KeyLimiter for ConcurrencyLimiter {
    fn limiter(&self) -> &ConcurrencyLimiter {
        self
    }

    fn limiter_mut(&mut self) -> &mut ConcurrencyLimiter {
        self
    }
}

/// The states of the keys in use (see the module docs). Keys are found by a hash the caller
/// computes (the Rust API with a randomly seeded `RandomState`; the Python glue passes Python's
/// own string hash, cached in the `str`, so a key is hashed once however often it is used).
#[derive(Debug)]
pub(crate) struct KeyedMap<K, V> {
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entry<K, V> {
    key: K,
    hash: u64,
    state: Arc<V>,
}

#[derive(Debug)]
struct Entries<K, V> {
    /// Every key's state; `table` finds a key's position here by its hash.
    states: Vec<Entry<K, V>>,
    table: HashTable<usize>,
    /// Where the round-robin check of unused states goes on.
    cursor: usize,
}

/// How many other entries each creation of a key checks: more than one, so that unused states
/// are removed faster than new keys can leave them.
const CHECKS_PER_CREATION: usize = 2;

impl<K: Eq, V: KeyState> KeyedMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Entries {
                states: Vec::new(),
                table: HashTable::new(),
                cursor: 0,
            }),
        }
    }

    /// The state of `key` (whose hash is `hash`) if the key is in use; else a state removed by
    /// this creation's checks that `recycle` made as new, or one `make` makes (`owned` then makes
    /// the key the map keeps). `recycle` runs under the map's lock: it must run no foreign code.
    pub(crate) fn get_or_insert<Q>(
        &self,
        hash: u64,
        key: &Q,
        owned: impl FnOnce() -> K,
        mut recycle: impl FnMut(&mut Arc<V>) -> bool,
        make: impl FnOnce() -> Arc<V>,
    ) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut removed: [Option<Arc<V>>; CHECKS_PER_CREATION] = Default::default();
        let state = {
            let mut inner = self.inner.lock();
            if let Some(at) = inner.find(hash, key) {
                Arc::clone(&inner.states[at].state)
            } else {
                for slot in &mut removed {
                    *slot = inner.check_next();
                }
                let recycled = removed.iter_mut().find_map(|slot| {
                    if slot.as_mut().is_some_and(&mut recycle) {
                        slot.take()
                    } else {
                        None
                    }
                });
                let state = recycled.unwrap_or_else(make);
                inner.push(Entry {
                    key: owned(),
                    hash,
                    state: Arc::clone(&state),
                });
                state
            }
        };
        drop(removed);
        state
    }

    /// The state of `key` if it is in use.
    pub(crate) fn get<Q>(&self, hash: u64, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let inner = self.inner.lock();
        inner.find(hash, key).map(|at| Arc::clone(&inner.states[at].state))
    }

    /// Removes the state of `key` if it is unused; `state` is the caller's reference to it,
    /// given up here.
    pub(crate) fn release_state<Q>(&self, hash: u64, key: &Q, state: Arc<V>)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut inner = self.inner.lock();
        drop(state);
        let removed = inner.find(hash, key).and_then(|at| inner.remove_if_unused(at));
        drop(inner);
        drop(removed);
    }

    /// Removes every unused state; returns how many keys are in use.
    pub(crate) fn sweep(&self) -> usize {
        let mut removed = Vec::new();
        let len = {
            let mut inner = self.inner.lock();
            let mut at = 0;
            while at < inner.states.len() {
                match inner.remove_if_unused(at) {
                    Some(state) => removed.push(state),
                    None => at += 1,
                }
            }
            inner.states.len()
        };
        drop(removed);
        len
    }

    /// Every state in the map at this moment.
    pub(crate) fn states(&self) -> Vec<Arc<V>> {
        self.inner.lock().states.iter().map(|e| Arc::clone(&e.state)).collect()
    }
}

impl<K: Eq, V: KeyState> Entries<K, V> {
    fn find<Q>(&self, hash: u64, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.table
            .find(hash, |&at| self.states[at].key.borrow() == key)
            .copied()
    }

    fn push(&mut self, entry: Entry<K, V>) {
        let at = self.states.len();
        let states = &self.states;
        self.table.insert_unique(entry.hash, at, |&i| states[i].hash);
        self.states.push(entry);
    }

    /// Checks the entry at the cursor, and moves the cursor on unless that entry was removed
    /// (another one took its place).
    fn check_next(&mut self) -> Option<Arc<V>> {
        if self.states.is_empty() {
            return None;
        }
        let at = self.cursor % self.states.len();
        let removed = self.remove_if_unused(at);
        if removed.is_none() {
            self.cursor = at + 1;
        }
        removed
    }

    /// Removes the entry at `at` if it is unused (the map's reference is the only one, and no
    /// holder or waiter keeps it in use), moving the last entry into its place.
    fn remove_if_unused(&mut self, at: usize) -> Option<Arc<V>> {
        let entry = &self.states[at];
        if Arc::strong_count(&entry.state) != 1 || entry.state.in_use() {
            return None;
        }
        if let Ok(found) = self.table.find_entry(entry.hash, |&i| i == at) {
            found.remove();
        }
        let last = self.states.len() - 1;
        let entry = self.states.swap_remove(at);
        if at != last
            && let Some(moved) = self.table.find_mut(self.states[at].hash, |&i| i == last)
        {
            *moved = at;
        }
        Some(entry.state)
    }
}

/// One limit per key (a user, a tenant, an API key), each key with its own `max_running` slots
/// and FIFO queue, optionally all under one `parent` limiter (per user 2, all users together 50).
///
/// A key's state exists only while it is in use (a holder, a waiter or a future of it is alive):
/// a million distinct keys used one after another leave nothing behind, and [`len`](Self::len)
/// is back to 0.
///
/// ```
/// use ferrolimit::{ConcurrencyLimiter, KeyedConcurrencyLimiter};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let all_users = ConcurrencyLimiter::new(50)?;
/// let per_user = KeyedConcurrencyLimiter::<String>::builder(2).parent(all_users.clone()).build()?;
/// let permit = per_user.acquire("alice".to_owned()).await?;
/// assert_eq!((per_user.running_count("alice"), all_users.running_count()), (1, 1));
/// drop(permit);
/// assert_eq!(per_user.len(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KeyedConcurrencyLimiter<K> {
    shared: Arc<KeyedShared<K>>,
}

#[derive(Debug)]
struct KeyedShared<K> {
    keys: KeyedMap<K, ConcurrencyLimiter>,
    hasher: RandomState,
    settings: KeySettings,
}

/// What every key's limiter is made with: a limiter builder (its queue bound, name and parent)
/// and the current `max_running`, which a resize changes.
#[derive(Debug)]
pub(crate) struct KeySettings {
    template: Builder,
    max_running: AtomicUsize,
    closed: AtomicBool,
}

impl KeySettings {
    /// Checks the limits of `template` as its `build` does.
    pub(crate) fn new(template: Builder) -> Result<Self, LimitError> {
        let max_running = check_max_running(template.max_running_setting() as i128)? as usize;
        template
            .max_queued_setting()
            .map(|q| check_max_queued(q as i128))
            .transpose()?;
        Ok(Self {
            template,
            max_running: AtomicUsize::new(max_running),
            closed: AtomicBool::new(false),
        })
    }

    /// A new key's limiter: the current `max_running`, closed if the keyed limiter is.
    pub(crate) fn make(&self) -> ConcurrencyLimiter {
        let limiter = self
            .template
            .clone()
            .with_max_running(self.max_running())
            .build()
            .expect("the limits were checked when the keyed limiter was made");
        if self.is_closed() {
            limiter.close();
        }
        limiter
    }

    pub(crate) fn max_running(&self) -> usize {
        self.max_running.load(Ordering::Acquire)
    }

    pub(crate) const fn max_queued(&self) -> Option<usize> {
        self.template.max_queued_setting()
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.template.name_setting()
    }

    pub(crate) const fn parent(&self) -> Option<&ConcurrencyLimiter> {
        self.template.parent_setting()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The counts of a key nobody uses: all slots free, nobody queued, no totals.
    pub(crate) fn unused_stats(&self) -> LimiterStats {
        let max_running = self.max_running();
        LimiterStats {
            running: 0,
            waiting: 0,
            available: max_running,
            max_running,
            max_queued: self.max_queued(),
            acquired_total: 0,
            rejected_total: 0,
            cancelled_total: 0,
        }
    }

    /// Makes `state`, a key's state the map removed as unused, as a new key's limiter would be
    /// (see [`make`](Self::make)) if nothing else refers to it; returns whether it did. Runs no
    /// foreign code (what it drops is an empty queue).
    pub(crate) fn recycle<V: KeyLimiter>(&self, state: &mut Arc<V>) -> bool {
        let Some(state) = Arc::get_mut(state) else {
            return false;
        };
        let limiter = state.limiter_mut();
        #[allow(clippy::cast_possible_truncation)] // checked against MAX_RUNNING_LIMIT
        if !limiter.reset(self.max_running() as u32) {
            return false;
        }
        if self.is_closed() {
            limiter.close();
        }
        true
    }

    /// Sets `max_running` for new keys and then for every key in use (`states()`).
    ///
    /// Resizing a key wakes its waiters, which may run code that resizes again (another thread
    /// once the GIL passes, or a destructor): so once every key has this value, the stored one is
    /// read again and, if a later resize changed it, every key gets that one too. Whichever call
    /// finishes last leaves every key at the last value stored.
    pub(crate) fn set_max_running<V: KeyLimiter>(
        &self,
        max_running: usize,
        states: impl Fn() -> Vec<Arc<V>>,
    ) -> Result<(), LimitError> {
        let mut value = check_max_running(max_running as i128)? as usize;
        // First for the keys made from now on, then for those already made: none is left out.
        self.max_running.store(value, Ordering::Release);
        loop {
            for state in states() {
                state.limiter().set_max_running(value)?;
            }
            let now = self.max_running();
            if now == value {
                return Ok(());
            }
            value = now;
        }
    }

    /// Closes the keyed limiter: new keys are made closed, and every key of `states` (the keys
    /// in use) is closed.
    pub(crate) fn close<V: KeyLimiter>(&self, states: &[Arc<V>]) {
        self.closed.store(true, Ordering::Release);
        for state in states {
            state.limiter().close();
        }
    }
}

/// Builds a [`KeyedConcurrencyLimiter`]: the settings of a [`Builder`], for every key.
#[derive(Debug, Clone)]
#[must_use]
pub struct KeyedBuilder(Builder);

impl KeyedBuilder {
    /// Bounds each key's queue (per key, not over all keys).
    pub fn max_queued(self, max_queued: usize) -> Self {
        Self(self.0.max_queued(max_queued))
    }

    /// Names the limiter in wait spans and errors (the key is not part of the name: keys are
    /// unbounded, names of spans and metrics should not be).
    pub fn name(self, name: impl Into<String>) -> Self {
        Self(self.0.name(name))
    }

    /// Nests every key under `parent`: a global cap over all keys.
    pub fn parent(self, parent: ConcurrencyLimiter) -> Self {
        Self(self.0.parent(parent))
    }

    /// Creates the keyed limiter.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when `max_running` is 0 or above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn build<K: Hash + Eq + Clone>(self) -> Result<KeyedConcurrencyLimiter<K>, LimitError> {
        Ok(KeyedConcurrencyLimiter {
            shared: Arc::new(KeyedShared {
                keys: KeyedMap::new(),
                hasher: RandomState::new(),
                settings: KeySettings::new(self.0)?,
            }),
        })
    }
}

impl<K: Hash + Eq + Clone> KeyedConcurrencyLimiter<K> {
    /// A keyed limiter of `max_running` slots per key, with unbounded queues.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when `max_running` is 0 or above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn new(max_running: usize) -> Result<Self, LimitError> {
        Self::builder(max_running).build()
    }

    /// Starts a [`KeyedBuilder`] for `max_running` slots per key.
    pub const fn builder(max_running: usize) -> KeyedBuilder {
        KeyedBuilder(ConcurrencyLimiter::builder(max_running))
    }

    fn state<Q>(&self, key: &Q) -> Arc<ConcurrencyLimiter>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let settings = &self.shared.settings;
        self.shared.keys.get_or_insert(
            self.hash(key),
            key,
            || key.to_owned(),
            |state| settings.recycle(state),
            || Arc::new(settings.make()),
        )
    }

    /// A key's hash in the map (the same for a key and its borrowed form, as `Borrow` asks).
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.shared.hasher.hash_one(key)
    }

    /// Waits for a slot of `key` (and of the parent), FIFO among the callers of that key.
    pub fn acquire(&self, key: K) -> impl Future<Output = Result<Permit, AcquireError>> + Send + 'static
    where
        K: Send + Sync + 'static,
    {
        self.acquire_with(key, 1, 0)
    }

    /// Waits for `weight` slots of `key` at once, served by `priority` among that key's callers
    /// (see [`Acquire::weight`](crate::Acquire::weight) and
    /// [`Acquire::priority`](crate::Acquire::priority)).
    ///
    /// # Errors
    ///
    /// The future resolves to the errors of [`ConcurrencyLimiter::acquire`]'s future.
    pub fn acquire_with(
        &self,
        key: K,
        weight: u32,
        priority: i32,
    ) -> impl Future<Output = Result<Permit, AcquireError>> + Send + 'static
    where
        K: Send + Sync + 'static,
    {
        let state = self.state(&key);
        let keyed = self.clone();
        async move {
            let result = state.acquire().weight(weight).priority(priority).await;
            keyed.shared.keys.release_state(keyed.hash(&key), &key, state);
            result
        }
    }

    /// Takes `weight` slots of `key` (and of the parent) if they are free and nobody of that
    /// key is queued; never waits. `None` once closed.
    ///
    /// # Errors
    ///
    /// As [`ConcurrencyLimiter::try_acquire_many`].
    pub fn try_acquire_many<Q>(&self, key: &Q, weight: u32) -> Result<Option<Permit>, AcquireError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let state = self.state(key);
        let taken = state.try_acquire_many(weight);
        self.shared.keys.release_state(self.hash(key), key, state);
        taken
    }

    /// [`try_acquire_many`](Self::try_acquire_many) of one slot.
    pub fn try_acquire<Q>(&self, key: &Q) -> Option<Permit>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.try_acquire_many(key, 1).ok().flatten()
    }

    /// The counts of `key`; a key nobody uses has all its slots free (and asking creates no
    /// state).
    pub fn stats<Q>(&self, key: &Q) -> LimiterStats
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shared
            .keys
            .get(self.hash(key), key)
            .map_or_else(|| self.shared.settings.unused_stats(), |state| state.stats())
    }

    /// Slots of `key` held right now.
    pub fn running_count<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.stats(key).running
    }

    /// Callers of `key` queued right now.
    pub fn waiting_count<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.stats(key).waiting
    }

    /// The number of keys in use (with a holder, a waiter or a live future).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.keys.sweep()
    }

    /// Whether no key is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name given to the builder.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.shared.settings.name()
    }

    /// Each key's queue bound.
    #[must_use]
    pub fn max_queued(&self) -> Option<usize> {
        self.shared.settings.max_queued()
    }

    /// The limiter every key is nested under, if any.
    #[must_use]
    pub fn parent(&self) -> Option<&ConcurrencyLimiter> {
        self.shared.settings.parent()
    }

    /// Slots per key.
    #[must_use]
    pub fn max_running(&self) -> usize {
        self.shared.settings.max_running()
    }

    /// Changes the slots per key, for the keys in use (as
    /// [`ConcurrencyLimiter::set_max_running`]) and for new ones.
    ///
    /// # Errors
    ///
    /// [`LimitError`] for 0 or a value above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn set_max_running(&self, max_running: usize) -> Result<(), LimitError> {
        self.shared
            .settings
            .set_max_running(max_running, || self.shared.keys.states())
    }

    /// Stops admitting on every key (see [`ConcurrencyLimiter::close`]); holders keep their
    /// slots. Idempotent.
    pub fn close(&self) {
        self.shared.settings.close(&self.shared.keys.states());
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.settings.is_closed()
    }
}
