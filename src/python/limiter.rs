//! `ferrolimit.ConcurrencyLimiter`: the native class, a thin wrapper over the core limiter.

use crate::python::acquire::PyAcquire;
use crate::python::args::{
    Arg, check_timeout, extract_limit, limits, name_arg, request_arg, source_or_unnamed, tracer_arg, weight_arg,
};
use crate::python::blocking::{PyBlockingContext, acquire_blocking};
use crate::python::context::Context;
use crate::python::docstrings::docstring;
use crate::python::errors::limit_error;
use crate::python::handle::Handle;
use crate::python::idle::wait_idle;
use crate::python::ready::ready;
use crate::python::wait::enter;
use crate::waiters::Request;
use crate::{Builder, ConcurrencyLimiter, LimiterStats, MAX_RUNNING_LIMIT, check_max_running};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};
use std::sync::Arc;

#[pyclass(frozen, subclass, module = "ferrolimit._ferrolimit", name = "ConcurrencyLimiter")]
#[doc = docstring!(ConcurrencyLimiter)]
pub(crate) struct PyConcurrencyLimiter {
    pub(crate) handle: Arc<Handle>,
    /// The parent limiter's Python object, for the `parent` property.
    parent: Option<Py<PyConcurrencyLimiter>>,
    /// The context manager for the first source this limiter was entered with, reused whenever
    /// callers name that source again (most limiters only ever see one): contexts hold no
    /// per-entry state, and reuse keeps an allocation and any lock off the fast path.
    context: PyOnceLock<Context>,
}

// Checks limits as `ConcurrencyLimiter()` does, raising the same errors; for `ConcurrencyLimit`.
#[pyfunction]
#[pyo3(name = "_check_limits", signature = (max_running, max_queued = None))]
#[doc = docstring!(_check_limits)]
pub(crate) fn check_limits(max_running: &Bound<'_, PyAny>, max_queued: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    limits(max_running, max_queued).map(drop)
}

impl PyConcurrencyLimiter {
    /// The context manager for `source`: the cached one when it is for the same source.
    pub(crate) fn context(&self, py: Python<'_>, source: &Bound<'_, PyString>) -> PyResult<Context> {
        let new = || Context::native(py, Arc::clone(&self.handle), source, Request::ONE);
        let cached = self.context.get_or_try_init(py, new)?;
        if cached.is_for(source)? {
            Ok(cached.clone_ref(py))
        } else {
            new()
        }
    }

    /// The context manager cached for the first source this limiter was entered with, if any.
    pub(crate) fn cached_context(&self, py: Python<'_>) -> Option<&Context> {
        self.context.get(py)
    }

    fn core(&self) -> &ConcurrencyLimiter {
        &self.handle.core
    }

    /// Wraps a core limiter; `parent` must be the limiter whose core is `core`'s parent.
    pub(crate) fn wrap(
        py: Python<'_>,
        core: ConcurrencyLimiter,
        tracer: Option<Py<PyAny>>,
        meter: Option<&Bound<'_, PyAny>>,
        parent: Option<&Bound<'_, Self>>,
    ) -> PyResult<Self> {
        let metrics = limiter_metrics(py, meter, core.name(), || PyCounts(core.clone()))?;
        let handle = Arc::new(Handle::new(
            core,
            tracer,
            metrics,
            parent.map(|p| Arc::clone(&p.get().handle)),
        ));
        Ok(Self {
            handle,
            parent: parent.map(|p| p.clone().unbind()),
            context: PyOnceLock::new(),
        })
    }
}

/// The metric instruments (`ferrolimit._metrics.LimiterMetrics`) of a limiter named `name` when
/// a meter was given; `counts()` makes the object whose `stats()` the gauges read.
pub(crate) fn limiter_metrics<'py, C: IntoPyObject<'py>>(
    py: Python<'py>,
    meter: Option<&Bound<'py, PyAny>>,
    name: Option<&str>,
    counts: impl FnOnce() -> C,
) -> PyResult<Option<Py<PyAny>>> {
    static METRICS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    match meter.filter(|m| !m.is_none()) {
        Some(meter) => {
            let class = METRICS.import(py, "ferrolimit._metrics", "LimiterMetrics")?;
            Ok(Some(class.call1((meter, name, counts()))?.unbind()))
        }
        None => Ok(None),
    }
}

/// The core builder for the checked arguments of a limiter's constructor (the keyed limiter's
/// too: its template for every key).
pub(crate) fn limiter_builder(
    max_running: u32,
    max_queued: Option<usize>,
    name: Option<String>,
    parent: Option<&Bound<'_, PyConcurrencyLimiter>>,
) -> Builder {
    let mut builder = ConcurrencyLimiter::builder(max_running as usize);
    if let Some(max_queued) = max_queued {
        builder = builder.max_queued(max_queued);
    }
    if let Some(name) = name {
        builder = builder.name(name);
    }
    if let Some(parent) = parent {
        builder = builder.parent(parent.get().core().clone());
    }
    builder
}

