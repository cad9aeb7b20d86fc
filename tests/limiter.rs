//! Integration tests of the public Rust API of `ConcurrencyLimiter`, without Python.

use ferrolimit::{AcquireError, ConcurrencyLimiter, LimitError, LimiterStats, Permit};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn bounds() {
    fn send_sync_unpin<T: Send + Sync + Unpin>() {}
    send_sync_unpin::<ConcurrencyLimiter>();
    send_sync_unpin::<Permit>();
    send_sync_unpin::<ferrolimit::Acquire<'static>>();
}

#[test]
fn invalid_limits_are_errors_with_the_contract_messages() {
    let err = ConcurrencyLimiter::new(0).unwrap_err();
    assert_eq!(err, LimitError::MaxRunningTooSmall(0));
    assert_eq!(
        err.to_string(),
        "max_running must be >= 1, got 0. Use None for no concurrency limiting."
    );
    let err = ConcurrencyLimiter::new(1 << 31).unwrap_err();
    assert_eq!(err.to_string(), "max_running must be <= 2147483647, got 2147483648");
    assert!(ConcurrencyLimiter::new(1).unwrap().set_max_running(0).is_err());
}

#[test]
fn try_acquire_and_drop_release() {
    let limiter = ConcurrencyLimiter::builder(2).name("pool").build().unwrap();
    let a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    assert!(limiter.try_acquire().is_none());
    assert_eq!((limiter.running_count(), limiter.available_count()), (2, 0));
    drop(a);
    assert_eq!(limiter.available_count(), 1);
    drop(b);
    assert_eq!(limiter.name(), Some("pool"));
    assert_eq!(
        limiter.stats(),
        LimiterStats {
            running: 0,
            waiting: 0,
            available: 2,
            max_running: 2,
            max_queued: None,
            acquired_total: 2,
            rejected_total: 0,
            cancelled_total: 0,
        }
    );
}

#[test]
fn waiters_are_served_in_fifo_order() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut first = pin!(limiter.acquire_for("first"));
    let mut second = pin!(limiter.acquire_for("second"));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    assert_eq!(limiter.waiting_count(), 2);
    drop(holder);
    // The slot went to the first waiter: a newcomer and the second waiter both see nothing free.
    assert!(limiter.try_acquire().is_none());
    assert!(poll_once(second.as_mut()).is_pending());
    let Poll::Ready(Ok(permit)) = poll_once(first.as_mut()) else {
        panic!("first waiter not served")
    };
    drop(permit);
    let Poll::Ready(Ok(_permit)) = poll_once(second.as_mut()) else {
        panic!("second waiter not served")
    };
}

#[test]
fn dropping_a_waiter_handed_a_slot_passes_it_on() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let mut next = pin!(limiter.acquire());
    {
        let mut abandoned = Box::pin(limiter.acquire());
        assert!(poll_once(abandoned.as_mut()).is_pending());
        assert!(poll_once(next.as_mut()).is_pending());
        drop(holder); // handed to `abandoned`
        assert_eq!(limiter.running_count(), 1);
    } // `abandoned` dropped at the instant of handoff
    let Poll::Ready(Ok(permit)) = poll_once(next.as_mut()) else {
        panic!("slot lost")
    };
    drop(permit);
    assert_eq!(
        (
            limiter.running_count(),
            limiter.available_count(),
            limiter.waiting_count()
        ),
        (0, 1, 0)
    );
    assert_eq!(limiter.stats().cancelled_total, 1);
}

/// A waker whose last reference, when dropped, reads the limiter's stats (which lock its queue),
/// as a Python future's done-callback may.
struct ReenteringWaker {
    limiter: ConcurrencyLimiter,
    dropped: Arc<AtomicUsize>,
}

impl std::task::Wake for ReenteringWaker {
    fn wake(self: Arc<Self>) {}
}

