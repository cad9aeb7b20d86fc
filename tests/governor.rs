//! Integration tests of `ConcurrencyGovernor`, without Python: the seed's six tests, ported, then
//! the guarantees the seed lacked (no global slot held while waiting for a category), cancellation
//! at either level, bad input and a many-task stress run.

use ferrolimit::{ConcurrencyError, ConcurrencyGovernor, ConcurrencyPermit, GovernorStats, LimitError};
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

/// `(running, waiting)` of the stream, tool and global limiters.
fn layers(gov: &ConcurrencyGovernor) -> [(usize, usize); 3] {
    [gov.stream_limiter(), gov.tool_limiter(), gov.global_limiter()].map(|l| (l.running_count(), l.waiting_count()))
}

fn assert_idle(gov: &ConcurrencyGovernor) {
    let stats = gov.stats();
    assert_eq!(
        (stats.streams_available, stats.tools_available, stats.global_available),
        (stats.streams_max, stats.tools_max, stats.global_max)
    );
    assert_eq!(layers(gov), [(0, 0); 3]);
}

#[test]
fn bounds() {
    fn send_sync_unpin<T: Send + Sync + Unpin>() {}
    fn send<T: Send>(_: &T) {}
    send_sync_unpin::<ConcurrencyGovernor>();
    send_sync_unpin::<ConcurrencyPermit>();
    send_sync_unpin::<GovernorStats>();
    let gov = ConcurrencyGovernor::with_defaults();
    send(&gov.acquire_stream());
    send(&gov.acquire_tool());
}

// The seed's six tests, ported as they were.

#[tokio::test]
async fn test_governor_limits_concurrent_operations() {
    let gov = ConcurrencyGovernor::new(2, 2, 4);
    // Acquire two tool permits — should succeed
    let p1 = gov.acquire_tool().await.unwrap();
    let p2 = gov.acquire_tool().await.unwrap();
    // Third acquire should not succeed via try_acquire (at capacity)
    assert!(gov.try_acquire_tool().is_none());
    // Drop one and retry
    drop(p1);
    let p3 = gov.try_acquire_tool();
    assert!(p3.is_some());
    drop(p2);
    drop(p3);
}

#[tokio::test]
async fn test_permits_released_on_drop() {
    let gov = ConcurrencyGovernor::new(1, 1, 2);
    {
        let _permit = gov.acquire_tool().await.unwrap();
        assert_eq!(gov.stats().tools_available, 0);
        assert_eq!(gov.stats().global_available, 1);
    }
    // After drop, permits should be available again
    assert_eq!(gov.stats().tools_available, 1);
    assert_eq!(gov.stats().global_available, 2);
}

#[tokio::test]
async fn test_try_acquire_returns_none_at_capacity() {
    let gov = ConcurrencyGovernor::new(1, 1, 1);
    let _permit = gov.acquire_tool().await.unwrap();
    assert!(gov.try_acquire_tool().is_none());
}

#[tokio::test]
async fn test_stats_report_correct_values() {
    let gov = ConcurrencyGovernor::new(4, 8, 16);
    let stats = gov.stats();
    assert_eq!(stats.streams_available, 4);
    assert_eq!(stats.streams_max, 4);
    assert_eq!(stats.tools_available, 8);
    assert_eq!(stats.tools_max, 8);
    assert_eq!(stats.global_available, 16);
    assert_eq!(stats.global_max, 16);
    // Acquire one stream permit
    let _s = gov.acquire_stream().await.unwrap();
    let stats = gov.stats();
    assert_eq!(stats.streams_available, 3);
    assert_eq!(stats.global_available, 15);
    // Acquire one tool permit
    let _t = gov.acquire_tool().await.unwrap();
    let stats = gov.stats();
    assert_eq!(stats.tools_available, 7);
    assert_eq!(stats.global_available, 14);
}

#[tokio::test]
async fn test_global_limit_caps_total_operations() {
    // Global limit is 2, but stream and tool limits are higher
    let gov = ConcurrencyGovernor::new(4, 4, 2);
    let _p1 = gov.acquire_tool().await.unwrap();
    let _p2 = gov.acquire_stream().await.unwrap();
    // Global is now exhausted — try_acquire should fail
    assert!(gov.try_acquire_tool().is_none());
}

#[tokio::test]
async fn test_default_values() {
    let gov = ConcurrencyGovernor::with_defaults();
    let stats = gov.stats();
    assert_eq!(stats.streams_max, 4);
    assert_eq!(stats.tools_max, 8);
    assert_eq!(stats.global_max, 16);
}

// Beyond the seed.

