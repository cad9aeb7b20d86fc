//! Reads and checks Python arguments: types first (`TypeError`, naming the argument), then
//! ranges (`ValueError`, or the contract's `UserError` through the core's checks).

use crate::python::errors::limit_error;
use crate::waiters::Request;
use crate::{MAX_RUNNING_LIMIT, check_max_queued, check_max_running};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};
use std::convert::Infallible;
use std::time::Duration;

/// An optional argument as the caller gave it: left out, or any object (`None` included), so
/// that the body can tell the two apart and every error names the argument.
pub(crate) enum Arg<'py> {
    Omitted,
    Given(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'py> {
    type Error = Infallible;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        Ok(Self::Given(obj.to_owned()))
    }
}

/// The name of `value`'s type, for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// Reads an integer limit argument: `TypeError` for a non-int (a `bool` included), `ValueError`
/// above any limit. An int below any that 128 bits hold reads as `i128::MIN`, so that the range
/// check names the lower bound (and raises what it raises for one, such as `UserError`).
pub(crate) fn extract_limit(value: &Bound<'_, PyAny>, what: &str, max: u64) -> PyResult<i128> {
    if !value.is_instance_of::<PyInt>() || value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, got {}",
            type_name(value)
        )));
    }
    match value.extract::<i128>() {
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => {
            if value.lt(0)? {
                Ok(i128::MIN)
            } else {
                Err(PyValueError::new_err(format!("{what} must be <= {max}, got {value}")))
            }
        }
        result => result,
    }
}

/// Reads `weight=` (left out: 1): an int of at least 1. Whether the limiter could ever serve it
/// is the core's to decide, against `max_running` as it stands when the caller arrives.
pub(crate) fn weight_arg(arg: &Arg<'_>) -> PyResult<u32> {
    let Arg::Given(value) = arg else { return Ok(1) };
    let weight = extract_limit(value, "weight", u64::from(u32::MAX))?;
    if weight < 1 {
        return Err(PyValueError::new_err(format!("weight must be >= 1, got {value}")));
    }
    u32::try_from(weight).map_err(|_| PyValueError::new_err(format!("weight must be <= {}, got {value}", u32::MAX)))
}

/// Reads `priority=` (left out: 0): an int that fits 32 bits, higher served first.
pub(crate) fn priority_arg(arg: &Arg<'_>) -> PyResult<i32> {
    let Arg::Given(value) = arg else { return Ok(0) };
    let out_of_range = || {
        PyValueError::new_err(format!(
            "priority must be between {} and {}, got {value}",
            i32::MIN,
            i32::MAX
        ))
    };
    // Too large for 128 bits is out of the same range as too large for 32.
    let priority = match extract_limit(value, "priority", i32::MAX as u64) {
        Err(err) if err.is_instance_of::<PyValueError>(value.py()) => return Err(out_of_range()),
        result => result?,
    };
    i32::try_from(priority).map_err(|_| out_of_range())
}

/// Reads `weight=` and `priority=` into the request a caller queues with.
pub(crate) fn request_arg(weight: &Arg<'_>, priority: &Arg<'_>) -> PyResult<Request> {
    Ok(Request {
        weight: weight_arg(weight)?,
        priority: priority_arg(priority)?,
    })
}

/// Reads and checks `max_running` and `max_queued` as the limiters' constructors take them.
pub(crate) fn limits(
    max_running: &Bound<'_, PyAny>,
    max_queued: Option<&Bound<'_, PyAny>>,
) -> PyResult<(u32, Option<usize>)> {
    let max_running = extract_limit(max_running, "max_running", MAX_RUNNING_LIMIT)?;
    let max_running = check_max_running(max_running).map_err(|e| limit_error(&e))?;
    let max_queued = match max_queued.filter(|q| !q.is_none()) {
        Some(q) => {
            Some(check_max_queued(extract_limit(q, "max_queued", usize::MAX as u64)?).map_err(|e| limit_error(&e))?)
        }
        None => None,
    };
    Ok((max_running, max_queued))
}

/// Checks that the argument `what` is a `str`.
pub(crate) fn check_str<'a, 'py>(value: &'a Bound<'py, PyAny>, what: &str) -> PyResult<&'a Bound<'py, PyString>> {
    value
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str, got {}", type_name(value))))
}

/// A `str` argument as UTF-8 text (for Redis, whose keys and URLs are sent as UTF-8): a
/// non-`str` is a `TypeError`, a `str` with a lone surrogate a `ValueError` naming the argument.
pub(crate) fn text_arg<'a>(value: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    check_str(value, what)?.to_str().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be encodable as UTF-8, got {} (it holds a lone surrogate)",
            value.repr().map_or_else(|_| "a str".to_owned(), |r| r.to_string())
        ))
    })
}

