//! `ferrolimit.ConcurrencyLimiter`: the native class, a thin wrapper over the core limiter.

use crate::python::acquire::PyAcquire;
use crate::python::args::{Arg, check_timeout, extract_limit, limits, source_or_unnamed, tracer_arg};
use crate::python::asyncio_wait::{PyAsyncioWait, running_loop};
use crate::python::awaitable::PyWaiter;
use crate::python::blocking::{PyBlockingContext, acquire_blocking};
use crate::python::context::Context;
use crate::python::errors::{acquire_error, limit_error, release_error};
use crate::python::ready::ready;
use crate::queue::Enqueued;
use crate::telemetry::display_name;
use crate::waiters::WaiterId;
use crate::{ConcurrencyLimiter, LimiterStats, MAX_RUNNING_LIMIT, check_max_running};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyType};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

/// How far the lock-free first step of an entry got.
pub(crate) enum Start {
    /// Every level's slot is held: the caller is in.
    Held,
    /// The slots below this ancestor are held; it has none free.
    Climb(Arc<Handle>),
    /// This limiter has no free slot: the caller queues.
    Queue,
}

/// What a native limiter shares with its contexts and waiters: the core, the tracer, the
/// metric instruments and the parent's handle.
pub(crate) struct Handle {
    pub(crate) core: ConcurrencyLimiter,
    tracer: Option<Py<PyAny>>,
    /// `ferrolimit._metrics.LimiterMetrics` when a meter was given.
    metrics: Option<Py<PyAny>>,
    /// The handle of `core`'s parent: its own tracer and metrics serve its level of a wait.
    pub(crate) parent: Option<Arc<Self>>,
}

impl Handle {
    /// Queues a caller on the slow path: `None` if a slot was free after all, else its place
    /// and the queue depth. A rejection is counted in the metrics and raised.
    pub(crate) fn enqueue(&self, py: Python<'_>, waker: &Waker, source: &str) -> PyResult<Option<(WaiterId, usize)>> {
        match self.core.semaphore().enqueue(waker) {
            Ok(Enqueued::Acquired) => Ok(None),
            Ok(Enqueued::Queued { id, waiting }) => Ok(Some((id, waiting))),
            Err(err) => {
                self.record(py, intern!(py, "rejected"), ());
                Err(acquire_error(&err, display_name(self.core.name(), source)))
            }
        }
    }

    /// Records the wait of a caller that got its slot after waiting since `since`.
    pub(crate) fn record_wait(&self, py: Python<'_>, since: Instant) {
        self.record(py, intern!(py, "waited"), (since.elapsed().as_secs_f64(),));
    }

