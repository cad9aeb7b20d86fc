//! The admission core: a counting semaphore with a priority-ordered FIFO waiter queue, weighted
//! requests, direct handoff, an exact `max_queued` bound, run-time resizing, closing and a
//! wait for idleness.
//!
//! # Implementation details
//!
//! Two pieces of state:
//!
//! * `state`, one `AtomicU64`: the free slots in bits 0..32, the held slots in bits 32..63 and a
//!   `CONTENDED` flag in bit 63. Taking `w` free slots is a single compare-and-swap that moves
//!   `w` units from the free count to the held count, so `available` and `running` can never be
//!   read out of step. `CONTENDED` is set exactly while somebody is queued, a waiter has been
//!   handed slots it has not taken yet, a shrink has left a debt, somebody waits for idleness or
//!   the limiter is closed; it only changes with the lock held, and while it is set **only the
//!   lock's holder changes `state`**.
//! * `locked`, a mutex over the waiter queue, the resize debt, the idle waiters, the wake-ups
//!   still to deliver and the lifetime totals.
//!
//! The uncontended path takes no lock at all: acquiring is one compare-and-swap, and so is a
//! release while `CONTENDED` is clear (the slots simply become free). With `CONTENDED` set a
//! release takes the lock, retires slots to pay a debt, adds the rest to the free count and then
//! grants from the head of the queue for as long as the head's weight fits in the free count
//! (`running` grows by what is handed over: the slots change hands).
//!
//! The rule that makes FIFO and "no barging" hold: **the lock-free path takes slots only while
//! `CONTENDED` is clear**, and a waiter queues itself, under the lock, only after a
//! compare-and-swap that sets `CONTENDED` while too few slots are free; a lock-free release
//! whose own compare-and-swap came first makes that one fail, and the arrival takes the freed
//! slots instead. From then on every release goes through the lock. Free slots may build up while
//! the head waits for enough of them (head-of-line blocking, as tokio's `acquire_many`): nobody
//! behind the head and no newcomer can take them, except a newcomer whose priority puts it at
//! the head of the queue (it is served first, as it would be a moment later).
//!
//! `max_queued` is checked under the same lock that queues the waiter, so N simultaneous
//! arrivals admit exactly the free queue places, and every arrival that neither gets its slots
//! nor is admitted is rejected at once.
//!
//! Cancellation: a waiter's entry in the queue stays its own until it removes it. If it removes
//! an entry that is still queued it held nothing (and the next waiter may now fit); if a release
//! had already granted it (the instant of handoff), removing it releases those slots again under
//! the same lock, which hands them on. Nothing is lost, nothing is counted twice.
//!
//! Releases without a permit (the Python layer's `release()`) are checked, not trusted: slots
//! handed to a waiter that has not taken them yet count among the held slots but belong to that
//! waiter, so a release of `w` only succeeds while the held slots exceed such granted slots by
//! at least `w`. That is why `CONTENDED` stays set until a granted waiter takes its slots.
//!
//! Closing marks every queued waiter refused (it is woken and fails with
//! [`AcquireError::Closed`]) and keeps `CONTENDED` set for good, so that every later arrival
//! comes to the lock and is refused too, while holders release as usual. A shrink below a queued
//! waiter's weight refuses that waiter the same way ([`AcquireError::WeightTooLarge`]).
//!
//! Idleness: a caller waiting for no slot to be held registers under the lock after a
//! compare-and-swap that sets `CONTENDED` only while slots are held, so the release that frees
//! the last one comes through the lock and wakes it. A handoff never makes the limiter idle.
//!
//! Wake-ups: wakers are always woken (and dropped) after the lock is released (a waker may run
//! arbitrary code, such as a Python callback that needs the GIL, and none of it may run inside
//! the critical section), and in the order the slots were handed over. A grant appends the
//! waiter's waker to `outbox` under the lock; whoever finds no one delivering becomes the one
//! deliverer and wakes the outbox in order, outside the lock, until it is empty, while other
//! releasers only append. Two releasers on two threads can therefore never deliver their
//! wake-ups out of order, even if the first is preempted between its grant and its wake-up.
//!
//! Shrinking `max_running` below the number of held slots records a debt: the next releases
//! retire slots instead of handing them on, until the holders fit under the new limit.
//!
//! # Memory ordering
//!
//! Every `state` update is `AcqRel` and every read `Acquire`, so whatever a holder wrote before
//! its release is visible to whoever takes the slot next, through the fast path or a handoff
//! (the handoff itself is ordered by the mutex).

