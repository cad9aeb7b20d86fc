//! `ferrolimit.RedisConcurrencyLimiter`: the native class over the core's Redis limiter, and the
//! operations on one limiter object that it shares with `RedisKeyedConcurrencyLimiter`.
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
    Arg, check_timeout, extract_limit, lease_duration, limits, name_arg, request_arg, source_or_unnamed, text_arg,
    tracer_arg, url_arg, weight_arg,
};
use crate::python::context::Context;
use crate::python::docstrings::docstring;
use crate::python::errors::{limit_error, redis_error, release_error};
use crate::python::handle::tracer_or_default;
use crate::python::limiter::PyLimiterStats;
use crate::python::ready::ready;
use crate::python::redis_op::{PyRedisOp, PyRedisStart};
use crate::python::redis_process::{ProcessLimiter, on_this_process, runtime};
use crate::redis::{Inner, Totals};
use crate::telemetry::display_name;
use crate::waiters::Request;
use crate::{
    LimiterStats, MAX_RUNNING_LIMIT, RedisBuilder, RedisConcurrencyLimiter, RedisLimiterError, ReleaseError,
    check_max_running,
};
use pyo3::exceptions::PyRuntimeWarning;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::sync::Arc;
use std::time::Duration;

/// The settings of a Python Redis limiter (plain or keyed), as given to its constructor.
pub(crate) struct Settings {
    /// The Python class, for messages.
    class: &'static str,
    /// Without a runtime: the process's core limiter is built from it (again in a forked child).
    pub(crate) builder: RedisBuilder,
    /// The key (or, keyed, the prefix of the keys).
    pub(crate) key: String,
    pub(crate) name: Option<String>,
    pub(crate) max_queued: Option<usize>,
    pub(crate) lease_seconds: f64,
    pub(crate) fail_open: bool,
    pub(crate) tracer: Option<Py<PyAny>>,
}

impl Settings {
    /// Checks the constructor's arguments (shared by both limiters).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        py: Python<'_>,
        class: &'static str,
        redis_url: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        what_key: &str,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        lease_seconds: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        tracer: Option<Py<PyAny>>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let redis_url = url_arg(redis_url)?.to_owned();
        let key = text_arg(key, what_key)?.to_owned();
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let name = name_arg(name)?;
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
        Ok(Self {
            class,
            builder,
            key,
            name,
            max_queued,
            lease_seconds: lease.as_secs_f64(),
            fail_open,
            tracer,
        })
    }

    /// The builder on this process's runtime and connections.
    pub(crate) fn builder(&self) -> PyResult<RedisBuilder> {
        on_this_process(&self.builder)
    }

    /// An error of this limiter as a Python exception, naming it (or, unnamed, the default
    /// source, as the local limiter's `try_acquire` does).
    pub(crate) fn error(&self, err: &RedisLimiterError) -> PyErr {
        redis_error(err, display_name(self.name.as_deref(), "unnamed"))
    }

    /// Runs `work` on the Redis runtime, blocking this thread (not the GIL) until it is done.
    pub(crate) fn block_on<T: Send>(
        &self,
        py: Python<'_>,
        work: impl Future<Output = Result<T, RedisLimiterError>> + Send,
    ) -> PyResult<T> {
        let runtime = runtime()?;
        py.detach(|| runtime.block_on(work)).map_err(|e| self.error(&e))
    }

    /// Starts an acquire on `inner`; `driver` (a function of `ferrolimit._redis`) waits for it.
    pub(crate) fn start_acquire(
        &self,
        py: Python<'_>,
        inner: &Arc<Inner>,
        driver: &'static str,
        source: &Bound<'_, PyString>,
        timeout: Option<Duration>,
        request: Request,
    ) -> PyResult<Py<PyAny>> {
        let tracer = self.tracer.as_ref().map(|t| t.clone_ref(py));
        let source = source.to_string_lossy().into_owned();
        let start = PyRedisStart::new(inner, source, tracer, request, timeout);
        let module = py.import(intern!(py, "ferrolimit._redis"))?;
        Ok(module.getattr(driver)?.call1((Py::new(py, start)?,))?.unbind())
    }

    /// `try_acquire(weight=)` on `inner`: the slots go to its pool.
    pub(crate) fn try_acquire(&self, py: Python<'_>, inner: &Arc<Inner>, weight: u32) -> PyResult<bool> {
        let Some(admission) = self.block_on(py, inner.try_slot(weight))? else {
            return Ok(false);
        };
        inner.push_pooled(admission.slot, admission.weight);
        Ok(true)
    }

    /// `release(weight=)` on `inner`'s pool.
    pub(crate) fn release(&self, py: Python<'_>, inner: &Arc<Inner>, weight: u32) -> PyResult<()> {
        if !inner.release_pooled(weight) {
            return Err(release_error(ReleaseError, self.name.as_deref()));
        }
        // Reported here, with the slots already given back, so that a warning turned into an
        // error cannot cost a slot.
        if let Some(other) = inner.unreported_max_running() {
            let message = format!(
                "{}(key={}): the fleet's max_running for this key is {other} in Redis, stored by \
                 another process; this one's is {} and it follows the stored value. Processes \
                 sharing a key should agree on max_running (or set it for all with \
                 `limiter.max_running = n`).",
                self.class,
                PyString::new(py, inner.key()).repr()?,
                inner.own_max_running()
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
        }
        Ok(())
    }

    /// `stats()` of `inner`: the fleet's counts and limit, this object's totals.
    pub(crate) fn stats(&self, py: Python<'_>, inner: &Arc<Inner>) -> PyResult<PyLimiterStats> {
        let counts = self.block_on(py, inner.counts())?;
        Ok(self.stats_of(&counts, &inner.totals()))
    }

    /// The stats of one limit from the fleet's `counts` and this process's `totals`.
    pub(crate) const fn stats_of(&self, counts: &crate::RedisCounts, totals: &Totals) -> PyLimiterStats {
        PyLimiterStats(LimiterStats {
            running: counts.running,
            waiting: counts.waiting,
            available: counts.available,
            max_running: counts.max_running,
            max_queued: self.max_queued,
            acquired_total: totals.acquired,
            rejected_total: totals.rejected,
            cancelled_total: totals.cancelled,
        })
    }

    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }
}