    /// Calls a recording method of the metrics, if any. A failing metrics backend must not fail
    /// an acquire: its error is reported as unraisable instead.
    fn record<'py>(&self, py: Python<'py>, method: &Bound<'py, PyString>, args: impl pyo3::call::PyCallArgs<'py>) {
        if let Some(metrics) = &self.metrics
            && let Err(err) = metrics.call_method1(py, method, args)
        {
            err.write_unraisable(py, Some(metrics.bind(py)));
        }
    }

    /// Takes a free slot and returns the finished awaitable, or returns the waiting awaitable.
    pub(crate) fn enter(self: &Arc<Self>, py: Python<'_>, source: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        match self.start() {
            Start::Held => Ok(ready(py)),
            start => self.wait(py, start, source, None),
        }
    }

    /// The first step of an entry, lock-free and without Python: takes this level's slot and
    /// the ancestors' free ones.
    pub(crate) fn start(&self) -> Start {
        if !self.core.semaphore().try_acquire() {
            return Start::Queue;
        }
        // This level's slot is held: take the ancestors' free slots, or wait for the first
        // ancestor that has none, holding what was taken.
        match self.climb() {
            None => Start::Held,
            Some(level) => Start::Climb(level),
        }
    }

    /// The rest of an entry that [`start`](Self::start) could not finish: the waiting awaitable.
    pub(crate) fn wait(
        self: &Arc<Self>,
        py: Python<'_>,
        start: Start,
        source: &Bound<'_, PyString>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        static WAIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let waiter = match start {
            Start::Held => return Ok(ready(py)),
            Start::Climb(level) => PyWaiter::climbing(Arc::clone(self), level, source.to_string_lossy().into_owned()),
            Start::Queue => PyWaiter::new(Arc::clone(self), source.to_string_lossy().into_owned()),
        };
        // On asyncio without a time limit the wait needs no Python frame; trio, and a wait with a
        // time limit, go through `ferrolimit._wait.wait`.
        if timeout.is_none()
            && let Some(event_loop) = running_loop(py)?
        {
            return Ok(Py::new(py, PyAsyncioWait::new(waiter, event_loop))?.into_any());
        }
        Ok(WAIT
            .import(py, "ferrolimit._wait", "wait")?
            .call1((waiter, timeout))?
            .unbind())
    }

    /// From holding this level's slot, takes the free slots of the ancestors in turn. Returns
    /// the first ancestor with none free (the slots below it stay held); `None` when every
    /// level is held, which is then recorded.
    pub(crate) fn climb(&self) -> Option<Arc<Self>> {
        self.climb_from(self)
    }

    /// [`climb`](Self::climb) for a caller that asked for `self` and holds the slots of every
    /// level up to and including `held`.
    pub(crate) fn climb_from(&self, held: &Self) -> Option<Arc<Self>> {
        let mut level = held;
        while let Some(parent) = &level.parent {
            if !parent.core.semaphore().try_acquire() {
                return Some(Arc::clone(parent));
            }
            level = parent;
        }
        self.core.acquired_raw();
        None
    }

    /// Gives back the slots a caller that asked for `self` holds below `level` (an ancestor of
    /// `self`, or `self`: then nothing), after failing or giving up at `level`.
    pub(crate) fn release_below(&self, level: &Self) {
        let mut held = self;
        while !std::ptr::eq(held, level) {
            let released = held.core.semaphore().release();
            debug_assert!(released.is_ok(), "a held slot's release found no holder");
            let Some(parent) = &held.parent else { break };
            held = parent;
        }
    }

    /// Takes a slot of this limiter and its ancestors if all are free; never waits.
    pub(crate) fn try_acquire(&self) -> bool {
        self.core.try_acquire_raw()
    }

    /// Releases a slot of this limiter and of its ancestors.
    pub(crate) fn release(&self) -> PyResult<()> {
        self.core.release_raw().map_err(release_error)
    }

    /// The configured tracer, else the global `ferrolimit` tracer.
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }

    /// The tracer, or `None` when a span would certainly be dropped: no tracer was configured and
    /// no global tracer provider is set, so the default tracer is OpenTelemetry's no-op proxy.
    /// Skipping such a span changes nothing anyone can observe and keeps it off the wait path.
    pub(crate) fn recording_tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        static TRACE_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
        if self.tracer.is_none() {
            let module = TRACE_MODULE.get_or_try_init(py, || py.import("opentelemetry.trace").map(Bound::unbind))?;
            // A private attribute of the OpenTelemetry API; should it ever go, spans are kept.
            if module
                .bind(py)
                .getattr(intern!(py, "_TRACER_PROVIDER"))
                .is_ok_and(|p| p.is_none())
            {
                return Ok(None);
            }
        }
        self.tracer(py).map(Some)
    }
}

/// `tracer` if one was configured, else the global `ferrolimit` tracer. That one is fetched once:
/// the OpenTelemetry API hands out a proxy that follows whatever provider is set later.
pub(crate) fn tracer_or_default<'py>(py: Python<'py>, tracer: Option<&Py<PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    static DEFAULT_TRACER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if let Some(tracer) = tracer {
        return Ok(tracer.bind(py).clone());
    }
    let tracer = DEFAULT_TRACER.get_or_try_init(py, || {
        let get_tracer = py.import("opentelemetry.trace")?.getattr("get_tracer")?;
        get_tracer.call1(("ferrolimit",)).map(Bound::unbind)
    })?;
    Ok(tracer.bind(py).clone())
}

/// The Rust-backed limiter (documented in `_ferrolimit.pyi`).
#[pyclass(frozen, subclass, module = "ferrolimit._ferrolimit", name = "ConcurrencyLimiter")]
pub(crate) struct PyConcurrencyLimiter {
    pub(crate) handle: Arc<Handle>,
    /// The parent limiter's Python object, for the `parent` property.
    parent: Option<Py<PyConcurrencyLimiter>>,
    /// The context manager for the first source this limiter was entered with, reused whenever
    /// callers name that source again (most limiters only ever see one): contexts hold no
    /// per-entry state, and reuse keeps an allocation and any lock off the fast path.
    context: PyOnceLock<Context>,
}

/// Checks limits as `ConcurrencyLimiter()` does, raising the same errors; for `ConcurrencyLimit`.
#[pyfunction]
#[pyo3(signature = (max_running, max_queued = None))]
pub(crate) fn check_limits(max_running: &Bound<'_, PyAny>, max_queued: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    limits(max_running, max_queued).map(drop)
}

impl PyConcurrencyLimiter {
    /// The context manager for `source`: the cached one when it is for the same source.
    pub(crate) fn context(&self, py: Python<'_>, source: &Bound<'_, PyString>) -> PyResult<Context> {
        let new = || Context::native(py, Arc::clone(&self.handle), source);
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
        let metrics = match meter.filter(|m| !m.is_none()) {
            Some(meter) => {
                static METRICS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let counts = PyCounts(core.clone());
                let class = METRICS.import(py, "ferrolimit._metrics", "LimiterMetrics")?;
                Some(class.call1((meter, core.name(), counts))?.unbind())
            }
            None => None,
        };
        let handle = Arc::new(Handle {
            core,
            tracer,
            metrics,
            parent: parent.map(|p| Arc::clone(&p.get().handle)),
        });
        Ok(Self {
            handle,
            parent: parent.map(|p| p.clone().unbind()),
            context: PyOnceLock::new(),
        })
    }
}

