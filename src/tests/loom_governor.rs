//! loom models of the two-level acquire (a limiter with a parent, as in the governor): never more
//! parent holders than its limit, and nothing lost when an acquire is dropped half-way.

use crate::{ConcurrencyLimiter, Permit};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// A parent of one slot under a child of two: two threads each take a slot of both (the child's
/// fast path, then the parent's fast path or queue), hold it and drop it. Never two holders of
/// the parent's slot, and everything is free at the end.
#[test]
fn loom_two_level_no_over_admission() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(1).unwrap();
        let child = ConcurrencyLimiter::builder(2).parent(parent.clone()).build().unwrap();
        let inside = crate::sync::Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let child = child.clone();
                let inside = crate::sync::Arc::clone(&inside);
                thread::spawn(move || {
                    let permit = acquire_spinning(&child);
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two parent holders at once");
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!((child.running_count(), child.available_count()), (0, 2));
        assert_eq!((parent.running_count(), parent.available_count()), (0, 1));
    });
}

/// A caller holds the child's slot and waits for the parent's; its acquire is dropped while
/// the parent's holder releases. Whichever comes first (a queued or a handed-over parent slot),
/// both slots end up free and nobody is left queued.
#[test]
fn loom_drop_while_waiting_for_the_parent_loses_nothing() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(1).unwrap();
        let child = ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap();
        let holder = parent.try_acquire().unwrap();
        let releaser = thread::spawn(move || drop(holder));
        {
            let mut acquire = pin!(child.acquire());
            // Pending (queued at the parent) or ready (the release came first): dropped either way.
            let polled = acquire.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            drop(polled);
        }
        releaser.join().unwrap();
        assert_eq!(
            (child.running_count(), child.available_count()),
            (0, 1),
            "child slot lost"
        );
        assert_eq!(
            (parent.running_count(), parent.available_count()),
            (0, 1),
            "parent slot lost"
        );
        assert_eq!(parent.waiting_count(), 0);
    });
}

/// Two children of a one-slot parent try at once: exactly one gets both slots, and the child
/// slot the other took is given back.
#[test]
fn loom_try_acquire_of_siblings_gives_back_the_child_slot() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(1).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap())
            .collect();
        let handles: Vec<_> = children
            .iter()
            .map(|child| {
                let child = child.clone();
                thread::spawn(move || child.try_acquire())
            })
            .collect();
        let permits: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(permits.iter().filter(|p| p.is_some()).count(), 1);
        let running: Vec<_> = children.iter().map(ConcurrencyLimiter::running_count).collect();
        assert_eq!(running.iter().sum::<usize>(), 1, "a child slot was kept: {running:?}");
        assert_eq!(parent.running_count(), 1);
        drop(permits);
        assert_eq!(parent.available_count(), 1);
    });
}

/// Takes a slot of `limiter` and its parent, polling the acquire until it is ready.
fn acquire_spinning(limiter: &ConcurrencyLimiter) -> Permit {
    let mut acquire = pin!(limiter.acquire());
    loop {
        if let Poll::Ready(permit) = acquire.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return permit.unwrap();
        }
        thread::yield_now();
    }
}

/// The raw (permit-less) path the Python layer uses: one caller holds a slot of child and parent
/// (`try_acquire` and `Permit::forget`), and two releases race for it (`release`), one of them a release too
/// many. Exactly one succeeds, and every count at both levels is back to free: the failing one
/// changed nothing, at either level.
#[test]
fn loom_raw_release_too_many_changes_nothing() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(2).unwrap();
        let child = ConcurrencyLimiter::builder(2).parent(parent.clone()).build().unwrap();
        child.try_acquire().expect("both levels are free").forget();
        let releasers: Vec<_> = (0..2)
            .map(|_| {
                let child = child.clone();
                thread::spawn(move || child.release().is_ok())
            })
            .collect();
        let succeeded: Vec<bool> = releasers.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            succeeded.iter().filter(|ok| **ok).count(),
            1,
            "one release for one holder"
        );
        assert_eq!((child.running_count(), child.available_count()), (0, 2));
        assert_eq!((parent.running_count(), parent.available_count()), (0, 2));
    });
}
