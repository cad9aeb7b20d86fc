//! [`RedisConcurrencyLimiter`], its builder and its RAII [`RedisPermit`].

use super::connections::{Listener, RedisConnections};
use super::error::RedisLimiterError;
use super::scripts::{ACQUIRE, COUNTS, LEAVE, POLL, RENEW};
use crate::error::check_max_running;
use crate::telemetry::{WaitSpan, WaitSpanFields, wait_span_fields};
use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

/// How often a waiter polls while the wake-up channel is down (a fallback only).
const FALLBACK_POLL: Duration = Duration::from_millis(100);
/// The shortest lease accepted.
const MIN_LEASE: Duration = Duration::from_millis(30);

/// A concurrency limiter shared by every process that uses the same Redis `key`.
///
/// Guarantees, as long as the processes agree on `max_running` (for a Redis that loses its data
/// on a restart, see the module notes on recovery):
///
/// * never more than `max_running` slots are held across the fleet;
/// * waiters are admitted in arrival order across processes (FIFO, no barging);
/// * `max_queued` bounds the fleet-wide queue, atomically (one server-side script decides);
/// * each held slot is a lease the limiter renews in the background while it is held: a process
///   that dies loses its slots within `lease`, and a waiter that dies leaves the queue as fast;
/// * a release is fenced by the slot's token: a holder whose lease ran out (it was paused for
///   longer than the lease) can never free the slot its successor now holds;
/// * a release wakes the next waiter at once, through a Redis pub/sub message; waiters also
///   poll, as a heartbeat (every third of a lease) and when the earliest lease runs out.
///
/// If Redis is unreachable, operations fail with [`RedisLimiterError::Unavailable`], or, with
/// [`fail_open`](RedisBuilder::fail_open), [`acquire`](Self::acquire) proceeds without limiting.
/// The connection is re-established on its own once the server is back.
///
/// The limiter needs a tokio runtime for its background work (lease renewal and the wake-up
/// subscription); it uses the one it is built in, or the one given to
/// [`RedisBuilder::runtime`]. Clones share the same state.
///
/// # Examples
///
/// ```no_run
/// use ferrolimit::RedisConcurrencyLimiter;
///
/// # async fn call_model() {}
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisConcurrencyLimiter::builder("redis://127.0.0.1:6379", "llm:openai", 8)
///     .max_queued(100)
///     .build()?;
/// let permit = limiter.acquire("model:gpt-4o").await?;
/// call_model().await;
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisConcurrencyLimiter {
    inner: Arc<Inner>,
}

/// Fleet-wide counts read from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisCounts {
    /// Slots held across the fleet.
    pub running: usize,
    /// Waiters queued across the fleet.
    pub waiting: usize,
    /// Free slots (`max_running - running`, never below zero).
    pub available: usize,
}

/// Builds a [`RedisConcurrencyLimiter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBuilder {
    url: String,
    key: String,
    max_running: usize,
    max_queued: Option<usize>,
    lease: Duration,
    name: Option<String>,
    fail_open: bool,
    runtime: Option<Handle>,
    connections: Option<RedisConnections>,
}