use crate::error::{AcquireError, ReleaseError};
use crate::stats::LimiterStats;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::waiters::{Removed, Request, Standing, WaiterId, WaiterList};
use std::collections::VecDeque;
use std::task::Waker;

const AVAILABLE_MASK: u64 = u32::MAX as u64;
const RUNNING_ONE: u64 = 1 << 32;
const CONTENDED: u64 = 1 << 63;
const RUNNING_MASK: u64 = !AVAILABLE_MASK & !CONTENDED;

const fn available_of(state: u64) -> u32 {
    (state & AVAILABLE_MASK) as u32
}

const fn running_of(state: u64) -> u32 {
    ((state & RUNNING_MASK) >> 32) as u32
}

/// What to add to `state` to move `weight` free slots to the held ones (wrapping).
const fn take_delta(weight: u32) -> u64 {
    (weight as u64 * RUNNING_ONE).wrapping_sub(weight as u64)
}

/// What to add to `state` to move `weight` held slots to the free ones (wrapping).
const fn free_delta(weight: u32) -> u64 {
    take_delta(weight).wrapping_neg()
}

/// The outcome of [`Semaphore::enqueue`].
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// The slots were free after all: the caller holds them.
    Acquired,
    /// The caller is queued; `waiting` counts the queue including it.
    Queued { id: WaiterId, waiting: usize },
}

/// A registration of [`Semaphore::poll_idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleWait {
    id: u64,
    /// The idle epoch it waits for the end of.
    epoch: u64,
}

#[derive(Debug)]
struct Locked {
    waiters: WaiterList,
    max_running: u32,
    /// Slots still to retire after a shrink below the number of held slots.
    debt: u32,
    /// Wakers of granted (or refused) waiters, in grant order, not yet woken.
    outbox: VecDeque<Waker>,
    /// Whether a thread is waking the outbox (see the module docs).
    delivering: bool,
    closed: bool,
    /// Callers waiting for no slot to be held, with their registration ids.
    idle: Vec<(u64, Waker)>,
    /// Counts the times the idle waiters were woken; a registration of an older epoch is over.
    idle_epoch: u64,
    next_idle_id: u64,
    rejected_total: u64,
    cancelled_total: u64,
}

/// Counting semaphore with FIFO handoff; see the module docs for the design.
#[derive(Debug)]
pub(crate) struct Semaphore {
    state: AtomicU64,
    /// Mirror of the queue length, for reads that must not take the lock.
    waiting: AtomicUsize,
    /// Mirror of `Locked::max_running`, for reads that must not take the lock.
    max_running: AtomicUsize,
    /// Mirror of `Locked::closed`.
    closed: AtomicBool,
    /// Slots released so far; counted outside the lock because the uncontended release takes
    /// none.
    released_total: AtomicU64,
    max_queued: Option<usize>,
    locked: Mutex<Locked>,
}

impl Semaphore {
    pub(crate) fn new(max_running: u32, max_queued: Option<usize>) -> Self {
        Self {
            state: AtomicU64::new(u64::from(max_running)),
            waiting: AtomicUsize::new(0),
            max_running: AtomicUsize::new(max_running as usize),
            closed: AtomicBool::new(false),
            released_total: AtomicU64::new(0),
            max_queued,
            locked: Mutex::new(Locked {
                waiters: WaiterList::new(),
                max_running,
                debt: 0,
                outbox: VecDeque::new(),
                delivering: false,
                closed: false,
                idle: Vec::new(),
                idle_epoch: 0,
                next_idle_id: 0,
                rejected_total: 0,
                cancelled_total: 0,
            }),
        }
    }

