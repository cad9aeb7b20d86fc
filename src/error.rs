//! The crate's errors. Their messages are the contract's (pydantic-ai's) word for word.

use std::fmt;

/// The largest `max_running` a limiter accepts (holder counts are 31-bit).
pub const MAX_RUNNING_LIMIT: u64 = i32::MAX as u64;

/// The largest `max_parallel_sessions` or `max_parallel_runs` a
/// [`SessionLimiter`](crate::SessionLimiter) accepts (its active counts are 32-bit).
pub const MAX_SESSION_LIMIT: u64 = u32::MAX as u64;

/// An invalid limit passed to a constructor or to a resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// `max_running` below 1.
    MaxRunningTooSmall(i128),
    /// `max_running` above [`MAX_RUNNING_LIMIT`].
    MaxRunningTooLarge(i128),
    /// `max_queued` below 0.
    MaxQueuedNegative(i128),
    /// `max_queued` above what the platform can count.
    MaxQueuedTooLarge(i128),
    /// `max_parallel_sessions` below 1.
    MaxParallelSessionsTooSmall(i128),
    /// `max_parallel_sessions` above [`MAX_SESSION_LIMIT`].
    MaxParallelSessionsTooLarge(i128),
    /// `max_parallel_runs` below 1.
    MaxParallelRunsTooSmall(i128),
    /// `max_parallel_runs` above [`MAX_SESSION_LIMIT`].
    MaxParallelRunsTooLarge(i128),
    /// A [`ConcurrencyGovernor`](crate::ConcurrencyGovernor)'s `max_streams` below 1.
    MaxStreamsTooSmall(i128),
    /// A governor's `max_streams` above [`MAX_RUNNING_LIMIT`].
    MaxStreamsTooLarge(i128),
    /// A governor's `max_tools` below 1.
    MaxToolsTooSmall(i128),
    /// A governor's `max_tools` above [`MAX_RUNNING_LIMIT`].
    MaxToolsTooLarge(i128),
    /// A governor's `max_global` below 1.
    MaxGlobalTooSmall(i128),
    /// A governor's `max_global` above [`MAX_RUNNING_LIMIT`].
    MaxGlobalTooLarge(i128),
    /// An [`AdaptiveLimit`](crate::AdaptiveLimit) whose settings do not fit together: what is
    /// wrong.
    Adaptive(String),
    /// A [`Rate`](crate::Rate) that limits nothing or nothing ever fits: what is wrong.
    Rate(String),
}

