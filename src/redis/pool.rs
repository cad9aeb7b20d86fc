//! The slots a Python limiter object holds without a permit: its `acquire()` and `release()` are
//! separate calls, so the slots wait in a pool between them, and `release(weight=w)` gives back
//! `w` of them, whichever acquires took them.

use super::admission::Slot;
use super::inner::Inner;
use std::sync::Arc;

/// One pooled slot and the weight of it still held.
#[derive(Debug)]
pub(crate) struct Pooled {
    slot: Slot,
    weight: u32,
}

/// What a release takes from the pool.
enum Take {
    /// A whole entry: its lease is released.
    Whole(Slot),
    /// Part of a leased entry, which stays in the pool with the rest.
    Part(String, u32),
}

impl Inner {
    pub(crate) fn push_pooled(&self, slot: Slot, weight: u32) {
        self.pool.lock().push(Pooled { slot, weight });
    }

    /// Gives back `weight` pooled slots; `false` (and nothing changed) if fewer are held. Slots
    /// whose lease is already lost go first (they free nothing, and the live ones stay held),
    /// then whole entries, the largest that fit first; only what is left is taken from a larger
    /// entry.
    pub(crate) fn release_pooled(self: &Arc<Self>, weight: u32) -> bool {
        let takes = {
            let mut pool = self.pool.lock();
            if pool.iter().map(|p| u64::from(p.weight)).sum::<u64>() < u64::from(weight) {
                return false;
            }
            let lost = self.lost.lock();
            let dead = |p: &Pooled| match &p.slot {
                Slot::Leased(token) => lost.contains(token),
                Slot::Unlimited => true,
            };
            let mut takes = Vec::new();
            let mut remaining = weight;
            while remaining > 0 {
                let whole = pool
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.weight <= remaining)
                    .max_by_key(|(_, p)| (p.weight == remaining, dead(p), p.weight))
                    .map(|(i, _)| i);
                if let Some(i) = whole {
                    let entry = pool.swap_remove(i);
                    remaining -= entry.weight;
                    takes.push(Take::Whole(entry.slot));
                    continue;
                }
                // Every entry is heavier than what is left: take that much from one of them.
                let Some(entry) = pool.iter_mut().max_by_key(|p| dead(p)) else {
                    break;
                };
                entry.weight -= remaining;
                if let Slot::Leased(token) = &entry.slot
                    && !lost.contains(token)
                {
                    takes.push(Take::Part(token.clone(), remaining));
                }
                remaining = 0;
            }
            takes
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
        let found = {
            let mut pool = self.pool.lock();
            pool.iter()
                .position(|p| p.slot == *slot && p.weight == weight)
                .map(|i| pool.swap_remove(i))
        };
        match found {
            Some(entry) => self.release_slot(entry.slot),
            None => drop(self.release_pooled(weight)),
        }
    }

    /// Takes `slot` (of `weight`) out of the pool without releasing it: its token was already
    /// given up on the server (a cancellation raced with its admission). If another release
    /// took it already, as many pooled slots are released instead (that release freed nothing).
    pub(crate) fn discard_pooled_slot(self: &Arc<Self>, slot: &Slot, weight: u32) {
        let found = {
            let mut pool = self.pool.lock();
            pool.iter()
                .position(|p| p.slot == *slot && p.weight == weight)
                .map(|i| pool.swap_remove(i))
        };
        if found.is_none() {
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
        self.pool.lock().iter().map(|p| u64::from(p.weight)).sum()
    }
}
