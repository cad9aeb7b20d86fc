//! `RedisConcurrencyLimiter` against a real Redis server at `FERROLIMIT_REDIS_URL` (`make test`
//! starts one); without that variable the tests return at once.

use ferrolimit::{RedisConcurrencyLimiter, RedisConnections, RedisLimiterError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn url() -> Option<String> {
    std::env::var("FERROLIMIT_REDIS_URL").ok().filter(|u| !u.is_empty())
}

/// A key no other test (or earlier run) uses.
fn fresh_key(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "ferrolimit-test:{test}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable")
}

/// Waits until `key`'s queue holds `n` waiters (an event to wait for, not a timing assertion).
async fn until_queued(limiter: &RedisConcurrencyLimiter, n: usize) {
    while limiter.counts().await.expect("counts").waiting != n {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn admits_up_to_max_running_then_serves_waiters_in_order() {
    let Some(url) = url() else { return };
    let limiter = RedisConcurrencyLimiter::builder(&url, fresh_key("fifo"), 2)
        .build()
        .expect("limiter");
    let first = limiter.acquire("a").await.expect("free slot");
    let second = limiter.acquire("b").await.expect("free slot");
    assert_eq!(limiter.counts().await.expect("counts").running, 2);

    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (waiter, order) = (limiter.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let permit = waiter.acquire("waiter").await.expect("slot");
            order.lock().push(i);
            permit.release().await.expect("release")
        }));
        until_queued(&limiter, i + 1).await;
    }
    assert!(first.release().await.expect("release"));
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3]);
    drop(second);
}

#[tokio::test]
async fn the_first_limiter_stores_the_fleet_limit_and_the_others_follow_it() {
    let Some(url) = url() else { return };
    let key = fresh_key("max-running");
    let build = |max| {
        RedisConcurrencyLimiter::builder(&url, key.clone(), max)
            .build()
            .expect("limiter")
    };
    let (small, large) = (build(2), build(3));
    let _a = small.acquire("a").await.expect("free slot");
    assert_eq!(small.other_max_running(), None);
    let _b = large.acquire("b").await.expect("free slot");
    // `large` follows the stored limit of 2: the fleet is full.
    assert_eq!((large.other_max_running(), large.max_running()), (Some(2), 2));
    assert!(large.try_acquire(1).await.expect("try").is_none());
    assert_eq!(large.counts().await.expect("counts").max_running, 2);
    // A resize is adopted by everyone, without a report.
    large.set_max_running(3).await.expect("resize");
    let _c = small.acquire("c").await.expect("a slot of the larger limit");
    assert_eq!((small.other_max_running(), small.max_running()), (None, 3));
    assert_eq!(large.other_max_running(), None);
}

#[tokio::test]
async fn limiters_can_share_connections() {
    let Some(url) = url() else { return };
    let connections = RedisConnections::new(&url).expect("connections");
    let build = |key: &str| {
        RedisConcurrencyLimiter::builder(&url, fresh_key(key), 1)
            .connections(connections.clone())
            .build()
            .expect("limiter")
    };
    let (a, b) = (build("shared-a"), build("shared-b"));
    let held = (a.acquire("a").await.expect("slot"), b.acquire("b").await.expect("slot"));
    // A waiter on each key is woken by the one subscription, routed by key: within a second,
    // where its own heartbeat poll would come only after 10 s (a third of the default lease).
    let waiters = [a.clone(), b.clone()].map(|limiter| tokio::spawn(async move { limiter.acquire("w").await }));
    until_queued(&a, 1).await;
    until_queued(&b, 1).await;
    drop(held);
    for waiter in waiters {
        let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the subscription")
            .expect("task")
            .expect("slot");
        assert!(permit.release().await.expect("release"));
    }

    let other = RedisConcurrencyLimiter::builder("redis://127.0.0.1:1/0", fresh_key("shared-c"), 1)
        .connections(connections)
        .build();
    assert!(matches!(other, Err(RedisLimiterError::Config(msg)) if msg.contains("the connections are to")));
}

#[tokio::test]
async fn max_queued_rejects_with_the_local_limiters_message() {
    let Some(url) = url() else { return };
    let limiter = RedisConcurrencyLimiter::builder(&url, fresh_key("maxq"), 1)
        .max_queued(1)
        .build()
        .expect("limiter");
    let held = limiter.acquire("a").await.expect("free slot");
    let queued = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire("b").await.map(|p| p.token().map(str::to_owned)) })
    };
    until_queued(&limiter, 1).await;
    let err = limiter.acquire("c").await.expect_err("queue is full");
    assert_eq!(
        err,
        RedisLimiterError::QueueFull {
            depth: 2,
            max_queued: 1
        }
    );
    assert_eq!(
        err.message("llm"),
        "Concurrency queue depth (2) exceeds max_queued (1) for llm"
    );
    drop(held);
    assert!(queued.await.expect("task").expect("admitted").is_some());
}

