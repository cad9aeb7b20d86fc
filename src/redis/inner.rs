//! [`Inner`], the state of one Redis limiter object in this process: its keys and how every
//! script is called, what it last saw of the fleet's state (epoch, limit, expiry), the slots it
//! holds and its waiters, and its own closing.

use super::connections::{Listener, RedisConnections};
use super::error::RedisLimiterError;
use super::scripts::{COUNTS, RESIZE};
use crate::telemetry::{WaitSpanFields, wait_span_fields};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, Value};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

/// Fleet-wide counts read from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisCounts {
    /// Slots held across the fleet (a holder of weight `w` counts `w`).
    pub running: usize,
    /// Callers queued across the fleet.
    pub waiting: usize,
    /// Free slots (`max_running - running`, never below zero).
    pub available: usize,
    /// The fleet's limit, as stored in Redis.
    pub max_running: usize,
}

/// What this object's callers did since it was created.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Slots handed out (failing open included), a weight counting as many.
    pub(crate) acquired: u64,
    /// Arrivals refused because the fleet-wide queue was full.
    pub(crate) rejected: u64,
    /// Waits given up (cancelled or timed out; not those refused by `close()` or a shrink).
    pub(crate) cancelled: u64,
}

/// The settings an [`Inner`] is made from.
pub(super) struct Settings {
    pub(super) key: String,
    pub(super) max_running: usize,
    /// When the resize that `max_running` comes from was made (a keyed limiter's, for a key
    /// made after it; see [`resize_stamp`]), 0 if it is the built value.
    pub(super) resized_at: u64,
    pub(super) max_queued: Option<usize>,
    pub(super) lease: Duration,
    pub(super) name: Option<String>,
    pub(super) fail_open: bool,
    pub(super) runtime: Handle,
    pub(super) connections: RedisConnections,
    pub(super) shutdown: watch::Sender<()>,
}

/// What this object last saw of the state on the server.
#[derive(Debug, Default)]
struct Seen {
    /// The state's epoch.
    epoch: String,
    /// Whether this object held slots or places from before the state was lost (it may then
    /// re-register them while the state recovers).
    from_before_loss: bool,
    /// The state cannot have expired from idleness before this instant: a missing epoch is then
    /// a loss.
    lives_until: Option<Instant>,
}

/// A queued waiter of this process, woken by the subscriber.
#[derive(Debug, Default)]
pub(super) struct WaiterSlot {
    pub(super) notify: Notify,
    pub(super) admitted: AtomicBool,
    /// The limit that refused it, when a shrink left the limit below its weight and it was
    /// taken out of the queue (0: not refused).
    pub(super) refused_at: AtomicU64,
}

/// Releases sent in the background, by ticket, oldest first.
#[derive(Debug, Default)]
pub(super) struct PendingReleases {
    next: u64,
    pub(super) in_flight: std::collections::BTreeSet<u64>,
}

impl PendingReleases {
    pub(super) fn start(&mut self) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.in_flight.insert(ticket);
        ticket
    }

    pub(super) const fn next(&self) -> u64 {
        self.next
    }
}

/// The Redis keys of one limit, all with the hash tag `{key}` (in the order of `lua/prelude.lua`).
const KEY_SUFFIXES: [&str; 10] = [
    "holders",
    "queue",
    "waiters",
    "seq",
    "epoch",
    "recovering",
    "limit",
    "weights",
    "places",
    "used",
];

