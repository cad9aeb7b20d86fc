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
    assert!(
        err.to_string().starts_with("Redis is unavailable: 127.0.0.1:9/0: "),
        "{err}"
    );

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
    let keyed = RedisConcurrencyLimiter::builder("redis://127.0.0.1", "", 1)
        .build_keyed()
        .err()
        .map(|e| e.to_string());
    assert_eq!(keyed.as_deref(), Some("key_prefix must not be empty"));
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

/// Spawns an acquire of `weight` at `priority` that records its name in `order` once admitted
/// and keeps the permit until the task is awaited.
fn spawn_waiter(
    limiter: &RedisConcurrencyLimiter,
    order: &Arc<parking_lot::Mutex<Vec<&'static str>>>,
    name: &'static str,
    weight: u32,
    priority: i32,
) -> tokio::task::JoinHandle<Result<ferrolimit::RedisPermit, RedisLimiterError>> {
    let (limiter, order) = (limiter.clone(), Arc::clone(order));
    tokio::spawn(async move {
        let permit = limiter.acquire_with(name, weight, priority).await?;
        order.lock().push(name);
        Ok(permit)
    })
}

#[tokio::test]
async fn weights_count_slots_and_a_heavy_head_is_not_overtaken() {
    let Some(url) = url() else { return };
    let limiter = RedisConcurrencyLimiter::builder(&url, fresh_key("weights"), 4)
        .build()
        .expect("limiter");
    let three = limiter.acquire_many("a", 3).await.expect("free slots");
    assert_eq!(three.weight(), 3);
    let counts = limiter.counts().await.expect("counts");
    assert_eq!((counts.running, counts.available, counts.max_running), (3, 1, 4));
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let heavy = spawn_waiter(&limiter, &order, "heavy", 2, 0);
    until_queued(&limiter, 1).await;
    // One slot is free, but the heavy head waits for two: the light newcomer queues behind it.
    let light = spawn_waiter(&limiter, &order, "light", 1, 0);
    until_queued(&limiter, 2).await;
    assert!(limiter.try_acquire(1).await.expect("try").is_none());
    drop(three);
    let (heavy, light) = (
        heavy.await.expect("task").expect("slots"),
        light.await.expect("task").expect("slot"),
    );
    assert_eq!(*order.lock(), ["heavy", "light"]);
    assert_eq!(limiter.counts().await.expect("counts").running, 3);
    drop((heavy, light));
    assert_eq!(
        limiter.acquire_many("z", 0).await.expect_err("zero"),
        RedisLimiterError::ZeroWeight
    );
    let err = limiter.acquire_many("big", 5).await.expect_err("too heavy");
    assert_eq!(
        err,
        RedisLimiterError::WeightTooLarge {
            weight: 5,
            max_running: 4
        }
    );
    assert_eq!(err.message("llm"), "weight (5) exceeds max_running (4) for llm");
    assert!(matches!(
        limiter.try_acquire(5).await,
        Err(RedisLimiterError::WeightTooLarge { .. })
    ));
}

#[tokio::test]
async fn priorities_order_the_fleet_wide_queue() {
    let Some(url) = url() else { return };
    let key = fresh_key("priorities");
    let build = || {
        RedisConcurrencyLimiter::builder(&url, &key, 1)
            .build()
            .expect("limiter")
    };
    let (one, other) = (build(), build());
    let held = one.acquire("holder").await.expect("free slot");
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (limiter, name, priority) in [
        (&one, "low", -1),
        (&other, "normal-1", 0),
        (&one, "high", 5),
        (&other, "normal-2", 0),
    ] {
        let (limiter, order) = (limiter.clone(), Arc::clone(&order));
        // Each gives its slot back as soon as it got it, to the next in line.
        waiters.push(tokio::spawn(async move {
            let permit = limiter.acquire_with(name, 1, priority).await.expect("slot");
            order.lock().push(name);
            permit.release().await.expect("release")
        }));
        until_queued(&one, waiters.len()).await;
    }
    drop(held);
    for waiter in waiters {
        assert!(waiter.await.expect("task"));
    }
    assert_eq!(*order.lock(), ["high", "normal-1", "normal-2", "low"]);
}

#[tokio::test]
async fn a_resize_is_fleet_wide_and_a_shrink_refuses_heavier_waiters() {
    let Some(url) = url() else { return };
    let key = fresh_key("resize");
    let build = || {
        RedisConcurrencyLimiter::builder(&url, &key, 2)
            .build()
            .expect("limiter")
    };
    let (one, other) = (build(), build());
    let held = one.acquire_many("holder", 2).await.expect("free slots");
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let heavy = spawn_waiter(&other, &order, "heavy", 2, 0);
    until_queued(&one, 1).await;
    one.set_max_running(1).await.expect("shrink");
    let err = heavy.await.expect("task").expect_err("refused");
    assert!(
        matches!(err, RedisLimiterError::WeightTooLarge { weight: 2, .. }),
        "{err:?}"
    );
    assert_eq!(other.counts().await.expect("counts").max_running, 1);
    assert_eq!(other.max_running(), 1);
    // Holders are never pre-empted; growing admits the queue at once.
    let waiter = spawn_waiter(&other, &order, "w", 1, 0);
    until_queued(&one, 1).await;
    one.set_max_running(3).await.expect("grow");
    let waiter = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("admitted by the resize")
        .expect("task")
        .expect("slot");
    assert_eq!(one.counts().await.expect("counts").running, 3);
    drop((held, waiter));
    assert!(matches!(
        one.set_max_running(0).await,
        Err(RedisLimiterError::Config(msg)) if msg.contains("max_running")
    ));
}

