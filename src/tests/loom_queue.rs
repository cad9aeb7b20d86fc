//! loom models of `queue::Semaphore`: no over-admission, nothing lost on cancellation at the
//! instant of handoff, FIFO handoff, an exact `max_queued`, a stray release that changes
//! nothing, wake-ups delivered in grant order, weighted handoff with head-of-line blocking,
//! closing against arrivals and releases, and the wait for idleness.

use crate::error::AcquireError;
use crate::queue::{Enqueued, Semaphore};
use crate::sync::{Arc, Mutex};
use crate::waiters::{Request, WaiterId};
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
                    sem.release(1).unwrap();
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
        let _ = sem.cancel(id);
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
            thread::spawn(move || sem.try_acquire(1))
        };
        releaser.join().unwrap();
        assert!(!newcomer.join().unwrap(), "a newcomer overtook the waiter");
        assert!(sem.take_granted(id).unwrap());
    });
}

/// Two simultaneous arrivals with one queue place: exactly one is queued.
#[test]
fn loom_max_queued_is_exact() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, Some(1)));
        assert!(sem.try_acquire(1));
        let arrivals: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.enqueue(Waker::noop(), Request::ONE))
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
        assert!(sem.try_acquire(1));
        let releaser = release_on_a_thread(&sem);
        match sem.enqueue(Waker::noop(), Request::ONE).unwrap() {
            Enqueued::Acquired => {}
            Enqueued::Queued { id, .. } => {
                releaser.join().unwrap();
                assert!(sem.take_granted(id).unwrap(), "queued beside a free slot");
                sem.release(1).unwrap();
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
                thread::spawn(move || sem.release(1).is_ok())
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
        assert!(sem.try_acquire(1) && sem.try_acquire(1));
        let log = Arc::new(Mutex::new(Vec::new()));
        let ids: Vec<_> = (0..2)
            .map(|id| {
                let waker = Waker::from(std::sync::Arc::new(Recorder {
                    id,
                    log: Arc::clone(&log),
                }));
                let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(&waker, Request::ONE) else {
                    panic!("expected to queue")
                };
                id
            })
            .collect();
        let releasers: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.release(1).unwrap())
            })
            .collect();
        for releaser in releasers {
            releaser.join().unwrap();
        }
        assert_eq!(*log.lock(), [0, 1], "wake-ups out of grant order");
        for id in ids {
            assert!(sem.take_granted(id).unwrap());
        }
    });
}

/// Three slots, two held by one caller; a waiter for two waits at the head for a second free
/// slot while a newcomer for one races the release of the held
/// pair and the waiter's own cancellation. The newcomer never takes a slot the head waits for,
/// and every slot is back at the end.
#[test]
fn loom_weighted_head_of_line_and_cancel_at_handoff() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(3, None));
        assert!(sem.try_acquire(2));
        let heavy = Request { weight: 2, priority: 0 };
        let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(Waker::noop(), heavy) else {
            panic!("one slot free, two asked for: expected to queue")
        };
        assert_eq!(sem.available(), 1, "the free slot stays for the head");
        let releaser = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.release(2).unwrap())
        };
        let newcomer = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || {
                let took = sem.try_acquire(1);
                // The heavy waiter only ever leaves the queue: if it is still there, the
                // newcomer took a slot beside it.
                assert!(
                    !took || sem.waiting() == 0,
                    "a newcomer overtook the waiter at the head"
                );
                took
            })
        };
        let _ = sem.cancel(id);
        releaser.join().unwrap();
        if newcomer.join().unwrap() {
            sem.release(1).unwrap();
        }
        assert_eq!((sem.running(), sem.available(), sem.waiting()), (0, 3, 0));
    });
}