impl RedisBuilder {
    /// Bounds the fleet-wide queue: an arrival that finds `max_queued` waiters fails with
    /// [`RedisLimiterError::QueueFull`].
    pub const fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = Some(max_queued);
        self
    }

    /// How long a held slot survives without renewal (30 s by default); renewals run every third
    /// of it. A process that dies loses its slots within this time.
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Names the limiter in wait spans and errors.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// When Redis is unreachable, let `acquire` proceed without limiting instead of failing.
    pub const fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// The runtime for the background tasks (by default, the one `build` is called in).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The server's URL, as given.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Uses `connections` (to the same URL) instead of opening a connection and a subscription
    /// of its own: any number of limiters can share them.
    pub fn connections(mut self, connections: RedisConnections) -> Self {
        self.connections = Some(connections);
        self
    }

    /// Creates the limiter. It connects lazily: an unreachable server is reported by the first
    /// operation, not here.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Config`] for an invalid URL, an empty key, a limit out of range, a
    /// lease shorter than 30 ms, no tokio runtime, or [`connections`](Self::connections) to
    /// another URL.
    pub fn build(self) -> Result<RedisConcurrencyLimiter, RedisLimiterError> {
        let config = |msg: String| RedisLimiterError::Config(msg);
        let max_running = i128::try_from(self.max_running).unwrap_or(i128::MAX);
        check_max_running(max_running).map_err(|e| config(e.to_string()))?;
        if self.key.is_empty() {
            return Err(config("key must not be empty".to_owned()));
        }
        if self.lease < MIN_LEASE {
            return Err(config(format!(
                "lease must be at least {} ms, got {:?}",
                MIN_LEASE.as_millis(),
                self.lease
            )));
        }
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => {
                Handle::try_current().map_err(|_| config("RedisConcurrencyLimiter needs a tokio runtime".to_owned()))?
            }
        };
        let connections = match self.connections {
            Some(connections) if connections.url() == self.url => connections,
            Some(connections) => {
                return Err(config(format!(
                    "the connections are to {:?}, the limiter's URL is {:?}",
                    connections.url(),
                    self.url
                )));
            }
            None => RedisConnections::with_runtime(&self.url, runtime.clone())?,
        };
        let (shutdown, shutdown_rx) = watch::channel(());
        let key = self.key;
        let inner = Arc::new(Inner {
            conn: connections.conn(),
            holders: format!("{{{key}}}:holders"),
            queue: format!("{{{key}}}:queue"),
            waiters_key: format!("{{{key}}}:waiters"),
            seq: format!("{{{key}}}:seq"),
            epoch_key: format!("{{{key}}}:epoch"),
            recovering_key: format!("{{{key}}}:recovering"),
            max_running_key: format!("{{{key}}}:max_running"),
            epoch: Mutex::new(Epoch::default()),
            channel: format!("{{{key}}}:wake"),
            key,
            max_running: self.max_running,
            max_queued: self.max_queued,
            lease: self.lease,
            name: self.name,
            fail_open: self.fail_open,
            runtime,
            instance: instance_id(),
            next_token: AtomicU64::new(0),
            held: Mutex::new(HashSet::new()),
            lost: Mutex::new(HashSet::new()),
            lost_total: AtomicU64::new(0),
            other_max_running: AtomicU64::new(0),
            #[cfg(feature = "python")]
            warned_max_running: AtomicU64::new(0),
            #[cfg(feature = "python")]
            pool: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            pending_releases: Mutex::new(PendingReleases::default()),
            released: Notify::new(),
            orphans: Mutex::new(Vec::new()),
            renew_kick: Arc::new(Notify::new()),
            renew_now: AtomicBool::new(false),
            _shutdown: shutdown,
            connections: connections.clone(),
        });
        connections.register(&inner);
        inner.runtime.spawn(renewer(Arc::downgrade(&inner), shutdown_rx));
        Ok(RedisConcurrencyLimiter { inner })
    }
}

/// A random identifier of this limiter instance: tokens are `{instance}-{n}`, unique across the
/// fleet and across Redis restarts.
fn instance_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

/// One slot held by this process: a lease on the server, or, failing open, no slot at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    Leased(String),
    Unlimited,
}

/// The result of an acquire: the slot, and the error that made it fail open, if it did.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) slot: Slot,
    pub(crate) fail_open: Option<RedisLimiterError>,
}

/// Releases sent in the background, by ticket, oldest first.
#[derive(Debug, Default)]
struct PendingReleases {
    next: u64,
    in_flight: std::collections::BTreeSet<u64>,
}

impl PendingReleases {
    fn start(&mut self) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.in_flight.insert(ticket);
        ticket
    }
}

/// The state's epoch as an instance last saw it.
#[derive(Debug, Default)]
struct Epoch {
    known: String,
    from_before_loss: bool,
}

/// A queued waiter of this process, woken by the subscriber.
#[derive(Debug, Default)]
struct WaiterSlot {
    notify: Notify,
    admitted: AtomicBool,
}

