//! [`Acquisition`]: one caller's way to a slot of a limiter and of every ancestor, the one state
//! machine that every acquire drives, and the release accounting that undoes it.
//!
//! The Rust [`Acquire`](crate::Acquire) future and [`try_acquire`](crate::ConcurrencyLimiter::try_acquire),
//! and in the Python layer the lock-free fast path, the asyncio and trio waiters and the blocking
//! threads, each hold an `Acquisition` and only decide *how to wait* (a waker, a loop's future, a
//! parked thread) and what to report (spans, metrics). None of them takes, climbs or gives back a
//! slot itself.
//!
//! # Stages
//!
//! A caller asks for a slot of its limiter (the *base*) and, through it, one of each ancestor. It
//! takes them bottom-up, one *level* at a time, holding the slots below the current level:
//!
//! ```text
//!            free slot                  parent, if any: level + 1
//! Arriving ───────────────▶ Climbing ─────────────────────────────▶ Arriving
//!    │                        ▲   │ no parent
//!    │ none free: enqueue     │   └──────────▶ Held (every level held: a permit or a raw slot)
//!    ▼                        │
//! Queued ─────────────────────┘ a release granted the slot (poll_granted, take_granted)
//!    │ withdraw (still queued) ──▶ Arriving
//!
//! any stage but Held ── cancel / drop ──▶ Cancelled (holds nothing)
//! ```
//!
//! * [`advance`](Acquisition::advance) makes every lock-free step it can: the current level's free
//!   slot, then the ancestors' in turn. It stops `Held`, or `Arriving` at a level with none free.
//! * [`enqueue`](Acquisition::enqueue) queues at that level (the queue's lock, FIFO, `max_queued`).
//!   A rejection cancels the whole acquisition.
//! * [`poll_granted`](Acquisition::poll_granted) and [`take_granted`](Acquisition::take_granted)
//!   take the slot a release handed over; [`withdraw`](Acquisition::withdraw) leaves the queue
//!   only if nothing was handed over yet (for runtimes whose cancellation can refuse, as trio's).
//! * [`cancel`](Acquisition::cancel), and dropping an unfinished acquisition, give back the
//!   current level's place (a slot handed over at that instant passes to the next waiter) or
//!   slot, and every slot below it. Nothing is lost, nothing is kept.
//!
//! Reaching `Held` counts the caller as a *full holder* at every level that has a parent. A
//! release without a permit ([`release`]) must claim one of those first, so a caller that holds
//! only a child's slot while it waits for the parent's can never be released by somebody else.
//!
//! # The request
//!
//! A caller asks every level for the same [`Request`]: `weight` slots at once, served by
//! `priority` (higher first, FIFO within one). The full-holder counts are in slots too. A queue
//! may refuse a queued waiter (the limiter was closed, or shrunk below the weight): the waiter's
//! next look at its place ([`poll_granted`](Acquisition::poll_granted),
//! [`take_granted`](Acquisition::take_granted)) returns that error and the acquisition is
//! cancelled, as for a rejection at arrival.
//!
//! # What later features add
//!
//! Keyed limits and rate budgets (API.md §6-8) are what each level's queue is asked for and how
//! it answers: a keyed limit is a base level made on demand, and a rate budget is one more
//! condition of the same admission step. The stages above stay as they are.

use crate::error::{AcquireError, ReleaseError};
use crate::limiter::ConcurrencyLimiter;
use crate::queue::{Enqueued, Semaphore};
use crate::sync::Ordering;
use crate::waiters::{Request, WaiterId};
use std::borrow::Borrow;
use std::task::Waker;

/// Where an [`Acquisition`] stands at its current level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not queued there, holding nothing there.
    Arriving,
    /// Queued there: its place, and the queue's length when it joined (itself included).
    Queued { id: WaiterId, waiting: usize },
    /// Holding that level's slot; the ancestors' are next.
    Climbing,
    /// Holding a slot at every level: the caller owns them now (a permit, or a raw slot).
    Held,
    /// Gave up or was refused: holds nothing.
    Cancelled,
}

