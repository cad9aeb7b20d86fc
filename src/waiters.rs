//! A FIFO of parked waiters kept in a slab: O(1) push, pop of the oldest, and removal of any
//! waiter by its id.
//!
//! Each slot is free, queued (linked into the FIFO by index, holding the waiter's [`Waker`]) or
//! granted (popped by a release, waiting for its owner to notice). A slot belongs to the waiter
//! that pushed it until that waiter calls [`WaiterList::remove`]; nothing else frees it, so an id
//! can never refer to somebody else's slot. The list needs no `unsafe`: links are indices.

use std::task::Waker;

const NIL: usize = usize::MAX;

/// Identifies one waiter's slot until the waiter removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterId(usize);

#[derive(Debug)]
enum Slot {
    Free { next_free: usize },
    Queued { prev: usize, next: usize, waker: Waker },
    Granted,
}

/// What a removed slot held.
#[derive(Debug)]
pub(crate) enum Removed {
    /// The waiter was still queued: it holds nothing. Its waker comes back so that the caller
    /// drops it after unlocking (dropping a waker can run arbitrary code, even a destructor that
    /// calls back into the limiter).
    Queued(Waker),
    /// A release had handed the waiter a slot: the caller now owns it.
    Granted,
}

/// Slab-backed intrusive-by-index FIFO of waiters.
#[derive(Debug)]
pub(crate) struct WaiterList {
    slots: Vec<Slot>,
    free_head: usize,
    head: usize,
    tail: usize,
    /// Queued slots (the FIFO's length).
    len: usize,
    /// Queued plus granted slots: when it reaches zero the slab can be dropped.
    live: usize,
}

/// Above this many slots an idle slab gives its memory back.
const RETAINED_SLOTS: usize = 64;

impl WaiterList {
    pub(crate) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free_head: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            live: 0,
        }
    }

    /// Number of queued waiters.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Number of waiters handed a slot that they have not taken (removed) yet.
    pub(crate) const fn granted(&self) -> usize {
        self.live - self.len
    }

    /// Appends a waiter at the back of the queue.
    pub(crate) fn push_back(&mut self, waker: Waker) -> WaiterId {
        let slot = Slot::Queued {
            prev: self.tail,
            next: NIL,
            waker,
        };
        let idx = if self.free_head == NIL {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let idx = self.free_head;
            let Slot::Free { next_free } = self.slots[idx] else {
                unreachable!("free list holds a used slot")
            };
            self.free_head = next_free;
            self.slots[idx] = slot;
            idx
        };
        if self.tail == NIL {
            self.head = idx;
        } else {
            self.set_next(self.tail, idx);
        }
        self.tail = idx;
        self.len += 1;
        self.live += 1;
        WaiterId(idx)
    }

    /// Marks the oldest waiter granted and returns its waker, or `None` when nobody is queued.
    pub(crate) fn grant_front(&mut self) -> Option<Waker> {
        if self.head == NIL {
            return None;
        }
        let idx = self.head;
        let Slot::Queued { waker, .. } = self.unlink(idx) else {
            unreachable!("queue links a non-queued slot")
        };
        self.slots[idx] = Slot::Granted;
        Some(waker)
    }

    /// Whether a release has handed this waiter a slot.
    pub(crate) fn is_granted(&self, id: WaiterId) -> bool {
        matches!(self.slots[id.0], Slot::Granted)
    }

    /// Replaces a queued waiter's waker (a future may be polled with a new one) and returns the
    /// old one, for the caller to drop after unlocking.
    #[must_use = "the old waker is to be dropped outside the lock"]
    pub(crate) fn set_waker(&mut self, id: WaiterId, new: &Waker) -> Option<Waker> {
        match &mut self.slots[id.0] {
            Slot::Queued { waker, .. } if !waker.will_wake(new) => Some(std::mem::replace(waker, new.clone())),
            _ => None,
        }
    }

    /// Frees a waiter's slot, unlinking it if it is still queued, and says what it held.
    #[must_use = "a queued waiter's waker is to be dropped outside the lock"]
    pub(crate) fn remove(&mut self, id: WaiterId) -> Removed {
        let removed = match self.slots[id.0] {
            Slot::Queued { .. } => {
                let Slot::Queued { waker, .. } = self.unlink(id.0) else {
                    unreachable!("unlink returns the queued slot")
                };
                Removed::Queued(waker)
            }
            Slot::Granted => Removed::Granted,
            Slot::Free { .. } => unreachable!("waiter removed twice"),
        };
        self.live -= 1;
        if self.live == 0 {
            // Nothing refers to any slot: start over, and give back a burst's memory.
            self.slots.clear();
            if self.slots.capacity() > RETAINED_SLOTS {
                self.slots.shrink_to(RETAINED_SLOTS);
            }
            self.free_head = NIL;
        } else {
            self.slots[id.0] = Slot::Free {
                next_free: self.free_head,
            };
            self.free_head = id.0;
        }
        removed
    }

    /// Unlinks a queued slot from the FIFO, leaving it free-to-overwrite; returns its old content.
    fn unlink(&mut self, idx: usize) -> Slot {
        let slot = std::mem::replace(&mut self.slots[idx], Slot::Granted);
        let Slot::Queued { prev, next, .. } = slot else {
            unreachable!("unlinking a non-queued slot")
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NIL {
            self.tail = prev;
        } else if let Slot::Queued { prev: p, .. } = &mut self.slots[next] {
            *p = prev;
        }
        self.len -= 1;
        slot
    }

    fn set_next(&mut self, idx: usize, to: usize) {
        if let Slot::Queued { next, .. } = &mut self.slots[idx] {
            *next = to;
        }
    }
}

