//! Maps core errors to the Python exceptions of `ferrolimit.exceptions` (which subclass
//! pydantic-ai's when it is installed).

use crate::telemetry::display_name;
use crate::{AcquireError, LimitError, ReleaseError, SessionError};
use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;

pyo3::import_exception!(ferrolimit.exceptions, ConcurrencyLimitExceeded);
pyo3::import_exception!(ferrolimit.exceptions, UserError);
pyo3::import_exception!(ferrolimit.exceptions, MaxSessionsExceeded);
pyo3::import_exception!(ferrolimit.exceptions, MaxRunsExceeded);
pyo3::import_exception!(ferrolimit.exceptions, ConcurrencyBackendError);
pyo3::import_exception!(ferrolimit.exceptions, LimiterClosedError);

/// A Redis limiter's error: a refused acquire as the local limiter's (see [`acquire_error`]),
/// an invalid argument as `ValueError`, anything about the server (unreachable, a key of the
/// wrong type) as `ConcurrencyBackendError`.
pub(crate) fn redis_error(err: &crate::RedisLimiterError, display_name: &str) -> PyErr {
    if let Some(refused) = err.acquire_error() {
        return acquire_error(&refused, display_name);
    }
    match err {
        crate::RedisLimiterError::Config(message) => PyValueError::new_err(message.clone()),
        crate::RedisLimiterError::TimedOut => PyTimeoutError::new_err(timeout_message(Some(display_name), "")),
        _ => ConcurrencyBackendError::new_err(err.to_string()),
    }
}

/// A limit below its minimum is pydantic-ai's `UserError`; one too large for the core is a
/// `ValueError`.
pub(crate) fn limit_error(err: &LimitError) -> PyErr {
    if err.is_below_minimum() {
        UserError::new_err(err.to_string())
    } else {
        PyValueError::new_err(err.to_string())
    }
}

/// A refused acquire, naming the limiter or the source: a full queue in pydantic-ai's words
/// (`ConcurrencyLimitExceeded`), a closed limiter as `LimiterClosedError`, a weight that can
/// never be served as `ValueError`.
pub(crate) fn acquire_error(err: &AcquireError, display_name: &str) -> PyErr {
    let message = err.message(display_name);
    match err {
        AcquireError::QueueFull { .. } => ConcurrencyLimitExceeded::new_err(message),
        AcquireError::Closed => LimiterClosedError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// The `TimeoutError` message of a wait that ran out of time.
pub(crate) fn timeout_message(limiter_name: Option<&str>, source: &str) -> String {
    format!(
        "timed out waiting for {} concurrency",
        display_name(limiter_name, source)
    )
}

/// The error of a native type or function used before the module's initialisation created it.
pub(crate) fn not_initialised() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("ferrolimit: the native module is not initialised")
}

/// A release without a held slot: the same `ValueError` as anyio's semaphore, naming the limiter.
pub(crate) fn release_error(err: ReleaseError, limiter_name: Option<&str>) -> PyErr {
    PyValueError::new_err(err.message(limiter_name))
}

/// A session or run limit reached is `MaxSessionsExceeded` / `MaxRunsExceeded`; a usage mistake
/// (a run without its session, a run ID held by another session, an empty ID) is a `ValueError`.
pub(crate) fn session_error(err: &SessionError) -> PyErr {
    match err {
        SessionError::MaxSessionsExceeded { .. } => MaxSessionsExceeded::new_err(err.to_string()),
        SessionError::MaxRunsExceeded { .. } => MaxRunsExceeded::new_err(err.to_string()),
        _ => PyValueError::new_err(err.to_string()),
    }
}
