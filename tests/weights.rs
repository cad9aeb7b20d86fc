//! Weighted and prioritized acquires of the Rust API: head-of-line FIFO, exact slot counts,
//! priorities without barging, cancellation at the instant of handoff, and resizing.

use ferrolimit::{AcquireError, ConcurrencyLimiter, Permit};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The error a finished acquire was refused with, `None` if it is pending or got its slots.
fn refusal<T>(poll: Poll<Result<T, AcquireError>>) -> Option<AcquireError> {
    match poll {
        Poll::Ready(Err(err)) => Some(err),
        _ => None,
    }
}

fn poll<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn ready<F: Future<Output = Result<Permit, AcquireError>> + Unpin>(future: &mut F) -> Permit {
    match poll(future) {
        Poll::Ready(Ok(permit)) => permit,
        Poll::Ready(Err(err)) => panic!("refused: {err}"),
        Poll::Pending => panic!("still waiting"),
    }
}

fn counts(limiter: &ConcurrencyLimiter) -> (usize, usize, usize) {
    (
        limiter.running_count(),
        limiter.available_count(),
        limiter.waiting_count(),
    )
}

#[test]
fn weights_count_slots_and_waiters_count_callers() {
    let limiter = ConcurrencyLimiter::new(10).unwrap();
    let a = limiter.try_acquire_many(4).unwrap().unwrap();
    assert_eq!(a.weight(), 4);
    assert_eq!(counts(&limiter), (4, 6, 0));
    let mut b = limiter.acquire_many(7);
    assert!(poll(&mut b).is_pending());
    assert_eq!(counts(&limiter), (4, 6, 1));
    drop(a);
    let b = ready(&mut b);
    assert_eq!(counts(&limiter), (7, 3, 0));
    drop(b);
    assert_eq!(counts(&limiter), (0, 10, 0));
    assert_eq!(limiter.stats().acquired_total, 11, "totals count slots");
}

#[test]
fn a_heavy_head_is_never_overtaken_by_a_lighter_later_one() {
    let limiter = ConcurrencyLimiter::new(4).unwrap();
    let holder = limiter.try_acquire_many(3).unwrap().unwrap();
    let mut heavy = limiter.acquire_many(3);
    let mut light = limiter.acquire();
    assert!(poll(&mut heavy).is_pending());
    assert!(
        poll(&mut light).is_pending(),
        "one slot is free, but the head waits for it"
    );
    assert!(limiter.try_acquire().is_none(), "no barging past the head");
    assert_eq!(limiter.available_count(), 1);
    drop(holder);
    let heavy = ready(&mut heavy);
    let light = ready(&mut light);
    assert_eq!(counts(&limiter), (4, 0, 0));
    drop((heavy, light));
    assert_eq!(counts(&limiter), (0, 4, 0));
}

#[test]
fn cancelling_the_heavy_head_lets_the_next_waiters_in() {
    let limiter = ConcurrencyLimiter::new(3).unwrap();
    let holder = limiter.try_acquire_many(2).unwrap().unwrap();
    let mut heavy = limiter.acquire_many(3);
    let mut light = limiter.acquire();
    assert!(poll(&mut heavy).is_pending() && poll(&mut light).is_pending());
    drop(heavy);
    let light = ready(&mut light);
    assert_eq!(counts(&limiter), (3, 0, 0));
    drop((holder, light));
    assert_eq!(limiter.stats().cancelled_total, 1);
}

#[test]
fn a_weighted_waiter_dropped_at_the_handoff_passes_every_slot_on() {
    let limiter = ConcurrencyLimiter::new(3).unwrap();
    let holder = limiter.try_acquire_many(3).unwrap().unwrap();
    let mut abandoned = limiter.acquire_many(2);
    let mut next = limiter.acquire_many(3);
    assert!(poll(&mut abandoned).is_pending() && poll(&mut next).is_pending());
    drop(holder); // hands two slots to `abandoned`, one stays free for `next`
    assert_eq!(counts(&limiter), (2, 1, 1));
    drop(abandoned);
    let next = ready(&mut next);
    assert_eq!(counts(&limiter), (3, 0, 0));
    drop(next);
    assert_eq!(counts(&limiter), (0, 3, 0));
}

#[test]
fn invalid_weights_are_errors() {
    let limiter = ConcurrencyLimiter::builder(2).name("gpu").build().unwrap();
    assert_eq!(limiter.try_acquire_many(0).unwrap_err(), AcquireError::ZeroWeight);
    let too_large = AcquireError::WeightTooLarge {
        weight: 3,
        max_running: 2,
    };
    assert_eq!(limiter.try_acquire_many(3).unwrap_err(), too_large);
    assert_eq!(too_large.message("gpu"), "weight (3) exceeds max_running (2) for gpu");
    let mut zero = limiter.acquire_many(0);
    assert_eq!(refusal(poll(&mut zero)), Some(AcquireError::ZeroWeight));
    let mut big = limiter.acquire_many(3);
    assert_eq!(refusal(poll(&mut big)), Some(too_large));
    assert_eq!(counts(&limiter), (0, 2, 0));
}

#[test]
fn a_weight_above_an_ancestors_max_running_is_an_error_and_takes_nothing() {
    let parent = ConcurrencyLimiter::new(2).unwrap();
    let child = ConcurrencyLimiter::builder(5).parent(parent.clone()).build().unwrap();
    let too_large = AcquireError::WeightTooLarge {
        weight: 3,
        max_running: 2,
    };
    assert_eq!(child.try_acquire_many(3).unwrap_err(), too_large);
    let mut waiting = child.acquire_many(3);
    assert_eq!(refusal(poll(&mut waiting)), Some(too_large));
    drop(waiting);
    assert_eq!(counts(&child), (0, 5, 0));
    assert_eq!(counts(&parent), (0, 2, 0));
    let permit = child.try_acquire_many(2).unwrap().unwrap();
    assert_eq!((child.running_count(), parent.running_count()), (2, 2));
    drop(permit);
    assert_eq!(counts(&parent), (0, 2, 0));
}