/// The seed's flaw: its queued tool calls each sat on a global permit, so streams starved while
/// the global ceiling was not really in use. Here queued tool calls hold no global slot.
#[tokio::test]
async fn a_stream_starts_at_once_while_tools_are_saturated_with_a_long_queue() {
    let gov = ConcurrencyGovernor::new(4, 8, 16);
    let running: Vec<_> = (0..8).map(|_| gov.try_acquire_tool().unwrap()).collect();
    let mut queued: Vec<_> = (0..100).map(|_| Box::pin(gov.acquire_tool())).collect();
    for tool in &mut queued {
        assert!(poll_once(tool.as_mut()).is_pending());
    }
    assert_eq!(layers(&gov), [(0, 0), (8, 100), (8, 0)]);
    assert_eq!(gov.stats().global_available, 8);

    // All four streams start on their first poll, and a try succeeds too while slots remain.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = pin!(gov.acquire_stream());
        let Poll::Ready(Ok(permit)) = poll_once(stream.as_mut()) else {
            panic!("a stream waited behind queued tool calls")
        };
        streams.push(permit);
    }
    streams.push(
        gov.try_acquire_stream()
            .expect("a stream slot and a global slot are free"),
    );
    assert_eq!(layers(&gov), [(4, 0), (8, 100), (12, 0)]);

    drop((streams, running, queued));
    assert_idle(&gov);
}

/// With the global limit as the bottleneck: a tool caller waiting for a global slot holds its
/// tool slot, and a stream queues behind it at the global level (FIFO), but never behind a tool
/// caller that is still waiting for a tool slot.
#[test]
fn a_stream_queues_at_the_global_level_behind_earlier_callers_only() {
    let gov = ConcurrencyGovernor::new(2, 3, 2);
    let holders: Vec<_> = (0..2).map(|_| gov.try_acquire_tool().unwrap()).collect();
    let mut at_global = Box::pin(gov.acquire_tool()); // holds the third tool slot
    let mut at_tool = Box::pin(gov.acquire_tool()); // waits for a tool slot
    assert!(poll_once(at_global.as_mut()).is_pending());
    assert!(poll_once(at_tool.as_mut()).is_pending());
    let mut stream = Box::pin(gov.acquire_stream());
    assert!(poll_once(stream.as_mut()).is_pending());
    assert_eq!(layers(&gov), [(1, 0), (3, 1), (2, 2)]);

    let mut holders = holders.into_iter();
    drop(holders.next()); // the global slot goes to `at_global`, the tool slot to `at_tool`
    let Poll::Ready(Ok(tool)) = poll_once(at_global.as_mut()) else {
        panic!("FIFO at the global level")
    };
    assert!(poll_once(at_tool.as_mut()).is_pending()); // now waits at the global level, behind the stream
    drop(holders.next()); // the global slot goes to the stream
    let Poll::Ready(Ok(stream_permit)) = poll_once(stream.as_mut()) else {
        panic!("the stream was overtaken")
    };
    assert!(poll_once(at_tool.as_mut()).is_pending());
    drop((tool, stream_permit));
    let Poll::Ready(Ok(last)) = poll_once(at_tool.as_mut()) else {
        panic!("not served")
    };
    drop(last);
    assert_idle(&gov);
}

#[tokio::test]
async fn drop_releases_both_layers() {
    let gov = ConcurrencyGovernor::new(1, 1, 1);
    let permit = gov.acquire_stream().await.unwrap();
    assert_eq!(permit.limiter().name(), Some("stream"));
    assert_eq!(permit.limiter().parent().unwrap().name(), Some("global"));
    assert_eq!(layers(&gov), [(1, 0), (0, 0), (1, 0)]);
    assert!(gov.try_acquire_stream().is_none());
    assert!(gov.try_acquire_tool().is_none());
    drop(permit);
    assert_idle(&gov);
    let tool = gov.try_acquire_tool().unwrap();
    assert_eq!(layers(&gov), [(0, 0), (1, 0), (1, 0)]);
    drop(tool);
    assert_idle(&gov);
}

#[test]
fn cancelling_a_waiter_for_the_category_leaks_nothing() {
    let gov = ConcurrencyGovernor::new(1, 1, 4);
    let holder = gov.try_acquire_tool().unwrap();
    let mut waiter = Box::pin(gov.acquire_tool());
    assert!(poll_once(waiter.as_mut()).is_pending());
    assert_eq!(layers(&gov), [(0, 0), (1, 1), (1, 0)]);
    drop(waiter);
    assert_eq!(layers(&gov), [(0, 0), (1, 0), (1, 0)]);
    drop(holder);
    assert_idle(&gov);
}