impl LimitError {
    /// Whether the error is one pydantic-ai reports as a `UserError` (a limit below its minimum);
    /// the others are out-of-range values that pydantic-ai has no word for.
    #[must_use]
    pub const fn is_below_minimum(&self) -> bool {
        matches!(
            self,
            Self::MaxRunningTooSmall(_)
                | Self::MaxQueuedNegative(_)
                | Self::MaxParallelSessionsTooSmall(_)
                | Self::MaxParallelRunsTooSmall(_)
                | Self::MaxStreamsTooSmall(_)
                | Self::MaxToolsTooSmall(_)
                | Self::MaxGlobalTooSmall(_)
        )
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxRunningTooSmall(n) => {
                write!(
                    f,
                    "max_running must be >= 1, got {n}. Use None for no concurrency limiting."
                )
            }
            Self::MaxRunningTooLarge(n) => write!(f, "max_running must be <= {MAX_RUNNING_LIMIT}, got {n}"),
            Self::MaxQueuedNegative(n) => write!(f, "max_queued must be >= 0, got {n}. Use None for unlimited queue."),
            Self::MaxQueuedTooLarge(n) => write!(f, "max_queued must be <= {}, got {n}", usize::MAX),
            Self::MaxParallelSessionsTooSmall(n) => {
                write!(
                    f,
                    "max_parallel_sessions must be >= 1, got {n}. Use None for unlimited."
                )
            }
            Self::MaxParallelSessionsTooLarge(n) => {
                write!(f, "max_parallel_sessions must be <= {MAX_SESSION_LIMIT}, got {n}")
            }
            Self::MaxParallelRunsTooSmall(n) => {
                write!(f, "max_parallel_runs must be >= 1, got {n}. Use None for unlimited.")
            }
            Self::MaxParallelRunsTooLarge(n) => write!(f, "max_parallel_runs must be <= {MAX_SESSION_LIMIT}, got {n}"),
            Self::MaxStreamsTooSmall(n) => write!(f, "max_streams must be >= 1, got {n}"),
            Self::MaxStreamsTooLarge(n) => write!(f, "max_streams must be <= {MAX_RUNNING_LIMIT}, got {n}"),
            Self::MaxToolsTooSmall(n) => write!(f, "max_tools must be >= 1, got {n}"),
            Self::MaxToolsTooLarge(n) => write!(f, "max_tools must be <= {MAX_RUNNING_LIMIT}, got {n}"),
            Self::MaxGlobalTooSmall(n) => write!(f, "max_global must be >= 1, got {n}"),
            Self::MaxGlobalTooLarge(n) => write!(f, "max_global must be <= {MAX_RUNNING_LIMIT}, got {n}"),
            Self::Adaptive(what) | Self::Rate(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for LimitError {}

/// Checks a `max_running` value and narrows it to the core's slot count.
///
/// # Errors
///
/// [`LimitError`] when the value is below 1 or above [`MAX_RUNNING_LIMIT`].
pub fn check_max_running(max_running: i128) -> Result<u32, LimitError> {
    if max_running < 1 {
        return Err(LimitError::MaxRunningTooSmall(max_running));
    }
    if max_running > i128::from(MAX_RUNNING_LIMIT) {
        return Err(LimitError::MaxRunningTooLarge(max_running));
    }
    u32::try_from(max_running).map_err(|_| LimitError::MaxRunningTooLarge(max_running))
}

/// Checks a governor's three limits, in the order `max_streams`, `max_tools`, `max_global`.
///
/// Any `max_global` of at least 1 is accepted, even one below `max_streams` or `max_tools`:
/// see [`ConcurrencyGovernor`](crate::ConcurrencyGovernor).
///
/// # Errors
///
/// [`LimitError`] for the first value below 1 or above [`MAX_RUNNING_LIMIT`].
pub(crate) fn check_governor_limits(
    max_streams: i128,
    max_tools: i128,
    max_global: i128,
) -> Result<(u32, u32, u32), LimitError> {
    let check = |value: i128, too_small: fn(i128) -> LimitError, too_large: fn(i128) -> LimitError| {
        check_max_running(value).map_err(|err| match err {
            LimitError::MaxRunningTooSmall(n) => too_small(n),
            _ => too_large(value),
        })
    };
    Ok((
        check(
            max_streams,
            LimitError::MaxStreamsTooSmall,
            LimitError::MaxStreamsTooLarge,
        )?,
        check(max_tools, LimitError::MaxToolsTooSmall, LimitError::MaxToolsTooLarge)?,
        check(max_global, LimitError::MaxGlobalTooSmall, LimitError::MaxGlobalTooLarge)?,
    ))
}

/// Checks a `max_queued` value.
///
/// # Errors
///
/// [`LimitError`] when the value is below 0 or does not fit a `usize`.
pub fn check_max_queued(max_queued: i128) -> Result<usize, LimitError> {
    if max_queued < 0 {
        return Err(LimitError::MaxQueuedNegative(max_queued));
    }
    usize::try_from(max_queued).map_err(|_| LimitError::MaxQueuedTooLarge(max_queued))
}

/// Checks a `max_parallel_sessions` value.
///
/// # Errors
///
/// [`LimitError`] when the value is below 1 or above [`MAX_SESSION_LIMIT`].
pub(crate) fn check_max_parallel_sessions(value: i128) -> Result<usize, LimitError> {
    check_session_limit(
        value,
        LimitError::MaxParallelSessionsTooSmall,
        LimitError::MaxParallelSessionsTooLarge,
    )
}

/// Checks a `max_parallel_runs` value.
///
/// # Errors
///
/// [`LimitError`] when the value is below 1 or above [`MAX_SESSION_LIMIT`].
pub(crate) fn check_max_parallel_runs(value: i128) -> Result<usize, LimitError> {
    check_session_limit(
        value,
        LimitError::MaxParallelRunsTooSmall,
        LimitError::MaxParallelRunsTooLarge,
    )
}

fn check_session_limit(
    value: i128,
    too_small: fn(i128) -> LimitError,
    too_large: fn(i128) -> LimitError,
) -> Result<usize, LimitError> {
    if value < 1 {
        return Err(too_small(value));
    }
    if value > i128::from(MAX_SESSION_LIMIT) {
        return Err(too_large(value));
    }
    usize::try_from(value).map_err(|_| too_large(value))
}

/// Why an acquire did not get a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// The queue already held `max_queued` waiters. `depth` is the depth this arrival would have
    /// made.
    QueueFull {
        /// Queue depth including the rejected arrival.
        depth: usize,
        /// The limiter's `max_queued`.
        max_queued: usize,
    },
    /// The limiter was [closed](crate::ConcurrencyLimiter::close): it admits nobody any more.
    Closed,
    /// A weight of 0 was asked for.
    ZeroWeight,
    /// More slots were asked for at once than the limiter has (`max_running`), so the request
    /// could never be served. A waiter also ends with it when a resize shrinks the limiter below
    /// its weight.
    WeightTooLarge {
        /// The weight asked for.
        weight: u32,
        /// The limiter's `max_running` at that moment.
        max_running: u32,
    },
}

impl AcquireError {
    /// The message: for a full queue pydantic-ai's, naming the limiter (or, unnamed, the
    /// source); the others name it the same way.
    #[must_use]
    pub fn message(&self, display_name: &str) -> String {
        let mut text = match self {
            Self::QueueFull { depth, max_queued } => {
                format!("Concurrency queue depth ({depth}) exceeds max_queued ({max_queued})")
            }
            Self::Closed => "concurrency limiter closed".to_owned(),
            Self::ZeroWeight => "weight must be >= 1, got 0".to_owned(),
            Self::WeightTooLarge { weight, max_running } => {
                format!("weight ({weight}) exceeds max_running ({max_running})")
            }
        };
        if !display_name.is_empty() {
            text.push_str(" for ");
            text.push_str(display_name);
        }
        text
    }
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(""))
    }
}