/// One caller's acquisition of `base` and its ancestors; see the module docs. `L` is a borrowed
/// (`&ConcurrencyLimiter`, for a future or a thread) or an owned (`ConcurrencyLimiter`, for a
/// waiter kept by Python) limiter.
#[derive(Debug)]
pub(crate) struct Acquisition<L: Borrow<ConcurrencyLimiter>> {
    base: L,
    /// The current level: 0 for `base`, 1 for its parent, and so on.
    depth: usize,
    stage: Stage,
    /// What it asks of every level.
    request: Request,
}

impl<L: Borrow<ConcurrencyLimiter>> Acquisition<L> {
    /// A caller of `base`, asking for `request` at every level, that holds nothing yet.
    #[inline]
    pub(crate) const fn new(base: L, request: Request) -> Self {
        Self {
            base,
            depth: 0,
            stage: Stage::Arriving,
            request,
        }
    }

    /// What the caller asks of every level.
    #[inline]
    pub(crate) const fn request(&self) -> Request {
        self.request
    }

    /// Changes what the caller asks for, before its first step.
    ///
    /// # Panics
    ///
    /// If it has taken or queued for anything.
    pub(crate) fn set_request(&mut self, request: Request) {
        assert!(
            self.depth == 0 && self.stage == Stage::Arriving,
            "an acquisition's request changed after its first step"
        );
        self.request = request;
    }

    /// The limiter the caller asked for.
    #[inline]
    pub(crate) fn base(&self) -> &ConcurrencyLimiter {
        self.base.borrow()
    }

