//! Taking slots: [`Inner::acquire_slot`] (arrive, wait in the fleet-wide queue, or be refused)
//! and [`Inner::try_slot`] (free slots only), with the cancel path ([`LeaveGuard`]).

use super::error::RedisLimiterError;
use super::inner::{Inner, WaiterSlot};
use super::scripts::{ACQUIRE, POLL};
use super::slot::Slot;
use crate::waiters::Request;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often a waiter polls while the wake-up channel is down (a fallback only).
const FALLBACK_POLL: Duration = Duration::from_millis(100);

/// The result of an acquire: the slot, its weight, and the error that made it fail open, if it
/// did.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) slot: Slot,
    pub(crate) weight: u32,
    pub(crate) fail_open: Option<RedisLimiterError>,
}

/// How the acquire script answered an arrival.
enum Arrival {
    Admitted,
    Queued {
        waiting: usize,
        next_expiry: i64,
    },
    /// Not admitted at once, and not queued (`only_free`).
    NotFree,
}

impl Inner {
    /// Refuses an acquire on a closed object, or of weight 0. A weight above the limit is the
    /// server's to refuse: the fleet's limit may have grown since this object last saw it.
    fn check(&self, request: Request) -> Result<(), RedisLimiterError> {
        if self.is_closed() {
            return Err(RedisLimiterError::Closed);
        }
        request.check(u32::MAX).map_err(RedisLimiterError::from)
    }

    /// Runs the acquire script for `token`: admitted, queued, not admitted (`only_free`), or
    /// refused (a full queue, a weight above the limit).
    async fn arrive(&self, token: &str, request: Request, only_free: bool) -> Result<Arrival, RedisLimiterError> {
        let max_queued = self.max_queued.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let extra = [
            token.to_owned(),
            max_queued.to_string(),
            request.weight.to_string(),
            request.priority.to_string(),
            if only_free { "1" } else { "0" }.to_owned(),
        ];
        let (status, _running, waiting, next_expiry): (i64, i64, i64, i64) = self.call(&ACQUIRE, &extra).await?;
        let waiting = usize::try_from(waiting).unwrap_or(0);
        match status {
            1 => Ok(Arrival::Admitted),
            0 => Ok(Arrival::Queued { waiting, next_expiry }),
            -1 => {
                self.rejected_total.fetch_add(1, Ordering::Relaxed);
                Err(RedisLimiterError::QueueFull {
                    depth: waiting,
                    max_queued: self.max_queued.unwrap_or(0),
                })
            }
            -2 => Ok(Arrival::NotFree),
            _ => Err(self.too_heavy(request)),
        }
    }

    /// A refusal of `request` by the limit as last seen.
    fn too_heavy(&self, request: Request) -> RedisLimiterError {
        too_heavy(request, self.max_running() as u64)
    }

    /// Takes `request.weight` free slots if nobody is queued: `Ok(None)` if too few are free or
    /// this object is closed.
    pub(crate) async fn try_slot(self: &Arc<Self>, weight: u32) -> Result<Option<Admission>, RedisLimiterError> {
        let request = Request { weight, priority: 0 };
        match self.check(request) {
            Err(RedisLimiterError::Closed) => return Ok(None),
            other => other?,
        }
        self.settle().await;
        let token = self.new_token();
        match self.arrive(&token, request, true).await {
            Ok(Arrival::NotFree) => Ok(None),
            Ok(_) => Ok(Some(self.granted(token, weight))),
            Err(err) => {
                if err.is_unavailable() {
                    // The script may have run: whatever it took goes back.
                    self.leave_in_background(token, None, false);
                }
                self.failed(err, weight).map(Some)
            }
        }
    }

