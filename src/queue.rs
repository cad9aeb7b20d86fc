//! The admission core: a counting semaphore with a FIFO waiter queue, direct handoff, an exact
//! `max_queued` bound and run-time resizing.
//!
//! # Implementation details
//!
//! Two pieces of state:
//!
//! * `state`, one `AtomicU64`: the free slots in bits 0..32, the holders in bits 32..63 and a
//!   `CONTENDED` flag in bit 63. Taking a free slot is a single compare-and-swap that moves one
//!   unit from the free count to the holder count, so `available` and `running` can never be
//!   read out of step. `CONTENDED` is set exactly while somebody is queued, a waiter has been
//!   handed a slot it has not taken yet, or a shrink has left a debt; it only changes with the
//!   lock held.
//! * `locked`, a mutex over the waiter list, the resize debt, the wake-ups still to deliver and
//!   the lifetime totals.
//!
//! The uncontended path takes no lock at all: acquiring is one compare-and-swap, and so is a
//! release while `CONTENDED` is clear (the slot simply becomes free). With `CONTENDED` set a
//! release takes the lock and hands its slot straight to the oldest waiter (`running` is
//! unchanged: the slot changes hands) or retires it to pay the debt.
//!
//! The rule that makes FIFO and "no barging" hold: **a slot only becomes free when nobody is
//! queued**. A waiter queues itself, under the lock, only after a compare-and-swap that sets
//! `CONTENDED` while the free count is zero; a lock-free release whose own compare-and-swap came
//! first makes that one fail, and the arrival takes the freed slot instead. From then on every
//! release sees the flag and hands its slot over. So whenever anyone is queued the free count is
//! zero, and the lock-free [`Semaphore::try_acquire`] can only succeed when the queue is empty:
//! a newcomer never overtakes a waiter.
//!
//! `max_queued` is checked under the same lock that pushes the waiter, so N simultaneous
//! arrivals admit exactly the free queue places, and every arrival that neither gets a slot nor
//! is admitted is rejected at once.
//!
//! Cancellation: a waiter's slot in the list stays its own until it removes it. If it removes
//! a slot that is still queued it held nothing; if a release had already granted it (the
//! instant of handoff), removing it releases that slot again under the same lock, which hands
//! it to the next waiter. Nothing is lost, nothing is counted twice.
//!
//! Releases without a permit (the Python layer's `release()`) are checked, not trusted: a slot
//! handed to a waiter that has not taken it yet counts among the holders but belongs to that
//! waiter, so a release only succeeds while the holders outnumber such granted waiters. That is
//! why `CONTENDED` stays set until a granted waiter takes its slot: every release meanwhile goes
//! through the lock, where the granted waiters are counted. A release too many fails and changes
//! nothing, and the granted waiter's own cancellation can always give its slot back.
//!
//! Wake-ups: wakers are always woken after the lock is dropped (a waker may run arbitrary code,
//! such as a Python callback that needs the GIL, and none of it may run inside the critical
//! section), and in the order the slots were handed over. A grant appends the waiter's waker to
//! `outbox` under the lock; whoever finds no one delivering becomes the one deliverer and wakes
//! the outbox in order, outside the lock, until it is empty, while other releasers only append.
//! Two releasers on two threads can therefore never deliver their wake-ups out of order, even if
//! the first is preempted between its grant and its wake-up.
//!
//! Shrinking `max_running` below the number of holders records a debt: the next releases
//! retire slots instead of handing them on, until the holders fit under the new limit.
//!
//! # Memory ordering
//!
//! Every `state` update is `AcqRel` and every read `Acquire`, so whatever a holder wrote before
//! its release is visible to whoever takes the slot next, through the fast path or a handoff
//! (the handoff itself is ordered by the mutex).

use crate::error::{AcquireError, ReleaseError};
use crate::stats::LimiterStats;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::waiters::{Removed, WaiterId, WaiterList};
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

/// The outcome of [`Semaphore::enqueue`].
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// A slot was free after all: the caller holds it.
    Acquired,
    /// The caller is queued; `waiting` counts the queue including it.
    Queued { id: WaiterId, waiting: usize },
}

