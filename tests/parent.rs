//! Integration tests of nested limiters (`Builder::parent`), without Python: a slot of the child
//! and of the parent, the parent's taken only once the child's is held, released together.

use ferrolimit::{AcquireError, ConcurrencyLimiter, Permit};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// `(running, waiting, available)` of a limiter.
fn counts(limiter: &ConcurrencyLimiter) -> (usize, usize, usize) {
    let stats = limiter.stats();
    (stats.running, stats.waiting, stats.available)
}

fn pair(child_max: usize, parent_max: usize) -> (ConcurrencyLimiter, ConcurrencyLimiter) {
    let parent = ConcurrencyLimiter::builder(parent_max).name("parent").build().unwrap();
    let child = ConcurrencyLimiter::builder(child_max)
        .name("child")
        .parent(parent.clone())
        .build()
        .unwrap();
    (child, parent)
}

#[test]
fn a_permit_holds_a_slot_of_both_and_drop_releases_both() {
    let (child, parent) = pair(2, 3);
    assert!(child.parent().is_some_and(|p| p.name() == Some("parent")));
    assert!(parent.parent().is_none());
    let permit = child.try_acquire().unwrap();
    assert_eq!(permit.limiter().name(), Some("child"));
    let parent_permit: &Permit = permit.parent().unwrap();
    assert_eq!(parent_permit.limiter().name(), Some("parent"));
    assert!(parent_permit.parent().is_none());
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 0, 2)));
    drop(permit);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (0, 0, 3)));
    assert_eq!((child.stats().acquired_total, parent.stats().acquired_total), (1, 1));
}

#[tokio::test]
async fn acquire_takes_both_on_the_fast_path() {
    let (child, parent) = pair(1, 1);
    let permit = child.acquire_for("x").await.unwrap();
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 0), (1, 0, 0)));
    drop(permit);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 1), (0, 0, 1)));
}

#[test]
fn try_acquire_gives_the_child_slot_back_when_the_parent_is_full() {
    let (child, parent) = pair(2, 1);
    let other = parent.try_acquire().unwrap();
    assert!(child.try_acquire().is_none());
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (1, 0, 0)));
    // The child's slot was taken and given straight back: it counts as acquired once.
    assert_eq!(child.stats().acquired_total, 1);
    drop(other);
    assert!(child.try_acquire().is_some());
}

#[test]
fn a_caller_queued_for_the_child_holds_nothing_of_the_parent() {
    let (child, parent) = pair(1, 4);
    let holder = child.try_acquire().unwrap();
    let mut queued: Vec<_> = (0..10).map(|_| Box::pin(child.acquire())).collect();
    for future in &mut queued {
        assert!(poll_once(future.as_mut()).is_pending());
    }
    assert_eq!(counts(&child), (1, 10, 0));
    assert_eq!(counts(&parent), (1, 0, 3), "queued callers hold parent slots");
    // The parent's free slots are still there for anyone else.
    let others: Vec<_> = (0..3).map(|_| parent.try_acquire().unwrap()).collect();
    drop((holder, others, queued));
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 1), (0, 0, 4)));
}

#[test]
fn a_caller_waiting_for_the_parent_holds_the_child_slot_and_counts_there() {
    let (child, parent) = pair(2, 1);
    let sibling = parent.try_acquire().unwrap();
    let mut waiter = pin!(child.acquire_for("w"));
    assert!(poll_once(waiter.as_mut()).is_pending());
    // Documented: the child's running count includes a caller waiting for the parent.
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 1, 0)));
    drop(sibling); // handed to the waiter
    let Poll::Ready(Ok(permit)) = poll_once(waiter.as_mut()) else {
        panic!("not served")
    };
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 0, 0)));
    drop(permit);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (0, 0, 1)));
}

#[test]
fn waiters_of_two_children_are_served_fifo_at_the_parent() {
    let parent = ConcurrencyLimiter::new(1).unwrap();
    let a = ConcurrencyLimiter::builder(5).parent(parent.clone()).build().unwrap();
    let b = ConcurrencyLimiter::builder(5).parent(parent.clone()).build().unwrap();
    let holder = parent.try_acquire().unwrap();
    let mut first = pin!(b.acquire());
    let mut second = pin!(a.acquire());
    let mut third = pin!(b.acquire());
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    assert!(poll_once(third.as_mut()).is_pending());
    assert_eq!(parent.waiting_count(), 3);
    drop(holder);
    assert!(poll_once(third.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    let Poll::Ready(Ok(p1)) = poll_once(first.as_mut()) else {
        panic!("first not served")
    };
    drop(p1);
    assert!(poll_once(third.as_mut()).is_pending());
    let Poll::Ready(Ok(p2)) = poll_once(second.as_mut()) else {
        panic!("second not served")
    };
    drop(p2);
    let Poll::Ready(Ok(_p3)) = poll_once(third.as_mut()) else {
        panic!("third not served")
    };
}

#[test]
fn dropping_a_waiter_queued_for_the_child_loses_nothing() {
    let (child, parent) = pair(1, 1);
    let holder = child.try_acquire().unwrap();
    let mut abandoned = Box::pin(child.acquire());
    assert!(poll_once(abandoned.as_mut()).is_pending());
    drop(abandoned);
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 0), (1, 0, 0)));
    drop(holder);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 1), (0, 0, 1)));
    assert_eq!(child.stats().cancelled_total, 1);
}