/// A `max_running` given to a setter, checked as the local limiter does.
pub(crate) fn max_running_arg(value: &Bound<'_, PyAny>) -> PyResult<usize> {
    let value = extract_limit(value, "max_running", MAX_RUNNING_LIMIT)?;
    Ok(check_max_running(value).map_err(|e| limit_error(&e))? as usize)
}

/// `wait_idle(timeout=)`: the coroutine waiting for `idle`.
pub(crate) fn wait_idle(
    py: Python<'_>,
    idle: impl Future<Output = ()> + Send + 'static,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    drive(
        py,
        "wait_idle",
        PyRedisOp::wait_idle(runtime()?, idle, check_timeout(timeout)?),
    )
}

/// `blocking(source, ...)`: `ferrolimit._redis.Blocking` over `limiter` (and `key`, keyed).
pub(crate) fn blocking(
    py: Python<'_>,
    limiter: &Bound<'_, PyAny>,
    key: Option<&Bound<'_, PyAny>>,
    source: &Arg<'_>,
    timeout: Option<&Bound<'_, PyAny>>,
    request: Request,
) -> PyResult<Py<PyAny>> {
    static BLOCKING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let timeout = check_timeout(timeout)?.map(|t| t.as_secs_f64());
    let source = source_or_unnamed(py, source)?;
    let args = (limiter, key, source, timeout, request.weight, request.priority);
    Ok(BLOCKING
        .import(py, "ferrolimit._redis", "Blocking")?
        .call1(args)?
        .unbind())
}

/// Hands `op` to `ferrolimit._redis.<driver>`.
fn drive(py: Python<'_>, driver: &'static str, op: PyRedisOp) -> PyResult<Py<PyAny>> {
    let module = py.import(intern!(py, "ferrolimit._redis"))?;
    Ok(module.getattr(driver)?.call1((Py::new(py, op)?,))?.unbind())
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "RedisConcurrencyLimiter")]
#[doc = docstring!(RedisConcurrencyLimiter)]
pub(crate) struct PyRedisConcurrencyLimiter {
    settings: Settings,
    current: ProcessLimiter<RedisConcurrencyLimiter>,
}

impl PyRedisConcurrencyLimiter {
    /// This process's core limiter (built anew in a forked child).
    fn limiter(&self) -> PyResult<Arc<RedisConcurrencyLimiter>> {
        self.current.get(|| self.build())
    }

    fn build(&self) -> PyResult<RedisConcurrencyLimiter> {
        self.settings.builder()?.build().map_err(|e| self.settings.error(&e))
    }

    fn inner(&self) -> PyResult<Arc<Inner>> {
        Ok(Arc::clone(self.limiter()?.inner()))
    }

