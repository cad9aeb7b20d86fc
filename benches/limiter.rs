//! Criterion benchmarks of the Rust core: [`ferrolimit::ConcurrencyLimiter`] against
//! [`tokio::sync::Semaphore`].
//!
//! * `uncontended try_acquire + drop`: take a free slot and give it back, no runtime involved.
//! * `uncontended acquire().await + drop`: the same through the async API, on a current-thread
//!   runtime (the future is ready on its first poll).
//! * `contended, 4 tasks / 2 slots / 2 workers`: four tasks on a two-worker multi-thread runtime
//!   each take a slot 250 times and yield once while holding it, so most acquisitions queue and
//!   every release hands the slot over; one iteration is 1000 acquisitions. Thread wake-ups and
//!   parking dominate it, and its times swing by 2x between runs on a small machine.
//! * `contended, 4 tasks / 2 slots / current thread`: the same tasks on a current-thread runtime:
//!   the queue and handoff cost without cross-thread wake-ups, and far steadier.
//!
//! tokio's permits borrow the semaphore while ferrolimit's [`Permit`](ferrolimit::Permit) holds a
//! clone of the limiter (an `Arc`), so the uncontended groups also show tokio's owned permits,
//! which clone an `Arc` the same way. Run with `cargo bench --no-default-features --bench limiter`
//! (`make bench`). The settings below keep the whole run to about half a minute; compare ratios
//! within one run rather than absolute times across runs.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use ferrolimit::ConcurrencyLimiter;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Semaphore;

/// Slots of the limiters in the uncontended groups.
const SLOTS: usize = 10;
/// Tasks in the contended groups.
const TASKS: usize = 4;
/// Slots of the limiters in the contended groups.
const CONTENDED_SLOTS: usize = 2;
/// Worker threads of the multi-thread runtime.
const WORKERS: usize = 2;
/// Acquisitions per task in one iteration of a contended group.
const PER_TASK: usize = 250;

fn current_thread() -> Runtime {
    Builder::new_current_thread().build().expect("building a tokio runtime")
}

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .expect("building a tokio runtime")
}

fn uncontended_try_acquire(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended try_acquire + drop");
    let limiter = ConcurrencyLimiter::new(SLOTS).expect("a valid limit");
    group.bench_function("ferrolimit", |b| b.iter(|| drop(black_box(limiter.try_acquire()))));
    let semaphore = Semaphore::new(SLOTS);
    group.bench_function("tokio Semaphore", |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire())));
    });
    let shared = Arc::new(Semaphore::new(SLOTS));
    group.bench_function("tokio Semaphore, owned permit", |b| {
        b.iter(|| drop(black_box(Arc::clone(&shared).try_acquire_owned())));
    });
    group.finish();
}

fn uncontended_acquire(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended acquire().await + drop");
    let runtime = current_thread();
    let limiter = ConcurrencyLimiter::new(SLOTS).expect("a valid limit");
    group.bench_function("ferrolimit", |b| {
        b.to_async(&runtime)
            .iter(|| async { drop(black_box(limiter.acquire().await)) });
    });
    let semaphore = Semaphore::new(SLOTS);
    group.bench_function("tokio Semaphore", |b| {
        b.to_async(&runtime)
            .iter(|| async { drop(black_box(semaphore.acquire().await)) });
    });
    let shared = Arc::new(Semaphore::new(SLOTS));
    group.bench_function("tokio Semaphore, owned permit", |b| {
        b.to_async(&runtime)
            .iter(|| async { drop(black_box(Arc::clone(&shared).acquire_owned().await)) });
    });
    group.finish();
}

async fn contended_ferrolimit(limiter: &ConcurrencyLimiter) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let permit = limiter.acquire().await.expect("the queue is unbounded");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a benchmark task panicked");
    }
}

async fn contended_tokio(semaphore: &Arc<Semaphore>) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let semaphore = Arc::clone(semaphore);
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let permit = semaphore.acquire().await.expect("the semaphore is never closed");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a benchmark task panicked");
    }
}

fn contended(c: &mut Criterion) {
    let group = c.benchmark_group("contended, 4 tasks / 2 slots / 2 workers (1000 acquisitions)");
    contended_on(group, &multi_thread());
    let group = c.benchmark_group("contended, 4 tasks / 2 slots / current thread (1000 acquisitions)");
    contended_on(group, &current_thread());
}

fn contended_on(mut group: BenchmarkGroup<'_, WallTime>, runtime: &Runtime) {
    let limiter = ConcurrencyLimiter::new(CONTENDED_SLOTS).expect("a valid limit");
    group.bench_function("ferrolimit", |b| {
        b.to_async(runtime).iter(|| contended_ferrolimit(&limiter));
    });
    assert_eq!(limiter.available_count(), CONTENDED_SLOTS, "every slot came back");
    let semaphore = Arc::new(Semaphore::new(CONTENDED_SLOTS));
    group.bench_function("tokio Semaphore", |b| {
        b.to_async(runtime).iter(|| contended_tokio(&semaphore));
    });
    assert_eq!(semaphore.available_permits(), CONTENDED_SLOTS, "every permit came back");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = uncontended_try_acquire, uncontended_acquire, contended
}
criterion_main!(benches);