    /// Takes `weight` free slots without waiting. Fails when too few are free or anybody is
    /// queued (see the module docs), and once the limiter is closed.
    #[inline]
    pub(crate) fn try_acquire(&self, weight: u32) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if available_of(state) < weight {
                return false;
            }
            if state & CONTENDED != 0 {
                return self.try_acquire_contended(weight);
            }
            match self.state.compare_exchange_weak(
                state,
                state.wrapping_add(take_delta(weight)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// [`try_acquire`](Self::try_acquire) while `CONTENDED` is set: the free slots may be
    /// taken only if nobody is queued for them (they may be free because the only waiters left
    /// were handed theirs, or wait for idleness) and the limiter is open.
    #[cold]
    fn try_acquire_contended(&self, weight: u32) -> bool {
        let locked = self.locked.lock();
        if locked.closed || locked.waiters.len() > 0 {
            return false;
        }
        if self.take_or_contend(weight) {
            return true;
        }
        // Too few free after all; `take_or_contend` may have set `CONTENDED` again.
        self.settle(&locked);
        false
    }

    /// Takes the requested free slots, or queues the caller by its priority, behind everyone
    /// of the same or a higher one.
    ///
    /// # Errors
    ///
    /// [`AcquireError::QueueFull`] when `max_queued` waiters are already queued,
    /// [`AcquireError::Closed`] once the limiter is closed, [`AcquireError::ZeroWeight`] and
    /// [`AcquireError::WeightTooLarge`] for a weight that can never be served.
    pub(crate) fn enqueue(&self, waker: &Waker, request: Request) -> Result<Enqueued, AcquireError> {
        let mut locked = self.locked.lock();
        let weight = request.weight;
        if locked.closed {
            return Err(AcquireError::Closed);
        }
        request.check(locked.max_running)?;
        let waiting = locked.waiters.len();
        if waiting > 0
            && locked.waiters.would_lead(request.priority)
            && available_of(self.state.load(Ordering::Acquire)) >= weight
        {
            // Served before everyone queued, and its slots are free: it does not queue, so a
            // full queue does not turn it away. `CONTENDED` is set, so only this lock's holder
            // changes the state.
            self.state.fetch_add(take_delta(weight), Ordering::AcqRel);
            return Ok(Enqueued::Acquired);
        }
        if let Some(max_queued) = self.max_queued
            && waiting >= max_queued
        {
            // A full queue means too few slots are free for the head (see the module docs), so
            // this is final.
            locked.rejected_total += 1;
            return Err(AcquireError::QueueFull {
                depth: waiting + 1,
                max_queued,
            });
        }
        if waiting == 0 && self.take_or_contend(weight) {
            return Ok(Enqueued::Acquired);
        }
        let id = locked.waiters.push(waker.clone(), request);
        self.waiting.store(waiting + 1, Ordering::Release);
        Ok(Enqueued::Queued {
            id,
            waiting: waiting + 1,
        })
    }

    /// Takes `weight` free slots, or, if too few are free, sets `CONTENDED` so that releases
    /// from now on come through the lock (held by the caller) and hand their slots over.
    fn take_or_contend(&self, weight: u32) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let fits = available_of(state) >= weight;
            let next = if fits {
                state.wrapping_add(take_delta(weight))
            } else {
                state | CONTENDED
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return fits,
                Err(actual) => state = actual,
            }
        }
    }

    /// Clears `CONTENDED` once nobody is queued, no granted waiter is still to take its slots,
    /// no debt is left, nobody waits for idleness and the limiter is open (lock held by the
    /// caller).
    fn settle(&self, locked: &Locked) {
        // The mirror first: once `CONTENDED` is clear, nobody may read a stale queue length.
        self.waiting.store(locked.waiters.len(), Ordering::Release);
        if locked.waiters.len() == 0
            && locked.waiters.granted_weight() == 0
            && locked.debt == 0
            && locked.idle.is_empty()
            && !locked.closed
        {
            self.state.fetch_and(!CONTENDED, Ordering::AcqRel);
        }
    }

    /// Whether a queued waiter has been handed its slots (`Ok(true)`: it owns them, its id is
    /// spent) or refused (`Err`, its id is spent); on `Ok(false)` its waker is refreshed.
    pub(crate) fn poll_granted(&self, id: WaiterId, waker: &Waker) -> Result<bool, AcquireError> {
        let mut locked = self.locked.lock();
        if locked.waiters.standing(id) == Standing::Queued {
            let old = locked.waiters.set_waker(id, waker);
            drop(locked);
            // The old waker may be the last reference to arbitrary objects: dropped unlocked.
            drop(old);
            return Ok(false);
        }
        self.claim(&mut locked, id).map(|()| true)
    }