/// Cancelled while waiting for the global slot: the tool slot goes back, and a global slot
/// handed over at that instant passes to the next waiter. Both orders.
#[test]
fn cancelling_a_waiter_for_the_global_slot_leaks_nothing() {
    for release_first in [false, true] {
        let gov = ConcurrencyGovernor::new(2, 2, 1);
        let stream = gov.try_acquire_stream().unwrap();
        let mut cancelled = Box::pin(gov.acquire_tool());
        let mut next = Box::pin(gov.acquire_stream());
        assert!(poll_once(cancelled.as_mut()).is_pending());
        assert!(poll_once(next.as_mut()).is_pending());
        assert_eq!(layers(&gov), [(2, 0), (1, 0), (1, 2)]);
        if release_first {
            drop(stream); // the global slot is handed to `cancelled`
            drop(cancelled);
        } else {
            drop(cancelled);
            drop(stream);
        }
        assert_eq!(layers(&gov), [(1, 0), (0, 0), (1, 0)], "release_first={release_first}");
        let Poll::Ready(Ok(permit)) = poll_once(next.as_mut()) else {
            panic!("the global slot was lost (release_first={release_first})")
        };
        drop(permit);
        assert_idle(&gov);
    }
}

#[test]
fn invalid_limits_are_clear_errors() {
    for (limits, err, message) in [
        (
            (0, 8, 16),
            LimitError::MaxStreamsTooSmall(0),
            "max_streams must be >= 1, got 0",
        ),
        (
            (4, 0, 16),
            LimitError::MaxToolsTooSmall(0),
            "max_tools must be >= 1, got 0",
        ),
        (
            (4, 8, 0),
            LimitError::MaxGlobalTooSmall(0),
            "max_global must be >= 1, got 0",
        ),
        (
            (4, 1 << 31, 16),
            LimitError::MaxToolsTooLarge(1 << 31),
            "max_tools must be <= 2147483647, got 2147483648",
        ),
    ] {
        let got = ConcurrencyGovernor::try_new(limits.0, limits.1, limits.2).unwrap_err();
        assert_eq!(got, err);
        assert_eq!(got.to_string(), message);
        assert!(got.is_below_minimum() == message.contains(">="));
    }
}

#[test]
#[should_panic(expected = "invalid ConcurrencyGovernor limits: max_global must be >= 1, got 0")]
fn new_panics_on_invalid_limits() {
    let _ = ConcurrencyGovernor::new(4, 8, 0);
}

/// Decision: a global limit below the categories' is accepted; it is then the effective limit
/// of each category, and the categories share it in FIFO order.
#[tokio::test]
async fn a_global_limit_below_the_categories_is_the_effective_limit() {
    let gov = ConcurrencyGovernor::try_new(4, 8, 3).unwrap();
    let tools: Vec<_> = (0..3).map(|_| gov.try_acquire_tool().unwrap()).collect();
    assert!(gov.try_acquire_tool().is_none());
    assert!(gov.try_acquire_stream().is_none());
    let stats = gov.stats();
    assert_eq!((stats.tools_available, stats.global_available), (5, 0));
    drop(tools);
    let mut permits = Vec::new();
    for _ in 0..3 {
        permits.push(gov.acquire_stream().await.unwrap());
    }
    assert!(gov.try_acquire_stream().is_none());
    drop(permits);
    assert_idle(&gov);
}

#[test]
fn concurrency_error_keeps_the_seed_message() {
    let err = ConcurrencyError::SemaphoreClosed;
    assert_eq!(err.to_string(), "concurrency semaphore was closed unexpectedly");
    let _: &dyn std::error::Error = &err;
}

#[test]
fn default_is_with_defaults() {
    let stats = ConcurrencyGovernor::default().stats();
    assert_eq!((stats.streams_max, stats.tools_max, stats.global_max), (4, 8, 16));
}

/// Streams and tools from many tasks, some giving up after a short time: never more than each
/// limit at any instant, and all counts return.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_keep_every_limit() {
    const STREAMS: usize = 3;
    const TOOLS: usize = 4;
    const GLOBAL: usize = 5;
    let gov = Arc::new(ConcurrencyGovernor::new(STREAMS, TOOLS, GLOBAL));
    let inside = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
    let violations = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3000usize {
        let (gov, inside, violations) = (Arc::clone(&gov), Arc::clone(&inside), Arc::clone(&violations));
        tasks.push(tokio::spawn(async move {
            let is_stream = i % 2 == 0;
            let acquire = async {
                if is_stream {
                    gov.acquire_stream().await
                } else {
                    gov.acquire_tool().await
                }
            };
            let permit = if i % 5 == 0 {
                match tokio::time::timeout(Duration::from_micros(50), acquire).await {
                    Ok(permit) => permit.unwrap(),
                    Err(_) => return,
                }
            } else {
                acquire.await.unwrap()
            };
            let category = usize::from(!is_stream);
            let mine = inside[category].fetch_add(1, Ordering::SeqCst) + 1;
            let all = inside[2].fetch_add(1, Ordering::SeqCst) + 1;
            let limit = if is_stream { STREAMS } else { TOOLS };
            if mine > limit || all > GLOBAL {
                violations.lock().unwrap().push((is_stream, mine, all));
            }
            tokio::task::yield_now().await;
            inside[category].fetch_sub(1, Ordering::SeqCst);
            inside[2].fetch_sub(1, Ordering::SeqCst);
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
    assert_idle(&gov);
}