pub(crate) struct Inner {
    conn: ConnectionManager,
    key: String,
    holders: String,
    queue: String,
    waiters_key: String,
    seq: String,
    epoch_key: String,
    recovering_key: String,
    max_running_key: String,
    channel: String,
    /// The state's epoch as last seen, and whether this instance held slots or places from
    /// before the state was lost (it may then re-register them while the state recovers).
    epoch: Mutex<Epoch>,
    max_running: usize,
    max_queued: Option<usize>,
    lease: Duration,
    name: Option<String>,
    fail_open: bool,
    runtime: Handle,
    instance: String,
    next_token: AtomicU64,
    /// Tokens this process holds on the server: the renewer extends their leases.
    held: Mutex<HashSet<String>>,
    /// Tokens whose lease ran out while held; releasing one frees nothing.
    lost: Mutex<HashSet<String>>,
    lost_total: AtomicU64,
    /// The `max_running` the latest acquire found on the key, when it differs from this
    /// instance's (0: it agreed, or found none).
    other_max_running: AtomicU64,
    /// The last such value the Python layer warned about (0: none).
    #[cfg(feature = "python")]
    warned_max_running: AtomicU64,
    /// Slots held without a permit (the Python API's `acquire`/`release`).
    #[cfg(feature = "python")]
    pool: Mutex<Vec<Slot>>,
    /// Queued tokens of this process, by token.
    waiters: Mutex<HashMap<String, Arc<WaiterSlot>>>,
    /// Whether the wake-up subscription is live; waiters poll often while it is not.
    subscribed: AtomicBool,
    /// Releases sent in the background and not yet answered; counts wait for them, so that a
    /// process reads its own releases.
    pending_releases: Mutex<PendingReleases>,
    released: Notify,
    /// Tokens whose release failed because Redis was away: retried on reconnection.
    orphans: Mutex<Vec<String>>,
    /// Wakes the renewer when the first slot is taken, or to renew at once (`renew_now`).
    renew_kick: Arc<Notify>,
    renew_now: AtomicBool,
    /// Dropped with the limiter: the renewer stops.
    _shutdown: watch::Sender<()>,
    /// Kept open while the limiter lives; it unregisters from them when dropped.
    connections: RedisConnections,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.connections.unregister(&self.channel);
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConcurrencyLimiter")
            .field("key", &self.key)
            .field("max_running", &self.max_running)
            .field("max_queued", &self.max_queued)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Milliseconds, at least 1 (Lua receives integers).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Inner {
    fn script<'a>(&'a self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let (known, from_before_loss) = {
            let epoch = self.epoch.lock();
            (epoch.known.clone(), epoch.from_before_loss)
        };
        let mut invocation = script.key(&self.holders);
        invocation
            .key(&self.queue)
            .key(&self.waiters_key)
            .key(&self.seq)
            .key(&self.epoch_key)
            .key(&self.recovering_key)
            .key(&self.max_running_key)
            .arg(&self.channel)
            .arg(self.max_running)
            .arg(millis(self.lease))
            .arg(known)
            .arg(self.new_token())
            .arg(if from_before_loss { "1" } else { "0" });
        invocation
    }

    /// Notes the state's epoch from a reply. A new epoch after a known one means Redis lost the
    /// state: the slots this instance holds are re-registered at once (see `lua/prelude.lua`).
    fn saw_epoch(&self, epoch: String) {
        let lost = {
            let mut state = self.epoch.lock();
            if state.known == epoch {
                return;
            }
            let lost = !state.known.is_empty();
            state.known = epoch;
            state.from_before_loss = lost;
            lost
        };
        if lost {
            self.renew_now.store(true, Ordering::Release);
            self.renew_kick.notify_one();
            self.poll_all();
        }
    }

    /// Notes the `max_running` of the acquire before this one on the key (`-1`: none within the
    /// last lease): remembered if it differs from this instance's, forgotten if it agrees.
    fn saw_max_running(&self, previous: i64) {
        let other = u64::try_from(previous)
            .ok()
            .filter(|&n| n != self.max_running as u64)
            .unwrap_or(0);
        self.other_max_running.store(other, Ordering::Relaxed);
    }

    pub(crate) fn other_max_running(&self) -> Option<usize> {
        match self.other_max_running.load(Ordering::Relaxed) {
            0 => None,
            n => usize::try_from(n).ok(),
        }
    }