    /// Takes a slot, waiting in the fleet-wide queue (by priority, then arrival) if none is
    /// free. `on_queued(depth)` runs once if the caller has to wait. The slot is renewed from
    /// the moment it is granted.
    ///
    /// Cancel safe: dropping the future gives up the place, and a slot granted at that instant
    /// is released (by a task spawned on the runtime).
    ///
    /// `wait.deadline` bounds the wait in the queue only: free slots are taken whatever the
    /// deadline, as by the local limiter. A wait given up through the deadline, or by dropping
    /// the future when `wait.count_drop`, counts in `cancelled_total`.
    pub(crate) async fn acquire_slot(
        self: &Arc<Self>,
        token: String,
        request: Request,
        wait: Wait,
        on_queued: impl FnOnce(usize),
    ) -> Result<Admission, RedisLimiterError> {
        self.check(request)?;
        self.settle().await;
        self.listen();
        let waiter = Arc::new(WaiterSlot::default());
        self.waiters.lock().insert(token.clone(), Arc::clone(&waiter));
        let mut guard = LeaveGuard {
            inner: Arc::clone(self),
            token: Some(token.clone()),
            count: wait.count_drop,
        };
        let mut next_expiry = match self.arrive(&token, request, false).await {
            Ok(Arrival::Admitted) => return Ok(self.admitted(token, request.weight, &mut guard)),
            Ok(Arrival::Queued { waiting, next_expiry }) => {
                on_queued(waiting);
                next_expiry
            }
            Ok(Arrival::NotFree) => {
                return Err(RedisLimiterError::Server(
                    "the acquire script neither admitted nor queued the caller".to_owned(),
                ));
            }
            Err(err) => {
                if !err.is_unavailable() {
                    // Refused by the script: nothing to give up (else the guard gives up
                    // whatever the script may have done).
                    guard.disarm();
                }
                return self.failed(err, request.weight);
            }
        };
        let poll_args = [token.clone(), request.weight.to_string(), request.priority.to_string()];
        loop {
            let mut interval = if self.subscribed.load(Ordering::Acquire) {
                self.heartbeat()
            } else {
                FALLBACK_POLL
            };
            if let Ok(expiry) = u64::try_from(next_expiry) {
                interval = interval.min(Duration::from_millis(expiry + 1));
            }
            let wake = tokio::time::Instant::now() + interval;
            let until = wait.deadline.map_or(wake, |deadline| deadline.min(wake));
            tokio::select! {
                () = waiter.notify.notified() => {}
                () = tokio::time::sleep_until(until) => {}
            }
            if waiter.admitted.load(Ordering::Acquire) {
                return Ok(self.admitted(token, request.weight, &mut guard));
            }
            // The guard leaves the queue from here on (and passes on a slot granted meanwhile).
            let refused_at = waiter.refused_at.load(Ordering::Acquire);
            if refused_at != 0 {
                guard.count = false;
                return Err(too_heavy(request, refused_at));
            }
            if self.is_closed() {
                guard.count = false;
                return Err(RedisLimiterError::Closed);
            }
            if wait
                .deadline
                .is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
            {
                guard.count = true;
                return Err(RedisLimiterError::TimedOut);
            }
            let (status, expiry): (i64, i64) = match self.call(&POLL, &poll_args).await {
                Ok(answer) => answer,
                Err(err) => return self.failed(err, request.weight),
            };
            match status {
                1 => return Ok(self.admitted(token, request.weight, &mut guard)),
                0 => next_expiry = expiry,
                -3 => {
                    guard.count = false;
                    return Err(self.too_heavy(request));
                }
                _ => return Err(RedisLimiterError::PlaceLost),
            }
        }
    }

    /// A queued or arriving token got its slot: no longer a waiter, no longer to be given up.
    fn admitted(&self, token: String, weight: u32, guard: &mut LeaveGuard) -> Admission {
        guard.disarm();
        self.granted(token, weight)
    }

    /// Records a granted slot: renewed from now on, held by this object's callers.
    fn granted(&self, token: String, weight: u32) -> Admission {
        let first = {
            let mut held = self.held.lock();
            held.insert(token.clone(), weight);
            held.len() == 1
        };
        if first {
            self.renew_kick.notify_one();
        }
        self.hold_one(weight);
        Admission {
            slot: Slot::Leased(token),
            weight,
            fail_open: None,
        }
    }

    /// An acquire that failed: proceeds unlimited when failing open and Redis was unreachable.
    fn failed(&self, err: RedisLimiterError, weight: u32) -> Result<Admission, RedisLimiterError> {
        if self.fail_open && err.is_unavailable() {
            self.hold_one(weight);
            Ok(Admission {
                slot: Slot::Unlimited,
                weight,
                fail_open: Some(err),
            })
        } else {
            Err(err)
        }
    }
}

/// How an acquire waits: until when, and whether a dropped future counts as a cancelled wait
/// (the Python API counts its cancellations where it makes them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) count_drop: bool,
}

/// A refusal of `request` by a limit of `max_running`.
fn too_heavy(request: Request, max_running: u64) -> RedisLimiterError {
    RedisLimiterError::WeightTooLarge {
        weight: request.weight,
        max_running: u32::try_from(max_running).unwrap_or(u32::MAX),
    }
}

/// Gives up a queued (or just granted) token unless disarmed: the cancel path of `acquire_slot`.
struct LeaveGuard {
    inner: Arc<Inner>,
    token: Option<String>,
    /// Whether giving up counts as a cancelled wait.
    count: bool,
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
            if self.count {
                self.inner.cancelled_total.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.leave_in_background(token, None, false);
        }
    }
}