    /// The current level: 0 for the base, 1 for its parent, and so on.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) const fn depth(&self) -> usize {
        self.depth
    }

    /// The stage at the current level.
    pub(crate) const fn stage(&self) -> Stage {
        self.stage
    }

    /// The limiter of the current level.
    #[inline]
    pub(crate) fn level(&self) -> &ConcurrencyLimiter {
        let mut level = self.base();
        for _ in 0..self.depth {
            level = level.parent().unwrap_or(level);
        }
        level
    }

    /// Makes every lock-free step it can, from `Arriving` or `Climbing`: takes the current level's
    /// free slot, then the ancestors' in turn. Returns the stage reached: `Held` with every level
    /// held, `Arriving` at the first level with no free slot (queue there with
    /// [`enqueue`](Self::enqueue)). Any other stage is returned unchanged.
    #[inline]
    pub(crate) fn advance(&mut self) -> Stage {
        loop {
            match self.stage {
                Stage::Arriving => {
                    if !self.level().semaphore().try_acquire(self.request.weight) {
                        return Stage::Arriving;
                    }
                    self.stage = Stage::Climbing;
                }
                Stage::Climbing => {
                    if self.level().parent().is_none() {
                        self.hold();
                        return Stage::Held;
                    }
                    self.depth += 1;
                    self.stage = Stage::Arriving;
                }
                stage => return stage,
            }
        }
    }

    /// From `Arriving`, takes the current level's slot if one is free after all (`Climbing`:
    /// [`advance`](Self::advance) next) or queues behind everyone waiting there (`Queued`).
    /// Any other stage is returned unchanged.
    ///
    /// # Errors
    ///
    /// What the level's queue refuses the arrival with (its queue is full, it is closed, the
    /// weight can never fit); the acquisition is then cancelled (every slot below is given back).
    pub(crate) fn enqueue(&mut self, waker: &Waker) -> Result<Stage, AcquireError> {
        if self.stage != Stage::Arriving {
            return Ok(self.stage);
        }
        if self.closed_below() {
            self.cancel();
            return Err(AcquireError::Closed);
        }
        // A weight this level or an ancestor can never serve fails now, rather than after a
        // wait here (where, at the head, it would hold up lighter waiters).
        if let Some((_, err)) = self.level().unservable(self.request) {
            self.cancel();
            return Err(err);
        }
        match self.level().semaphore().enqueue(waker, self.request) {
            Ok(Enqueued::Acquired) => self.stage = Stage::Climbing,
            Ok(Enqueued::Queued { id, waiting }) => self.stage = Stage::Queued { id, waiting },
            Err(err) => {
                self.cancel();
                return Err(err);
            }
        }
        Ok(self.stage)
    }

    /// While `Queued`: takes the slots a release handed over (`true`, now `Climbing`) or leaves
    /// `waker` to be woken when they are (`false`). `false` in any other stage.
    ///
    /// # Errors
    ///
    /// The queue's refusal of the waiter ([`AcquireError::Closed`],
    /// [`AcquireError::WeightTooLarge`]); the acquisition is then cancelled.
    pub(crate) fn poll_granted(&mut self, waker: &Waker) -> Result<bool, AcquireError> {
        self.claim(|queue, id| queue.poll_granted(id, waker))
    }

    /// While `Queued`: takes the slots a release handed over (`true`, now `Climbing`); the
    /// waker given to [`enqueue`](Self::enqueue) stays. `false` if none were handed over or in
    /// any other stage.
    ///
    /// # Errors
    ///
    /// As [`poll_granted`](Self::poll_granted).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn take_granted(&mut self) -> Result<bool, AcquireError> {
        self.claim(Semaphore::take_granted)
    }

    /// While `Queued`: asks the queue whether the slots were handed over (`step`); on `true` the
    /// stage becomes `Climbing`, on a refusal the acquisition is cancelled.
    fn claim(
        &mut self,
        step: impl FnOnce(&Semaphore, WaiterId) -> Result<bool, AcquireError>,
    ) -> Result<bool, AcquireError> {
        let Stage::Queued { id, .. } = self.stage else {
            return Ok(false);
        };
        if self.closed_below() {
            // A level it holds was closed while it waited here: it is refused like that level's
            // own waiters, once woken here (a slot handed over here passes on).
            self.cancel();
            return Err(AcquireError::Closed);
        }
        match step(self.level().semaphore(), id) {
            Ok(granted) => {
                if granted {
                    self.stage = Stage::Climbing;
                }
                Ok(granted)
            }
            Err(err) => {
                // Its place is gone: only the slots below are left to give back.
                self.stage = Stage::Arriving;
                self.cancel();
                Err(err)
            }
        }
    }

    /// While `Queued`: leaves the queue if nothing was handed over yet (`true`, now `Arriving`
    /// at the same level, still holding the slots below); `false` if a slot was handed over,
    /// which must then be taken with [`take_granted`](Self::take_granted). `true` when not
    /// queued.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn withdraw(&mut self) -> bool {
        let Stage::Queued { id, .. } = self.stage else {
            return true;
        };
        let left = self.level().semaphore().withdraw(id);
        if left {
            self.stage = Stage::Arriving;
        }
        left
    }

    /// Gives up: leaves the current level's queue (a slot handed over at that instant passes to
    /// the next waiter) or gives back its slot, and gives back every slot below it. Does nothing
    /// once `Held` or `Cancelled`.
    pub(crate) fn cancel(&mut self) {
        let stage = std::mem::replace(&mut self.stage, Stage::Cancelled);
        match stage {
            Stage::Held => {
                self.stage = Stage::Held;
                return;
            }
            Stage::Cancelled => return,
            Stage::Arriving => {}
            Stage::Queued { id, .. } => {
                self.level().semaphore().cancel(id);
            }
            Stage::Climbing => release_level(self.level(), self.request.weight),
        }
        let mut held = self.base();
        for _ in 0..self.depth {
            release_level(held, self.request.weight);
            held = held.parent().unwrap_or(held);
        }
    }

    /// This acquisition's stage and level, now of `base` (the same limiter); this one is left
    /// `Cancelled`.
    fn moved_to<M: Borrow<ConcurrencyLimiter>>(&mut self, base: M) -> Acquisition<M> {
        Acquisition {
            base,
            depth: self.depth,
            stage: std::mem::replace(&mut self.stage, Stage::Cancelled),
            request: self.request,
        }
    }

    /// Whether a level below the current one (whose slots it holds) was closed.
    fn closed_below(&self) -> bool {
        let mut level = self.base();
        for _ in 0..self.depth {
            if level.semaphore().is_closed() {
                return true;
            }
            level = level.parent().unwrap_or(level);
        }
        false
    }

    /// Counts the caller's slots as fully held at every level that has a parent: it holds them
    /// all.
    #[inline]
    fn hold(&mut self) {
        let weight = self.request.weight as usize;
        let mut level = self.base();
        while let Some(parent) = level.parent() {
            level.full_holders().fetch_add(weight, Ordering::AcqRel);
            level = parent;
        }
        self.stage = Stage::Held;
    }
}

