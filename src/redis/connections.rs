//! [`RedisConnections`]: the connections to one Redis server that limiters share, whatever the
//! number of keys: one command connection (multiplexed) and one wake-up subscription.
//!
//! The subscription task routes each wake-up message to the limiters listening on its channel,
//! and reconnects with a growing delay while Redis is away. While it is down, every limiter's
//! waiters poll (see `limiter.rs`); once it is back, every channel is subscribed again and every
//! waiter checks once, since anything published meanwhile was missed.

use super::error::RedisLimiterError;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// How long connecting to Redis may take before the attempt counts as a failure.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscription's connection is checked with a ping.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Connections to one Redis server, for any number of [`RedisConcurrencyLimiter`]s: one
/// multiplexed command connection and one wake-up subscription, however many keys and limiters
/// use them. Cloning shares them.
///
/// A limiter built without [`RedisBuilder::connections`] opens its own pair. The Python API
/// shares one `RedisConnections` per server URL in each process.
///
/// Their background work (the subscription, reconnections) runs on the tokio runtime they were
/// created on, which must outlive the limiters that use them.
///
/// [`RedisConcurrencyLimiter`]: super::RedisConcurrencyLimiter
/// [`RedisBuilder::connections`]: super::RedisBuilder::connections
///
/// # Examples
///
/// ```no_run
/// use ferrolimit::{RedisConcurrencyLimiter, RedisConnections};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let connections = RedisConnections::new("redis://127.0.0.1:6379")?;
/// let openai = RedisConcurrencyLimiter::builder("redis://127.0.0.1:6379", "llm:openai", 8)
///     .connections(connections.clone())
///     .build()?;
/// let anthropic = RedisConcurrencyLimiter::builder("redis://127.0.0.1:6379", "llm:anthropic", 4)
///     .connections(connections)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisConnections {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    /// `host:port/db` (or the socket's path and db), without credentials.
    server: String,
    conn: ConnectionManager,
    /// For a connection of its own, to tell why the server drops the shared one.
    client: Client,
    runtime: Handle,
    hub: Mutex<Hub>,
    /// Dropped with the last clone: the subscription task stops.
    _shutdown: watch::Sender<()>,
}

/// What the subscription routes wake-ups to: a limiter listening on one channel.
pub(super) trait Listener: Send + Sync {
    /// The channel it listens on.
    fn channel(&self) -> &str;
    /// A wake-up was published on its channel.
    fn on_wake(&self, payload: &str);
    /// The subscription carries its channel now: anything published before was missed.
    fn subscription_up(self: Arc<Self>);
    /// The subscription is down: its wake-ups are not coming until it is back.
    fn subscription_down(&self);
}

#[derive(Default)]
struct Hub {
    /// The limiters listening on each wake-up channel (each unregisters itself when dropped).
    routes: HashMap<String, Vec<Weak<dyn Listener>>>,
    /// Subscribes more channels while the subscription is up; `None` while it is down.
    sink: Option<PubSubSink>,
    /// Counts the subscription's ups and downs: a subscribe that went out on an earlier
    /// connection must not mark anything as subscribed.
    generation: u64,
}

impl Hub {
    /// The live limiters on `channel` (on every channel if `None`); forgets the dead. The result
    /// must be dropped after the lock: dropping a last limiter takes it.
    fn listeners(&mut self, channel: Option<&str>) -> Vec<Arc<dyn Listener>> {
        fn live(routes: &mut Vec<Weak<dyn Listener>>, into: &mut Vec<Arc<dyn Listener>>) {
            routes.retain(|inner| inner.strong_count() > 0);
            into.extend(routes.iter().filter_map(Weak::upgrade));
        }
        let mut inners = Vec::new();
        match channel {
            Some(channel) => {
                if let Some(routes) = self.routes.get_mut(channel) {
                    live(routes, &mut inners);
                    if routes.is_empty() {
                        self.routes.remove(channel);
                    }
                }
            }
            None => self.routes.retain(|_, routes| {
                live(routes, &mut inners);
                !routes.is_empty()
            }),
        }
        inners
    }
}