impl std::error::Error for AcquireError {}

/// A release with no slot held: nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseError;

impl ReleaseError {
    /// The message: anyio's semaphore's, naming the limiter if it has a name.
    #[must_use]
    pub fn message(&self, limiter_name: Option<&str>) -> String {
        match limiter_name {
            Some(name) => format!("semaphore released too many times for {name}"),
            None => "semaphore released too many times".to_owned(),
        }
    }
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for ReleaseError {}

/// Why a [`SessionLimiter`](crate::SessionLimiter) did not give a session or run slot. A failed
/// acquire changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `max_parallel_sessions` sessions already hold a slot.
    MaxSessionsExceeded {
        /// The limit that was reached.
        max_parallel_sessions: usize,
    },
    /// `max_parallel_runs` runs already hold a slot.
    MaxRunsExceeded {
        /// The limit that was reached.
        max_parallel_runs: usize,
    },
    /// A run was asked for under a session that holds no slot.
    SessionNotHeld {
        /// The session named by the run.
        session_id: String,
    },
    /// The run ID already holds a slot under another session.
    RunHeldByOtherSession {
        /// The run asked for.
        run_id: String,
        /// The session it was asked for under.
        session_id: String,
        /// The session that holds it.
        holder: String,
    },
    /// An empty session ID.
    EmptySessionId,
    /// An empty run ID.
    EmptyRunId,
}

impl SessionError {
    /// Whether the error is a limit being reached (the seed's `max_sessions_exceeded` and
    /// `max_runs_exceeded`), as opposed to a usage mistake.
    #[must_use]
    pub const fn is_limit_exceeded(&self) -> bool {
        matches!(self, Self::MaxSessionsExceeded { .. } | Self::MaxRunsExceeded { .. })
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxSessionsExceeded { max_parallel_sessions } => {
                write!(f, "Maximum parallel sessions ({max_parallel_sessions}) reached")
            }
            Self::MaxRunsExceeded { max_parallel_runs } => {
                write!(f, "Maximum parallel runs ({max_parallel_runs}) reached")
            }
            Self::SessionNotHeld { session_id } => {
                write!(f, "session '{session_id}' holds no slot: acquire_session first")
            }
            Self::RunHeldByOtherSession {
                run_id,
                session_id,
                holder,
            } => write!(
                f,
                "run '{run_id}' is held by session '{holder}', not '{session_id}': release_run first"
            ),
            Self::EmptySessionId => f.write_str("session_id must not be empty"),
            Self::EmptyRunId => f.write_str("run_id must not be empty"),
        }
    }
}

impl std::error::Error for SessionError {}

/// Why a [`ConcurrencyGovernor`](crate::ConcurrencyGovernor) did not give a permit.
///
/// Kept from the governor's original API, where the `Result` guarded against a closed
/// semaphore. ferrolimit's limiters are never closed and a governor's queues are unbounded, so
/// a governor never returns this error today; the enum is `#[non_exhaustive]` so that queue
/// bounds or closing can report through it later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConcurrencyError {
    /// The limiter was closed. Never returned: ferrolimit's limiters cannot be closed.
    SemaphoreClosed,
}

impl fmt::Display for ConcurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SemaphoreClosed => f.write_str("concurrency semaphore was closed unexpectedly"),
        }
    }
}

impl std::error::Error for ConcurrencyError {}