pub(crate) struct Inner {
    pub(super) conn: ConnectionManager,
    /// The server, as errors name it (`RedisConnections::server`).
    server: String,
    key: String,
    keys: Vec<String>,
    channel: String,
    seen: Mutex<Seen>,
    /// The limit this object stores when it creates the state: the one it was built with, or
    /// the last one it saw a resize set.
    own_max_running: AtomicU64,
    /// When the resize `own_max_running` came from (this object's, or one it saw) was made, 0
    /// for a built value: it is then sent as that resize's value, which takes over from a built
    /// value or an earlier resize stored by another process while the state is idle (see
    /// `claim()` in `lua/prelude.lua`).
    own_resized_at: AtomicU64,
    /// The fleet's limit as last seen.
    max_running: AtomicU64,
    /// The epoch and resize number of the limit last noted: a reply with an older resize of
    /// the same state (processed late) is not noted (see `saw_limit`).
    limit_seen: Mutex<(String, u64)>,
    pub(super) max_queued: Option<usize>,
    pub(super) lease: Duration,
    name: Option<String>,
    pub(super) fail_open: bool,
    pub(super) runtime: Handle,
    instance: String,
    next_token: AtomicU64,
    /// Tokens this process holds on the server, with their weights: the renewer extends their
    /// leases.
    pub(super) held: Mutex<HashMap<String, u32>>,
    /// Tokens whose lease ran out while held; releasing one frees nothing.
    pub(super) lost: Mutex<HashSet<String>>,
    pub(super) lost_total: AtomicU64,
    /// The fleet's limit when it differs from the one this object was built with and no resize
    /// set it (0: it agrees).
    other_max_running: AtomicU64,
    /// The last such value the Python layer warned about (0: none).
    #[cfg(feature = "python")]
    warned_max_running: AtomicU64,
    /// Slots held without a permit (the Python API's `acquire`/`release`).
    #[cfg(feature = "python")]
    pub(super) pool: super::pool::Pool,
    /// Queued tokens of this process, by token.
    pub(super) waiters: Mutex<HashMap<String, Arc<WaiterSlot>>>,
    /// Whether this object listens on its wake-up channel (from its first wait on), and whether
    /// the subscription carries it; waiters poll often while it does not.
    listening: AtomicBool,
    pub(super) subscribed: AtomicBool,
    /// Releases sent in the background and not yet answered; counts wait for them, so that a
    /// process reads its own releases.
    pub(super) pending_releases: Mutex<PendingReleases>,
    pub(super) released: Notify,
    /// Releases that failed because Redis was away (token, slots): retried on reconnection.
    pub(super) orphans: Mutex<Vec<(String, Option<u32>)>>,
    /// Wakes the renewer when the first slot is taken, or to renew at once (`renew_now`).
    pub(super) renew_kick: Arc<Notify>,
    pub(super) renew_now: AtomicBool,
    /// Set by `close()`: this object admits nobody any more.
    closed: AtomicBool,
    /// Slots this object's callers hold (leased or failed open), and the wake-up of
    /// `wait_idle()` when it falls to 0.
    holding: AtomicUsize,
    idle: Notify,
    pub(super) acquired_total: AtomicU64,
    pub(super) rejected_total: AtomicU64,
    pub(super) cancelled_total: AtomicU64,
    /// Dropped with the limiter: the renewer stops.
    _shutdown: watch::Sender<()>,
    /// Kept open while the limiter lives; it unregisters from them when dropped.
    connections: RedisConnections,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if *self.listening.get_mut() {
            self.connections.unregister(&self.channel);
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConcurrencyLimiter")
            .field("key", &self.key)
            .field("max_running", &self.max_running())
            .field("max_queued", &self.max_queued)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Milliseconds, at least 1 (Lua receives integers).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
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

/// The time of a resize made now, in milliseconds since the Unix epoch: what orders two resizes
/// of a key (the later wins, see `claim()` in `lua/prelude.lua`). Within this process each is
/// later than the one before, whatever the clock does.
pub(super) fn resize_stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    if previous < now {
        now
    } else {
        // The clock went back, or two resizes in one millisecond: one after the last.
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn unexpected(err: impl std::fmt::Display) -> RedisLimiterError {
    RedisLimiterError::Server(format!("unexpected reply from Redis: {err}"))
}

impl Inner {
    pub(super) fn new(settings: Settings) -> Arc<Self> {
        let key = settings.key;
        Arc::new(Self {
            conn: settings.connections.conn(),
            server: settings.connections.server().to_owned(),
            keys: KEY_SUFFIXES
                .iter()
                .map(|suffix| format!("{{{key}}}:{suffix}"))
                .collect(),
            channel: format!("{{{key}}}:wake"),
            key,
            seen: Mutex::new(Seen::default()),
            own_max_running: AtomicU64::new(settings.max_running as u64),
            own_resized_at: AtomicU64::new(settings.resized_at),
            max_running: AtomicU64::new(settings.max_running as u64),
            limit_seen: Mutex::new((String::new(), 0)),
            max_queued: settings.max_queued,
            lease: settings.lease,
            name: settings.name,
            fail_open: settings.fail_open,
            runtime: settings.runtime,
            instance: instance_id(),
            next_token: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            lost: Mutex::new(HashSet::new()),
            lost_total: AtomicU64::new(0),
            other_max_running: AtomicU64::new(0),
            #[cfg(feature = "python")]
            warned_max_running: AtomicU64::new(0),
            #[cfg(feature = "python")]
            pool: super::pool::Pool::default(),
            waiters: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            pending_releases: Mutex::new(PendingReleases::default()),
            released: Notify::new(),
            orphans: Mutex::new(Vec::new()),
            renew_kick: Arc::new(Notify::new()),
            renew_now: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            holding: AtomicUsize::new(0),
            idle: Notify::new(),
            acquired_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            cancelled_total: AtomicU64::new(0),
            _shutdown: settings.shutdown,
            connections: settings.connections,
        })
    }

    /// Routes the wake-ups of this object's channel to it from now on (once the subscription
    /// confirms; its waiters poll until then). Only objects that had a waiter subscribe: a key
    /// only ever taken at once costs no subscription.
    pub(super) fn listen(self: &Arc<Self>) {
        if !self.listening.swap(true, Ordering::AcqRel) {
            self.connections.register(self);
        }
    }

    /// Runs `script` with the common keys and arguments (see `lua/prelude.lua`) and then `extra`;
    /// notes the head of the reply and returns the rest.
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        script: &Script,
        extra: &[String],
    ) -> Result<T, RedisLimiterError> {
        let (known, from_before_loss) = {
            let seen = self.seen.lock();
            // After the state may have expired from idleness, a missing epoch is no loss.
            let alive = seen.lives_until.is_some_and(|until| Instant::now() < until);
            (
                if alive { seen.epoch.clone() } else { String::new() },
                seen.from_before_loss,
            )
        };
        let mut invocation = script.key(&self.keys[0]);
        for key in &self.keys[1..] {
            invocation.key(key);
        }
        invocation
            .arg(&self.channel)
            .arg(self.own_limit_arg())
            .arg(millis(self.lease))
            .arg(&known)
            .arg(self.new_token())
            .arg(if from_before_loss { "1" } else { "0" });
        for arg in extra {
            invocation.arg(arg);
        }
        let sent = Instant::now();
        let mut reply: Vec<Value> = match invocation.invoke_async(&mut self.conn.clone()).await {
            Ok(reply) => reply,
            Err(err) => return Err(self.failure(err).await),
        };
        if reply.len() < 5 {
            return Err(unexpected(format!("{reply:?}")));
        }
        let rest = reply.split_off(5);
        let (epoch, limit, resize, resized_at, ttl): (String, u64, u64, u64, u64) =
            redis::from_redis_value(Value::Array(reply)).map_err(unexpected)?;
        if !epoch.is_empty() {
            self.saw_limit(&epoch, limit, resize, resized_at);
            self.saw_state(epoch, !known.is_empty(), sent + Duration::from_millis(ttl));
        }
        redis::from_redis_value(Value::Array(rest)).map_err(unexpected)
    }

    /// The error of a failed script call. A server that wants credentials the URL does not give
    /// drops the connection on a script's first, long command (too many arguments before AUTH),
    /// which reads as a broken connection (for every caller whose command was on it): a `PING` on
    /// a connection of its own then tells whether it was that (NOAUTH).
    async fn failure(&self, err: redis::RedisError) -> RedisLimiterError {
        let dropped = err.is_connection_dropped();
        let err = RedisLimiterError::from(err);
        if dropped && let Some(refusal) = self.connections.refusal().await {
            return refusal;
        }
        err.at_server(&self.server)
    }

    /// This object's own limit as the scripts take it (see `lua/prelude.lua`).
    fn own_limit_arg(&self) -> String {
        let own = self.own_max_running.load(Ordering::Relaxed);
        match self.own_resized_at.load(Ordering::Relaxed) {
            0 => own.to_string(),
            at => format!("{own}!{at}"),
        }
    }

    /// Notes the state's epoch from a reply. A new epoch after one this object sent as known
    /// means Redis lost the state: the slots it holds are re-registered at once (see
    /// `lua/prelude.lua`).
    fn saw_state(&self, epoch: String, sent_known: bool, lives_until: Instant) {
        let lost = {
            let mut seen = self.seen.lock();
            seen.lives_until = Some(seen.lives_until.map_or(lives_until, |until| until.max(lives_until)));
            if seen.epoch == epoch {
                return;
            }
            let lost = sent_known && !seen.epoch.is_empty();
            seen.epoch = epoch;
            seen.from_before_loss = lost;
            lost
        };
        if lost {
            self.renew_now.store(true, Ordering::Release);
            self.renew_kick.notify_one();
            self.poll_all();
        }
    }

    /// Notes the fleet's limit from a reply of the state `epoch`, set by its `resize`-th resize
    /// (0: stored by its first user): followed from now on; adopted as this object's own if a
    /// resize set it, else remembered (for `other_max_running`) when it differs from it. Replies
    /// are processed by several tasks, so one from before a resize may come after it: a resize
    /// older than the one noted for the same state is ignored.
    fn saw_limit(&self, epoch: &str, limit: u64, resize: u64, resized_at: u64) {
        let mut seen = self.limit_seen.lock();
        if seen.0 == epoch && resize < seen.1 {
            return;
        }
        if seen.0 != epoch {
            epoch.clone_into(&mut seen.0);
        }
        seen.1 = resize;
        self.max_running.store(limit, Ordering::Relaxed);
        // A stored resize becomes this object's own unless its own is later (then its next use
        // of the idle state stores its own: see `claim()`). A resize stored by a version that did
        // not time resizes counts as the earliest.
        let resized_at = resized_at.max(1);
        if resize > 0 && resized_at >= self.own_resized_at.load(Ordering::Relaxed) {
            self.own_max_running.store(limit, Ordering::Relaxed);
            self.own_resized_at.store(resized_at, Ordering::Relaxed);
        }
        let own = self.own_max_running.load(Ordering::Relaxed);
        self.other_max_running
            .store(if limit == own { 0 } else { limit }, Ordering::Relaxed);
    }

    /// The fleet's limit as last seen (the one this object was built with until then).
    pub(crate) fn max_running(&self) -> usize {
        usize::try_from(self.max_running.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The limit this object stores when it creates the state (see `own_max_running`).
    #[cfg(feature = "python")]
    pub(crate) fn own_max_running(&self) -> u64 {
        self.own_max_running.load(Ordering::Relaxed)
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

    pub(super) fn heartbeat(&self) -> Duration {
        self.lease / 3
    }

    pub(crate) fn new_token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// A wake-up message: the comma-separated tokens just admitted, and those refused as
    /// `!{limit}!{token}`.
    fn on_wake(&self, payload: &str) {
        let waiters = self.waiters.lock();
        for item in payload.split(',') {
            let refused = item
                .strip_prefix('!')
                .and_then(|rest| rest.split_once('!'))
                .and_then(|(limit, token)| Some((limit.parse::<u64>().ok()?, token)));
            let token = refused.map_or(item, |(_, token)| token);
            if let Some(waiter) = waiters.get(token) {
                match refused {
                    Some((limit, _)) => waiter.refused_at.store(limit.max(1), Ordering::Release),
                    None => waiter.admitted.store(true, Ordering::Release),
                }
                waiter.notify.notify_one();
            }
        }
    }

    /// Makes every local waiter look again (after the subscription was re-established, or when
    /// this object is closed).
    pub(super) fn poll_all(&self) {
        for waiter in self.waiters.lock().values() {
            waiter.notify.notify_one();
        }
    }

    pub(crate) async fn counts(&self) -> Result<RedisCounts, RedisLimiterError> {
        self.settle().await;
        let (running, waiting): (usize, usize) = self.call(&COUNTS, &[]).await?;
        let max_running = self.max_running();
        Ok(RedisCounts {
            running,
            waiting,
            available: max_running.saturating_sub(running),
            max_running,
        })
    }

    /// Sets the fleet's limit (checked by the caller), as the resize made at `at` (see
    /// [`resize_stamp`]).
    pub(crate) async fn resize(&self, max_running: usize, at: u64) -> Result<(), RedisLimiterError> {
        let () = self.call(&RESIZE, &[max_running.to_string(), at.to_string()]).await?;
        Ok(())
    }

    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.poll_all();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// One more acquire's slots (`weight` of them) held by this object's callers.
    pub(super) fn hold_one(&self, weight: u32) {
        self.holding.fetch_add(1, Ordering::AcqRel);
        self.acquired_total.fetch_add(u64::from(weight), Ordering::Relaxed);
    }

    /// A wait of this object's callers given up.
    pub(crate) fn count_cancelled(&self) {
        self.cancelled_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            acquired: self.acquired_total.load(Ordering::Relaxed),
            rejected: self.rejected_total.load(Ordering::Relaxed),
            cancelled: self.cancelled_total.load(Ordering::Relaxed),
        }
    }

    /// How many slots this object's callers hold.
    pub(super) fn holding(&self) -> usize {
        self.holding.load(Ordering::Acquire)
    }

    /// One slot fewer held by this object's callers; the last one wakes `wait_idle()`.
    pub(super) fn unhold_one(&self) {
        if self.holding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once this object's callers hold no slot.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.holding.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    pub(crate) fn wait_span_fields<'a>(&'a self, source: &'a str, waiting: usize) -> WaitSpanFields<'a> {
        wait_span_fields(
            self.name.as_deref(),
            source,
            waiting,
            self.max_running(),
            self.max_queued,
        )
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The Redis key of the limit.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }
}

impl Listener for Inner {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn on_wake(&self, payload: &str) {
        Self::on_wake(self, payload);
    }

    /// Anything published before was missed, so every waiter checks once, and releases that
    /// failed while Redis was away are retried.
    fn subscription_up(self: Arc<Self>) {
        self.subscribed.store(true, Ordering::Release);
        self.poll_all();
        self.retry_orphans();
    }

    /// Waiters poll until the subscription is back.
    fn subscription_down(&self) {
        self.subscribed.store(false, Ordering::Release);
        self.poll_all();
    }
}