#[cfg(all(test, not(ferrolimit_loom)))]
mod tests {
    use super::{Removed, WaiterList};
    use std::task::Waker;

    #[test]
    fn fifo_order_and_removal_from_the_middle() {
        let mut list = WaiterList::new();
        let ids: Vec<_> = (0..5).map(|_| list.push_back(Waker::noop().clone())).collect();
        assert!(matches!(list.remove(ids[2]), Removed::Queued(_)));
        assert_eq!(list.len(), 4);
        for expected in [0, 1, 3, 4] {
            assert!(list.grant_front().is_some());
            assert!(list.is_granted(ids[expected]));
        }
        assert!(list.grant_front().is_none());
        for id in [ids[0], ids[1], ids[3], ids[4]] {
            assert!(matches!(list.remove(id), Removed::Granted));
        }
        assert_eq!(list.slots.len(), 0, "an idle list keeps no slots");
    }

    #[test]
    fn freed_slots_are_reused_and_links_stay_right() {
        let mut list = WaiterList::new();
        let a = list.push_back(Waker::noop().clone());
        let b = list.push_back(Waker::noop().clone());
        assert!(matches!(list.remove(a), Removed::Queued(_)));
        let c = list.push_back(Waker::noop().clone());
        assert_eq!(c, a, "the freed slot is reused");
        list.grant_front();
        assert!(list.is_granted(b));
        assert!(!list.is_granted(c));
        list.grant_front();
        assert!(list.is_granted(c));
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn removing_head_and_tail_keeps_the_rest_linked() {
        let mut list = WaiterList::new();
        let ids: Vec<_> = (0..3).map(|_| list.push_back(Waker::noop().clone())).collect();
        assert!(matches!(list.remove(ids[0]), Removed::Queued(_)));
        assert!(matches!(list.remove(ids[2]), Removed::Queued(_)));
        assert_eq!(list.len(), 1);
        list.grant_front();
        assert!(list.is_granted(ids[1]));
        let d = list.push_back(Waker::noop().clone());
        list.grant_front();
        assert!(list.is_granted(d));
    }
}
