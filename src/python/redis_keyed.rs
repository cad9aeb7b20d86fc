//! `ferrolimit.RedisKeyedConcurrencyLimiter`: the native class over the core's keyed Redis
//! limiter. Each method finds the key's limiter object in the core's map and runs the same
//! operation as `RedisConcurrencyLimiter` on it (`redis.rs`), then gives the reference back so
//! that an unused key's state is removed.

use crate::RedisKeyedConcurrencyLimiter;
use crate::python::args::{Arg, check_timeout, request_arg, source_or_unnamed, text_arg, weight_arg};
use crate::python::context::Context;
use crate::python::docstrings::docstring;
use crate::python::limiter::PyLimiterStats;
use crate::python::redis::{Settings, blocking, max_running_arg, wait_idle};
use crate::python::redis_process::ProcessLimiter;
use crate::redis::Inner;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::sync::Arc;

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "RedisKeyedConcurrencyLimiter")]
#[doc = docstring!(RedisKeyedConcurrencyLimiter)]
pub(crate) struct PyRedisKeyedConcurrencyLimiter {
    settings: Settings,
    current: ProcessLimiter<RedisKeyedConcurrencyLimiter>,
}

impl PyRedisKeyedConcurrencyLimiter {
    /// This process's core limiter (built anew in a forked child).
    fn limiter(&self) -> PyResult<Arc<RedisKeyedConcurrencyLimiter>> {
        self.current.get(|| {
            let builder = self.settings.builder()?;
            builder.build_keyed().map_err(|e| self.settings.error(&e))
        })
    }

    /// Runs `f` on the state of `key` (a `str`), made if it is not in use, then gives it back.
    fn with_key<T>(&self, key: &Bound<'_, PyAny>, f: impl FnOnce(&Arc<Inner>) -> PyResult<T>) -> PyResult<T> {
        let key = text_arg(key, "key")?;
        let limiter = self.limiter()?;
        let state = limiter.state(key);
        let result = f(&state);
        limiter.done(key, state);
        result
    }
}

#[pymethods]
impl PyRedisKeyedConcurrencyLimiter {
    #[new]
    #[pyo3(
        signature = (redis_url, key_prefix, max_running, *, max_queued = None, lease_seconds = None, name = None, tracer = None, fail_open = false),
        text_signature = "(redis_url, key_prefix, max_running, *, max_queued=None, lease_seconds=30.0, name=None, tracer=None, fail_open=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        redis_url: &Bound<'_, PyAny>,
        key_prefix: &Bound<'_, PyAny>,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        lease_seconds: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        tracer: Option<Py<PyAny>>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let settings = Settings::new(
            py,
            "RedisKeyedConcurrencyLimiter",
            redis_url,
            key_prefix,
            "key_prefix",
            max_running,
            max_queued,
            lease_seconds,
            name,
            tracer,
            fail_open,
        )?;
        let limiter = settings.builder()?.build_keyed().map_err(|e| settings.error(&e))?;
        Ok(Self {
            settings,
            current: ProcessLimiter::new(limiter),
        })
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.name)]
    fn name(&self) -> Option<&str> {
        self.settings.name.as_deref()
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.key_prefix)]
    fn key_prefix(&self) -> &str {
        &self.settings.key
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.lease_seconds)]
    const fn lease_seconds(&self) -> f64 {
        self.settings.lease_seconds
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.fail_open)]
    const fn fail_open(&self) -> bool {
        self.settings.fail_open
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.max_running)]
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
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.max_queued)]
    const fn max_queued(&self) -> Option<usize> {
        self.settings.max_queued
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.limiter()?.len())
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.stats)]
    fn stats(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PyLimiterStats> {
        let key = text_arg(key, "key")?;
        let limiter = self.limiter()?;
        let counts = self.settings.block_on(py, limiter.counts(key))?;
        Ok(self.settings.stats_of(&counts, &limiter.totals(key)))
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.running_count)]
    fn running_count(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.stats(py, key)?.0.running)
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.waiting_count)]
    fn waiting_count(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.stats(py, key)?.0.waiting)
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.available_count)]
    fn available_count(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.stats(py, key)?.0.available)
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.held_count)]
    fn held_count(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.with_key(key, |state| Ok(state.pooled_count()))
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter._get_tracer)]
    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.settings.tracer(py)
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.acquire)]
    fn acquire(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(py, &source)?;
        self.with_key(key, |state| {
            self.settings
                .start_acquire(py, state, "acquire", &source, timeout, request)
        })
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.acquire_blocking)]
    fn acquire_blocking(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<()> {
        let (timeout, request) = (check_timeout(timeout)?, request_arg(&weight, &priority)?);
        let source = source_or_unnamed(py, &source)?;
        // The state is kept in use by the operation (and then by its slots) while it waits.
        let op = self.with_key(key, |state| {
            self.settings
                .start_acquire(py, state, "acquire_blocking", &source, timeout, request)
        });
        op.map(drop)
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.blocking)]
    fn blocking(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        text_arg(key, "key")?;
        let request = request_arg(&weight, &priority)?;
        blocking(slf.py(), slf.as_any(), Some(key), &source, timeout, request)
    }

    #[pyo3(signature = (key, *, weight = Arg::Omitted), text_signature = "($self, key, *, weight=1)")]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.try_acquire)]
    fn try_acquire(&self, py: Python<'_>, key: &Bound<'_, PyAny>, weight: Arg<'_>) -> PyResult<bool> {
        let weight = weight_arg(&weight)?;
        self.with_key(key, |state| self.settings.try_acquire(py, state, weight))
    }

    #[pyo3(signature = (key, *, weight = Arg::Omitted), text_signature = "($self, key, *, weight=1)")]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.release)]
    fn release(&self, py: Python<'_>, key: &Bound<'_, PyAny>, weight: Arg<'_>) -> PyResult<()> {
        let weight = weight_arg(&weight)?;
        self.with_key(key, |state| self.settings.release(py, state, weight))
    }

    #[doc = docstring!(RedisKeyedConcurrencyLimiter.close)]
    fn close(&self) -> PyResult<()> {
        self.limiter()?.close();
        Ok(())
    }

    #[getter]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.closed)]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.limiter()?.is_closed())
    }

    #[pyo3(signature = (*, timeout = None))]
    #[doc = docstring!(RedisKeyedConcurrencyLimiter.wait_idle)]
    fn wait_idle(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let limiter = self.limiter()?;
        wait_idle(py, async move { limiter.wait_idle().await }, timeout)
    }

    #[pyo3(signature = (key, source = Arg::Omitted, *, weight = Arg::Omitted, priority = Arg::Omitted))]
    fn __call__(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        // The context calls `acquire(source, ...)` and `release(...)`: of the key, through
        // `ferrolimit._redis.OneKey`.
        static ONE_KEY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        text_arg(key, "key")?;
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        let one_key = ONE_KEY.import(py, "ferrolimit._redis", "OneKey")?.call1((slf, key))?;
        Ok(Context::generic(py, one_key.unbind(), &source, request)?.into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = match &self.settings.name {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "RedisKeyedConcurrencyLimiter(key_prefix={}, max_running={}, max_queued={}, name={name})",
            PyString::new(py, &self.settings.key).repr()?,
            self.max_running()?,
            self.settings
                .max_queued
                .map_or_else(|| "None".to_owned(), |q| q.to_string()),
        ))
    }
}
