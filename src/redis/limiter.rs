//! [`RedisConcurrencyLimiter`], its builder and its RAII [`RedisPermit`].

use super::admission::{Admission, Wait};
use super::connections::RedisConnections;
use super::error::RedisLimiterError;
use super::inner::{Inner, RedisCounts, Settings, resize_stamp};
use super::release::renewer;
use super::slot::Slot;
use crate::error::check_max_running;
use crate::telemetry::WaitSpan;
use crate::waiters::Request;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::watch;
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

/// Builds a [`RedisConcurrencyLimiter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBuilder {
    pub(super) url: String,
    pub(super) key: String,
    pub(super) max_running: usize,
    pub(super) max_queued: Option<usize>,
    pub(super) lease: Duration,
    pub(super) name: Option<String>,
    pub(super) fail_open: bool,
    pub(super) runtime: Option<Handle>,
    pub(super) connections: Option<RedisConnections>,
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
        let ready = self.ready("key")?;
        let inner = ready.make(ready.builder.key.clone(), ready.builder.max_running, 0);
        Ok(RedisConcurrencyLimiter { inner })
    }

    /// The builder checked, with its runtime and connections: it then makes the state of a
    /// limiter object on any key without failing. `what_key` names the key in messages (`key`,
    /// or a keyed limiter's `key_prefix`).
    pub(super) fn ready(mut self, what_key: &str) -> Result<Ready, RedisLimiterError> {
        let config = |msg: String| RedisLimiterError::Config(msg);
        let max_running = i128::try_from(self.max_running).unwrap_or(i128::MAX);
        check_max_running(max_running).map_err(|e| config(e.to_string()))?;
        if self.key.is_empty() {
            return Err(config(format!("{what_key} must not be empty")));
        }
        if self.lease < MIN_LEASE {
            return Err(config(format!(
                "lease must be at least {} ms, got {:?}",
                MIN_LEASE.as_millis(),
                self.lease
            )));
        }
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => {
                Handle::try_current().map_err(|_| config("RedisConcurrencyLimiter needs a tokio runtime".to_owned()))?
            }
        };
        let connections = match self.connections.take() {
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
        Ok(Ready {
            builder: self,
            runtime,
            connections,
        })
    }
}

/// `max_running` if it is in range, else a [`RedisLimiterError::Config`].
pub(super) fn checked_max_running(max_running: usize) -> Result<usize, RedisLimiterError> {
    check_max_running(i128::try_from(max_running).unwrap_or(i128::MAX))
        .map(|n| n as usize)
        .map_err(|e| RedisLimiterError::Config(e.to_string()))
}

/// A checked [`RedisBuilder`] with its runtime and connections: it makes limiter objects.
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) builder: RedisBuilder,
    runtime: Handle,
    connections: RedisConnections,
}

impl Ready {
    /// The state of a limiter object on `key` with `max_running`, and its renewer.
    pub(super) fn make(&self, key: String, max_running: usize, resized_at: u64) -> Arc<Inner> {
        let (shutdown, shutdown_rx) = watch::channel(());
        let settings = &self.builder;
        let inner = Inner::new(Settings {
            key,
            max_running,
            resized_at,
            max_queued: settings.max_queued,
            lease: settings.lease,
            name: settings.name.clone(),
            fail_open: settings.fail_open,
            runtime: self.runtime.clone(),
            connections: self.connections.clone(),
            shutdown,
        });
        inner.runtime.spawn(renewer(Arc::downgrade(&inner), shutdown_rx));
        inner
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
        self.acquire_with(source, 1, 0).await
    }

