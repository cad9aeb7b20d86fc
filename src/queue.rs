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
//!   read out of step. `CONTENDED` is set exactly while somebody is queued or a shrink has left
//!   a debt; it only changes with the lock held.
//! * `locked`, a mutex over the waiter list, the resize debt and the lifetime totals.
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
//! Wakers are always woken after the lock is dropped: a waker may run arbitrary code (a Python
//! callback that needs the GIL), and none of it may run inside the critical section.
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
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::waiters::{Removed, WaiterId, WaiterList};
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

    /// Clears `CONTENDED` once nobody is queued and no debt is left (lock held by the caller).
    fn settle(&self, locked: &Locked) {
        if locked.waiters.len() == 0 && locked.debt == 0 {
            self.state.fetch_and(!CONTENDED, Ordering::AcqRel);
        }
        self.waiting.store(locked.waiters.len(), Ordering::Release);
    }

    /// Whether a queued waiter has been handed a slot. On `true` the waiter owns the slot and
    /// its id is spent; on `false` its waker is refreshed.
    pub(crate) fn poll_granted(&self, id: WaiterId, waker: &Waker) -> bool {
        let mut locked = self.locked.lock();
        if locked.waiters.is_granted(id) {
            locked.waiters.remove(id);
            true
        } else {
            locked.waiters.set_waker(id, waker);
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
            locked.waiters.remove(id);
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
        locked.waiters.remove(id);
        locked.cancelled_total += 1;
        self.settle(&locked);
        true
    }

    /// Gives up a wait. A slot handed over at the same instant is passed on, never kept or lost.
    /// Returns whether the waiter had been granted a slot (which is now released again).
    pub(crate) fn cancel(&self, id: WaiterId) -> bool {
        let mut locked = self.locked.lock();
        locked.cancelled_total += 1;
        let wake = match locked.waiters.remove(id) {
            Removed::Queued => {
                self.settle(&locked);
                return false;
            }
            Removed::Granted => self.release_locked(&mut locked),
        };
        drop(locked);
        wake_if_some(wake);
        true
    }

    /// The lock-free part of [`release`](Self::release): `None` when someone is queued (or a
    /// slot is to be retired), which needs the queue lock; then nothing has changed. Touches no
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
    /// [`ReleaseError`] when nobody holds a slot; nothing changes then.
    pub(crate) fn release(&self) -> Result<(), ReleaseError> {
        if let Some(released) = self.release_uncontended() {
            return released;
        }
        let mut locked = self.locked.lock();
        // Holders only ever decrease through a release, so the check stays true until ours.
        if running_of(self.state.load(Ordering::Acquire)) == 0 {
            return Err(ReleaseError);
        }
        let wake = self.release_locked(&mut locked);
        drop(locked);
        wake_if_some(wake);
        Ok(())
    }

    fn release_locked(&self, locked: &mut Locked) -> Option<Waker> {
        self.released_total.fetch_add(1, Ordering::Relaxed);
        let wake = if locked.debt > 0 {
            locked.debt -= 1;
            self.state.fetch_sub(RUNNING_ONE, Ordering::AcqRel);
            None
        } else if let Some(waker) = locked.waiters.grant_front() {
            // The slot changes hands: the number of holders stays the same.
            Some(waker)
        } else {
            // One holder fewer, one slot more, in a single step (wrapping add of 1 - 2^32).
            self.state.fetch_add(1u64.wrapping_sub(RUNNING_ONE), Ordering::AcqRel);
            None
        };
        self.settle(locked);
        wake
    }

    /// Changes the number of slots. Growing hands the new slots to waiters at once; shrinking
    /// takes free slots away and lets current holders finish, admitting nobody until the holders
    /// are below the new limit.
    pub(crate) fn set_max_running(&self, new: u32) {
        let mut locked = self.locked.lock();
        let old = locked.max_running;
        locked.max_running = new;
        self.max_running.store(new as usize, Ordering::Release);
        let mut wakers = Vec::new();
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
                wakers.push(waker);
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
        drop(locked);
        for waker in wakers {
            waker.wake();
        }
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

fn wake_if_some(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}
