//! loom models of `queue::Semaphore`: no over-admission, nothing lost on cancellation at the
//! instant of handoff, FIFO handoff, an exact `max_queued`, a stray release that changes
//! nothing, and wake-ups delivered in grant order.

use crate::queue::{Enqueued, Semaphore};
use crate::sync::{Arc, Mutex};
use crate::waiters::WaiterId;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::task::{Wake, Waker};

/// Two threads each take a slot of one (fast path or queue), hold it, and give it back: never
/// two holders, and the slot is back at the end.
#[test]
fn loom_no_over_admission() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, None));
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                let inside = Arc::clone(&inside);
                thread::spawn(move || {
                    acquire_spinning(&sem);
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    inside.fetch_sub(1, Ordering::SeqCst);
                    sem.release().unwrap();
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(sem.available(), 1);
        assert_eq!(sem.running(), 0);
    });
}

/// A waiter cancels while the holder releases: whichever wins, the slot ends up free.
#[test]
fn loom_cancel_at_handoff_loses_nothing() {
    loom::model(|| {
        let (sem, id) = held_with_a_waiter();
        let releaser = release_on_a_thread(&sem);
        sem.cancel(id);
        releaser.join().unwrap();
        assert_eq!(sem.available(), 1, "the slot was lost");
        assert_eq!(sem.running(), 0);
        assert_eq!(sem.waiting(), 0);
    });
}

/// A release racing a newcomer's fast path: a queued waiter is served first (no barging).
#[test]
fn loom_release_goes_to_the_waiter_not_a_newcomer() {
    loom::model(|| {
        let (sem, id) = held_with_a_waiter();
        let releaser = release_on_a_thread(&sem);
        let newcomer = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.try_acquire())
        };
        releaser.join().unwrap();
        assert!(!newcomer.join().unwrap(), "a newcomer overtook the waiter");
        assert!(sem.take_granted(id));
    });
}

/// Two simultaneous arrivals with one queue place: exactly one is queued.
#[test]
fn loom_max_queued_is_exact() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, Some(1)));
        assert!(sem.try_acquire());
        let arrivals: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.enqueue(Waker::noop()))
            })
            .collect();
        let results: Vec<_> = arrivals.into_iter().map(|h| h.join().unwrap()).collect();
        let queued = results
            .iter()
            .filter(|r| matches!(r, Ok(Enqueued::Queued { .. })))
            .count();
        let rejected = results.iter().filter(|r| r.is_err()).count();
        assert_eq!((queued, rejected), (1, 1));
    });
}

/// A lock-free release racing an arrival that is about to queue: the arrival either takes the
/// freed slot or is handed it; it is never left queued beside a free slot.
#[test]
fn loom_release_racing_an_arrival_is_never_lost() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, None));
        assert!(sem.try_acquire());
        let releaser = release_on_a_thread(&sem);
        match sem.enqueue(Waker::noop()).unwrap() {
            Enqueued::Acquired => {}
            Enqueued::Queued { id, .. } => {
                releaser.join().unwrap();
                assert!(sem.take_granted(id), "queued beside a free slot");
                sem.release().unwrap();
                assert_eq!(sem.available(), 1);
                return;
            }
        }
        releaser.join().unwrap();
        assert_eq!(sem.running(), 1);
    });
}

/// Two releases race while one slot is held and a waiter is queued: the first hands the slot to
/// the waiter, which has not taken it yet, so the second is a release too many. Exactly one
/// succeeds, and the waiter's cancellation then frees the slot: never a holder count that goes
/// below zero or a slot counted twice.
#[test]
fn loom_stray_release_at_handoff_changes_nothing() {
    loom::model(|| {
        let (sem, id) = held_with_a_waiter();
        let releasers: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release().is_ok())
            })
            .collect();
        let succeeded: Vec<bool> = releasers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            succeeded.iter().filter(|ok| **ok).count(),
            1,
            "one release for one holder"
        );
        assert!(sem.cancel(id), "the waiter had been handed the slot");
        assert_eq!((sem.running(), sem.available(), sem.waiting()), (0, 1, 0));
    });
}

/// Records the order in which wakers are woken.
struct Recorder {
    id: usize,
    log: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Recorder {
    fn wake(self: std::sync::Arc<Self>) {
        self.log.lock().push(self.id);
    }
}

/// Two releases on two threads hand slots to two queued waiters: their wake-ups are delivered in
/// the order the slots were handed over, whichever thread is preempted where.
#[test]
fn loom_wake_ups_follow_grant_order() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(2, None));
        assert!(sem.try_acquire() && sem.try_acquire());
        let log = Arc::new(Mutex::new(Vec::new()));
        let ids: Vec<_> = (0..2)
            .map(|id| {
                let waker = Waker::from(std::sync::Arc::new(Recorder {
                    id,
                    log: Arc::clone(&log),
                }));
                let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(&waker) else {
                    panic!("expected to queue")
                };
                id
            })
            .collect();
        let releasers: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release().unwrap())
            })
            .collect();
        for releaser in releasers {
            releaser.join().unwrap();
        }
        assert_eq!(*log.lock(), [0, 1], "wake-ups out of grant order");
        for id in ids {
            assert!(sem.take_granted(id));
        }
    });
}

/// A semaphore of one slot, held, with one waiter queued.
fn held_with_a_waiter() -> (Arc<Semaphore>, WaiterId) {
    let sem = Arc::new(Semaphore::new(1, None));
    assert!(sem.try_acquire());
    let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(Waker::noop()) else {
        panic!("expected to queue")
    };
    (sem, id)
}

/// Releases a slot of `sem` on another thread.
fn release_on_a_thread(sem: &Arc<Semaphore>) -> thread::JoinHandle<()> {
    let sem = Arc::clone(sem);
    thread::spawn(move || sem.release().unwrap())
}

/// Takes a slot by the fast path or by queueing and spinning until granted.
fn acquire_spinning(sem: &Semaphore) {
    if sem.try_acquire() {
        return;
    }
    match sem.enqueue(Waker::noop()).unwrap() {
        Enqueued::Acquired => {}
        Enqueued::Queued { id, .. } => {
            while !sem.take_granted(id) {
                thread::yield_now();
            }
        }
    }
}