#[test]
fn release_many_checks_the_held_slots() {
    let limiter = ConcurrencyLimiter::new(4).unwrap();
    limiter.try_acquire_many(3).unwrap().unwrap().forget();
    assert!(limiter.release_many(4).is_err(), "only three are held");
    assert_eq!(limiter.running_count(), 3);
    limiter.release_many(2).unwrap();
    limiter.release().unwrap();
    assert_eq!(counts(&limiter), (0, 4, 0));
}

#[test]
fn higher_priorities_are_served_first_fifo_within_one() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut waiters: Vec<_> = [0, 5, 0, 5, -1]
        .into_iter()
        .map(|priority| limiter.acquire().priority(priority))
        .collect();
    for waiter in &mut waiters {
        assert!(poll(waiter).is_pending());
    }
    let mut order = Vec::new();
    let mut held = Some(holder);
    while order.len() < waiters.len() {
        drop(held.take());
        let (index, permit) = waiters
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| !order.contains(i))
            .find_map(|(i, w)| match poll(w) {
                Poll::Ready(Ok(permit)) => Some((i, permit)),
                _ => None,
            })
            .expect("a release served nobody");
        order.push(index);
        held = Some(permit);
    }
    assert_eq!(order, [1, 3, 0, 2, 4]);
}

#[test]
fn a_newcomer_of_a_higher_priority_queues_but_is_served_next() {
    let limiter = ConcurrencyLimiter::new(2).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut heavy = limiter.acquire_many(2);
    assert!(poll(&mut heavy).is_pending());
    // One slot is free while the heavy head waits: a plain newcomer queues behind it...
    let mut plain = limiter.acquire();
    assert!(poll(&mut plain).is_pending());
    // ...and a newcomer that outranks the head is served at once, as the head of the queue.
    let mut urgent = limiter.acquire().priority(1);
    let urgent = ready(&mut urgent);
    assert_eq!(counts(&limiter), (2, 0, 2));
    drop((holder, urgent));
    let heavy = ready(&mut heavy);
    assert!(poll(&mut plain).is_pending());
    drop(heavy);
    drop(ready(&mut plain));
    assert_eq!(counts(&limiter), (0, 2, 0));
}

#[test]
fn a_full_queue_does_not_turn_away_a_newcomer_served_at_once() {
    let limiter = ConcurrencyLimiter::builder(2).max_queued(1).build().unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut heavy = limiter.acquire_many(2);
    assert!(poll(&mut heavy).is_pending());
    // The queue is full; a plain newcomer is rejected...
    let mut plain = limiter.acquire();
    assert!(matches!(
        refusal(poll(&mut plain)),
        Some(AcquireError::QueueFull { .. })
    ));
    // ...but one that outranks the head takes the free slot without queueing.
    let mut urgent = limiter.acquire().priority(1);
    let urgent = ready(&mut urgent);
    assert_eq!(counts(&limiter), (2, 0, 1));
    assert_eq!(limiter.stats().rejected_total, 1);
    drop((holder, urgent));
    drop(ready(&mut heavy));
    assert_eq!(counts(&limiter), (0, 2, 0));
}

#[test]
fn resizing_with_weights_serves_and_refuses_by_weight() {
    let limiter = ConcurrencyLimiter::new(4).unwrap();
    let holder = limiter.try_acquire_many(2).unwrap().unwrap();
    let mut four = limiter.acquire_many(4);
    assert!(poll(&mut four).is_pending());
    limiter.set_max_running(6).unwrap();
    let four = ready(&mut four);
    assert_eq!(counts(&limiter), (6, 0, 0));
    let mut three = limiter.acquire_many(3);
    assert!(poll(&mut three).is_pending());
    limiter.set_max_running(2).unwrap();
    assert_eq!(
        refusal(poll(&mut three)),
        Some(AcquireError::WeightTooLarge {
            weight: 3,
            max_running: 2
        }),
        "a waiter that can never fit any more is refused"
    );
    drop(four);
    assert_eq!(counts(&limiter), (2, 0, 0), "the shrink retired the released slots");
    drop(holder);
    assert_eq!(counts(&limiter), (0, 2, 0));
}

#[test]
fn a_weight_an_ancestor_can_never_serve_fails_instead_of_queueing_below() {
    let parent = ConcurrencyLimiter::new(2).unwrap();
    let child = ConcurrencyLimiter::builder(3).parent(parent.clone()).build().unwrap();
    let holder = child.try_acquire_many(2).unwrap().unwrap();
    let mut heavy_child = child.acquire_many(2);
    assert!(poll(&mut heavy_child).is_pending(), "2 fits both, not now");
    // Too heavy for the parent: refused at once, not queued at the child (where it would wait
    // behind the head and, at the head, hold up lighter waiters).
    let mut too_heavy = child.acquire_many(3);
    assert_eq!(
        refusal(poll(&mut too_heavy)),
        Some(AcquireError::WeightTooLarge {
            weight: 3,
            max_running: 2
        })
    );
    assert_eq!(child.waiting_count(), 1);
    drop((holder, heavy_child));
    assert_eq!((counts(&child), counts(&parent)), ((0, 3, 0), (0, 2, 0)));
}