#[test]
fn dropping_a_waiter_handed_the_child_slot_passes_it_on() {
    let (child, parent) = pair(1, 2);
    let holder = child.try_acquire().unwrap();
    let mut next = pin!(child.acquire());
    let mut abandoned = Box::pin(child.acquire());
    assert!(poll_once(abandoned.as_mut()).is_pending());
    assert!(poll_once(next.as_mut()).is_pending());
    drop(holder); // the child slot is handed to `abandoned`; the parent slot is freed
    drop(abandoned);
    let Poll::Ready(Ok(permit)) = poll_once(next.as_mut()) else {
        panic!("slot lost")
    };
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 0), (1, 0, 1)));
    drop(permit);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 1), (0, 0, 2)));
}

/// A waiter dropped while it waits for the parent gives back the child slot, and a parent slot
/// handed to it at that instant passes on; both orders of release and drop.
#[test]
fn dropping_a_waiter_at_the_parent_level_releases_the_child_slot() {
    for release_first in [false, true] {
        let (child, parent) = pair(2, 1);
        let sibling = parent.try_acquire().unwrap();
        let mut abandoned = Box::pin(child.acquire_for("abandoned"));
        assert!(poll_once(abandoned.as_mut()).is_pending());
        let other = ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap();
        let mut next = pin!(other.acquire_for("next"));
        assert!(poll_once(next.as_mut()).is_pending());
        assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 2, 0)));
        if release_first {
            drop(sibling); // handed to `abandoned` at the parent level
            drop(abandoned);
        } else {
            drop(abandoned);
            drop(sibling);
        }
        assert_eq!(counts(&child), (0, 0, 2), "release_first={release_first}");
        let Poll::Ready(Ok(permit)) = poll_once(next.as_mut()) else {
            panic!("parent slot lost (release_first={release_first})")
        };
        drop(permit);
        assert_eq!(counts(&parent), (0, 0, 1));
        assert_eq!(parent.stats().cancelled_total, 1);
    }
}

#[test]
fn a_full_parent_queue_rejects_and_gives_the_child_slot_back() {
    let parent = ConcurrencyLimiter::builder(1).max_queued(0).build().unwrap();
    let child = ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap();
    let holder = parent.try_acquire().unwrap();
    let mut rejected = pin!(child.acquire());
    let Poll::Ready(Err(err)) = poll_once(rejected.as_mut()) else {
        panic!("not rejected")
    };
    assert_eq!(
        err,
        AcquireError::QueueFull {
            depth: 1,
            max_queued: 0
        }
    );
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 1), (1, 0, 0)));
    assert_eq!(parent.stats().rejected_total, 1);
    drop(holder);
}

#[test]
fn resizing_the_child_leaves_the_parent_alone() {
    let (child, parent) = pair(1, 2);
    child.set_max_running(3).unwrap();
    assert_eq!((child.max_running(), parent.max_running()), (3, 2));
    let permits: Vec<_> = (0..2).map(|_| child.try_acquire().unwrap()).collect();
    // The child has a free slot; the parent has none.
    assert_eq!(child.available_count(), 1);
    assert!(child.try_acquire().is_none());
    drop(permits);
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 3), (0, 0, 2)));
}

#[tokio::test]
async fn three_levels() {
    let root = ConcurrencyLimiter::new(1).unwrap();
    let middle = ConcurrencyLimiter::builder(2).parent(root.clone()).build().unwrap();
    let leaf = ConcurrencyLimiter::builder(3).parent(middle.clone()).build().unwrap();
    let permit = leaf.acquire().await.unwrap();
    assert_eq!(
        (leaf.running_count(), middle.running_count(), root.running_count()),
        (1, 1, 1)
    );
    assert!(leaf.try_acquire().is_none());
    // The failed try gave back the leaf's and the middle's slots.
    assert_eq!((leaf.running_count(), middle.running_count()), (1, 1));
    let mut waiter = pin!(leaf.acquire());
    assert!(poll_once(waiter.as_mut()).is_pending());
    assert_eq!(
        (counts(&leaf), counts(&middle), counts(&root)),
        ((2, 0, 1), (2, 0, 0), (1, 1, 0))
    );
    drop(permit);
    let Poll::Ready(Ok(permit)) = poll_once(waiter.as_mut()) else {
        panic!("not served")
    };
    drop(permit);
    assert_eq!(
        (counts(&leaf), counts(&middle), counts(&root)),
        ((0, 0, 3), (0, 0, 2), (0, 0, 1))
    );
}