impl<L: Borrow<ConcurrencyLimiter> + Clone> Acquisition<L> {
    /// Moves the acquisition out (to act on it outside a lock), leaving this one `Cancelled`:
    /// it holds nothing and gives nothing back.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn take(&mut self) -> Self {
        self.moved_to(self.base.clone())
    }
}

impl Acquisition<&ConcurrencyLimiter> {
    /// The same acquisition, owning its limiter (one reference count more), to be kept by a
    /// waiter that outlives the borrow.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn into_owned(mut self) -> Acquisition<ConcurrencyLimiter> {
        self.moved_to(self.base.clone())
    }
}

impl<L: Borrow<ConcurrencyLimiter>> Drop for Acquisition<L> {
    #[inline]
    fn drop(&mut self) {
        // Checked here, inlined: the fast path's acquisition drops `Held`, with nothing to do.
        if !matches!(self.stage, Stage::Held | Stage::Cancelled) {
            self.cancel();
        }
    }
}

/// Gives back `weight` held slots of `level`. It fails, changing nothing, only if a [`release`]
/// too many (a caller's misuse, see [`ConcurrencyLimiter::release`]) already gave them back.
fn release_level(level: &ConcurrencyLimiter, weight: u32) {
    let _ = level.semaphore().release(weight);
}

/// Gives back a permit's `weight` slots of `level` (its full-holder count and its slots; the
/// ancestors' are given back by their own permits). The count never goes below zero, even after
/// a [`release`] too many.
pub(crate) fn release_held_level(level: &ConcurrencyLimiter, weight: u32) {
    if level.parent().is_some() {
        let _ = level
            .full_holders()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(weight as usize));
    }
    release_level(level, weight);
}

/// Releases `weight` slots of `limiter` and of every ancestor held without a permit (an
/// acquisition that reached `Held` and was then let go of).
///
/// # Errors
///
/// [`ReleaseError`] when fewer than `weight` slots of `limiter` and its ancestors are held;
/// nothing changes then. A caller that holds only this limiter's slots while it waits for the
/// parent's does not count.
pub(crate) fn release(limiter: &ConcurrencyLimiter, weight: u32) -> Result<(), ReleaseError> {
    release_uncontended(limiter, weight).unwrap_or_else(|| release_contended(limiter, weight))
}

/// [`release`] through the queues' locks.
fn release_contended(limiter: &ConcurrencyLimiter, weight: u32) -> Result<(), ReleaseError> {
    let Some(parent) = limiter.parent() else {
        return limiter.semaphore().release(weight);
    };
    // Claim the fully held slots first, then release the ancestors' slots, and this level's only
    // once they are gone: a release too many at any level changes nothing at all.
    let full = limiter.full_holders();
    let weight_slots = weight as usize;
    if full
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(weight_slots))
        .is_err()
    {
        return Err(ReleaseError);
    }
    if let Err(err) = release(parent, weight) {
        full.fetch_add(weight_slots, Ordering::AcqRel);
        return Err(err);
    }
    // The claimed slots are fully held slots of this level, which no other release can take:
    // this cannot fail.
    limiter.semaphore().release(weight)
}

/// [`release`] when it needs no lock and wakes nobody: a limiter without a parent and nobody
/// queued. `None` otherwise; then nothing has changed.
#[inline]
pub(crate) fn release_uncontended(limiter: &ConcurrencyLimiter, weight: u32) -> Option<Result<(), ReleaseError>> {
    if limiter.parent().is_some() {
        return None;
    }
    limiter.semaphore().release_uncontended(weight)
}
