//! Giving slots back and keeping them: releases (in the background or awaited, whole or in
//! part), the retry of releases that failed while Redis was away, and the renewal of leases.

use super::error::RedisLimiterError;
use super::inner::Inner;
#[cfg(feature = "python")]
use super::pool::Take;
use super::scripts::{LEAVE, RENEW};
use super::slot::Slot;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::watch;

impl Inner {
    /// Releases a slot in the background; returns at once.
    pub(crate) fn release_slot(self: &Arc<Self>, slot: Slot) {
        self.unhold_one();
        let Slot::Leased(token) = slot else { return };
        if self.forget(&token) {
            self.leave_in_background(token, None, true);
        }
    }

    /// Gives back `amount` of the slots of `token` in the background, keeping the rest (its
    /// lease is still renewed).
    #[cfg(feature = "python")]
    pub(crate) fn release_part(self: &Arc<Self>, token: &str, amount: u32) {
        if let Some(weight) = self.held.lock().get_mut(token) {
            *weight -= amount;
        } else {
            return; // lost: giving back frees nothing
        }
        self.leave_in_background(token.to_owned(), Some(amount), false);
    }

    /// Runs the leave script for `token` (all its slots, or `amount`) on the runtime. This
    /// instance's later acquires and counts wait for it, so that a process always sees its own
    /// releases. `count_lost`: a token found without a slot is counted as a lost lease.
    pub(crate) fn leave_in_background(self: &Arc<Self>, token: String, amount: Option<u32>, count_lost: bool) {
        let inner = Arc::clone(self);
        let ticket = self.pending_releases.lock().start();
        self.runtime.spawn(async move {
            match inner.leave(&token, amount).await {
                Ok(false) if count_lost => {
                    inner.lost_total.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) if err.is_unavailable() => inner.orphans.lock().push((token, amount)),
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
        for (token, amount) in orphans {
            self.leave_in_background(token, amount, false);
        }
    }

    /// Waits until every release this instance sent in the background before the call was
    /// answered.
    pub(super) async fn settle(&self) {
        // Only the releases sent before now: a steady stream of later ones must not starve us.
        let upto = self.pending_releases.lock().next();
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
    pub(super) async fn release_slot_now(&self, slot: Slot) -> Result<bool, RedisLimiterError> {
        self.unhold_one();
        let Slot::Leased(token) = slot else { return Ok(true) };
        if !self.forget(&token) {
            return Ok(false);
        }
        self.leave(&token, None).await
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
    async fn leave(&self, token: &str, amount: Option<u32>) -> Result<bool, RedisLimiterError> {
        let extra = [token.to_owned(), amount.map_or_else(String::new, |a| a.to_string())];
        let (released,): (i64,) = self.call(&LEAVE, &extra).await?;
        Ok(released > 0)
    }

    /// Extends every held lease; marks those that ran out as lost.
    async fn renew(&self) -> Result<(), RedisLimiterError> {
        let held: Vec<(String, u32)> = self.held.lock().iter().map(|(t, w)| (t.clone(), *w)).collect();
        if held.is_empty() {
            return Ok(());
        }
        let extra: Vec<String> = held
            .iter()
            .flat_map(|(token, weight)| [token.clone(), weight.to_string()])
            .collect();
        let (renewed,): (Vec<i64>,) = self.call(&RENEW, &extra).await?;
        for ((token, _), renewed) in held.into_iter().zip(renewed) {
            if renewed == 0 && self.held.lock().remove(&token).is_some() {
                self.lost.lock().insert(token);
                self.lost_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Renews the held leases every third of a lease while any slot is held, and at once when the
/// state was found lost.
pub(super) async fn renewer(inner: Weak<Inner>, mut shutdown: watch::Receiver<()>) {
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

/// The pool of the Python API (`pool.rs`): its slots go back to Redis as the others do.
#[cfg(feature = "python")]
impl Inner {
    pub(crate) fn push_pooled(&self, slot: Slot, weight: u32) {
        self.pool.push(slot, weight);
    }

    /// Gives back `weight` pooled slots (`Pool::take` says which); `false` (and nothing
    /// changed) if fewer are held.
    pub(crate) fn release_pooled(self: &Arc<Self>, weight: u32) -> bool {
        let Some(takes) = self.pool.take(weight, &self.lost) else {
            return false;
        };
        for take in takes {
            match take {
                Take::Whole(slot) => self.release_slot(slot),
                Take::Part(token, amount) => self.release_part(&token, amount),
            }
        }
        true
    }

    /// Releases `slot` (of `weight`) from the pool, or, if another release took it already,
    /// as many pooled slots.
    pub(crate) fn release_pooled_slot(self: &Arc<Self>, slot: &Slot, weight: u32) {
        match self.pool.remove(slot, weight) {
            Some(slot) => self.release_slot(slot),
            None => drop(self.release_pooled(weight)),
        }
    }

    /// Takes `slot` (of `weight`) out of the pool without releasing it: its token was already
    /// given up on the server (a cancellation raced with its admission). If another release
    /// took it already, as many pooled slots are released instead (that release freed nothing).
    pub(crate) fn discard_pooled_slot(self: &Arc<Self>, slot: &Slot, weight: u32) {
        if self.pool.remove(slot, weight).is_none() {
            self.release_pooled(weight);
            return;
        }
        self.unhold_one();
        if let Slot::Leased(token) = slot {
            self.held.lock().remove(token);
            self.lost.lock().remove(token);
        }
    }

    /// Slots held in the pool (a slot of weight `w` counts `w`).
    pub(crate) fn pooled_count(&self) -> u64 {
        self.pool.count()
    }
}