    /// [`other_max_running`](Self::other_max_running) if it differs from the last value reported;
    /// then it is the one reported.
    #[cfg(feature = "python")]
    pub(crate) fn unreported_max_running(&self) -> Option<usize> {
        let other = self.other_max_running.load(Ordering::Relaxed);
        (other != 0 && self.warned_max_running.swap(other, Ordering::Relaxed) != other)
            .then(|| usize::try_from(other).ok())
            .flatten()
    }

    /// The wake-up channel of this limiter's key.
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether the wake-up subscription carries this limiter's channel.
    pub(super) const fn subscribed(&self) -> &AtomicBool {
        &self.subscribed
    }

    fn heartbeat(&self) -> Duration {
        self.lease / 3
    }

    pub(crate) fn new_token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// Takes a slot, waiting in the fleet-wide FIFO queue if none is free. `on_queued(depth)` runs
    /// once if the caller has to wait. The slot is renewed from the moment it is granted.
    ///
    /// Cancel safe: dropping the future gives up the place, and a slot granted at that instant
    /// is released (by a task spawned on the runtime).
    pub(crate) async fn acquire_slot(
        self: &Arc<Self>,
        token: String,
        on_queued: impl FnOnce(usize),
    ) -> Result<Admission, RedisLimiterError> {
        self.settle().await;
        let waiter = Arc::new(WaiterSlot::default());
        self.waiters.lock().insert(token.clone(), Arc::clone(&waiter));
        let mut guard = LeaveGuard {
            inner: Arc::clone(self),
            token: Some(token.clone()),
        };
        let mut invocation = self.script(&ACQUIRE);
        invocation
            .arg(&token)
            .arg(self.max_queued.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX)));
        let answer: redis::RedisResult<(String, i64, i64, i64, i64, i64)> =
            invocation.invoke_async(&mut self.conn.clone()).await;
        let (status, _running, waiting, mut next_expiry) = match answer {
            Ok((epoch, status, running, waiting, next_expiry, other_max_running)) => {
                self.saw_epoch(epoch);
                self.saw_max_running(other_max_running);
                (status, running, waiting, next_expiry)
            }
            Err(err) => return self.failed(err.into()),
        };
        let waiting = usize::try_from(waiting).unwrap_or(0);
        match status {
            1 => return Ok(self.granted(token, &mut guard)),
            -1 => {
                guard.disarm();
                return Err(RedisLimiterError::QueueFull {
                    depth: waiting,
                    max_queued: self.max_queued.unwrap_or(0),
                });
            }
            _ => on_queued(waiting),
        }
        loop {
            let mut interval = if self.subscribed.load(Ordering::Acquire) {
                self.heartbeat()
            } else {
                FALLBACK_POLL
            };
            if let Ok(expiry) = u64::try_from(next_expiry) {
                interval = interval.min(Duration::from_millis(expiry + 1));
            }
            tokio::select! {
                () = waiter.notify.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
            if waiter.admitted.load(Ordering::Acquire) {
                return Ok(self.granted(token, &mut guard));
            }
            let mut invocation = self.script(&POLL);
            invocation.arg(&token);
            let answer: redis::RedisResult<(String, i64, i64)> = invocation.invoke_async(&mut self.conn.clone()).await;
            let answer = answer.map(|(epoch, status, expiry)| {
                self.saw_epoch(epoch);
                (status, expiry)
            });
            match answer {
                Ok((1, _)) => return Ok(self.granted(token, &mut guard)),
                Ok((0, expiry)) => next_expiry = expiry,
                Ok(_) => return Err(RedisLimiterError::PlaceLost),
                Err(err) => return self.failed(err.into()),
            }
        }
    }

    /// Records a granted slot: renewed from now on, no longer a waiter.
    fn granted(&self, token: String, guard: &mut LeaveGuard) -> Admission {
        guard.token = None;
        self.waiters.lock().remove(&token);
        let first = {
            let mut held = self.held.lock();
            held.insert(token.clone());
            held.len() == 1
        };
        if first {
            self.renew_kick.notify_one();
        }
        Admission {
            slot: Slot::Leased(token),
            fail_open: None,
        }
    }

    /// An acquire that could not reach Redis: fails, or proceeds unlimited when failing open.
    fn failed(&self, err: RedisLimiterError) -> Result<Admission, RedisLimiterError> {
        if self.fail_open && err.is_unavailable() {
            Ok(Admission {
                slot: Slot::Unlimited,
                fail_open: Some(err),
            })
        } else {
            Err(err)
        }
    }

    /// Releases a slot in the background; returns at once.
    pub(crate) fn release_slot(self: &Arc<Self>, slot: Slot) {
        let Slot::Leased(token) = slot else { return };
        if self.forget(&token) {
            self.leave_in_background(token, true);
        }
    }

    /// Runs the leave script for `token` on the runtime. This instance's later acquires and
    /// counts wait for it, so that a process always sees its own releases. `count_lost`: a
    /// token found without a slot is counted as a lost lease.
    pub(crate) fn leave_in_background(self: &Arc<Self>, token: String, count_lost: bool) {
        let inner = Arc::clone(self);
        let ticket = self.pending_releases.lock().start();
        self.runtime.spawn(async move {
            match inner.leave(&token).await {
                Ok(false) if count_lost => {
                    inner.lost_total.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) if err.is_unavailable() => inner.orphans.lock().push(token),
                _ => {}
            }
            inner.pending_releases.lock().in_flight.remove(&ticket);
            inner.released.notify_waiters();
        });
    }

    /// Retries the releases that failed while Redis was away, so that their slots and queue
    /// places come back at once rather than when their leases or heartbeats run out.
    pub(super) fn retry_orphans(self: &Arc<Self>) {
        let orphans = std::mem::take(&mut *self.orphans.lock());
        for token in orphans {
            self.leave_in_background(token, false);
        }
    }

    /// Waits until every release this instance sent in the background before the call was
    /// answered.
    async fn settle(&self) {
        // Only the releases sent before now: a steady stream of later ones must not starve us.
        let upto = self.pending_releases.lock().next;
        loop {
            let released = self.released.notified();
            if self
                .pending_releases
                .lock()
                .in_flight
                .first()
                .is_none_or(|&oldest| oldest >= upto)
            {
                return;
            }
            released.await;
        }
    }

    /// Releases a slot and waits for the server's answer: `Ok(false)` if its lease had run out
    /// (nothing was freed).
    async fn release_slot_now(&self, slot: Slot) -> Result<bool, RedisLimiterError> {
        let Slot::Leased(token) = slot else { return Ok(true) };
        if !self.forget(&token) {
            return Ok(false);
        }
        self.leave(&token).await
    }

    /// Stops renewing `token`; `false` if its lease is already known to be lost.
    fn forget(&self, token: &str) -> bool {
        if self.lost.lock().remove(token) {
            return false;
        }
        self.held.lock().remove(token);
        true
    }

    /// Runs the leave script for `token`: `true` if it held a slot.
    async fn leave(&self, token: &str) -> Result<bool, RedisLimiterError> {
        let mut invocation = self.script(&LEAVE);
        invocation.arg(token);
        let (epoch, held): (String, i64) = invocation.invoke_async(&mut self.conn.clone()).await?;
        self.saw_epoch(epoch);
        Ok(held == 1)
    }

    /// Extends every held lease; marks those that ran out as lost.
    async fn renew(&self) -> Result<(), RedisLimiterError> {
        let tokens: Vec<String> = self.held.lock().iter().cloned().collect();
        if tokens.is_empty() {
            return Ok(());
        }
        let mut invocation = self.script(&RENEW);
        for token in &tokens {
            invocation.arg(token);
        }
        let (epoch, renewed): (String, Vec<i64>) = invocation.invoke_async(&mut self.conn.clone()).await?;
        self.saw_epoch(epoch);
        for (token, renewed) in tokens.into_iter().zip(renewed) {
            if renewed == 0 && self.held.lock().remove(&token) {
                self.lost.lock().insert(token);
                self.lost_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A wake-up message: the comma-separated tokens just admitted.
    pub(super) fn on_wake(&self, payload: &str) {
        let waiters = self.waiters.lock();
        for token in payload.split(',') {
            if let Some(waiter) = waiters.get(token) {
                waiter.admitted.store(true, Ordering::Release);
                waiter.notify.notify_one();
            }
        }
    }

    /// Makes every local waiter poll once (after the subscription was re-established).
    pub(super) fn poll_all(&self) {
        for waiter in self.waiters.lock().values() {
            waiter.notify.notify_one();
        }
    }

    pub(crate) async fn counts(&self) -> Result<RedisCounts, RedisLimiterError> {
        self.settle().await;
        let (epoch, running, waiting): (String, usize, usize) =
            self.script(&COUNTS).invoke_async(&mut self.conn.clone()).await?;
        self.saw_epoch(epoch);
        Ok(RedisCounts {
            running,
            waiting,
            available: self.max_running.saturating_sub(running),
        })
    }

    pub(crate) fn wait_span_fields<'a>(&'a self, source: &'a str, waiting: usize) -> WaitSpanFields<'a> {
        wait_span_fields(self.name.as_deref(), source, waiting, self.max_running, self.max_queued)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }
}

/// What the Python API needs beyond the Rust one: slots held without a permit (`acquire` and
/// `release` are separate calls there) and the limits.
#[cfg(feature = "python")]
impl Inner {
    pub(crate) fn push_pooled(&self, slot: Slot) {
        self.pool.lock().push(slot);
    }

    /// Releases one pooled slot, preferring one whose lease is already lost (it frees nothing,
    /// and the live slots stay held); `false` if none is held.
    pub(crate) fn release_pooled(self: &Arc<Self>) -> bool {
        let slot = {
            let mut pool = self.pool.lock();
            let lost = self.lost.lock();
            let index = pool
                .iter()
                .position(|slot| match slot {
                    Slot::Leased(token) => lost.contains(token),
                    Slot::Unlimited => true,
                })
                .or_else(|| pool.len().checked_sub(1));
            drop(lost);
            index.map(|i| pool.swap_remove(i))
        };
        match slot {
            Some(slot) => {
                self.release_slot(slot);
                true
            }
            None => false,
        }
    }

    /// Releases `slot` from the pool, or, if another release took it already, any pooled slot.
    pub(crate) fn release_pooled_slot(self: &Arc<Self>, slot: &Slot) {
        let found = {
            let mut pool = self.pool.lock();
            pool.iter().position(|s| s == slot).map(|i| pool.swap_remove(i))
        };
        match found {
            Some(slot) => self.release_slot(slot),
            None => drop(self.release_pooled()),
        }
    }

    pub(crate) fn pooled_count(&self) -> usize {
        self.pool.lock().len()
    }
}

/// Gives up a queued (or just granted) token unless disarmed: the cancel path of `acquire_slot`.
struct LeaveGuard {
    inner: Arc<Inner>,
    token: Option<String>,
}

impl LeaveGuard {
    fn disarm(&mut self) {
        if let Some(token) = self.token.take() {
            self.inner.waiters.lock().remove(&token);
        }
    }
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.inner.waiters.lock().remove(&token);
            self.inner.leave_in_background(token, false);
        }
    }
}