impl std::fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnections")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl RedisConnections {
    /// Connections to `url` (`redis://host:port/db`), with their background work on the tokio
    /// runtime this is called in. They connect lazily: an unreachable server is reported by the
    /// first operation of a limiter, not here.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Config`] for an invalid URL, or when called outside a tokio runtime.
    pub fn new(url: &str) -> Result<Self, RedisLimiterError> {
        let runtime = Handle::try_current()
            .map_err(|_| RedisLimiterError::Config("RedisConnections needs a tokio runtime".to_owned()))?;
        Self::with_runtime(url, runtime)
    }

    /// [`new`](Self::new), with the background work on `runtime`.
    ///
    /// # Errors
    ///
    /// [`RedisLimiterError::Config`] for an invalid URL.
    pub fn with_runtime(url: &str, runtime: Handle) -> Result<Self, RedisLimiterError> {
        let invalid = |e: redis::RedisError| {
            RedisLimiterError::Config(format!("invalid Redis URL {}: {e}", super::tls::redacted(url)))
        };
        let client = super::tls::client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn = {
            let _entered = runtime.enter();
            client.get_connection_manager_lazy(config).map_err(invalid)?
        };
        let (shutdown, shutdown_rx) = watch::channel(());
        let info = client.get_connection_info();
        let server = format!("{}/{}", info.addr(), info.redis_settings().db());
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            server,
            conn,
            client: client.clone(),
            runtime,
            hub: Mutex::new(Hub::default()),
            _shutdown: shutdown,
        });
        shared
            .runtime
            .spawn(subscriber(Arc::downgrade(&shared), client, shutdown_rx));
        Ok(Self { shared })
    }

    /// The server's URL, as given.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The server, as errors name it: `host:port/db` (or the socket's path and db), without
    /// the credentials the URL may hold.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    /// Whether the server drops this client's connections because of its credentials (or its
    /// TLS settings): the error of a `PING` on a fresh connection of its own (so no other
    /// caller's command can break it first), `None` if it succeeds or Redis is just unreachable.
    pub(super) async fn refusal(&self) -> Option<RedisLimiterError> {
        let ping = async {
            let mut conn = self.shared.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, ping).await {
            Ok(Err(err)) => Some(RedisLimiterError::from(err)).filter(|err| !err.is_unavailable()),
            Ok(Ok(_)) | Err(_) => None,
        }
    }

    /// The command connection (a cheap handle).
    pub(super) fn conn(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    /// Routes the wake-ups of `listener`'s channel to it, subscribing the channel now if the
    /// subscription is up (else it is subscribed when the subscription comes back).
    pub(super) fn register<L: Listener + 'static>(&self, listener: &Arc<L>) {
        let channel = listener.channel().to_owned();
        let weak: Weak<dyn Listener> = Arc::downgrade(listener) as Weak<L>;
        let sink = {
            let mut hub = self.shared.hub.lock();
            let routes = hub.routes.entry(channel.clone()).or_default();
            routes.retain(|inner| inner.strong_count() > 0);
            routes.push(weak);
            hub.sink.clone().map(|sink| (sink, hub.generation))
        };
        if let Some((sink, generation)) = sink {
            self.shared
                .runtime
                .spawn(subscribe(Arc::downgrade(&self.shared), sink, generation, channel));
        }
    }

    /// Called as a limiter on `channel` is dropped: forgets it, and unsubscribes the channel if
    /// no limiter listens on it any more.
    pub(super) fn unregister(&self, channel: &str) {
        let sink = {
            let mut hub = self.shared.hub.lock();
            let Some(routes) = hub.routes.get_mut(channel) else {
                return;
            };
            routes.retain(|inner| inner.strong_count() > 0);
            if !routes.is_empty() {
                return;
            }
            hub.routes.remove(channel);
            hub.sink.clone()
        };
        if let Some(sink) = sink {
            self.shared
                .runtime
                .spawn(unsubscribe(Arc::downgrade(&self.shared), sink, channel.to_owned()));
        }
    }
}

