//! The queue of parked waiters, kept in a slab: highest priority first, FIFO within a priority,
//! O(1) removal of any waiter by its id, and O(1) insertion while every waiter has the same
//! priority (O(number of distinct priorities queued) otherwise).
//!
//! Each slot is free, queued (linked into the queue by index, holding the waiter's [`Waker`],
//! weight and priority), granted (popped by a release, waiting for its owner to notice) or
//! refused (the limiter was closed, or shrunk below the waiter's weight). A slot belongs to the
//! waiter that pushed it until that waiter calls [`WaiterList::remove`]; nothing else frees it, so
//! an id can never refer to somebody else's slot. The list needs no `unsafe`: links are indices.
//!
//! Priorities: `groups` holds, for each priority that has a queued waiter, the index of its last
//! (youngest) waiter, in descending priority order. A newcomer is linked in right after the last
//! waiter of its own priority or, if it has none, after the last waiter of the nearest higher
//! priority (at the head if there is none).

use crate::error::AcquireError;
use std::task::Waker;

const NIL: usize = usize::MAX;

/// Identifies one waiter's slot until the waiter removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterId(usize);

/// What a caller asks one level's queue for: `weight` slots at once, served by `priority`
/// (higher first, FIFO within one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) weight: u32,
    pub(crate) priority: i32,
}

impl Request {
    /// One slot, at the default priority: what pydantic-ai's limiter asks for.
    pub(crate) const ONE: Self = Self { weight: 1, priority: 0 };

    /// Whether a limiter of `max_running` slots could ever serve this request: a weight of 0
    /// never can ([`AcquireError::ZeroWeight`]), nor one above `max_running`
    /// ([`AcquireError::WeightTooLarge`]).
    pub(crate) const fn check(self, max_running: u32) -> Result<(), AcquireError> {
        if self.weight == 0 {
            Err(AcquireError::ZeroWeight)
        } else if self.weight > max_running {
            Err(AcquireError::WeightTooLarge {
                weight: self.weight,
                max_running,
            })
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
enum Slot {
    Free {
        next_free: usize,
    },
    Queued {
        prev: usize,
        next: usize,
        waker: Waker,
        request: Request,
    },
    Granted {
        weight: u32,
    },
    Refused(AcquireError),
}

/// What a removed slot held.
#[derive(Debug)]
pub(crate) enum Removed {
    /// The waiter was still queued: it holds nothing. Its waker comes back so that the caller
    /// drops it after unlocking (dropping a waker can run arbitrary code, even a destructor that
    /// calls back into the limiter).
    Queued(Waker),
    /// A release had handed the waiter `weight` slots: the caller now owns them.
    Granted { weight: u32 },
    /// The waiter was refused: it holds nothing.
    Refused(AcquireError),
}

/// Where a queued waiter stands, as seen by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    Queued,
    Granted,
    Refused(AcquireError),
}

/// Slab-backed intrusive-by-index priority queue of waiters.
#[derive(Debug)]
pub(crate) struct WaiterList {
    slots: Vec<Slot>,
    free_head: usize,
    head: usize,
    tail: usize,
    /// `(priority, index of its last queued waiter)`, highest priority first.
    groups: Vec<(i32, usize)>,
    /// Queued slots (the queue's length).
    len: usize,
    /// Slots handed to granted waiters that have not taken them yet.
    granted_weight: u64,
    /// Queued, granted and refused slots: when it reaches zero the slab can be dropped.
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
            groups: Vec::new(),
            len: 0,
            granted_weight: 0,
            live: 0,
        }
    }

    /// Number of queued waiters.
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Slots handed to waiters that have not taken (removed) them yet.
    pub(crate) const fn granted_weight(&self) -> u64 {
        self.granted_weight
    }

    /// The request of the waiter served next, if any.
    pub(crate) fn front(&self) -> Option<Request> {
        match self.slots.get(self.head) {
            Some(Slot::Queued { request, .. }) => Some(*request),
            _ => None,
        }
    }

    /// Whether a newcomer of `priority` would be served before everyone queued.
    pub(crate) fn would_lead(&self, priority: i32) -> bool {
        self.groups.first().is_none_or(|&(first, _)| priority > first)
    }