/// Renews the held leases every third of a lease while any slot is held, and at once when the
/// state was found lost.
async fn renewer(inner: Weak<Inner>, mut shutdown: watch::Receiver<()>) {
    loop {
        let Some(live) = inner.upgrade() else { return };
        let heartbeat = live.heartbeat();
        let idle = live.held.lock().is_empty();
        let kick = Arc::clone(&live.renew_kick);
        drop(live);
        let kicked = tokio::select! {
            _ = shutdown.changed() => return,
            () = kick.notified() => true,
            () = tokio::time::sleep(heartbeat), if !idle => false,
        };
        let Some(live) = inner.upgrade() else { return };
        if kicked && !live.renew_now.swap(false, Ordering::AcqRel) {
            // The first slot was taken: its lease is fresh, renew a beat from now.
            continue;
        }
        // A failure (Redis away) is retried at the next beat; a lease that runs out meanwhile is
        // reported lost by the first renewal that gets through.
        drop(live.renew().await);
    }
}

impl RedisConcurrencyLimiter {
    /// Starts building a limiter on `key` at `url` (`redis://host:port/db`) with `max_running`
    /// slots shared by every process that uses the same key.
    pub fn builder(url: impl Into<String>, key: impl Into<String>, max_running: usize) -> RedisBuilder {
        RedisBuilder {
            url: url.into(),
            key: key.into(),
            max_running,
            max_queued: None,
            lease: Duration::from_secs(30),
            name: None,
            fail_open: false,
            runtime: None,
            connections: None,
        }
    }