/// The `parent` argument: `None`, or a ferrolimit limiter (a subclass too: its slots are taken
/// natively, whatever its methods do).
pub(crate) fn parent_arg<'a, 'py>(
    parent: Option<&'a Bound<'py, PyAny>>,
) -> PyResult<Option<&'a Bound<'py, PyConcurrencyLimiter>>> {
    match parent.filter(|p| !p.is_none()) {
        None => Ok(None),
        Some(parent) => parent.cast::<PyConcurrencyLimiter>().map(Some).map_err(|_| {
            let type_name = parent
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string());
            pyo3::exceptions::PyTypeError::new_err(format!(
                "parent must be a ferrolimit ConcurrencyLimiter or None, got {type_name}"
            ))
        }),
    }
}

#[pymethods]
impl PyConcurrencyLimiter {
    #[new]
    #[pyo3(signature = (max_running, *, max_queued = None, name = None, tracer = None, meter = None, parent = None))]
    fn new(
        py: Python<'_>,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        tracer: Option<Py<PyAny>>,
        meter: Option<&Bound<'_, PyAny>>,
        parent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let parent = parent_arg(parent)?;
        let tracer = tracer_arg(tracer, py)?;
        let core = limiter_builder(max_running, max_queued, name_arg(name)?, parent)
            .build()
            .map_err(|e| limit_error(&e))?;
        Self::wrap(py, core, tracer, meter, parent)
    }

