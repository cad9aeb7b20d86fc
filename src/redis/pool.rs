//! The slots a Python limiter object holds without a permit: its `acquire()` and `release()` are
//! separate calls, so the slots wait in a pool between them, and `release(weight=w)` gives back
//! `w` of them, whichever acquires took them. This file decides which entries a release takes;
//! giving them back to Redis is `release.rs`'s.

use super::slot::Slot;
use parking_lot::Mutex;
use std::collections::HashSet;

/// One pooled slot and the weight of it still held.
#[derive(Debug)]
struct Pooled {
    slot: Slot,
    weight: u32,
}

/// What a release takes from the pool.
pub(crate) enum Take {
    /// A whole entry: its lease is released.
    Whole(Slot),
    /// Part of a leased entry (its token and the weight taken), which stays in the pool with
    /// the rest.
    Part(String, u32),
}

/// The pooled slots of one limiter object.
#[derive(Debug, Default)]
pub(crate) struct Pool(Mutex<Vec<Pooled>>);

impl Pool {
    pub(crate) fn push(&self, slot: Slot, weight: u32) {
        self.0.lock().push(Pooled { slot, weight });
    }

    /// Takes `weight` pooled slots out, `None` (and nothing changed) if fewer are held. Slots
    /// whose lease is already `lost` (locked after the pool) go first (they free nothing, and
    /// the live ones stay held), then whole entries, the largest that fit first; only what is
    /// left is taken from a larger entry.
    pub(crate) fn take(&self, weight: u32, lost: &Mutex<HashSet<String>>) -> Option<Vec<Take>> {
        let mut pool = self.0.lock();
        if pool.iter().map(|p| u64::from(p.weight)).sum::<u64>() < u64::from(weight) {
            return None;
        }
        let lost = lost.lock();
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
        Some(takes)
    }

    /// Takes out the entry of exactly `slot` and `weight`, if it is still there.
    pub(crate) fn remove(&self, slot: &Slot, weight: u32) -> Option<Slot> {
        let mut pool = self.0.lock();
        let i = pool.iter().position(|p| p.slot == *slot && p.weight == weight)?;
        Some(pool.swap_remove(i).slot)
    }

    /// Slots held in the pool (a slot of weight `w` counts `w`).
    pub(crate) fn count(&self) -> u64 {
        self.0.lock().iter().map(|p| u64::from(p.weight)).sum()
    }
}