/// Closing races an arrival: the arrival either got its slot before the close or is refused
/// (`Closed`), and the waiter queued before the close is refused. Then the holder's release
/// races a newcomer: the release goes through, the newcomer is never admitted, and nothing is
/// held at the end.
#[test]
fn loom_close_refuses_arrivals_and_waiters_but_not_releases() {
    loom::model(|| {
        let (sem, id) = held_with_a_waiter();
        let closer = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.close())
        };
        let arrival = sem.enqueue(Waker::noop(), Request::ONE);
        closer.join().unwrap();
        assert_eq!(
            sem.take_granted(id),
            Err(AcquireError::Closed),
            "a queued waiter outlived the close"
        );
        match arrival {
            Ok(Enqueued::Queued { id, .. }) => {
                assert_eq!(sem.take_granted(id), Err(AcquireError::Closed));
            }
            Ok(Enqueued::Acquired) => panic!("the only slot is held"),
            Err(err) => assert_eq!(err, AcquireError::Closed),
        }
        let releaser = release_on_a_thread(&sem);
        assert!(!sem.try_acquire(1), "a closed limiter admitted a newcomer");
        releaser.join().unwrap();
        assert!(!sem.try_acquire(1), "a closed limiter admitted a newcomer");
        assert_eq!((sem.running(), sem.available(), sem.waiting()), (0, 1, 0));
    });
}

/// trio's cancellation racing a close: a queued waiter withdraws while another thread closes
/// the limiter. Either it left the queue (and no wake-up comes: trio would resume a task that
/// is not waiting) or it was refused, its wake-up comes, and it must claim the refusal.
#[test]
fn loom_withdraw_racing_a_close_is_refused_or_withdrawn_never_both() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, None));
        assert!(sem.try_acquire(1));
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = Waker::from(std::sync::Arc::new(Counter(Arc::clone(&woken))));
        let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(&waker, Request::ONE) else {
            panic!("expected to queue")
        };
        let closer = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.close())
        };
        if sem.withdraw(id) {
            closer.join().unwrap();
            assert_eq!(woken.load(Ordering::SeqCst), 0, "a withdrawn waiter was woken");
        } else {
            closer.join().unwrap();
            assert_eq!(woken.load(Ordering::SeqCst), 1, "a refused waiter was not woken");
            assert_eq!(sem.take_granted(id), Err(AcquireError::Closed));
        }
        sem.release(1).unwrap();
        assert_eq!((sem.running(), sem.available(), sem.waiting()), (0, 1, 0));
    });
}

/// A wait for idleness races the last holder's lock-free release: it is either idle at once or
/// woken by that release, never left waiting beside an idle limiter.
#[test]
fn loom_wait_idle_sees_the_last_release() {
    loom::model(|| {
        let sem = Arc::new(Semaphore::new(1, None));
        assert!(sem.try_acquire(1));
        let releaser = release_on_a_thread(&sem);
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = Waker::from(std::sync::Arc::new(Counter(Arc::clone(&woken))));
        let mut registration = None;
        if !sem.poll_idle(&mut registration, &waker) {
            releaser.join().unwrap();
            assert_eq!(
                woken.load(Ordering::SeqCst),
                1,
                "the last release did not wake the idle waiter"
            );
            assert!(sem.poll_idle(&mut registration, &waker));
        } else {
            releaser.join().unwrap();
        }
        assert_eq!(registration, None);
        assert!(sem.try_acquire(1), "the idle wait left the limiter contended");
    });
}

/// Counts its wake-ups.
struct Counter(Arc<AtomicUsize>);

impl Wake for Counter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A semaphore of one slot, held, with one waiter queued.
fn held_with_a_waiter() -> (Arc<Semaphore>, WaiterId) {
    let sem = Arc::new(Semaphore::new(1, None));
    assert!(sem.try_acquire(1));
    let Ok(Enqueued::Queued { id, .. }) = sem.enqueue(Waker::noop(), Request::ONE) else {
        panic!("expected to queue")
    };
    (sem, id)
}

/// Releases a slot of `sem` on another thread.
fn release_on_a_thread(sem: &Arc<Semaphore>) -> thread::JoinHandle<()> {
    let sem = Arc::clone(sem);
    thread::spawn(move || sem.release(1).unwrap())
}

/// Takes a slot by the fast path or by queueing and spinning until granted.
fn acquire_spinning(sem: &Semaphore) {
    if sem.try_acquire(1) {
        return;
    }
    match sem.enqueue(Waker::noop(), Request::ONE).unwrap() {
        Enqueued::Acquired => {}
        Enqueued::Queued { id, .. } => {
            while !sem.take_granted(id).unwrap() {
                thread::yield_now();
            }
        }
    }
}
