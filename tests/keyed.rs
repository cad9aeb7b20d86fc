//! `KeyedConcurrencyLimiter`: one independent limit per key, a parent over all keys, and a key's
//! state alive only while it is in use.

use ferrolimit::{AcquireError, ConcurrencyLimiter, KeyedConcurrencyLimiter};
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

fn poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn each_key_has_its_own_limit() {
    let keyed = KeyedConcurrencyLimiter::<String>::new(2).unwrap();
    let a1 = keyed.try_acquire("alice").unwrap();
    let a2 = keyed.try_acquire("alice").unwrap();
    assert!(keyed.try_acquire("alice").is_none(), "alice has 2 slots");
    let b1 = keyed.try_acquire("bob").expect("bob has slots of his own");
    assert_eq!((keyed.running_count("alice"), keyed.running_count("bob")), (2, 1));
    assert_eq!(keyed.len(), 2);
    drop((a1, a2, b1));
    assert_eq!(keyed.len(), 0);
    assert_eq!(keyed.running_count("alice"), 0);
}

#[test]
fn waiters_of_a_key_are_served_in_order_and_unknown_keys_read_as_unused() {
    let keyed = KeyedConcurrencyLimiter::<String>::new(1).unwrap();
    let holder = keyed.try_acquire("k").unwrap();
    let mut first = pin!(keyed.acquire("k".to_owned()));
    let mut second = pin!(keyed.acquire_with("k".to_owned(), 1, 0));
    assert!(poll(first.as_mut()).is_pending());
    assert!(poll(second.as_mut()).is_pending());
    assert_eq!(keyed.waiting_count("k"), 2);
    let stats = keyed.stats("nobody");
    assert_eq!((stats.running, stats.available, stats.max_running), (0, 1, 1));
    assert_eq!(keyed.len(), 1, "reading an unknown key creates no state");
    drop(holder);
    let Poll::Ready(Ok(permit)) = poll(first.as_mut()) else {
        panic!("the first waiter is served first")
    };
    assert!(poll(second.as_mut()).is_pending());
    drop(permit);
    assert!(matches!(poll(second.as_mut()), Poll::Ready(Ok(_))));
    assert_eq!(keyed.len(), 0);
}

#[test]
fn a_parent_caps_all_keys_together() {
    let all = ConcurrencyLimiter::new(3).unwrap();
    let keyed = KeyedConcurrencyLimiter::<String>::builder(2)
        .parent(all.clone())
        .name("per-user")
        .build()
        .unwrap();
    let permits: Vec<_> = ["a", "a", "b"].iter().map(|k| keyed.try_acquire(*k).unwrap()).collect();
    assert_eq!(all.running_count(), 3);
    assert!(keyed.try_acquire("c").is_none(), "the parent is full");
    assert_eq!(keyed.name(), Some("per-user"));
    drop(permits);
    assert_eq!((all.running_count(), keyed.len()), (0, 0));
}

#[test]
fn a_million_keys_used_one_after_another_leave_nothing_behind() {
    let keyed = KeyedConcurrencyLimiter::<String>::new(1).unwrap();
    for i in 0..1_000_000 {
        let key = i.to_string();
        drop(keyed.try_acquire(key.as_str()).unwrap());
        // A dropped, never-polled future keeps no state either once swept.
        drop(keyed.acquire(key));
    }
    assert_eq!(keyed.len(), 0);
}

#[test]
fn weights_resize_and_close_apply_to_every_key() {
    let keyed = KeyedConcurrencyLimiter::<String>::new(3).unwrap();
    let heavy = keyed.try_acquire_many("a", 3).unwrap().unwrap();
    assert_eq!(
        keyed.try_acquire_many("a", 4).unwrap_err(),
        AcquireError::WeightTooLarge {
            weight: 4,
            max_running: 3
        }
    );
    keyed.set_max_running(4).unwrap();
    assert_eq!(keyed.max_running(), 4);
    assert_eq!(keyed.stats("a").available, 1);
    assert_eq!(keyed.stats("new").max_running, 4);
    let mut waiting = pin!(keyed.acquire("a".to_owned()));
    assert!(matches!(poll(waiting.as_mut()), Poll::Ready(Ok(_))));
    let mut queued = pin!(keyed.acquire_with("a".to_owned(), 2, 5));
    assert!(poll(queued.as_mut()).is_pending());
    keyed.close();
    assert!(keyed.is_closed());
    assert_eq!(
        poll(queued.as_mut()).map(|r| r.unwrap_err()),
        Poll::Ready(AcquireError::Closed)
    );
    assert!(
        keyed.try_acquire("b").is_none(),
        "a closed keyed limiter admits no new key"
    );
    let mut late = pin!(keyed.acquire("c".to_owned()));
    assert_eq!(
        poll(late.as_mut()).map(|r| r.unwrap_err()),
        Poll::Ready(AcquireError::Closed)
    );
    drop(heavy);
    assert_eq!(keyed.running_count("a"), 0);
}

#[test]
fn an_unused_state_serving_a_new_key_is_as_new() {
    // A creation takes over an unused state it finds (here "old"'s, then "new"'s): the new key
    // must see the current limit, no totals and the closed flag, as a state made anew would.
    let keyed = KeyedConcurrencyLimiter::<String>::builder(2)
        .max_queued(1)
        .build()
        .unwrap();
    drop(keyed.try_acquire("old").unwrap());
    assert_eq!(keyed.stats("old").acquired_total, 1, "the unused state is still there");
    keyed.set_max_running(3).unwrap();
    let new = keyed.try_acquire_many("new", 3).unwrap().expect("3 free slots");
    let stats = keyed.stats("new");
    assert_eq!(
        (stats.running, stats.available, stats.max_running, stats.max_queued),
        (3, 0, 3, Some(1))
    );
    assert_eq!(
        (stats.acquired_total, stats.rejected_total),
        (3, 0),
        "the new key's slots only"
    );
    assert_eq!(keyed.stats("old").acquired_total, 0, "old's state is gone");
    drop(new);
    keyed.close();
    assert!(matches!(keyed.try_acquire_many("newest", 1), Ok(None)), "made closed");
    assert_eq!(keyed.len(), 0);
}
