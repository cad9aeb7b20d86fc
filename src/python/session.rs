//! `ferrolimit.SessionLimiter`: the native class, a thin wrapper over the core session limiter.

use crate::error::{check_max_parallel_runs, check_max_parallel_sessions};
use crate::python::args::{Arg, check_str, extract_limit};
use crate::python::docstrings::docstring;
use crate::python::errors::{limit_error, session_error};
use crate::{LimitError, MAX_SESSION_LIMIT, SessionLimiter, SessionLimits};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt};

/// The checked limit `arg` gives: `default` if left out, `None` for unlimited.
fn resolve(
    arg: &Arg<'_>,
    what: &str,
    default: usize,
    check: fn(i128) -> Result<usize, LimitError>,
) -> PyResult<Option<usize>> {
    let value = match arg {
        Arg::Omitted => return Ok(Some(default)),
        Arg::Given(value) if value.is_none() => return Ok(None),
        Arg::Given(value) => value,
    };
    if !value.is_instance_of::<PyInt>() || value.is_instance_of::<PyBool>() {
        let type_name = value.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int or None, got {type_name}"
        )));
    }
    let value = extract_limit(value, what, MAX_SESSION_LIMIT)?;
    check(value).map(Some).map_err(|e| limit_error(&e))
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "SessionLimiter")]
#[doc = docstring!(SessionLimiter)]
pub(crate) struct PySessionLimiter {
    inner: SessionLimiter,
}

/// `None` for unlimited, as Python shows it.
fn show(limit: Option<usize>) -> String {
    limit.map_or_else(|| "None".to_owned(), |n| n.to_string())
}

#[pymethods]
impl PySessionLimiter {
    #[new]
    #[pyo3(
        signature = (*, max_parallel_sessions = Arg::Omitted, max_parallel_runs = Arg::Omitted),
        text_signature = "(*, max_parallel_sessions=100, max_parallel_runs=50)"
    )]
    fn new(max_parallel_sessions: Arg<'_>, max_parallel_runs: Arg<'_>) -> PyResult<Self> {
        let max_parallel_sessions = resolve(
            &max_parallel_sessions,
            "max_parallel_sessions",
            SessionLimiter::DEFAULT_MAX_PARALLEL_SESSIONS,
            check_max_parallel_sessions,
        )?;
        let max_parallel_runs = resolve(
            &max_parallel_runs,
            "max_parallel_runs",
            SessionLimiter::DEFAULT_MAX_PARALLEL_RUNS,
            check_max_parallel_runs,
        )?;
        let inner = SessionLimiter::new(max_parallel_sessions, max_parallel_runs).map_err(|e| limit_error(&e))?;
        Ok(Self { inner })
    }

    #[doc = docstring!(SessionLimiter.acquire_session)]
    fn acquire_session(&self, session_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let session_id = check_str(session_id, "session_id")?.to_str()?;
        self.inner
            .acquire_session(session_id)
            .map(drop)
            .map_err(|e| session_error(&e))
    }

    #[doc = docstring!(SessionLimiter.acquire_run)]
    fn acquire_run(&self, session_id: &Bound<'_, PyAny>, run_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let session_id = check_str(session_id, "session_id")?.to_str()?;
        let run_id = check_str(run_id, "run_id")?.to_str()?;
        self.inner
            .acquire_run(session_id, run_id)
            .map(drop)
            .map_err(|e| session_error(&e))
    }

    #[doc = docstring!(SessionLimiter.release_run)]
    fn release_run(&self, run_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.release_run(check_str(run_id, "run_id")?.to_str()?);
        Ok(())
    }

    #[doc = docstring!(SessionLimiter.release_session)]
    fn release_session(&self, session_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .release_session(check_str(session_id, "session_id")?.to_str()?);
        Ok(())
    }

    #[doc = docstring!(SessionLimiter.limits)]
    fn limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let SessionLimits {
            max_parallel_sessions,
            max_parallel_runs,
        } = self.inner.limits();
        let limits = PyDict::new(py);
        limits.set_item("max_parallel_sessions", max_parallel_sessions)?;
        limits.set_item("max_parallel_runs", max_parallel_runs)?;
        Ok(limits)
    }

    #[doc = docstring!(SessionLimiter.status)]
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = self.inner.status();
        let dict = PyDict::new(py);
        dict.set_item("active_sessions", status.active_sessions)?;
        dict.set_item("active_runs", status.active_runs)?;
        dict.set_item("max_parallel_sessions", status.max_parallel_sessions)?;
        dict.set_item("max_parallel_runs", status.max_parallel_runs)?;
        dict.set_item("available_session_slots", status.available_session_slots)?;
        dict.set_item("available_run_slots", status.available_run_slots)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let status = self.inner.status();
        format!(
            "SessionLimiter(max_parallel_sessions={}, max_parallel_runs={}, active_sessions={}, active_runs={})",
            show(status.max_parallel_sessions),
            show(status.max_parallel_runs),
            status.active_sessions,
            status.active_runs,
        )
    }
}
