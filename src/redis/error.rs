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
    /// Redis could not be reached or did not answer in time, or the connection broke: what
    /// went wrong, after the server (`host:port/db`, never the password) where it is known.
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
    /// The limiter object was [closed](super::RedisConcurrencyLimiter::close).
    Closed,
    /// The Python API's `timeout=` ran out while the caller was queued (the place was given
    /// up). The Rust API bounds a wait with `tokio::time::timeout` instead.
    TimedOut,
    /// A weight of 0 was asked for.
    ZeroWeight,
    /// More slots were asked for at once than the fleet's `max_running`; a waiter also ends
    /// with it when a resize shrinks the limit below its weight.
    WeightTooLarge {
        /// The weight asked for.
        weight: u32,
        /// The fleet's `max_running` at that moment.
        max_running: u32,
    },
}

impl From<crate::AcquireError> for RedisLimiterError {
    fn from(err: crate::AcquireError) -> Self {
        match err {
            crate::AcquireError::QueueFull { depth, max_queued } => Self::QueueFull { depth, max_queued },
            crate::AcquireError::Closed => Self::Closed,
            crate::AcquireError::ZeroWeight => Self::ZeroWeight,
            crate::AcquireError::WeightTooLarge { weight, max_running } => Self::WeightTooLarge { weight, max_running },
        }
    }
}

impl RedisLimiterError {
    /// Whether the error means Redis could not be used at all (the case `fail_open` covers).
    #[must_use]
    pub const fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The error with the server it came from (`host:port/db`) in an unavailability's detail.
    #[must_use]
    pub(crate) fn at_server(self, server: &str) -> Self {
        match self {
            Self::Unavailable(detail) => Self::Unavailable(format!("{server}: {detail}")),
            other => other,
        }
    }

    /// The local limiter's error of the same meaning, if there is one.
    #[must_use]
    pub const fn acquire_error(&self) -> Option<crate::AcquireError> {
        Some(match *self {
            Self::QueueFull { depth, max_queued } => crate::AcquireError::QueueFull { depth, max_queued },
            Self::Closed => crate::AcquireError::Closed,
            Self::ZeroWeight => crate::AcquireError::ZeroWeight,
            Self::WeightTooLarge { weight, max_running } => crate::AcquireError::WeightTooLarge { weight, max_running },
            _ => return None,
        })
    }

    /// The message, naming the limiter (or, unnamed, the source) for a refused acquire as the
    /// local limiter does.
    #[must_use]
    pub fn message(&self, display_name: &str) -> String {
        self.acquire_error()
            .map_or_else(|| self.to_string(), |err| err.message(display_name))
    }
}

impl fmt::Display for RedisLimiterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull { .. } | Self::Closed | Self::ZeroWeight | Self::WeightTooLarge { .. } => {
                f.write_str(&self.message(""))
            }
            Self::Unavailable(detail) => write!(f, "Redis is unavailable: {detail}"),
            Self::WrongType(detail) | Self::Server(detail) | Self::Config(detail) => f.write_str(detail),
            Self::TimedOut => f.write_str("timed out waiting for a slot"),
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
        // A wrong password, or none where the server wants one (commands sent before any AUTH
        // are refused as NOAUTH, or, for a long one, as an 'unauthenticated' protocol error).
        if err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
            || text.contains("unauthenticated")
            || text.contains("Authentication required")
        {
            return Self::Server(format!(
                "Redis refused the credentials (auth): check the user and password of the URL ({err})"
            ));
        }
        // A TLS handshake that fails on a certificate (the server's is not trusted, or the server
        // wants the client's), or that meets a server without TLS, is a setting to fix, not an
        // outage: `fail_open` does not cover it.
        if err.is_io_error()
            && ["certificate", "Certificate", "corrupt message", "InvalidContentType"]
                .iter()
                .any(|sign| text.contains(sign))
        {
            return Self::Server(format!(
                "the TLS handshake with Redis failed (certificate or TLS settings of the URL): {err}"
            ));
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
