//! Maps core errors to the Python exceptions of `ferrolimit.exceptions` (which subclass
//! pydantic-ai's when it is installed), and checks Python arguments.

use crate::telemetry::display_name;
use crate::{AcquireError, ConcurrencyLimiter, LimitError, ReleaseError, SessionError};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyString};
use std::convert::Infallible;

pyo3::import_exception!(ferrolimit.exceptions, ConcurrencyLimitExceeded);
pyo3::import_exception!(ferrolimit.exceptions, UserError);
pyo3::import_exception!(ferrolimit.exceptions, MaxSessionsExceeded);
pyo3::import_exception!(ferrolimit.exceptions, MaxRunsExceeded);
pyo3::import_exception!(ferrolimit.exceptions, ConcurrencyBackendError);

/// A Redis limiter's error: a full queue as the local limiter words it, an invalid argument as
/// `ValueError`, anything about the server (unreachable, a key of the wrong type) as
/// `ConcurrencyBackendError`.
pub(crate) fn redis_error(err: &crate::RedisLimiterError, display_name: &str) -> PyErr {
    use crate::RedisLimiterError as E;
    match err {
        E::QueueFull { .. } => ConcurrencyLimitExceeded::new_err(err.message(display_name)),
        E::Config(message) => PyValueError::new_err(message.clone()),
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

/// A full queue, in pydantic-ai's words, naming the limiter or the source.
pub(crate) fn acquire_error(err: &AcquireError, display_name: &str) -> PyErr {
    ConcurrencyLimitExceeded::new_err(err.message(display_name))
}

/// The `TimeoutError` message of a wait that ran out of time.
pub(crate) fn timeout_message(limiter: &ConcurrencyLimiter, source: &str) -> String {
    format!(
        "timed out waiting for {} concurrency",
        display_name(limiter.name(), source)
    )
}

/// A release without a held slot: the same `ValueError` as anyio's semaphore.
pub(crate) fn release_error(err: ReleaseError) -> PyErr {
    PyValueError::new_err(err.to_string())
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

/// Reads an integer limit argument: `TypeError` for a non-int, `ValueError` beyond any limit.
pub(crate) fn extract_limit(value: &Bound<'_, PyAny>, what: &str, max: u64) -> PyResult<i128> {
    if !value.is_instance_of::<PyInt>() {
        let type_name = value.get_type().name()?;
        return Err(PyTypeError::new_err(format!("{what} must be an int, got {type_name}")));
    }
    value.extract::<i128>().map_err(|err| {
        if err.is_instance_of::<PyOverflowError>(value.py()) {
            PyValueError::new_err(format!("{what} must be <= {max}, got {value}"))
        } else {
            err
        }
    })
}

/// Checks that a `source` argument is a `str`.
pub(crate) fn check_source<'a, 'py>(source: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyString>> {
    check_str(source, "source")
}

/// Checks that the argument `what` is a `str`.
pub(crate) fn check_str<'a, 'py>(value: &'a Bound<'py, PyAny>, what: &str) -> PyResult<&'a Bound<'py, PyString>> {
    value.cast::<PyString>().map_err(|_| {
        let type_name = value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("{what} must be a str, got {type_name}"))
    })
}

/// Reads a `timeout` argument in seconds: `None` or infinity for none, else a non-negative number.
pub(crate) fn check_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Duration>> {
    let Some(timeout) = timeout.filter(|t| !t.is_none()) else {
        return Ok(None);
    };
    let seconds: f64 = timeout.extract().map_err(|_| {
        let type_name = timeout
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("timeout must be a number or None, got {type_name}"))
    })?;
    if seconds == f64::INFINITY {
        return Ok(None);
    }
    std::time::Duration::try_from_secs_f64(seconds)
        .map(Some)
        .map_err(|_| PyValueError::new_err(format!("timeout must be a non-negative number, got {timeout}")))
}

/// A limit argument as the caller gave it: left out (the default), or any object, checked in the
/// body so that errors name the argument and keep their own messages.
pub(crate) enum LimitArg<'py> {
    Default,
    Given(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for LimitArg<'py> {
    type Error = Infallible;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        Ok(Self::Given(obj.to_owned()))
    }
}