    /// Takes a slot, waiting in the fleet-wide FIFO queue if none is free; a caller that waits
    /// opens the same wait span as [`ConcurrencyLimiter`](crate::ConcurrencyLimiter).
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::QueueFull`] if `max_queued` waiters are already queued,
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached (unless failing open), and
    /// [`RedisLimiterError::WrongType`] if a key of the limiter holds another type.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped future leaves the queue, and a slot granted at that very instant
    /// is passed on (by a task spawned on the limiter's runtime).
    pub async fn acquire(&self, source: &str) -> Result<RedisPermit, RedisLimiterError> {
        let mut span = None;
        let admission = self
            .inner
            .acquire_slot(self.inner.new_token(), |waiting| {
                span = Some(WaitSpan::start(self.inner.wait_span_fields(source, waiting)));
            })
            .await;
        drop(span);
        let admission = admission?;
        Ok(RedisPermit {
            inner: Arc::clone(&self.inner),
            slot: Some(admission.slot),
            fail_open: admission.fail_open,
        })
    }

    /// Fleet-wide counts, read from Redis.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn counts(&self) -> Result<RedisCounts, RedisLimiterError> {
        self.inner.counts().await
    }

    /// The name given to the builder.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// The fleet-wide slot count.
    #[must_use]
    pub fn max_running(&self) -> usize {
        self.inner.max_running
    }

    /// The fleet-wide queue bound.
    #[must_use]
    pub fn max_queued(&self) -> Option<usize> {
        self.inner.max_queued
    }

    /// How many leases of this process ran out while held (the process was paused, or Redis was
    /// unreachable, for longer than a lease).
    #[must_use]
    pub fn lost_total(&self) -> u64 {
        self.inner.lost_total()
    }

    /// The `max_running` of the acquire before this limiter's latest one on the key (within a
    /// lease), if it differs from this limiter's: processes sharing the key disagree on the
    /// limit, and each admits up to its own value. `None` when the latest acquire found
    /// agreement (or nobody).
    #[must_use]
    pub fn other_max_running(&self) -> Option<usize> {
        self.inner.other_max_running()
    }

    #[cfg(feature = "python")]
    pub(crate) const fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

/// One slot of a [`RedisConcurrencyLimiter`], released when dropped (in the background) or by
/// [`release`](Self::release).
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct RedisPermit {
    inner: Arc<Inner>,
    slot: Option<Slot>,
    fail_open: Option<RedisLimiterError>,
}

impl RedisPermit {
    /// Why the permit was granted without a slot: Redis was unreachable and the limiter fails
    /// open. `None` for a real slot.
    #[must_use]
    pub const fn fail_open_error(&self) -> Option<&RedisLimiterError> {
        self.fail_open.as_ref()
    }

    /// The slot's fencing token (`None` when failing open).
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        match &self.slot {
            Some(Slot::Leased(token)) => Some(token),
            _ => None,
        }
    }

    /// Releases the slot and waits for Redis to confirm. Returns `false` if the lease had run
    /// out before (the slot may belong to someone else by now, and was left alone).
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached; the lease then runs out
    /// on its own.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before Redis answered, the release may or may not have happened;
    /// either way the lease is no longer renewed.
    pub async fn release(mut self) -> Result<bool, RedisLimiterError> {
        match self.slot.take() {
            Some(slot) => self.inner.release_slot_now(slot).await,
            None => Ok(true),
        }
    }
}

impl Drop for RedisPermit {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.inner.release_slot(slot);
        }
    }
}

impl Listener for Inner {
    fn channel(&self) -> &str {
        Self::channel(self)
    }

    fn on_wake(&self, payload: &str) {
        Self::on_wake(self, payload);
    }

    /// Anything published before was missed, so every waiter checks once, and releases that
    /// failed while Redis was away are retried.
    fn subscription_up(self: Arc<Self>) {
        self.subscribed().store(true, Ordering::Release);
        self.poll_all();
        self.retry_orphans();
    }

    /// Waiters poll until the subscription is back.
    fn subscription_down(&self) {
        self.subscribed().store(false, Ordering::Release);
        self.poll_all();
    }
}