    /// Links a waiter in behind everyone of its priority or higher.
    pub(crate) fn push(&mut self, waker: Waker, request: Request) -> WaiterId {
        let group = self.groups.partition_point(|&(p, _)| p > request.priority);
        let same = self.groups.get(group).is_some_and(|&(p, _)| p == request.priority);
        let after = if same {
            self.groups[group].1
        } else if group > 0 {
            self.groups[group - 1].1
        } else {
            NIL
        };
        let before = if after == NIL { self.head } else { self.next_of(after) };
        let slot = Slot::Queued {
            prev: after,
            next: before,
            waker,
            request,
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
        if after == NIL {
            self.head = idx;
        } else {
            self.set_next(after, idx);
        }
        if before == NIL {
            self.tail = idx;
        } else {
            self.set_prev(before, idx);
        }
        if same {
            self.groups[group].1 = idx;
        } else {
            self.groups.insert(group, (request.priority, idx));
        }
        self.len += 1;
        self.live += 1;
        WaiterId(idx)
    }

    /// Marks the waiter served next granted and returns its waker, or `None` when nobody is
    /// queued.
    pub(crate) fn grant_front(&mut self) -> Option<Waker> {
        if self.head == NIL {
            return None;
        }
        let idx = self.head;
        let (waker, request) = self.unlink(idx);
        self.slots[idx] = Slot::Granted { weight: request.weight };
        self.granted_weight += u64::from(request.weight);
        Some(waker)
    }

    /// Refuses every queued waiter that `refuse` picks (by its request), with the error it gives,
    /// and returns their wakers, in queue order.
    pub(crate) fn refuse(&mut self, mut refuse: impl FnMut(Request) -> Option<AcquireError>) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut idx = self.head;
        while idx != NIL {
            let Slot::Queued { next, request, .. } = self.slots[idx] else {
                unreachable!("queue links a non-queued slot")
            };
            if let Some(err) = refuse(request) {
                let (waker, _) = self.unlink(idx);
                self.slots[idx] = Slot::Refused(err);
                wakers.push(waker);
            }
            idx = next;
        }
        wakers
    }

