//! Closing a limiter and waiting for it to be idle, through the Rust API.

use ferrolimit::{AcquireError, ConcurrencyLimiter};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The error a finished acquire was refused with, `None` if it is pending or got its slots.
fn refusal<T>(poll: Poll<Result<T, AcquireError>>) -> Option<AcquireError> {
    match poll {
        Poll::Ready(Err(err)) => Some(err),
        _ => None,
    }
}

fn poll<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn close_refuses_waiters_and_newcomers_but_holders_release() {
    let limiter = ConcurrencyLimiter::builder(1).name("pool").build().unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut waiter = pin!(limiter.acquire());
    assert!(poll(waiter.as_mut()).is_pending());
    assert!(!limiter.is_closed());
    limiter.close();
    limiter.close(); // idempotent
    assert!(limiter.is_closed());
    assert_eq!(refusal(poll(waiter.as_mut())), Some(AcquireError::Closed));
    assert_eq!(
        AcquireError::Closed.message("pool"),
        "concurrency limiter closed for pool"
    );
    let mut newcomer = pin!(limiter.acquire());
    assert_eq!(refusal(poll(newcomer.as_mut())), Some(AcquireError::Closed));
    assert!(limiter.try_acquire_many(1).unwrap().is_none());
    assert_eq!(limiter.waiting_count(), 0);
    drop(holder);
    assert_eq!((limiter.running_count(), limiter.available_count()), (0, 1));
    assert!(limiter.try_acquire().is_none(), "still closed");
}

#[test]
fn wait_idle_returns_at_once_when_idle_and_after_the_last_release() {
    let limiter = ConcurrencyLimiter::new(2).unwrap();
    assert_eq!(poll(pin!(limiter.wait_idle())), Poll::Ready(()));
    let a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    let mut idle = pin!(limiter.wait_idle());
    assert!(poll(idle.as_mut()).is_pending());
    assert_eq!(limiter.waiting_count(), 0, "an idle wait is not a waiter");
    drop(a);
    assert!(poll(idle.as_mut()).is_pending());
    drop(b);
    assert_eq!(poll(idle.as_mut()), Poll::Ready(()));
}

#[test]
fn a_handoff_does_not_make_the_limiter_idle() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut waiter = pin!(limiter.acquire());
    assert!(poll(waiter.as_mut()).is_pending());
    let mut idle = pin!(limiter.wait_idle());
    assert!(poll(idle.as_mut()).is_pending());
    drop(holder); // straight to the waiter
    assert!(poll(idle.as_mut()).is_pending());
    let Poll::Ready(Ok(permit)) = poll(waiter.as_mut()) else {
        panic!("the waiter was handed the slot")
    };
    drop(permit);
    assert_eq!(poll(idle.as_mut()), Poll::Ready(()));
}

#[test]
fn a_dropped_idle_wait_leaves_the_fast_path_uncontended() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    {
        let mut idle = pin!(limiter.wait_idle());
        assert!(poll(idle.as_mut()).is_pending());
    }
    drop(holder);
    assert!(limiter.try_acquire().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_across_tasks() {
    let limiter = ConcurrencyLimiter::new(3).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            match limiter.acquire().await {
                Ok(permit) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    drop(permit);
                    true
                }
                Err(err) => {
                    assert_eq!(err, AcquireError::Closed);
                    false
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(12)).await;
    limiter.close();
    tokio::time::timeout(Duration::from_secs(10), limiter.wait_idle())
        .await
        .expect("wait_idle hung");
    let mut served = 0;
    for task in tasks {
        served += usize::from(task.await.unwrap());
    }
    assert!((3..20).contains(&served), "served {served}");
    assert_eq!((limiter.running_count(), limiter.waiting_count()), (0, 0));
}

#[test]
fn a_caller_waiting_at_the_parent_of_a_closed_child_is_never_admitted() {
    let parent = ConcurrencyLimiter::new(1).unwrap();
    let child = ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap();
    let holder = parent.try_acquire().unwrap();
    let mut climber = pin!(child.acquire());
    assert!(poll(climber.as_mut()).is_pending());
    assert_eq!((child.running_count(), parent.waiting_count()), (1, 1));
    child.close();
    drop(holder);
    assert_eq!(refusal(poll(climber.as_mut())), Some(AcquireError::Closed));
    assert_eq!(
        (child.running_count(), parent.running_count(), parent.waiting_count()),
        (0, 0, 0)
    );
}