/// Marks the limiters on `channel` as subscribed, unless the subscription went down (or came
/// back as another connection) since `generation`.
fn mark_up(shared: &Weak<Shared>, generation: u64, channel: &str) {
    let Some(live) = shared.upgrade() else { return };
    let inners = {
        let mut hub = live.hub.lock();
        if hub.generation != generation {
            return;
        }
        hub.listeners(Some(channel))
    };
    for inner in inners {
        inner.subscription_up();
    }
}

/// Subscribes a channel a limiter registered on while the subscription was up.
async fn subscribe(shared: Weak<Shared>, mut sink: PubSubSink, generation: u64, channel: String) {
    if let Ok(Ok(())) = tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(&channel)).await {
        mark_up(&shared, generation, &channel);
    }
}

/// Unsubscribes a channel nobody listens on. Should a limiter on it have registered meanwhile,
/// its own subscribe may have gone out before this unsubscribe: the channel is subscribed again,
/// and its waiters check once for a wake-up missed in between.
async fn unsubscribe(shared: Weak<Shared>, mut sink: PubSubSink, channel: String) {
    let Ok(Ok(())) = tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(&channel)).await else {
        return;
    };
    let Some(generation) = shared.upgrade().and_then(|live| {
        let hub = live.hub.lock();
        hub.routes.contains_key(&channel).then_some(hub.generation)
    }) else {
        return;
    };
    subscribe(shared, sink, generation, channel).await;
}

/// The subscription: routes wake-up messages to the limiters on their channel, reconnecting with
/// a growing delay while Redis is away. A ping every few seconds notices a connection that died
/// without a word.
async fn subscriber(shared: Weak<Shared>, client: Client, mut shutdown: watch::Receiver<()>) {
    let mut delay = Duration::from_millis(20);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = listen(&shared, &client, &mut delay) => {}
        }
        let Some(live) = shared.upgrade() else { return };
        let inners = {
            let mut hub = live.hub.lock();
            hub.sink = None;
            hub.generation += 1;
            hub.listeners(None)
        };
        drop(live);
        for inner in inners {
            inner.subscription_down();
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// One connection of the subscription, until it fails (`None`); resets `delay` once up.
async fn listen(shared: &Weak<Shared>, client: &Client, delay: &mut Duration) -> Option<()> {
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .ok()?
        .ok()?;
    let (mut sink, mut messages) = pubsub.split();
    // Under the lock with the sink stored: a limiter registered from now on subscribes its
    // channel itself; every one registered before is in this list.
    let (channels, generation) = {
        let live = shared.upgrade()?;
        let mut hub = live.hub.lock();
        hub.sink = Some(sink.clone());
        hub.generation += 1;
        let inners = hub.listeners(None);
        let channels: Vec<String> = hub.routes.keys().cloned().collect();
        let generation = hub.generation;
        drop(hub);
        drop(inners);
        (channels, generation)
    };
    if !channels.is_empty() {
        tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(&channels))
            .await
            .ok()?
            .ok()?;
    }
    for channel in &channels {
        mark_up(shared, generation, channel);
    }
    *delay = Duration::from_millis(20);
    let mut liveness = tokio::time::interval(PING_EVERY);
    liveness.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let message = message?;
                let live = shared.upgrade()?;
                let inners = live.hub.lock().listeners(Some(message.get_channel_name()));
                if let Ok(payload) = message.get_payload::<String>() {
                    for inner in inners {
                        inner.on_wake(&payload);
                    }
                }
            }
            _ = liveness.tick() => {
                let pong: redis::RedisResult<String> =
                    tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping()).await.ok()?;
                pong.ok()?;
            }
        }
    }
}