#[tokio::test]
async fn close_refuses_this_objects_callers_and_wait_idle_waits_for_its_holders() {
    let Some(url) = url() else { return };
    let key = fresh_key("close");
    let build = || {
        RedisConcurrencyLimiter::builder(&url, &key, 1)
            .build()
            .expect("limiter")
    };
    let (one, other) = (build(), build());
    one.wait_idle().await; // nothing held
    let held = one.acquire("holder").await.expect("free slot");
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mine = spawn_waiter(&one, &order, "mine", 1, 0);
    let theirs = spawn_waiter(&other, &order, "theirs", 1, 0);
    until_queued(&one, 2).await;
    one.close();
    one.close();
    assert!(one.is_closed() && !other.is_closed());
    assert_eq!(
        mine.await.expect("task").expect_err("closed"),
        RedisLimiterError::Closed
    );
    assert_eq!(
        one.acquire("late").await.expect_err("closed"),
        RedisLimiterError::Closed
    );
    assert!(one.try_acquire(1).await.expect("try").is_none());
    let idle = {
        let one = one.clone();
        tokio::spawn(async move { one.wait_idle().await })
    };
    tokio::task::yield_now().await;
    assert!(!idle.is_finished());
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), idle)
        .await
        .expect("idle once the holder released")
        .expect("task");
    let theirs = theirs.await.expect("task").expect("the other object still admits");
    assert_eq!(*order.lock(), ["theirs"]);
    drop(theirs);
}

#[tokio::test]
async fn every_key_expires_once_idle_and_the_next_acquire_is_not_held_up() {
    let Some(url) = url() else { return };
    let key = fresh_key("expiry");
    let lease = Duration::from_millis(100);
    let limiter = RedisConcurrencyLimiter::builder(&url, &key, 2)
        .lease(lease)
        .build()
        .expect("limiter");
    let held = limiter.acquire_many("a", 2).await.expect("free slots");
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire_with("b", 1, 3).await.map(drop) })
    };
    until_queued(&limiter, 1).await;
    drop(held);
    waiter.await.expect("task").expect("slot");
    limiter.set_max_running(3).await.expect("resize");
    let mut conn = raw(&url).await;
    let pattern = format!("{{{key}}}:*");
    let keys = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let pattern = pattern.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .expect("keys");
            keys
        }
    };
    assert!(!keys(&mut conn).await.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !keys(&mut conn).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys left: {:?}",
            keys(&mut conn).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A state that expired is not a lost one: no recovery window holds the next caller up (it
    // would wait a lease), and the next state takes this limiter's own (resized) limit.
    let again = tokio::time::timeout(lease / 2, limiter.acquire("again"))
        .await
        .expect("admitted at once")
        .expect("slot");
    assert_eq!(limiter.counts().await.expect("counts").max_running, 3);
    drop(again);
}

#[tokio::test]
async fn a_keyed_limiter_limits_each_key_and_keeps_no_state_for_unused_keys() {
    let Some(url) = url() else { return };
    let prefix = fresh_key("keyed");
    let keyed = RedisConcurrencyLimiter::builder(&url, &prefix, 2)
        .lease(Duration::from_millis(200))
        .build_keyed()
        .expect("keyed limiter");
    let a = keyed.acquire_with("alice", "chat", 2, 0).await.expect("free slots");
    assert!(keyed.try_acquire("alice", 1).await.expect("try").is_none());
    let b = keyed
        .acquire("bob", "chat")
        .await
        .expect("another key has its own limit");
    assert_eq!(keyed.counts("alice").await.expect("counts").running, 2);
    assert_eq!(keyed.counts("nobody").await.expect("counts").running, 0);
    assert_eq!(keyed.len(), 2);
    let waiter = {
        let keyed = keyed.clone();
        tokio::spawn(async move { keyed.acquire("alice", "w").await.map(drop) })
    };
    while keyed.counts("alice").await.expect("counts").waiting != 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(a);
    waiter.await.expect("task").expect("slot");
    assert!(b.release().await.expect("release"));
    // Many keys used one after another: the states go, here and (once idle) in Redis.
    for i in 0..200 {
        drop(keyed.acquire(&format!("user-{i}"), "once").await.expect("slot"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !keyed.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} keys still in use",
            keyed.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = raw(&url).await;
    let pattern = format!("{{{prefix}:*");
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .expect("keys");
        if keys.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} Redis keys left", keys.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keyed.close();
    assert_eq!(
        keyed.acquire("carol", "late").await.expect_err("closed"),
        RedisLimiterError::Closed
    );
    keyed.wait_idle().await;
}

#[tokio::test]
async fn tls_with_an_acl_user_and_the_errors_of_bad_credentials() {
    // The TLS server of `make test`: `rediss://app:s3cret@127.0.0.1:6391/0?ssl_ca_certs=...`.
    let Some(url) = std::env::var("FERROLIMIT_REDIS_TLS_URL").ok().filter(|u| !u.is_empty()) else {
        return;
    };
    let limiter = RedisConcurrencyLimiter::builder(&url, fresh_key("tls"), 1)
        .build()
        .expect("limiter");
    let held = limiter.acquire("a").await.expect("free slot");
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire("b").await.expect("slot").release().await })
    };
    until_queued(&limiter, 1).await;
    assert!(held.release().await.expect("release"));
    assert!(waiter.await.expect("task").expect("release"), "woken over TLS");

    let wrong = url.replacen("s3cret", "wrong", 1);
    let limiter = RedisConcurrencyLimiter::builder(&wrong, fresh_key("tls"), 1)
        .build()
        .expect("limiter");
    let err = limiter.acquire("a").await.expect_err("wrong password");
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().contains("(auth)") && !err.to_string().contains("wrong"),
        "{err}"
    );
}