/// Many tasks on two children of one parent, a third of them giving up after a short time: the
/// limits hold at both levels at every instant, and every count returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_two_children_keep_the_invariants_at_both_levels() {
    const PARENT: usize = 5;
    const CHILD: [usize; 2] = [3, 4];
    let parent = ConcurrencyLimiter::builder(PARENT).name("parent").build().unwrap();
    let children: Vec<_> = CHILD
        .iter()
        .map(|&max| ConcurrencyLimiter::builder(max).parent(parent.clone()).build().unwrap())
        .collect();
    let inside = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let total = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..3000usize {
        let which = i % 2;
        let child = children[which].clone();
        let parent = parent.clone();
        let (inside, total, violations, done) = (
            Arc::clone(&inside),
            Arc::clone(&total),
            Arc::clone(&violations),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let permit = if i % 3 == 0 {
                match tokio::time::timeout(Duration::from_micros(50), child.acquire()).await {
                    Ok(permit) => permit.unwrap(),
                    Err(_) => return,
                }
            } else {
                child.acquire().await.unwrap()
            };
            let mine = inside[which].fetch_add(1, Ordering::SeqCst) + 1;
            let all = total.fetch_add(1, Ordering::SeqCst) + 1;
            if mine > CHILD[which] || all > PARENT || parent.running_count() > PARENT {
                violations.lock().unwrap().push((which, mine, all));
            }
            tokio::task::yield_now().await;
            inside[which].fetch_sub(1, Ordering::SeqCst);
            total.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    assert!(done.load(Ordering::SeqCst) >= 2000);
    for (child, max) in children.iter().zip(CHILD) {
        assert_eq!(counts(child), (0, 0, max));
    }
    assert_eq!(counts(&parent), (0, 0, PARENT));
    // Every completed acquire took a parent slot once (the parent's total may also count slots
    // taken by waiters that timed out at the instant of handoff, and passed on).
    let completed = done.load(Ordering::SeqCst) as u64;
    assert!(parent.stats().acquired_total >= completed);
}

#[test]
fn many_threads_on_two_children_keep_the_invariants_at_both_levels() {
    const PARENT: usize = 3;
    const THREADS: usize = 8;
    const ROUNDS: usize = 1000;
    let parent = ConcurrencyLimiter::new(PARENT).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| ConcurrencyLimiter::builder(2).parent(parent.clone()).build().unwrap())
        .collect();
    let total = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (child, parent) = (children[t % 2].clone(), parent.clone());
            let (total, violations) = (Arc::clone(&total), Arc::clone(&violations));
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let permit = loop {
                        if let Some(permit) = child.try_acquire() {
                            break permit;
                        }
                        std::hint::spin_loop();
                    };
                    let now = total.fetch_add(1, Ordering::SeqCst) + 1;
                    let (c, p) = (child.stats(), parent.stats());
                    if now > PARENT || c.running > 2 || p.running > PARENT || p.running + p.available != PARENT {
                        violations.lock().unwrap().push((now, c.running, p.running));
                    }
                    total.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    assert_eq!(counts(&parent), (0, 0, PARENT));
    assert_eq!(parent.stats().acquired_total, (THREADS * ROUNDS) as u64);
}

#[test]
fn a_forgotten_permit_keeps_both_slots_until_release_gives_them_back() {
    let (child, parent) = pair(2, 2);
    child.try_acquire().unwrap().forget();
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 0, 1)));
    child.release().unwrap();
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (0, 0, 2)));
    // A release too many fails at the child and changes nothing at either level.
    assert!(child.release().is_err());
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (0, 0, 2)));
}

#[test]
fn a_release_without_permit_never_takes_the_slot_of_a_caller_waiting_for_the_parent() {
    let (child, parent) = pair(2, 1);
    let holder = parent.try_acquire().unwrap();
    let mut waiting = pin!(child.acquire());
    assert!(poll_once(waiting.as_mut()).is_pending());
    assert_eq!(
        counts(&child).0,
        1,
        "holds the child's slot while it waits for the parent's"
    );
    assert!(child.release().is_err(), "nobody holds both levels");
    assert_eq!((counts(&child), counts(&parent)), ((1, 0, 1), (1, 1, 0)));
    drop(holder);
    let Poll::Ready(Ok(permit)) = poll_once(waiting.as_mut()) else {
        panic!("the parent's slot was handed over");
    };
    permit.forget();
    child.release().unwrap();
    assert_eq!((counts(&child), counts(&parent)), ((0, 0, 2), (0, 0, 1)));
}
