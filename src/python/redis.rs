//! `ferrolimit.RedisConcurrencyLimiter`: the native class over the core's Redis limiter.
//!
//! Redis I/O runs on one tokio runtime shared by the process. An acquire is a task there; it
//! reports its events (queued, admitted, failed) to a [`PyRedisAcquire`], which wakes the Python
//! caller on its own event loop through [`LoopWake`], on asyncio and trio alike.
//!
//! Why not `pyo3-async-runtimes`' `future_into_py`: it bridges to asyncio only, and ferrolimit
//! supports trio as well; with it, trio would need this bridge anyway. It also has no way to tell
//! a cancellation that lost the race with an admission, which trio's abort needs (`withdraw`).
//! Speed is no reason either way (see `benches/README.md`): measured with the same Redis work
//! behind both, this bridge was 11% faster on an uncontended round trip and 15% slower (it also
//! opens the wait span) with 16 tasks on 4 slots.

use crate::python::args::{Arg, check_str, lease_duration, limits, source_or_unnamed, tracer_arg};
use crate::python::context::Context;
use crate::python::errors::{redis_error, release_error};
use crate::python::handle::tracer_or_default;
use crate::python::ready::ready;
use crate::python::redis_acquire::PyRedisAcquire;
use crate::python::redis_process::{ProcessLimiter, build, runtime};
use crate::redis::Inner;
use crate::{RedisBuilder, RedisConcurrencyLimiter, ReleaseError};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::sync::Arc;
use std::time::Duration;

/// The Redis-backed limiter (documented in `_ferrolimit.pyi`).
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "RedisConcurrencyLimiter")]
pub(crate) struct PyRedisConcurrencyLimiter {
    /// The settings, without a runtime: `limiter()` builds from them in a forked child.
    builder: RedisBuilder,
    current: Mutex<ProcessLimiter>,
    key: String,
    name: Option<String>,
    max_running: usize,
    max_queued: Option<usize>,
    lease_seconds: f64,
    fail_open: bool,
    tracer: Option<Py<PyAny>>,
}

impl PyRedisConcurrencyLimiter {
    /// This process's core limiter (built anew in a forked child).
    fn limiter(&self) -> PyResult<Arc<RedisConcurrencyLimiter>> {
        let pid = std::process::id();
        let mut current = self.current.lock();
        if current.pid != pid {
            let fresh = build(&self.builder)?;
            std::mem::forget(current.limiter.replace(fresh));
            current.pid = pid;
        }
        current
            .limiter
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: the Redis limiter was not built"))
    }

    fn inner(&self) -> PyResult<Arc<Inner>> {
        Ok(Arc::clone(self.limiter()?.inner()))
    }

    /// Reads the fleet-wide counts, blocking this thread (not the GIL) for one round trip.
    fn counts(&self, py: Python<'_>) -> PyResult<crate::RedisCounts> {
        let (runtime, limiter) = (runtime()?, self.limiter()?);
        py.detach(|| runtime.block_on(limiter.counts()))
            .map_err(|e| redis_error(&e, self.name.as_deref().unwrap_or("")))
    }

    fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }

    /// Starts an acquire and returns the coroutine that waits for it.
    fn start_acquire(slf: &Bound<'_, Self>, source: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        static ACQUIRE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        let this = slf.get();
        let tracer = this.tracer.as_ref().map(|t| t.clone_ref(py));
        let op = Py::new(
            py,
            PyRedisAcquire::start(
                runtime()?,
                &this.inner()?,
                source.to_string_lossy().into_owned(),
                tracer,
            ),
        )?;
        Ok(ACQUIRE
            .import(py, "ferrolimit._redis", "acquire")?
            .call1((op,))?
            .unbind())
    }
}

#[pymethods]
impl PyRedisConcurrencyLimiter {
    #[new]
    #[pyo3(
        signature = (redis_url, key, max_running, *, max_queued = None, lease_seconds = None, name = None, tracer = None, fail_open = false),
        text_signature = "(redis_url, key, max_running, *, max_queued=None, lease_seconds=30.0, name=None, tracer=None, fail_open=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        redis_url: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        lease_seconds: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        tracer: Option<Py<PyAny>>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let redis_url = check_str(redis_url, "redis_url")?.to_str()?.to_owned();
        let key = check_str(key, "key")?.to_str()?.to_owned();
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let tracer = tracer_arg(tracer, py)?;
        let lease = match lease_seconds {
            Some(seconds) => lease_duration(seconds)?,
            None => Duration::from_secs(30),
        };
        let mut builder = RedisConcurrencyLimiter::builder(redis_url, key.clone(), max_running as usize)
            .lease(lease)
            .fail_open(fail_open);
        if let Some(max_queued) = max_queued {
            builder = builder.max_queued(max_queued);
        }
        if let Some(name) = &name {
            builder = builder.name(name.clone());
        }
        let limiter = build(&builder)?;
        Ok(Self {
            builder,
            current: Mutex::new(ProcessLimiter {
                pid: std::process::id(),
                limiter: Some(limiter),
            }),
            key,
            name,
            max_running: max_running as usize,
            max_queued,
            lease_seconds: lease.as_secs_f64(),
            fail_open,
            tracer,
        })
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    #[getter]
    const fn lease_seconds(&self) -> f64 {
        self.lease_seconds
    }

    #[getter]
    const fn fail_open(&self) -> bool {
        self.fail_open
    }

    #[getter]
    const fn max_running(&self) -> usize {
        self.max_running
    }

    #[getter]
    const fn _max_queued(&self) -> Option<usize> {
        self.max_queued
    }

    #[getter]
    fn running_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.running)
    }

    #[getter]
    fn waiting_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.waiting)
    }

    #[getter]
    fn available_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.available)
    }

    #[getter]
    fn held_count(&self) -> PyResult<usize> {
        Ok(self.inner()?.pooled_count())
    }

    #[getter]
    fn lost_count(&self) -> PyResult<u64> {
        Ok(self.limiter()?.lost_total())
    }

    #[getter]
    fn other_max_running(&self) -> PyResult<Option<usize>> {
        Ok(self.limiter()?.other_max_running())
    }

    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.tracer(py)
    }

    #[pyo3(signature = (source = Arg::Omitted), text_signature = "($self, source='unnamed')")]
    fn acquire(slf: &Bound<'_, Self>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        Self::start_acquire(slf, &source_or_unnamed(slf.py(), &source)?)
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner()?;
        if !inner.release_pooled() {
            return Err(release_error(ReleaseError));
        }
        // Reported here, with the slot already given back, so that a warning turned into an
        // error cannot cost a slot.
        if let Some(other) = inner.unreported_max_running() {
            let message = format!(
                "RedisConcurrencyLimiter(key={}): another process used max_running={other} for this key \
                 within the last lease; this one uses {}. Processes sharing a key must agree on \
                 max_running: each admits up to its own.",
                PyString::new(py, &self.key).repr()?,
                self.max_running
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
        }
        Ok(())
    }

    #[pyo3(signature = (source = Arg::Omitted))]
    fn __call__(slf: &Bound<'_, Self>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Ok(Context::generic(py, slf.clone().into_any().unbind(), &source_or_unnamed(py, &source)?)?.into_any())
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::start_acquire(slf, intern!(slf.py(), "unnamed"))
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.release(py)?;
        ready(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = match &self.name {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "RedisConcurrencyLimiter(key={}, max_running={}, max_queued={}, name={name}, held={})",
            PyString::new(py, &self.key).repr()?,
            self.max_running,
            self.max_queued.map_or_else(|| "None".to_owned(), |q| q.to_string()),
            self.held_count()?,
        ))
    }
}