    /// Where a waiter stands.
    pub(crate) fn standing(&self, id: WaiterId) -> Standing {
        match &self.slots[id.0] {
            Slot::Queued { .. } => Standing::Queued,
            Slot::Granted { .. } => Standing::Granted,
            Slot::Refused(err) => Standing::Refused(err.clone()),
            Slot::Free { .. } => unreachable!("a removed waiter asked for its standing"),
        }
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
        let removed = match std::mem::replace(&mut self.slots[id.0], Slot::Free { next_free: NIL }) {
            slot @ Slot::Queued { .. } => {
                self.slots[id.0] = slot;
                Removed::Queued(self.unlink(id.0).0)
            }
            Slot::Granted { weight } => {
                self.granted_weight -= u64::from(weight);
                Removed::Granted { weight }
            }
            Slot::Refused(err) => Removed::Refused(err),
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

    /// Unlinks a queued slot from the queue (leaving a placeholder for the caller to overwrite)
    /// and returns its waker and request.
    fn unlink(&mut self, idx: usize) -> (Waker, Request) {
        let slot = std::mem::replace(&mut self.slots[idx], Slot::Granted { weight: 0 });
        let Slot::Queued {
            prev,
            next,
            waker,
            request,
        } = slot
        else {
            unreachable!("unlinking a non-queued slot")
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.set_next(prev, next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.set_prev(next, prev);
        }
        let group = self.groups.partition_point(|&(p, _)| p > request.priority);
        if self.groups[group].1 == idx {
            let prev_same = prev != NIL
                && matches!(self.slots[prev], Slot::Queued { request: r, .. } if r.priority == request.priority);
            if prev_same {
                self.groups[group].1 = prev;
            } else {
                self.groups.remove(group);
            }
        }
        self.len -= 1;
        (waker, request)
    }

    fn next_of(&self, idx: usize) -> usize {
        match self.slots[idx] {
            Slot::Queued { next, .. } => next,
            _ => unreachable!("queue links a non-queued slot"),
        }
    }

    fn set_next(&mut self, idx: usize, to: usize) {
        if let Slot::Queued { next, .. } = &mut self.slots[idx] {
            *next = to;
        }
    }

    fn set_prev(&mut self, idx: usize, to: usize) {
        if let Slot::Queued { prev, .. } = &mut self.slots[idx] {
            *prev = to;
        }
    }
}

#[cfg(all(test, not(ferrolimit_loom)))]
mod tests {
    use super::{Removed, Request, Standing, WaiterList};
    use crate::error::AcquireError;
    use std::task::Waker;

    fn at(priority: i32) -> Request {
        Request { weight: 1, priority }
    }

    /// Grants everyone in turn and returns the order, as indices into `ids`.
    fn served(list: &mut WaiterList, ids: &[super::WaiterId]) -> Vec<usize> {
        let mut order = Vec::new();
        while list.grant_front().is_some() {
            let next = (0..ids.len())
                .find(|i| !order.contains(i) && list.standing(ids[*i]) == Standing::Granted)
                .expect("a grant went to a waiter not in `ids`");
            order.push(next);
        }
        order
    }

    #[test]
    fn fifo_order_and_removal_from_the_middle() {
        let mut list = WaiterList::new();
        let ids: Vec<_> = (0..5).map(|_| list.push(Waker::noop().clone(), Request::ONE)).collect();
        assert!(matches!(list.remove(ids[2]), Removed::Queued(_)));
        assert_eq!(list.len(), 4);
        for expected in [0, 1, 3, 4] {
            assert!(list.grant_front().is_some());
            assert_eq!(list.standing(ids[expected]), Standing::Granted);
        }
        assert!(list.grant_front().is_none());
        assert_eq!(list.granted_weight(), 4);
        for id in [ids[0], ids[1], ids[3], ids[4]] {
            assert!(matches!(list.remove(id), Removed::Granted { weight: 1 }));
        }
        assert_eq!(list.granted_weight(), 0);
        assert_eq!(list.slots.len(), 0, "an idle list keeps no slots");
    }

    #[test]
    fn freed_slots_are_reused_and_links_stay_right() {
        let mut list = WaiterList::new();
        let a = list.push(Waker::noop().clone(), Request::ONE);
        let b = list.push(Waker::noop().clone(), Request::ONE);
        assert!(matches!(list.remove(a), Removed::Queued(_)));
        let c = list.push(Waker::noop().clone(), Request::ONE);
        assert_eq!(c, a, "the freed slot is reused");
        list.grant_front();
        assert_eq!(list.standing(b), Standing::Granted);
        assert_eq!(list.standing(c), Standing::Queued);
        list.grant_front();
        assert_eq!(list.standing(c), Standing::Granted);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn higher_priorities_first_fifo_within_one() {
        let mut list = WaiterList::new();
        let priorities = [0, 5, 0, -3, 5, 9, -3, 0];
        let ids: Vec<_> = priorities
            .iter()
            .map(|&p| list.push(Waker::noop().clone(), at(p)))
            .collect();
        assert!(list.would_lead(10) && !list.would_lead(9));
        assert_eq!(list.front(), Some(at(9)));
        assert_eq!(served(&mut list, &ids), [5, 1, 4, 0, 2, 7, 3, 6]);
        assert!(list.groups.is_empty());
    }

    #[test]
    fn removing_a_group_tail_keeps_later_arrivals_in_order() {
        let mut list = WaiterList::new();
        let first = list.push(Waker::noop().clone(), at(1));
        let tail = list.push(Waker::noop().clone(), at(1));
        let low = list.push(Waker::noop().clone(), at(0));
        assert!(matches!(list.remove(tail), Removed::Queued(_)));
        let second = list.push(Waker::noop().clone(), at(1));
        assert!(matches!(list.remove(first), Removed::Queued(_)));
        let third = list.push(Waker::noop().clone(), at(1));
        assert_eq!(served(&mut list, &[low, second, third]), [1, 2, 0]);
    }

    #[test]
    fn refusing_picks_by_request_and_keeps_the_rest_linked() {
        let mut list = WaiterList::new();
        let ids: Vec<_> = [1, 4, 2, 4]
            .iter()
            .map(|&weight| list.push(Waker::noop().clone(), Request { weight, priority: 0 }))
            .collect();
        let refused = list.refuse(|r| {
            (r.weight > 3).then_some(AcquireError::WeightTooLarge {
                weight: r.weight,
                max_running: 3,
            })
        });
        assert_eq!(refused.len(), 2);
        assert_eq!(list.len(), 2);
        assert!(matches!(list.standing(ids[1]), Standing::Refused(_)));
        assert_eq!(served(&mut list, &[ids[0], ids[2]]), [0, 1]);
        assert_eq!(list.live, 4, "granted and refused slots stay until removed");
        assert!(matches!(list.remove(ids[3]), Removed::Refused(_)));
    }
}