#[tokio::test]
async fn a_dropped_waiter_leaves_the_queue() {
    let Some(url) = url() else { return };
    let limiter = RedisConcurrencyLimiter::builder(&url, fresh_key("cancel"), 1)
        .build()
        .expect("limiter");
    let held = limiter.acquire("a").await.expect("free slot");
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire("b").await.map(drop) })
    };
    until_queued(&limiter, 1).await;
    waiter.abort();
    assert!(waiter.await.is_err());
    until_queued(&limiter, 0).await;
    assert!(held.release().await.expect("release"));
    let counts = limiter.counts().await.expect("counts");
    assert_eq!((counts.running, counts.waiting), (0, 0));
}

#[tokio::test]
async fn a_release_after_the_lease_ran_out_cannot_free_the_successors_slot() {
    let Some(url) = url() else { return };
    let key = fresh_key("fencing");
    let limiter = RedisConcurrencyLimiter::builder(&url, &key, 1)
        .build()
        .expect("limiter");
    let stale = limiter.acquire("paused").await.expect("free slot");
    // The holder "pauses" past its lease: its lease expires on the server.
    let token = stale.token().expect("leased").to_owned();
    let mut conn = raw(&url).await;
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{{{key}}}:holders"))
        .arg("XX")
        .arg(0)
        .arg(&token)
        .query_async(&mut conn)
        .await
        .expect("zadd");
    let successor = limiter
        .acquire("successor")
        .await
        .expect("the expired slot is reclaimed");
    assert!(
        !stale.release().await.expect("release"),
        "the stale release frees nothing"
    );
    assert_eq!(limiter.counts().await.expect("counts").running, 1);
    assert!(successor.release().await.expect("release"));
    assert_eq!(limiter.counts().await.expect("counts").running, 0);
}

#[tokio::test]
async fn a_wrong_key_type_is_a_clear_error() {
    let Some(url) = url() else { return };
    let key = fresh_key("wrongtype");
    let mut conn = raw(&url).await;
    let () = redis::cmd("SET")
        .arg(format!("{{{key}}}:holders"))
        .arg("not a zset")
        .query_async(&mut conn)
        .await
        .expect("set");
    let limiter = RedisConcurrencyLimiter::builder(&url, &key, 1)
        .fail_open(true)
        .build()
        .expect("limiter");
    let err = limiter.acquire("a").await.expect_err("wrong type");
    let RedisLimiterError::WrongType(message) = &err else {
        panic!("expected WrongType, got {err:?}")
    };
    assert!(message.contains(&format!("{{{key}}}:holders")), "{message}");
    assert!(message.contains("holds a string, expected a zset"), "{message}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_or_open() {
    // Port 9 (discard) on loopback: nothing listens there.
    let url = "redis://127.0.0.1:9";
    let limiter = RedisConcurrencyLimiter::builder(url, fresh_key("down"), 1)
        .build()
        .expect("limiter");
    let err = limiter.acquire("a").await.expect_err("unreachable");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().starts_with("Redis is unavailable: "), "{err}");

    let open = RedisConcurrencyLimiter::builder(url, fresh_key("down"), 1)
        .fail_open(true)
        .build()
        .expect("limiter");
    let permit = open.acquire("a").await.expect("fails open");
    assert!(permit.fail_open_error().is_some_and(RedisLimiterError::is_unavailable));
    assert!(permit.token().is_none());
    assert!(permit.release().await.expect("nothing to release"));
}

#[tokio::test]
async fn bad_arguments_are_rejected_when_building() {
    let build = |url: &str, key: &str, max_running: usize| {
        RedisConcurrencyLimiter::builder(url, key, max_running)
            .build()
            .expect_err("invalid")
            .to_string()
    };
    assert!(build("http://nope", "k", 1).starts_with("invalid Redis URL \"http://nope\""));
    assert_eq!(build("redis://127.0.0.1", "", 1), "key must not be empty");
    assert_eq!(
        build("redis://127.0.0.1", "k", 0),
        "max_running must be >= 1, got 0. Use None for no concurrency limiting."
    );
    let short = RedisConcurrencyLimiter::builder("redis://127.0.0.1", "k", 1)
        .lease(Duration::from_millis(1))
        .build()
        .expect_err("short lease");
    assert_eq!(short.to_string(), "lease must be at least 30 ms, got 1ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_never_exceed_max_running() {
    let Some(url) = url() else { return };
    let key = fresh_key("stress");
    // Two instances on one key stand for two processes.
    let limiters = [
        RedisConcurrencyLimiter::builder(&url, &key, 3)
            .build()
            .expect("limiter"),
        RedisConcurrencyLimiter::builder(&url, &key, 3)
            .build()
            .expect("limiter"),
    ];
    let gauge = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let limiter = limiters[i % 2].clone();
        let (gauge, peak) = (Arc::clone(&gauge), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire("stress").await.expect("slot");
            let now = gauge.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            gauge.fetch_sub(1, Ordering::SeqCst);
            permit.release().await.expect("release")
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    let counts = limiters[0].counts().await.expect("counts");
    assert_eq!((counts.running, counts.waiting), (0, 0));
}

#[test]
fn bounds() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    fn permit_is_send_sync(permit: &ferrolimit::RedisPermit) {
        send_sync(permit);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limiter = RedisConcurrencyLimiter::builder("redis://127.0.0.1:9", "bounds", 1)
        .runtime(runtime.handle().clone())
        .build()
        .expect("limiter");
    send_sync(&limiter);
    send(&limiter.acquire("bounds"));
    let _ = permit_is_send_sync;
}