#[derive(Debug)]
struct Locked {
    waiters: WaiterList,
    max_running: u32,
    /// Slots still to retire after a shrink below the number of holders.
    debt: u32,
    /// Wakers of granted waiters, in grant order, not yet woken.
    outbox: VecDeque<Waker>,
    /// Whether a thread is waking the outbox (see the module docs).
    delivering: bool,
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
    /// Releases so far; counted outside the lock because the uncontended release takes none.
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
            released_total: AtomicU64::new(0),
            max_queued,
            locked: Mutex::new(Locked {
                waiters: WaiterList::new(),
                max_running,
                debt: 0,
                outbox: VecDeque::new(),
                delivering: false,
                rejected_total: 0,
                cancelled_total: 0,
            }),
        }
    }

    /// Takes a free slot without waiting. Fails when none is free, which includes whenever
    /// anybody is queued (see the module docs).
    pub(crate) fn try_acquire(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if available_of(state) == 0 {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(state, state - 1 + RUNNING_ONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Takes a free slot or queues the caller behind everyone already waiting.
    ///
    /// # Errors
    ///
    /// [`AcquireError::QueueFull`] when `max_queued` waiters are already queued.
    pub(crate) fn enqueue(&self, waker: &Waker) -> Result<Enqueued, AcquireError> {
        let mut locked = self.locked.lock();
        let waiting = locked.waiters.len();
        if let Some(max_queued) = self.max_queued
            && waiting >= max_queued
        {
            // A full queue means nothing is free (see the module docs), so this is final.
            locked.rejected_total += 1;
            return Err(AcquireError::QueueFull {
                depth: waiting + 1,
                max_queued,
            });
        }
        if self.take_or_contend() {
            return Ok(Enqueued::Acquired);
        }
        let id = locked.waiters.push_back(waker.clone());
        self.waiting.store(waiting + 1, Ordering::Release);
        Ok(Enqueued::Queued {
            id,
            waiting: waiting + 1,
        })
    }

    /// Takes a free slot, or, if none is free, sets `CONTENDED` so that releases from now on
    /// come through the lock (held by the caller) and hand their slots over.
    fn take_or_contend(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = if available_of(state) > 0 {
                state - 1 + RUNNING_ONE
            } else {
                state | CONTENDED
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return available_of(state) > 0,
                Err(actual) => state = actual,
            }
        }
    }

    /// Clears `CONTENDED` once nobody is queued, no granted waiter is still to take its slot and
    /// no debt is left (lock held by the caller).
    fn settle(&self, locked: &Locked) {
        if locked.waiters.len() == 0 && locked.waiters.granted() == 0 && locked.debt == 0 {
            self.state.fetch_and(!CONTENDED, Ordering::AcqRel);
        }
        self.waiting.store(locked.waiters.len(), Ordering::Release);
    }

    /// Whether a queued waiter has been handed a slot. On `true` the waiter owns the slot and
    /// its id is spent; on `false` its waker is refreshed.
    pub(crate) fn poll_granted(&self, id: WaiterId, waker: &Waker) -> bool {
        let mut locked = self.locked.lock();
        if locked.waiters.is_granted(id) {
            let removed = locked.waiters.remove(id);
            debug_assert!(matches!(removed, Removed::Granted));
            self.settle(&locked);
            true
        } else {
            let old = locked.waiters.set_waker(id, waker);
            drop(locked);
            // The old waker may be the last reference to arbitrary objects: dropped unlocked.
            drop(old);
            false
        }
    }

    /// Takes the slot a release handed this waiter, if it has been handed one; the id is spent
    /// on `true`. Leaves the waiter's waker alone.
    // Only the pyo3 layer and the loom models call it.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn take_granted(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        let granted = locked.waiters.is_granted(id);
        if granted {
            let removed = locked.waiters.remove(id);
            debug_assert!(matches!(removed, Removed::Granted));
            self.settle(&locked);
        }
        granted
    }

    /// Leaves the queue if still queued (`true`); a waiter that was already handed a slot keeps
    /// its place and must take the slot (`false`). For runtimes whose cancellation can refuse.
    // Only the pyo3 layer calls it (for trio).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn withdraw(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        if locked.waiters.is_granted(id) {
            return false;
        }
        let removed = locked.waiters.remove(id);
        locked.cancelled_total += 1;
        self.settle(&locked);
        drop(locked);
        // A queued waiter's waker is dropped unlocked (see `Removed::Queued`).
        drop(removed);
        true
    }

    /// Gives up a wait. A slot handed over at the same instant is passed on, never kept or lost.
    /// Returns whether the waiter had been granted a slot (which is now released again).
    pub(crate) fn cancel(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        locked.cancelled_total += 1;
        match locked.waiters.remove(id) {
            Removed::Queued(waker) => {
                self.settle(&locked);
                drop(locked);
                // Dropped unlocked: it may be the last reference to arbitrary objects.
                drop(waker);
                false
            }
            Removed::Granted => {
                // The slot was this waiter's: counted among the holders, releasable by nobody else.
                self.release_locked(&mut locked);
                self.deliver(locked);
                true
            }
        }
    }

    /// The lock-free part of [`release`](Self::release): `None` when someone is queued, a
    /// granted waiter is still to take its slot or a slot is to be retired, which needs the
    /// queue lock; then nothing has changed. Touches no
    /// waker, so it can run where no waker may be called.
    pub(crate) fn release_uncontended(&self) -> Option<Result<(), ReleaseError>> {
        let mut state = self.state.load(Ordering::Acquire);
        while state & CONTENDED == 0 {
            if running_of(state) == 0 {
                return Some(Err(ReleaseError));
            }
            // Nobody queued, no debt: the slot becomes free, in one step with the holder count.
            match self
                .state
                .compare_exchange_weak(state, state + 1 - RUNNING_ONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.released_total.fetch_add(1, Ordering::Relaxed);
                    return Some(Ok(()));
                }
                Err(actual) => state = actual,
            }
        }
        None
    }

    /// Gives a held slot back: to the oldest waiter if there is one, else to the free pool.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when nobody holds a slot, not counting the waiters that were handed one
    /// and have not taken it yet; nothing changes then.
    pub(crate) fn release(&self) -> Result<(), ReleaseError> {
        if let Some(released) = self.release_uncontended() {
            return released;
        }
        let mut locked = self.locked.lock();
        // Holders only ever decrease through a release, and granted waiters only through the
        // lock held here, so the check stays true until ours.
        if running_of(self.state.load(Ordering::Acquire)) as usize <= locked.waiters.granted() {
            return Err(ReleaseError);
        }
        self.release_locked(&mut locked);
        self.deliver(locked);
        Ok(())
    }

    /// Releases one counted slot (lock held): retires it to pay a debt, hands it to the oldest
    /// waiter (whose waker goes to the outbox), or frees it.
    fn release_locked(&self, locked: &mut Locked) {
        self.released_total.fetch_add(1, Ordering::Relaxed);
        if locked.debt > 0 {
            locked.debt -= 1;
            self.state.fetch_sub(RUNNING_ONE, Ordering::AcqRel);
        } else if let Some(waker) = locked.waiters.grant_front() {
            // The slot changes hands: the number of holders stays the same.
            locked.outbox.push_back(waker);
        } else {
            // One holder fewer, one slot more, in a single step (wrapping add of 1 - 2^32).
            self.state.fetch_add(1u64.wrapping_sub(RUNNING_ONE), Ordering::AcqRel);
        }
        self.settle(locked);
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
    /// are below the new limit.
    pub(crate) fn set_max_running(&self, new: u32) {
        let mut locked = self.locked.lock();
        let old = locked.max_running;
        locked.max_running = new;
        self.max_running.store(new as usize, Ordering::Release);
        if new >= old {
            let mut grow = new - old;
            let repaid = grow.min(locked.debt);
            locked.debt -= repaid;
            grow -= repaid;
            while grow > 0 {
                let Some(waker) = locked.waiters.grant_front() else {
                    break;
                };
                // A new slot handed straight to a waiter: one more holder.
                self.state.fetch_add(RUNNING_ONE, Ordering::AcqRel);
                locked.outbox.push_back(waker);
                grow -= 1;
            }
            self.state.fetch_add(u64::from(grow), Ordering::AcqRel);
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
        }
        self.settle(&locked);
        self.deliver(locked);
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