    fn counts(&self, py: Python<'_>) -> PyResult<crate::RedisCounts> {
        let inner = self.inner()?;
        self.settings.block_on(py, inner.counts())
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
        name: Option<&Bound<'_, PyAny>>,
        tracer: Option<Py<PyAny>>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let settings = Settings::new(
            py,
            "RedisConcurrencyLimiter",
            redis_url,
            key,
            "key",
            max_running,
            max_queued,
            lease_seconds,
            name,
            tracer,
            fail_open,
        )?;
        let limiter = settings.builder()?.build().map_err(|e| settings.error(&e))?;
        Ok(Self {
            settings,
            current: ProcessLimiter::new(limiter),
        })
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.name)]
    fn name(&self) -> Option<&str> {
        self.settings.name.as_deref()
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.key)]
    fn key(&self) -> &str {
        &self.settings.key
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.lease_seconds)]
    const fn lease_seconds(&self) -> f64 {
        self.settings.lease_seconds
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.fail_open)]
    const fn fail_open(&self) -> bool {
        self.settings.fail_open
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.max_running)]
    fn max_running(&self) -> PyResult<usize> {
        Ok(self.limiter()?.max_running())
    }

    #[setter]
    fn set_max_running(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = max_running_arg(value)?;
        let limiter = self.limiter()?;
        self.settings.block_on(py, limiter.set_max_running(value))
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.running_count)]
    fn running_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.running)
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.waiting_count)]
    fn waiting_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.waiting)
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.available_count)]
    fn available_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.available)
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.held_count)]
    fn held_count(&self) -> PyResult<u64> {
        Ok(self.inner()?.pooled_count())
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.lost_count)]
    fn lost_count(&self) -> PyResult<u64> {
        Ok(self.limiter()?.lost_total())
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.other_max_running)]
    fn other_max_running(&self) -> PyResult<Option<usize>> {
        Ok(self.limiter()?.other_max_running())
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter._max_queued)]
    const fn _max_queued(&self) -> Option<usize> {
        self.settings.max_queued
    }

    #[doc = docstring!(RedisConcurrencyLimiter._get_tracer)]
    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.settings.tracer(py)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisConcurrencyLimiter.acquire)]
    fn acquire(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(py, &source)?;
        self.settings
            .start_acquire(py, &self.inner()?, "acquire", &source, timeout, request)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisConcurrencyLimiter.acquire_blocking)]
    fn acquire_blocking(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<()> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(py, &source)?;
        self.settings
            .start_acquire(py, &self.inner()?, "acquire_blocking", &source, timeout, request)
            .map(drop)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisConcurrencyLimiter.blocking)]
    fn blocking(
        slf: &Bound<'_, Self>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        let request = request_arg(&weight, &priority)?;
        blocking(slf.py(), slf.as_any(), None, &source, timeout, request)
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    #[doc = docstring!(RedisConcurrencyLimiter.try_acquire)]
    fn try_acquire(&self, py: Python<'_>, weight: Arg<'_>) -> PyResult<bool> {
        self.settings.try_acquire(py, &self.inner()?, weight_arg(&weight)?)
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    #[doc = docstring!(RedisConcurrencyLimiter.release)]
    fn release(&self, py: Python<'_>, weight: Arg<'_>) -> PyResult<()> {
        self.settings.release(py, &self.inner()?, weight_arg(&weight)?)
    }

    #[doc = docstring!(RedisConcurrencyLimiter.stats)]
    fn stats(&self, py: Python<'_>) -> PyResult<PyLimiterStats> {
        self.settings.stats(py, &self.inner()?)
    }

    #[doc = docstring!(RedisConcurrencyLimiter.close)]
    fn close(&self) -> PyResult<()> {
        self.inner()?.close();
        Ok(())
    }

    #[getter]
    #[doc = docstring!(RedisConcurrencyLimiter.closed)]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.inner()?.is_closed())
    }

    #[pyo3(signature = (*, timeout = None))]
    #[doc = docstring!(RedisConcurrencyLimiter.wait_idle)]
    fn wait_idle(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let inner = self.inner()?;
        wait_idle(py, async move { inner.wait_idle().await }, timeout)
    }

    #[pyo3(signature = (source = Arg::Omitted, *, weight = Arg::Omitted, priority = Arg::Omitted))]
    fn __call__(slf: &Bound<'_, Self>, source: Arg<'_>, weight: Arg<'_>, priority: Arg<'_>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        Ok(Context::generic(py, slf.clone().into_any().unbind(), &source, request)?.into_any())
    }

    fn __aenter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let source = intern!(py, "unnamed");
        self.settings
            .start_acquire(py, &self.inner()?, "acquire", source, None, Request::ONE)
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.settings.release(py, &self.inner()?, 1)?;
        ready(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = match &self.settings.name {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "RedisConcurrencyLimiter(key={}, max_running={}, max_queued={}, name={name}, held={})",
            PyString::new(py, &self.settings.key).repr()?,
            self.max_running()?,
            self.settings
                .max_queued
                .map_or_else(|| "None".to_owned(), |q| q.to_string()),
            self.held_count()?,
        ))
    }
}
