//! Errors of the Redis-backed limiter.

use std::fmt;

/// Why a [`RedisConcurrencyLimiter`](super::RedisConcurrencyLimiter) operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisLimiterError {
    /// The fleet-wide queue already held `max_queued` waiters.
    QueueFull {
        /// Queue depth including the rejected arrival.
        depth: usize,
        /// The limiter's `max_queued`.
        max_queued: usize,
    },
    /// Redis could not be reached or did not answer in time, or the connection broke.
    Unavailable(String),
    /// A key the limiter uses already holds a value of another type.
    WrongType(String),
    /// Redis answered with an error the limiter did not expect.
    Server(String),
    /// The queue place was dropped by the server: this process sent no heartbeat for a whole
    /// lease (it was paused, or Redis was unreachable that long).
    PlaceLost,
    /// An invalid argument to the builder.
    Config(String),
}

impl RedisLimiterError {
    /// Whether the error means Redis could not be used at all (the case `fail_open` covers).
    #[must_use]
    pub const fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The message, naming the limiter (or, unnamed, the source) for a full queue as the local
    /// limiter does.
    #[must_use]
    pub fn message(&self, display_name: &str) -> String {
        match self {
            Self::QueueFull { depth, max_queued } => crate::AcquireError::QueueFull {
                depth: *depth,
                max_queued: *max_queued,
            }
            .message(display_name),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for RedisLimiterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull { .. } => f.write_str(&self.message("")),
            Self::Unavailable(detail) => write!(f, "Redis is unavailable: {detail}"),
            Self::WrongType(detail) | Self::Server(detail) | Self::Config(detail) => f.write_str(detail),
            Self::PlaceLost => {
                f.write_str("the queue place expired on the Redis server: no heartbeat reached it for a whole lease")
            }
        }
    }
}

impl std::error::Error for RedisLimiterError {}

impl From<redis::RedisError> for RedisLimiterError {
    fn from(err: redis::RedisError) -> Self {
        let text = err.to_string();
        if let Some(at) = text.find("FERROLIMIT_WRONGTYPE") {
            let detail = text[at + "FERROLIMIT_WRONGTYPE".len()..]
                .trim_start_matches(|c: char| c == '"' || c == ':' || c.is_whitespace())
                .trim_end_matches('"');
            return Self::WrongType(detail.to_owned());
        }
        if err.code() == Some("WRONGTYPE") {
            return Self::WrongType(format!("a key of the limiter holds the wrong type: {err}"));
        }
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(err.code(), Some("LOADING" | "MASTERDOWN" | "TRYAGAIN"))
        {
            return Self::Unavailable(err.to_string());
        }
        Self::Server(format!("Redis error: {err}"))
    }
}
