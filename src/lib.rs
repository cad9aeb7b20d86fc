//! A fast, cancellation-safe concurrency limiter.
//!
//! [`ConcurrencyLimiter`] bounds how many operations run at once and queues the rest in FIFO
//! order, optionally up to a `max_queued` bound. It is the core of the `ferrolimit` Python
//! package (the drop-in for pydantic-ai's limiter) and works on its own in Rust, with any async
//! runtime: its futures need nothing but a [`Waker`](std::task::Waker).
//!
//! ```
//! use ferrolimit::ConcurrencyLimiter;
//!
//! # async fn call_model() {}
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = ConcurrencyLimiter::builder(4).name("openai").build()?;
//! let permit = limiter.acquire_for("model:gpt-4o").await?;
//! call_model().await;
//! drop(permit);
//! # Ok(())
//! # }
//! ```
//!
//! A caller that has to wait opens one OpenTelemetry span on the global tracer provider, named
//! `waiting for {name or source} concurrency`; a caller that finds a free slot opens none.
//!
//! A limiter can be nested under another ([`Builder::parent`]): each of its slots is then also a
//! slot of the parent, taken only once its own is held, so callers queued for the child never sit
//! on the parent's slots. [`ConcurrencyGovernor`] is three such limiters: streams and tool
//! executions, each bounded on its own and both under a global limit.
//!
//! [`SessionLimiter`] gives idempotent, never-waiting slots to sessions and their runs.
//!
//! [`AdaptiveController`] is the controller of an adaptive limit ([`AdaptiveLimit`]): it finds a
//! provider's capacity from overloads, `Retry-After` and latency; [`Budget`] spends the
//! requests and tokens per period of [`Rate`]s (the limiters use neither yet).
//!
//! # Features
//!
//! * `python` (default): the pyo3 extension module of the Python package; turns on `redis`.
//! * `redis` (default): [`RedisConcurrencyLimiter`], one limit shared by every process that uses
//!   the same Redis key, on the `redis` crate and a tokio runtime. Without default features the
//!   crate has no I/O dependencies at all.

mod acquire;
mod acquisition;
mod adaptive;
mod close;
mod error;
mod governor;
mod keyed;
mod limiter;
mod permit;
mod queue;
mod rate;
mod session;
mod stats;
mod sync;
mod telemetry;
mod waiters;

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "python")]
mod python;

#[cfg(all(test, ferrolimit_loom))]
mod tests;

/// The README's Rust example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use acquire::Acquire;
pub use adaptive::{AdaptiveController, AdaptiveLimit, Admission, Outcome};
pub use close::WaitIdle;
pub use error::{
    AcquireError, ConcurrencyError, LimitError, MAX_RUNNING_LIMIT, MAX_SESSION_LIMIT, ReleaseError, SessionError,
    check_max_queued, check_max_running,
};
pub use governor::{ConcurrencyGovernor, ConcurrencyPermit};
pub use keyed::{KeyedBuilder, KeyedConcurrencyLimiter};
pub use limiter::{Builder, ConcurrencyLimiter};
pub use permit::Permit;
pub use rate::{Budget, Counted, Rate, Remaining};
pub use session::{SessionLimiter, SessionLimits, SessionStatus};
pub use stats::{GovernorStats, LimiterStats};

#[cfg(feature = "redis")]
pub use crate::redis::{
    RedisBuilder, RedisConcurrencyLimiter, RedisConnections, RedisCounts, RedisKeyedConcurrencyLimiter,
    RedisLimiterError, RedisPermit,
};