/// A Redis URL: [`text_arg`], without echoing the value (it may hold a password).
pub(crate) fn url_arg<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    check_str(value, "redis_url")?
        .to_str()
        .map_err(|_| PyValueError::new_err("redis_url must be encodable as UTF-8 (it holds a lone surrogate)"))
}

/// A limiter's `name=`: `None` or a `str` (UTF-8 text: it names spans and metrics).
pub(crate) fn name_arg(name: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    match name.filter(|name| !name.is_none()) {
        None => Ok(None),
        Some(name) if name.is_instance_of::<PyString>() => Ok(Some(text_arg(name, "name")?.to_owned())),
        Some(name) => Err(PyTypeError::new_err(format!(
            "name must be a str or None, got {}",
            type_name(name)
        ))),
    }
}

/// The `source` argument: a `str`, or `default` when left out (`None` is a `TypeError`, as for
/// any other non-`str`).
pub(crate) fn source_arg<'py>(arg: &Arg<'py>, default: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    match arg {
        Arg::Omitted => Ok(default.clone()),
        Arg::Given(source) => check_str(source, "source").cloned(),
    }
}

/// The `source` argument with pydantic-ai's default, `'unnamed'`.
pub(crate) fn source_or_unnamed<'py>(py: Python<'py>, arg: &Arg<'py>) -> PyResult<Bound<'py, PyString>> {
    source_arg(arg, intern!(py, "unnamed"))
}

/// Timeouts of this many seconds or more (2^32 s, about 136 years) mean no time limit, as `None`
/// and infinity do: no caller means to wait that long, and no clock can hold such a deadline.
const NO_TIME_LIMIT_SECONDS: f64 = 4_294_967_296.0;

/// Reads a `timeout` argument in seconds: `None`, infinity or a huge number for no time limit,
/// else a non-negative number. A `bool` is not a number here.
pub(crate) fn check_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(timeout) = timeout.filter(|t| !t.is_none()) else {
        return Ok(None);
    };
    let not_a_number = || PyTypeError::new_err(format!("timeout must be a number or None, got {}", type_name(timeout)));
    if timeout.is_instance_of::<PyBool>() {
        return Err(not_a_number());
    }
    let seconds = match timeout.extract::<f64>() {
        Ok(seconds) => seconds,
        // An int beyond any float: its sign decides.
        Err(err) if err.is_instance_of::<PyOverflowError>(timeout.py()) => {
            if timeout.gt(0)? {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            }
        }
        Err(_) => return Err(not_a_number()),
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number, got {timeout}"
        )));
    }
    if seconds >= NO_TIME_LIMIT_SECONDS {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// Reads a `tracer` argument: `None`, or an object with OpenTelemetry's `Tracer.start_span`.
/// Checked when the limiter is made, not at its first wait.
pub(crate) fn tracer_arg(tracer: Option<Py<PyAny>>, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    match tracer {
        Some(tracer) if tracer.is_none(py) => Ok(None),
        Some(tracer) if !tracer.bind(py).hasattr(intern!(py, "start_span"))? => Err(PyTypeError::new_err(format!(
            "tracer must be an OpenTelemetry Tracer or None, got {}",
            type_name(tracer.bind(py))
        ))),
        tracer => Ok(tracer),
    }
}

/// The longest lease: a day. A lease is how long a crashed process's slot stays taken, and the
/// holders renew theirs while they run, so a longer one only keeps lost slots longer.
const MAX_LEASE_SECONDS: f64 = 86_400.0;

/// Reads `lease_seconds`: a finite number of seconds from 0.03 to a day.
pub(crate) fn lease_duration(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let not_a_number = || PyTypeError::new_err(format!("lease_seconds must be a number, got {}", type_name(value)));
    if value.is_instance_of::<PyBool>() {
        return Err(not_a_number());
    }
    let out_of_range = || {
        PyValueError::new_err(format!(
            "lease_seconds must be a finite number between 0.03 and {MAX_LEASE_SECONDS}, got {value}"
        ))
    };
    let seconds: f64 = match value.extract() {
        Ok(seconds) => seconds,
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => return Err(out_of_range()),
        Err(_) => return Err(not_a_number()),
    };
    if !(0.03..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(out_of_range());
    }
    Ok(Duration::from_secs_f64(seconds))
}
