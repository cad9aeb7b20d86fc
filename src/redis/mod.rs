//! [`RedisConcurrencyLimiter`]: one limit shared by every process that uses the same Redis key
//! (feature `redis`).
//!
//! The server's URL is `redis://[user:password@]host[:port][/db]` (an ACL user), `unix://` for
//! a socket, or `rediss://` for TLS: rustls with the ring provider, so no system OpenSSL; the
//! system's roots unless the URL's query names a CA bundle or a client certificate (`tls.rs`).
//!
//! # Implementation details
//!
//! The state lives in Redis keys with the hash tag `{key}`, so they share a cluster slot (the
//! full list, with their types, is in `lua/prelude.lua`):
//!
//! * `{key}:holders`, a sorted set of the slots held, token → lease expiry (milliseconds on the
//!   server's clock, from `TIME`, so process clocks never matter), with `{key}:weights` for the
//!   holders (and waiters) of more than one slot and `{key}:used`, the sum of the weights held;
//! * `{key}:queue`, a sorted set of the waiters' places by priority, each place being the
//!   arrival sequence (from `{key}:seq`) then the token, so that equal priorities sort by
//!   arrival; `{key}:places` finds a token's place;
//! * `{key}:waiters`, a sorted set of the waiters' heartbeat expiries, so that the waiters of a
//!   dead process drop out of the queue instead of blocking it;
//! * `{key}:epoch`, the identity of the state, and `{key}:recovering`, set for one lease after the
//!   state was found lost;
//! * `{key}:limit`, the fleet's `max_running`: stored by the first limiter to use the key, set by
//!   a resize ([`RedisConcurrencyLimiter::set_max_running`]), followed by every limiter; a limiter
//!   built with another value reports the stored one
//!   ([`RedisConcurrencyLimiter::other_max_running`]). A limiter whose limit came from a resize
//!   (its own or one it saw) stores it as a resize, also over a built value or an earlier resize
//!   it finds while the state is idle (`claim()` in `lua/prelude.lua`; resizes are timed in
//!   milliseconds since the Unix epoch on the clock of the process that made them, and the later
//!   wins): a keyed limiter's resize so reaches the keys it uses later.
//!
//! Every key expires once the limit is idle: the scripts keep one TTL for all of them beyond
//! every lease and heartbeat, so a key nobody uses any more (a user of a
//! [`RedisKeyedConcurrencyLimiter`] gone for good) leaves nothing behind. An instance tells an
//! expired state from a lost one by the TTL the scripts report: it sends its known epoch only
//! while the state cannot have expired.
//!
//! Every step is one Lua script (`lua/`), hence atomic. Each starts by purging expired leases and
//! dead waiters and then admits the head of the queue into the free slots while its weight fits
//! ("admit"; a head heavier than the whole limit, after a shrink, is refused); so slots are
//! never free while a waiter that fits waits at the head, and admission follows priority, then
//! arrival, with head-of-line blocking. An arrival is admitted at once only if nobody is queued
//! or it outranks everyone queued (no barging), and is rejected when the queue holds
//! `max_queued` waiters; release removes only the caller's own token, which makes the token a
//! fencing token: a holder whose lease ran out cannot free the slot its successor holds. Tokens
//! are `{random instance id}-{counter}`, chosen by the client before the acquire script runs so
//! that a waiter is registered for its wake-up before anyone can admit it.
//!
//! Admitted tokens (and refused ones, as `!{limit}!{token}`) are published on the channel
//! `{key}:wake`. The limiter's [`RedisConnections`] (its own, or shared with other limiters on
//! the same server) keep one subscription, which routes each message to the limiters on its
//! channel; each wakes its local waiter for each token at once. A limiter object subscribes its
//! channel when its first caller has to wait. This is the main path, with no polling. Waiters
//! also poll, as a heartbeat every third of a lease, when the earliest lease runs out (the slot
//! of a dead holder is reclaimed without a release), and every 100 ms while the subscription is
//! down or not yet confirmed (after it is (re-)established, every waiter polls once).
//!
//! A background task renews the leases of every slot the instance holds, every third of a lease,
//! in one script call. A lease found expired is "lost": it is never renewed again, and releasing
//! it frees nothing.
//!
//! A server that loses its data (a restart without persistence, a flush) forgets the slots held.
//! Every reply carries the state's epoch; an instance that sees a new epoch after a known one
//! knows the state was lost. The first script to find the epoch missing creates a new one and,
//! if its caller knew an older one, opens a recovery window of one lease in which nobody is
//! admitted, while the instances re-register the slots they hold (each renews at once on seeing
//! the new epoch) and put their queued waiters back in the queue. Limitation: if the first caller
//! after the loss is an instance that never talked to the old state (a process started since),
//! no window opens, and holders from before the loss may be over-admitted until they release.
//! With persistence (RDB or AOF; a graceful restart of the default Debian configuration saves
//! an RDB snapshot) nothing is lost and none of this applies.
//!
//! A failover is a loss of the newest writes: Redis replicates asynchronously, so a promoted
//! replica (a managed service's failover behind the same endpoint, the only kind this client
//! follows today: Sentinel and Cluster are not supported yet) may miss the last admissions,
//! releases and queue entries before it. What it can cost, and what bounds it: a missed release
//! (a slot given back just before) is a slot held by nobody, freed when its lease runs out, at
//! most one lease later; a missed admission is a holder the new primary does not know: its next
//! renewal finds the lease gone and counts it lost (releasing it frees nothing), and until that
//! holder's call ends, the slot it still uses may be given to another caller, one slot beyond
//! the limit per missed admission; a missed queue entry is put back by the waiter's next
//! heartbeat. If the replica missed the whole state (it never had the key), the new epoch opens
//! the recovery window above: nobody is admitted for a lease while the holders re-register.
//! Remedies: keep the calls a slot guards short; `WAIT 1 <ms>` after each admission (not done:
//! a replica round trip on every acquire) would close the window.

mod admission;
mod connections;
mod error;
mod inner;
mod keyed;
mod limiter;
#[cfg(feature = "python")]
mod pool;
mod release;
mod scripts;
mod slot;
mod tls;

#[cfg(feature = "python")]
pub(crate) use admission::Wait;
pub use connections::RedisConnections;
pub use error::RedisLimiterError;
pub use inner::RedisCounts;
#[cfg(feature = "python")]
pub(crate) use inner::{Inner, Totals};
pub use keyed::RedisKeyedConcurrencyLimiter;
pub use limiter::{RedisBuilder, RedisConcurrencyLimiter, RedisPermit};
#[cfg(feature = "python")]
pub(crate) use slot::Slot;
