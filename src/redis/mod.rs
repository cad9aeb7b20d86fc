//! [`RedisConcurrencyLimiter`]: one limit shared by every process that uses the same Redis key
//! (feature `redis`).
//!
//! # Implementation details
//!
//! The state lives in Redis keys with the hash tag `{key}`, so they share a cluster slot:
//!
//! * `{key}:holders`, a sorted set of the slots held, token → lease expiry (milliseconds on the
//!   server's clock, from `TIME`, so process clocks never matter);
//! * `{key}:queue`, a sorted set of the waiters, token → arrival sequence (from `{key}:seq`);
//! * `{key}:waiters`, a sorted set of the waiters' heartbeat expiries, so that the waiters of a
//!   dead process drop out of the queue instead of blocking it;
//! * `{key}:seq`, the arrival counter;
//! * `{key}:epoch`, the identity of the state, and `{key}:recovering`, set for one lease after the
//!   state was found lost;
//! * `{key}:max_running`, the `max_running` of the last acquire, kept for one lease: an acquire
//!   that finds another value there reports it
//!   ([`RedisConcurrencyLimiter::other_max_running`]), since processes that disagree on the limit
//!   each admit up to their own.
//!
//! Every step is one Lua script (`lua/`), hence atomic. Each starts by purging expired leases and
//! dead waiters and then admits the head of the queue into every free slot ("admit"); so a slot
//! is never free while someone waits, and the order of admission is the order of arrival.
//! Acquire admits at once only if nobody is queued (no barging) and rejects when the queue holds
//! `max_queued` waiters; release removes only the caller's own token, which makes the token a
//! fencing token: a holder whose lease ran out cannot free the slot its successor holds. Tokens
//! are `{random instance id}-{counter}`, chosen by the client before the acquire script runs so
//! that a waiter is registered for its wake-up before anyone can admit it.
//!
//! Admitted tokens are published on the channel `{key}:wake`. The limiter's [`RedisConnections`]
//! (its own, or shared with other limiters on the same server) keep one subscription, which
//! routes each message to the limiters on its channel; each wakes its local waiter for each token
//! at once. This is the main path, with no polling. Waiters also poll, as a heartbeat every third of a lease, when the earliest lease runs
//! out (the slot of a dead holder is reclaimed without a release), and every 100 ms while the
//! subscription is down (after it is re-established, every waiter polls once).
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

#[cfg(feature = "python")]
pub(crate) use admission::{Slot, Wait};
pub use connections::RedisConnections;
pub use error::RedisLimiterError;
#[cfg(feature = "python")]
pub(crate) use inner::Inner;
pub use inner::RedisCounts;
pub use keyed::RedisKeyedConcurrencyLimiter;
pub use limiter::{RedisBuilder, RedisConcurrencyLimiter, RedisPermit};
