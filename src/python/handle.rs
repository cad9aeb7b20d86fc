//! What a native limiter shares with its contexts and waiters ([`Handle`]): the core limiter,
//! its tracer and metrics and its parent's handle, with the level-by-level steps of an entry
//! that need no event loop (the lock-free first step, the climb to the parents, the release).

use crate::ConcurrencyLimiter;
use crate::python::errors::{acquire_error, release_error};
use crate::queue::Enqueued;
use crate::telemetry::display_name;
use crate::waiters::WaiterId;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyString};
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
    /// A handle for `core`; `parent` must be the handle of `core`'s parent.
    pub(crate) const fn new(
        core: ConcurrencyLimiter,
        tracer: Option<Py<PyAny>>,
        metrics: Option<Py<PyAny>>,
        parent: Option<Arc<Self>>,
    ) -> Self {
        Self {
            core,
            tracer,
            metrics,
            parent,
        }
    }

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