    /// Takes the slots a release handed this waiter, if it has been handed them (`Ok(true)`,
    /// the id is spent; `Err` if it was refused, the id is spent too). Leaves the waiter's waker
    /// alone.
    // Only the pyo3 layer and the loom models call it.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn take_granted(&self, id: WaiterId) -> Result<bool, AcquireError> {
        let mut locked = self.locked.lock();
        if locked.waiters.standing(id) == Standing::Queued {
            return Ok(false);
        }
        self.claim(&mut locked, id).map(|()| true)
    }

    /// Removes a granted or refused waiter's entry (lock held): `Ok` with its slots, or its
    /// refusal.
    fn claim(&self, locked: &mut Locked, id: WaiterId) -> Result<(), AcquireError> {
        let removed = locked.waiters.remove(id);
        // Taking granted slots may be the last thing that kept `CONTENDED` set.
        self.settle(locked);
        match removed {
            Removed::Granted { .. } => Ok(()),
            Removed::Refused(err) => Err(err),
            Removed::Queued(_) => unreachable!("claimed a waiter that is still queued"),
        }
    }

    /// Leaves the queue if still queued (`true`). A waiter that was already handed its slots,
    /// or refused, keeps its place (`false`): its waker was taken to be woken, so it must wait
    /// for that wake-up and then claim the outcome. For runtimes whose cancellation can refuse
    /// (trio's abort: a wake-up after a successful abort would resume a task that is not
    /// waiting).
    // Only the pyo3 layer calls it (for trio).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn withdraw(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        if locked.waiters.standing(id) != Standing::Queued {
            return false;
        }
        let removed = locked.waiters.remove(id);
        if matches!(removed, Removed::Queued(_)) {
            locked.cancelled_total += 1;
            // The head may have changed: whoever is there now may fit.
            self.grant_waiting(&mut locked);
        }
        self.settle(&locked);
        self.deliver(locked);
        if let Removed::Queued(waker) = removed {
            // Dropped unlocked (see `Removed::Queued`).
            drop(waker);
        }
        true
    }

    /// Gives up a wait. Slots handed over at the same instant are passed on, never kept or
    /// lost. Returns whether the waiter had been granted its slots (which are now released
    /// again).
    pub(crate) fn cancel(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        let removed = locked.waiters.remove(id);
        let granted = match &removed {
            Removed::Queued(_) => {
                locked.cancelled_total += 1;
                self.grant_waiting(&mut locked);
                self.settle(&locked);
                false
            }
            Removed::Granted { weight } => {
                locked.cancelled_total += 1;
                // The slots were this waiter's: counted as held, releasable by nobody else.
                self.release_locked(&mut locked, *weight);
                true
            }
            Removed::Refused(_) => {
                self.settle(&locked);
                false
            }
        };
        self.deliver(locked);
        if let Removed::Queued(waker) = removed {
            // Dropped unlocked: it may be the last reference to arbitrary objects.
            drop(waker);
        }
        granted
    }

    /// The lock-free part of [`release`](Self::release): `None` when `CONTENDED` is set, which
    /// needs the queue lock; then nothing has changed. Touches no waker, so it can run where no
    /// waker may be called.
    #[inline]
    pub(crate) fn release_uncontended(&self, weight: u32) -> Option<Result<(), ReleaseError>> {
        let mut state = self.state.load(Ordering::Acquire);
        while state & CONTENDED == 0 {
            if running_of(state) < weight {
                return Some(Err(ReleaseError));
            }
            // Nobody queued, no debt: the slots become free, in one step with the held count.
            match self.state.compare_exchange_weak(
                state,
                state.wrapping_add(free_delta(weight)),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.released_total.fetch_add(u64::from(weight), Ordering::Relaxed);
                    return Some(Ok(()));
                }
                Err(actual) => state = actual,
            }
        }
        None
    }

    /// Gives `weight` held slots back: to the waiters at the head of the queue as far as they
    /// fit, else to the free pool.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when fewer than `weight` slots are held, not counting those handed to
    /// waiters that have not taken them yet; nothing changes then.
    pub(crate) fn release(&self, weight: u32) -> Result<(), ReleaseError> {
        if let Some(released) = self.release_uncontended(weight) {
            return released;
        }
        let mut locked = self.locked.lock();
        // Held slots only ever decrease through a release, and granted ones only through the
        // lock held here, so the check stays true until ours.
        let held = u64::from(running_of(self.state.load(Ordering::Acquire)));
        if held < locked.waiters.granted_weight() + u64::from(weight) {
            return Err(ReleaseError);
        }
        self.release_locked(&mut locked, weight);
        self.deliver(locked);
        Ok(())
    }

    /// Releases `weight` counted slots (lock held, `CONTENDED` set): retires them to pay a debt,
    /// frees the rest, and hands what fits to the head of the queue (whose wakers go to the
    /// outbox). Wakes the idle waiters if no slot is held any more.
    fn release_locked(&self, locked: &mut Locked, weight: u32) {
        self.released_total.fetch_add(u64::from(weight), Ordering::Relaxed);
        let retired = weight.min(locked.debt);
        locked.debt -= retired;
        self.state.fetch_sub(u64::from(retired) * RUNNING_ONE, Ordering::AcqRel);
        self.state.fetch_add(free_delta(weight - retired), Ordering::AcqRel);
        self.grant_waiting(locked);
        if running_of(self.state.load(Ordering::Acquire)) == 0 && !locked.idle.is_empty() {
            locked.idle_epoch += 1;
            let idle = std::mem::take(&mut locked.idle);
            locked.outbox.extend(idle.into_iter().map(|(_, waker)| waker));
        }
        self.settle(locked);
    }

    /// Hands free slots to the head of the queue for as long as its weight fits (lock held,
    /// `CONTENDED` set).
    fn grant_waiting(&self, locked: &mut Locked) {
        while let Some(front) = locked.waiters.front() {
            if available_of(self.state.load(Ordering::Acquire)) < front.weight {
                return;
            }
            self.state.fetch_add(take_delta(front.weight), Ordering::AcqRel);
            if let Some(waker) = locked.waiters.grant_front() {
                locked.outbox.push_back(waker);
            }
        }
    }

    /// Drops the lock and wakes the outbox in grant order, unless another thread is already
    /// doing so (it then wakes what this caller added too).
    fn deliver(&self, mut locked: MutexGuard<'_, Locked>) {
        if locked.delivering {
            return;
        }
        let Some(mut waker) = locked.outbox.pop_front() else {
            return;
        };
        locked.delivering = true;
        drop(locked);
        // Should a waker panic, the next release takes over the delivery.
        let delivering = Delivering(self);
        loop {
            waker.wake();
            let mut locked = self.locked.lock();
            let Some(next) = locked.outbox.pop_front() else {
                locked.delivering = false;
                drop(locked);
                std::mem::forget(delivering);
                return;
            };
            waker = next;
        }
    }

    /// Changes the number of slots. Growing hands the new slots to waiters at once; shrinking
    /// takes free slots away and lets current holders finish, admitting nobody until the holders
    /// are below the new limit. Waiters whose weight no longer fits are refused
    /// ([`AcquireError::WeightTooLarge`]).
    pub(crate) fn set_max_running(&self, new: u32) {
        let mut locked = self.locked.lock();
        let old = locked.max_running;
        locked.max_running = new;
        self.max_running.store(new as usize, Ordering::Release);
        if new >= old {
            let grow = new - old;
            let repaid = grow.min(locked.debt);
            locked.debt -= repaid;
            self.state.fetch_add(u64::from(grow - repaid), Ordering::AcqRel);
        } else {
            let shrink = old - new;
            // Take what is free (the fast path may take some concurrently), owe the rest.
            let mut state = self.state.load(Ordering::Acquire);
            let taken = loop {
                let take = available_of(state).min(shrink);
                match self.state.compare_exchange_weak(
                    state,
                    state - u64::from(take),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break take,
                    Err(actual) => state = actual,
                }
            };
            locked.debt += shrink - taken;
            if locked.debt > 0 {
                self.state.fetch_or(CONTENDED, Ordering::AcqRel);
            }
            let refused = locked.waiters.refuse(|request| {
                (request.weight > new).then_some(AcquireError::WeightTooLarge {
                    weight: request.weight,
                    max_running: new,
                })
            });
            locked.outbox.extend(refused);
        }
        if locked.waiters.len() > 0 {
            // Only reached with `CONTENDED` set: someone is queued.
            self.grant_waiting(&mut locked);
        }
        self.settle(&locked);
        self.deliver(locked);
    }

    /// Stops admitting: every queued waiter is refused with [`AcquireError::Closed`] and woken,
    /// and so is every later arrival; holders keep their slots. Idempotent.
    pub(crate) fn close(&self) {
        let mut locked = self.locked.lock();
        if locked.closed {
            return;
        }
        locked.closed = true;
        self.closed.store(true, Ordering::Release);
        self.state.fetch_or(CONTENDED, Ordering::AcqRel);
        let refused = locked.waiters.refuse(|_| Some(AcquireError::Closed));
        locked.outbox.extend(refused);
        self.settle(&locked);
        self.deliver(locked);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether no slot is held (`true`, the registration is over), else leaves `waker` to be
    /// woken when none is (`registration` keeps the caller's place; pass it back on every poll
    /// and to [`cancel_idle`](Self::cancel_idle) if the caller gives up). A handoff does not
    /// count: its slots stay held.
    pub(crate) fn poll_idle(&self, registration: &mut Option<IdleWait>, waker: &Waker) -> bool {
        let mut locked = self.locked.lock();
        if let Some(wait) = *registration {
            if wait.epoch != locked.idle_epoch {
                *registration = None;
                return true;
            }
            let old = locked
                .idle
                .iter_mut()
                .find(|(id, _)| *id == wait.id)
                .filter(|(_, old)| !old.will_wake(waker))
                .map(|(_, old)| std::mem::replace(old, waker.clone()));
            drop(locked);
            drop(old);
            return false;
        }
        // Set `CONTENDED` only while slots are held, in one step with the check: the release of
        // the last one then comes through the lock and wakes this caller.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if running_of(state) == 0 {
                return true;
            }
            match self
                .state
                .compare_exchange_weak(state, state | CONTENDED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        let id = locked.next_idle_id;
        locked.next_idle_id += 1;
        locked.idle.push((id, waker.clone()));
        *registration = Some(IdleWait {
            id,
            epoch: locked.idle_epoch,
        });
        false
    }

    /// Gives up a wait for idleness registered by [`poll_idle`](Self::poll_idle).
    pub(crate) fn cancel_idle(&self, registration: IdleWait) {
        let mut locked = self.locked.lock();
        if registration.epoch != locked.idle_epoch {
            return;
        }
        let position = locked.idle.iter().position(|(id, _)| *id == registration.id);
        let removed = position.map(|at| locked.idle.swap_remove(at));
        self.settle(&locked);
        drop(locked);
        drop(removed);
    }

    pub(crate) fn running(&self) -> usize {
        running_of(self.state.load(Ordering::Acquire)) as usize
    }

    pub(crate) fn available(&self) -> usize {
        available_of(self.state.load(Ordering::Acquire)) as usize
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub(crate) fn max_running(&self) -> usize {
        self.max_running.load(Ordering::Acquire)
    }

    pub(crate) const fn max_queued(&self) -> Option<usize> {
        self.max_queued
    }

    /// One consistent snapshot of the counts: taken under the lock, with a single read of the
    /// slot word. The totals are exact whenever no release is halfway through its two steps.
    pub(crate) fn stats(&self) -> LimiterStats {
        let locked = self.locked.lock();
        let state = self.state.load(Ordering::Acquire);
        let running = u64::from(running_of(state));
        LimiterStats {
            running: running as usize,
            waiting: locked.waiters.len(),
            available: available_of(state) as usize,
            max_running: locked.max_running as usize,
            max_queued: self.max_queued,
            // Every slot ever taken is either still held or has been released.
            acquired_total: self.released_total.load(Ordering::Relaxed) + running,
            rejected_total: locked.rejected_total,
            cancelled_total: locked.cancelled_total,
        }
    }
}

/// Marks a panicking deliverer's delivery over, so that the next release delivers the rest.
struct Delivering<'a>(&'a Semaphore);

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.0.locked.lock().delivering = false;
    }
}