    #[classmethod]
    #[pyo3(signature = (limit, *, name = None, tracer = None, meter = None))]
    #[doc = docstring!(ConcurrencyLimiter.from_limit)]
    fn from_limit<'py>(
        cls: &Bound<'py, PyType>,
        limit: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        tracer: Option<&Bound<'py, PyAny>>,
        meter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item("name", name)?;
        kwargs.set_item("tracer", tracer)?;
        if let Some(meter) = meter {
            kwargs.set_item("meter", meter)?;
        }
        if limit.is_instance_of::<pyo3::types::PyInt>() {
            return cls.call((limit,), Some(&kwargs));
        }
        let (Ok(max_running), Ok(max_queued)) = (
            limit.getattr(intern!(py, "max_running")),
            limit.getattr(intern!(py, "max_queued")),
        ) else {
            let type_name = limit.get_type().name()?;
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "limit must be an int or a ConcurrencyLimit, got {type_name}"
            )));
        };
        kwargs.set_item("max_queued", max_queued)?;
        cls.call((max_running,), Some(&kwargs))
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.name)]
    fn name(&self) -> Option<&str> {
        self.core().name()
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.parent)]
    fn parent(&self, py: Python<'_>) -> Option<Py<Self>> {
        self.parent.as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.max_running)]
    fn max_running(&self) -> usize {
        self.core().max_running()
    }

    #[setter]
    fn set_max_running(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = extract_limit(value, "max_running", MAX_RUNNING_LIMIT)?;
        let value = check_max_running(value).map_err(|e| limit_error(&e))?;
        self.core().set_max_running(value as usize).map_err(|e| limit_error(&e))
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.running_count)]
    fn running_count(&self) -> usize {
        self.core().running_count()
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.available_count)]
    fn available_count(&self) -> usize {
        self.core().available_count()
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.waiting_count)]
    fn waiting_count(&self) -> usize {
        self.core().waiting_count()
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter._max_queued)]
    fn _max_queued(&self) -> Option<usize> {
        self.core().max_queued()
    }

    #[doc = docstring!(ConcurrencyLimiter._get_tracer)]
    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.handle.tracer(py)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(ConcurrencyLimiter.acquire)]
    fn acquire(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<PyAcquire> {
        let timeout = check_timeout(timeout)?.map(|t| t.as_secs_f64());
        let request = request_arg(&weight, &priority)?;
        Ok(PyAcquire::new(
            Arc::clone(&self.handle),
            source_or_unnamed(py, &source)?,
            timeout,
            request,
        ))
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(ConcurrencyLimiter.acquire_blocking)]
    fn acquire_blocking(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<()> {
        let timeout = check_timeout(timeout)?;
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        acquire_blocking(py, &self.handle, &source.to_string_lossy(), timeout, request)
    }

    #[pyo3(
        signature = (source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(ConcurrencyLimiter.blocking)]
    fn blocking(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<PyBlockingContext> {
        let source = source_or_unnamed(py, &source)?.to_string_lossy().into_owned();
        Ok(PyBlockingContext::new(
            Arc::clone(&self.handle),
            source,
            check_timeout(timeout)?,
            request_arg(&weight, &priority)?,
        ))
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    #[doc = docstring!(ConcurrencyLimiter.try_acquire)]
    fn try_acquire(&self, py: Python<'_>, weight: Arg<'_>) -> PyResult<bool> {
        self.handle.try_acquire(py, weight_arg(&weight)?)
    }

    #[pyo3(signature = (*, weight = Arg::Omitted), text_signature = "($self, *, weight=1)")]
    #[doc = docstring!(ConcurrencyLimiter.release)]
    fn release(&self, weight: Arg<'_>) -> PyResult<()> {
        self.handle.release(weight_arg(&weight)?)
    }

    #[doc = docstring!(ConcurrencyLimiter.close)]
    fn close(&self) {
        self.core().close();
    }

    #[getter]
    #[doc = docstring!(ConcurrencyLimiter.closed)]
    fn closed(&self) -> bool {
        self.core().is_closed()
    }

    #[pyo3(signature = (*, timeout = None))]
    #[doc = docstring!(ConcurrencyLimiter.wait_idle)]
    fn wait_idle(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        wait_idle(py, self.core(), check_timeout(timeout)?)
    }

    #[doc = docstring!(ConcurrencyLimiter.stats)]
    fn stats(&self) -> PyLimiterStats {
        PyLimiterStats(self.core().stats())
    }

    #[pyo3(signature = (source = Arg::Omitted, *, weight = Arg::Omitted, priority = Arg::Omitted))]
    fn __call__(&self, py: Python<'_>, source: Arg<'_>, weight: Arg<'_>, priority: Arg<'_>) -> PyResult<Py<PyAny>> {
        let source = source_or_unnamed(py, &source)?;
        let request = request_arg(&weight, &priority)?;
        let context = if request == Request::ONE {
            self.context(py, &source)?
        } else {
            Context::native(py, Arc::clone(&self.handle), &source, request)?
        };
        Ok(context.into_any())
    }

    fn __aenter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        enter(&self.handle, py, intern!(py, "unnamed"))
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.handle.release(1)?;
        ready(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let stats = self.core().stats();
        let name = match self.core().name() {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "ConcurrencyLimiter(max_running={}, max_queued={}, name={name}, running={}, waiting={})",
            stats.max_running,
            stats.max_queued.map_or_else(|| "None".to_owned(), |q| q.to_string()),
            stats.running,
            stats.waiting,
        ))
    }
}

// Reads a limiter's counts for the metrics' observable gauges: it holds the core only, so the
// limiter and its metrics do not keep each other alive.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_Counts")]
#[doc = docstring!(_Counts)]
pub(crate) struct PyCounts(ConcurrencyLimiter);

#[pymethods]
impl PyCounts {
    #[doc = docstring!(_Counts.stats)]
    fn stats(&self) -> PyLimiterStats {
        PyLimiterStats(self.0.stats())
    }
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "LimiterStats")]
#[doc = docstring!(LimiterStats)]
pub(crate) struct PyLimiterStats(pub(crate) LimiterStats);

#[pymethods]
impl PyLimiterStats {
    #[getter]
    #[doc = docstring!(LimiterStats.running)]
    const fn running(&self) -> usize {
        self.0.running
    }
    #[getter]
    #[doc = docstring!(LimiterStats.waiting)]
    const fn waiting(&self) -> usize {
        self.0.waiting
    }
    #[getter]
    #[doc = docstring!(LimiterStats.available)]
    const fn available(&self) -> usize {
        self.0.available
    }
    #[getter]
    #[doc = docstring!(LimiterStats.max_running)]
    const fn max_running(&self) -> usize {
        self.0.max_running
    }
    #[getter]
    #[doc = docstring!(LimiterStats.max_queued)]
    const fn max_queued(&self) -> Option<usize> {
        self.0.max_queued
    }
    #[getter]
    #[doc = docstring!(LimiterStats.acquired_total)]
    const fn acquired_total(&self) -> u64 {
        self.0.acquired_total
    }
    #[getter]
    #[doc = docstring!(LimiterStats.rejected_total)]
    const fn rejected_total(&self) -> u64 {
        self.0.rejected_total
    }
    #[getter]
    #[doc = docstring!(LimiterStats.cancelled_total)]
    const fn cancelled_total(&self) -> u64 {
        self.0.cancelled_total
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        format!(
            "LimiterStats(running={}, waiting={}, available={}, max_running={}, max_queued={}, acquired_total={}, \
             rejected_total={}, cancelled_total={})",
            s.running,
            s.waiting,
            s.available,
            s.max_running,
            s.max_queued.map_or_else(|| "None".to_owned(), |q| q.to_string()),
            s.acquired_total,
            s.rejected_total,
            s.cancelled_total,
        )
    }
}