/// The `parent` argument: `None`, or a ferrolimit limiter (a subclass too: its slots are taken
/// natively, whatever its methods do).
fn parent_arg<'a, 'py>(
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
        name: Option<String>,
        tracer: Option<Py<PyAny>>,
        meter: Option<&Bound<'_, PyAny>>,
        parent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let parent = parent_arg(parent)?;
        let tracer = tracer_arg(tracer, py)?;
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
        let core = builder.build().map_err(|e| limit_error(&e))?;
        Self::wrap(py, core, tracer, meter, parent)
    }

    #[classmethod]
    #[pyo3(signature = (limit, *, name = None, tracer = None, meter = None))]
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
    fn name(&self) -> Option<&str> {
        self.core().name()
    }

    #[getter]
    fn parent(&self, py: Python<'_>) -> Option<Py<Self>> {
        self.parent.as_ref().map(|p| p.clone_ref(py))
    }

    #[getter]
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
    fn running_count(&self) -> usize {
        self.core().running_count()
    }

    #[getter]
    fn available_count(&self) -> usize {
        self.core().available_count()
    }

    #[getter]
    fn waiting_count(&self) -> usize {
        self.core().waiting_count()
    }

    #[getter]
    fn _max_queued(&self) -> Option<usize> {
        self.core().max_queued()
    }

    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.handle.tracer(py)
    }

    #[pyo3(signature = (source = Arg::Omitted, *, timeout = None), text_signature = "($self, source='unnamed', *, timeout=None)")]
    fn acquire(&self, py: Python<'_>, source: Arg<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<PyAcquire> {
        let timeout = check_timeout(timeout)?.map(|t| t.as_secs_f64());
        Ok(PyAcquire::new(
            Arc::clone(&self.handle),
            source_or_unnamed(py, &source)?,
            timeout,
        ))
    }

    #[pyo3(signature = (source = Arg::Omitted, *, timeout = None), text_signature = "($self, source='unnamed', *, timeout=None)")]
    fn acquire_blocking(&self, py: Python<'_>, source: Arg<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let timeout = check_timeout(timeout)?;
        let source = source_or_unnamed(py, &source)?;
        acquire_blocking(py, &self.handle, &source.to_string_lossy(), timeout)
    }

    #[pyo3(signature = (source = Arg::Omitted, *, timeout = None), text_signature = "($self, source='unnamed', *, timeout=None)")]
    fn blocking(
        &self,
        py: Python<'_>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBlockingContext> {
        let source = source_or_unnamed(py, &source)?.to_string_lossy().into_owned();
        Ok(PyBlockingContext::new(
            Arc::clone(&self.handle),
            source,
            check_timeout(timeout)?,
        ))
    }

    fn try_acquire(&self) -> bool {
        self.handle.try_acquire()
    }

    fn release(&self) -> PyResult<()> {
        self.handle.release()
    }

    fn stats(&self) -> PyLimiterStats {
        PyLimiterStats(self.core().stats())
    }

    #[pyo3(signature = (source = Arg::Omitted))]
    fn __call__(&self, py: Python<'_>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.context(py, &source_or_unnamed(py, &source)?)?.into_any())
    }

    fn __aenter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.handle.enter(py, intern!(py, "unnamed"))
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.release()?;
        Ok(ready(py))
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

/// Reads a limiter's counts for the metrics' observable gauges: it holds the core only, so the
/// limiter and its metrics do not keep each other alive.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "Counts")]
pub(crate) struct PyCounts(ConcurrencyLimiter);

#[pymethods]
impl PyCounts {
    fn stats(&self) -> PyLimiterStats {
        PyLimiterStats(self.0.stats())
    }
}

/// A consistent snapshot of a limiter's counts (documented in `_ferrolimit.pyi`).
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "LimiterStats")]
pub(crate) struct PyLimiterStats(LimiterStats);

#[pymethods]
impl PyLimiterStats {
    #[getter]
    const fn running(&self) -> usize {
        self.0.running
    }
    #[getter]
    const fn waiting(&self) -> usize {
        self.0.waiting
    }
    #[getter]
    const fn available(&self) -> usize {
        self.0.available
    }
    #[getter]
    const fn max_running(&self) -> usize {
        self.0.max_running
    }
    #[getter]
    const fn max_queued(&self) -> Option<usize> {
        self.0.max_queued
    }
    #[getter]
    const fn acquired_total(&self) -> u64 {
        self.0.acquired_total
    }
    #[getter]
    const fn rejected_total(&self) -> u64 {
        self.0.rejected_total
    }
    #[getter]
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