    /// Takes `weight` slots at once (tokio's `acquire_many`), e.g. for a token budget shared by
    /// the fleet. See [`acquire_with`](Self::acquire_with).
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with).
    pub async fn acquire_many(&self, source: &str, weight: u32) -> Result<RedisPermit, RedisLimiterError> {
        self.acquire_with(source, weight, 0).await
    }

    /// Takes `weight` slots at once, queued by `priority` (higher first, FIFO within one
    /// priority). As in the local limiter's [`Acquire::weight`](crate::Acquire::weight) and
    /// [`Acquire::priority`](crate::Acquire::priority): the queue is head-of-line blocking (a
    /// heavy head is never overtaken), a newcomer never takes free slots while anyone it does
    /// not outrank is queued, and holders are never pre-empted. Strict priorities can starve the
    /// lower ones for as long as higher ones keep coming.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), and [`RedisLimiterError::ZeroWeight`] for a weight of 0,
    /// [`RedisLimiterError::WeightTooLarge`] for more than the fleet's `max_running` (also for a
    /// waiter when a resize shrinks the limit below its weight), and
    /// [`RedisLimiterError::Closed`] once [`close`](Self::close) was called (also for a waiter).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_with(
        &self,
        source: &str,
        weight: u32,
        priority: i32,
    ) -> Result<RedisPermit, RedisLimiterError> {
        RedisPermit::acquire(&self.inner, source, Request { weight, priority }).await
    }

    /// Takes `weight` free slots without waiting: `None` if too few are free, anybody is queued,
    /// or the limiter is closed. One round trip.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::ZeroWeight`] and [`RedisLimiterError::WeightTooLarge`] for a weight
    /// that can never be served, [`RedisLimiterError::Unavailable`] if Redis cannot be reached
    /// (unless failing open: then the permit holds no slot).
    ///
    /// # Cancel safety
    ///
    /// A slot granted to a dropped future expires with its lease (it is never renewed).
    pub async fn try_acquire(&self, weight: u32) -> Result<Option<RedisPermit>, RedisLimiterError> {
        Ok(self
            .inner
            .try_slot(weight)
            .await?
            .map(|admission| self.permit(admission)))
    }

    fn permit(&self, admission: super::admission::Admission) -> RedisPermit {
        RedisPermit {
            inner: Arc::clone(&self.inner),
            slot: Some(admission.slot),
            weight: admission.weight,
            fail_open: admission.fail_open,
        }
    }

    /// Sets `max_running` for the whole fleet: every limiter on the key follows it from its next
    /// script call. Growing admits waiters at once; shrinking lets the holders finish (nobody
    /// is pre-empted) and refuses the waiters heavier than the new limit.
    ///
    /// The limit lives in Redis with the rest of the state: once the state expires idle, the
    /// next user stores its own. A limiter that made or saw this resize stores the resized
    /// value, and stores it also over a built value or an earlier resize it finds while the
    /// state is idle (resizes are ordered by the clocks of the processes that made them).
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Config`] for a limit out of range,
    /// [`RedisLimiterError::Unavailable`] if Redis cannot be reached.
    pub async fn set_max_running(&self, max_running: usize) -> Result<(), RedisLimiterError> {
        self.inner
            .resize(checked_max_running(max_running)?, resize_stamp())
            .await
    }

    /// Stops admitting through this limiter object (and its clones); other limiters on the key
    /// are not affected. From then on its queued waiters and new acquires fail with
    /// [`RedisLimiterError::Closed`] and [`try_acquire`](Self::try_acquire) returns `None`;
    /// holders keep their slots and release them as usual. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Resolves once no slot taken through this limiter object (and its clones) is held, at
    /// once if none is. It takes no slot and is no waiter. With [`close`](Self::close), a
    /// graceful shutdown of this process's share of the fleet.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
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

    /// The fleet's `max_running` as this limiter last saw it in Redis (the one it was built with
    /// until its first script call).
    #[must_use]
    pub fn max_running(&self) -> usize {
        self.inner.max_running()
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

    /// The fleet's `max_running` stored in Redis, when it differs from the one this limiter was
    /// built with and no resize set it: another process stored its own value first, and this
    /// limiter follows that one. `None` when they agree (or after a resize, which every limiter
    /// adopts).
    #[must_use]
    pub fn other_max_running(&self) -> Option<usize> {
        self.inner.other_max_running()
    }

    #[cfg(feature = "python")]
    pub(crate) const fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

/// The slots of one acquire of a [`RedisConcurrencyLimiter`], released when dropped (in the
/// background) or by [`release`](Self::release).
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct RedisPermit {
    inner: Arc<Inner>,
    slot: Option<Slot>,
    weight: u32,
    fail_open: Option<RedisLimiterError>,
}

impl RedisPermit {
    pub(super) fn new(inner: &Arc<Inner>, admission: Admission) -> Self {
        Self {
            inner: Arc::clone(inner),
            slot: Some(admission.slot),
            weight: admission.weight,
            fail_open: admission.fail_open,
        }
    }

    /// Takes the slots of `request` from `inner`, within a wait span if the caller waits.
    pub(super) async fn acquire(inner: &Arc<Inner>, source: &str, request: Request) -> Result<Self, RedisLimiterError> {
        let mut span = None;
        let admission = inner
            .acquire_slot(
                inner.new_token(),
                request,
                Wait {
                    deadline: None,
                    count_drop: true,
                },
                |waiting| {
                    span = Some(WaitSpan::start(inner.wait_span_fields(source, waiting)));
                },
            )
            .await;
        drop(span);
        Ok(Self::new(inner, admission?))
    }

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

    /// The number of slots it holds.
    #[must_use]
    pub const fn weight(&self) -> u32 {
        self.weight
    }

    /// Releases the slots and waits for Redis to confirm. Returns `false` if the lease had run
    /// out before (the slots may belong to someone else by now, and were left alone).
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
