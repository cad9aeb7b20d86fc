//! `ferrolimit.RedisConcurrencyLimiter`: the native class over the core's Redis limiter.
//!
//! Redis I/O runs on one tokio runtime shared by the process. An acquire (or a wait for
//! idleness) is a task there; it reports its events (queued, admitted, failed) to a
//! [`PyRedisOp`], which wakes the Python caller on its own event loop through [`LoopWake`], on
//! asyncio and trio alike, or on its own thread for the blocking API. The short calls
//! (`try_acquire`, counts, resizing) block the calling thread, not the GIL, for one round trip.
//!
//! Why not `pyo3-async-runtimes`' `future_into_py`: it bridges to asyncio only, and ferrolimit
//! supports trio as well; with it, trio would need this bridge anyway. It also has no way to tell
//! a cancellation that lost the race with an admission, which trio's abort needs (`withdraw`).
//! Speed is no reason either way (see `benches/README.md`): measured with the same Redis work
//! behind both, this bridge was 11% faster on an uncontended round trip and 15% slower (it also
//! opens the wait span) with 16 tasks on 4 slots.

use crate::python::args::{
    Arg, check_str, check_timeout, extract_limit, lease_duration, limits, request_arg, source_or_unnamed, tracer_arg,
    weight_arg,
};
use crate::python::context::Context;
use crate::python::errors::{limit_error, redis_error, release_error};
use crate::python::handle::tracer_or_default;
use crate::python::limiter::PyLimiterStats;
use crate::python::ready::ready;
use crate::python::redis_op::PyRedisOp;
use crate::python::redis_process::{ProcessLimiter, build, runtime};
use crate::redis::Inner;
use crate::waiters::Request;
use crate::{LimiterStats, MAX_RUNNING_LIMIT, RedisBuilder, RedisConcurrencyLimiter, ReleaseError, check_max_running};
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

    /// Runs `work` on the Redis runtime, blocking this thread (not the GIL) until it is done.
    fn block_on<T: Send>(
        &self,
        py: Python<'_>,
        work: impl AsyncFnOnce(&Arc<Inner>) -> Result<T, crate::RedisLimiterError> + Send,
    ) -> PyResult<T> {
        let (runtime, inner) = (runtime()?, self.inner()?);
        py.detach(|| runtime.block_on(work(&inner)))
            .map_err(|e| redis_error(&e, self.name.as_deref().unwrap_or("")))
    }

    /// Reads the fleet-wide counts, blocking this thread (not the GIL) for one round trip.
    fn counts(&self, py: Python<'_>) -> PyResult<crate::RedisCounts> {
        self.block_on(py, async |inner| inner.counts().await)
    }

    fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }

    /// Starts an acquire; `driver` (a function of `ferrolimit._redis`) waits for it.
    fn start_acquire(
        slf: &Bound<'_, Self>,
        driver: &'static str,
        source: &Bound<'_, PyString>,
        timeout: Option<Duration>,
        request: Request,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let tracer = this.tracer.as_ref().map(|t| t.clone_ref(py));
        let source = source.to_string_lossy().into_owned();
        let op = PyRedisOp::acquire(runtime()?, &this.inner()?, source, tracer, request, timeout);
        Self::drive(py, driver, op)
    }

    /// Hands `op` to `ferrolimit._redis.<driver>`.
    fn drive(py: Python<'_>, driver: &'static str, op: PyRedisOp) -> PyResult<Py<PyAny>> {
        let module = py.import(intern!(py, "ferrolimit._redis"))?;
        Ok(module.getattr(driver)?.call1((Py::new(py, op)?,))?.unbind())
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
    fn max_running(&self) -> PyResult<usize> {
        Ok(self.limiter()?.max_running())
    }

    #[setter]
    fn set_max_running(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = extract_limit(value, "max_running", MAX_RUNNING_LIMIT)?;
        let value = check_max_running(value).map_err(|e| limit_error(&e))? as usize;
        self.block_on(py, async |inner| inner.resize(value).await)
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
    fn held_count(&self) -> PyResult<u64> {
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

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    fn acquire(
        slf: &Bound<'_, Self>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        Self::start_acquire(slf, "acquire", &source_or_unnamed(slf.py(), &source)?, timeout, request)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    fn acquire_blocking(
        slf: &Bound<'_, Self>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<()> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(slf.py(), &source)?;
        Self::start_acquire(slf, "acquire_blocking", &source, timeout, request).map(drop)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    fn blocking(
        slf: &Bound<'_, Self>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        static BLOCKING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(py, &source)?;
        let args = (
            slf,
            source,
            timeout.map(|t| t.as_secs_f64()),
            request.weight,
            request.priority,
        );
        Ok(BLOCKING
            .import(py, "ferrolimit._redis", "Blocking")?
            .call1(args)?
            .unbind())
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    fn try_acquire(&self, py: Python<'_>, weight: Arg<'_>) -> PyResult<bool> {
        let weight = weight_arg(&weight)?;
        let admission = self.block_on(py, async |inner| inner.try_slot(weight).await)?;
        let Some(admission) = admission else { return Ok(false) };
        self.inner()?.push_pooled(admission.slot, admission.weight);
        Ok(true)
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    fn release(&self, py: Python<'_>, weight: Arg<'_>) -> PyResult<()> {
        let inner = self.inner()?;
        if !inner.release_pooled(weight_arg(&weight)?) {
            return Err(release_error(ReleaseError));
        }
        // Reported here, with the slots already given back, so that a warning turned into an
        // error cannot cost a slot.
        if let Some(other) = inner.unreported_max_running() {
            let message = format!(
                "RedisConcurrencyLimiter(key={}): the fleet's max_running for this key is {other} in \
                 Redis, stored by another process; this one was built with {} and follows the stored \
                 value. Processes sharing a key should agree on max_running (or set it for all with \
                 `limiter.max_running = n`).",
                PyString::new(py, &self.key).repr()?,
                self.max_running
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
        }
        Ok(())
    }

    fn stats(&self, py: Python<'_>) -> PyResult<PyLimiterStats> {
        let counts = self.counts(py)?;
        let totals = self.inner()?.totals();
        Ok(PyLimiterStats(LimiterStats {
            running: counts.running,
            waiting: counts.waiting,
            available: counts.available,
            max_running: counts.max_running,
            max_queued: self.max_queued,
            acquired_total: totals.acquired,
            rejected_total: totals.rejected,
            cancelled_total: totals.cancelled,
        }))
    }

    fn close(&self) -> PyResult<()> {
        self.inner()?.close();
        Ok(())
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.inner()?.is_closed())
    }

    #[pyo3(signature = (*, timeout = None))]
    fn wait_idle(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let op = PyRedisOp::wait_idle(runtime()?, &self.inner()?, check_timeout(timeout)?);
        Self::drive(py, "wait_idle", op)
    }

    #[pyo3(signature = (source = Arg::Omitted, *, weight = Arg::Omitted, priority = Arg::Omitted))]
    fn __call__(slf: &Bound<'_, Self>, source: Arg<'_>, weight: Arg<'_>, priority: Arg<'_>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        Ok(Context::generic(py, slf.clone().into_any().unbind(), &source, request)?.into_any())
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::start_acquire(slf, "acquire", intern!(slf.py(), "unnamed"), None, Request::ONE)
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.release(py, Arg::Omitted)?;
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
            self.max_running()?,
            self.max_queued.map_or_else(|| "None".to_owned(), |q| q.to_string()),
            self.held_count()?,
        ))
    }
}