impl Drop for ReenteringWaker {
    fn drop(&mut self) {
        let _ = self.limiter.stats();
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_waker_dropped_by_the_queue_may_call_back_into_the_limiter() {
    // Runs on its own thread so that a deadlock fails the test instead of hanging the run.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let limiter = ConcurrencyLimiter::new(1).unwrap();
        let holder = limiter.try_acquire().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let waker = |dropped: &Arc<AtomicUsize>| {
            Waker::from(Arc::new(ReenteringWaker {
                limiter: limiter.clone(),
                dropped: dropped.clone(),
            }))
        };
        let mut waiter = Box::pin(limiter.acquire());
        for _ in 0..2 {
            // The second poll replaces the queued waker: the first one is dropped.
            let poll = waiter.as_mut().poll(&mut Context::from_waker(&waker(&dropped)));
            assert!(poll.is_pending());
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(waiter); // cancelled while queued: the second waker is dropped
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        drop(holder);
        done.send(limiter.stats()).unwrap();
    });
    let stats = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("dropping a waker under the queue's lock deadlocked");
    assert_eq!((stats.running, stats.waiting, stats.cancelled_total), (0, 0, 1));
}

#[test]
fn max_queued_rejects_at_once_with_the_contract_message() {
    let limiter = ConcurrencyLimiter::builder(1).max_queued(1).build().unwrap();
    let _holder = limiter.try_acquire().unwrap();
    let mut queued = pin!(limiter.acquire());
    assert!(poll_once(queued.as_mut()).is_pending());
    let mut rejected = pin!(limiter.acquire_for("late"));
    let Poll::Ready(Err(err)) = poll_once(rejected.as_mut()) else {
        panic!("not rejected")
    };
    assert_eq!(
        err,
        AcquireError::QueueFull {
            depth: 2,
            max_queued: 1
        }
    );
    assert_eq!(
        err.message("pool"),
        "Concurrency queue depth (2) exceeds max_queued (1) for pool"
    );
    assert_eq!(limiter.stats().rejected_total, 1);
}

#[test]
fn resize_grows_at_once_and_shrinks_as_holders_leave() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let a = limiter.try_acquire().unwrap();
    let mut waiter = pin!(limiter.acquire());
    assert!(poll_once(waiter.as_mut()).is_pending());
    limiter.set_max_running(2).unwrap();
    let Poll::Ready(Ok(b)) = poll_once(waiter.as_mut()) else {
        panic!("growing did not wake the waiter")
    };
    assert_eq!((limiter.running_count(), limiter.available_count()), (2, 0));

    limiter.set_max_running(1).unwrap();
    assert_eq!(limiter.max_running(), 1);
    drop(a); // retired: still one holder, and that is the new limit
    assert_eq!((limiter.running_count(), limiter.available_count()), (1, 0));
    assert!(limiter.try_acquire().is_none());
    drop(b);
    assert_eq!((limiter.running_count(), limiter.available_count()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_never_exceed_the_limit_and_all_counts_return() {
    const MAX: usize = 5;
    let limiter = ConcurrencyLimiter::builder(MAX).name("stress").build().unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2000 {
        let (limiter, inside, peak) = (limiter.clone(), Arc::clone(&inside), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let _permit = limiter.acquire().await.unwrap();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            inside.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= MAX);
    let stats = limiter.stats();
    assert_eq!(
        (stats.running, stats.waiting, stats.available, stats.acquired_total),
        (0, 0, MAX, 2000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_and_cancellations_under_load_lose_no_slot() {
    let limiter = ConcurrencyLimiter::new(3).unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            // Every third waiter gives up after a short time; the rest hold their slot briefly.
            if i % 3 == 0 {
                if let Ok(Ok(_permit)) = tokio::time::timeout(Duration::from_micros(50), limiter.acquire()).await {
                    tokio::task::yield_now().await;
                }
            } else {
                let _permit = limiter.acquire().await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = limiter.stats();
    assert_eq!((stats.running, stats.waiting, stats.available), (0, 0, 3));
}

#[test]
fn many_threads_check_the_invariants() {
    const MAX: usize = 3;
    const THREADS: usize = 8;
    const ROUNDS: usize = 2000;
    let limiter = ConcurrencyLimiter::new(MAX).unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (limiter, inside, violations) = (limiter.clone(), Arc::clone(&inside), Arc::clone(&violations));
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    // Spin on the non-blocking path: this exercises the lock-free CAS paths.
                    let permit = loop {
                        if let Some(permit) = limiter.try_acquire() {
                            break permit;
                        }
                        std::hint::spin_loop();
                    };
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    if now > MAX {
                        violations.lock().unwrap().push(now);
                    }
                    let stats = limiter.stats();
                    if stats.running + stats.available != MAX || stats.running > MAX {
                        violations.lock().unwrap().push(stats.running);
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
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
        "invariant broken: {:?}",
        violations.lock().unwrap()
    );
    let stats = limiter.stats();
    assert_eq!((stats.running, stats.available), (0, MAX));
    assert_eq!(stats.acquired_total, (THREADS * ROUNDS) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_on_one_runtime_wakes_a_waiter_on_another() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let holder = limiter.try_acquire().unwrap();
    let other = {
        let limiter = limiter.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async move { limiter.acquire().await.map(drop) })
        })
    };
    while limiter.waiting_count() == 0 {
        tokio::task::yield_now().await;
    }
    drop(holder);
    other.join().unwrap().unwrap();
    assert_eq!(limiter.available_count(), 1);
}
