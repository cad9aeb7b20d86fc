//! What a native limiter shares with its contexts and waiters ([`Handle`]): the core limiter,
//! its tracer and metrics and its parent's handle, and the lock-free first step of an entry,
//! which either seats the caller or hands its [`Acquisition`] to a wait.

use crate::ConcurrencyLimiter;
use crate::acquisition::{self, Acquisition, Stage};
use crate::error::AcquireError;
use crate::python::errors::{acquire_error, release_error};
use crate::telemetry::display_name;
use crate::waiters::Request;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyString};
use std::sync::Arc;
use std::time::Instant;

/// How far the lock-free first step of an entry got.
pub(crate) enum Start {
    /// Every level's slot is held: the caller is in.
    Held,
    /// Some level has no free slot: the acquisition, holding the slots below it, waits there.
    Wait(Acquisition<ConcurrencyLimiter>),
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

    /// The handle of the limiter `depth` levels up: `self` at 0, its parent's at 1, and so on
    /// (an [`Acquisition`]'s current level).
    pub(crate) fn at(&self, depth: usize) -> &Self {
        let mut level = self;
        for _ in 0..depth {
            match &level.parent {
                Some(parent) => level = parent,
                None => break,
            }
        }
        level
    }

    /// The first step of an entry, lock-free and without Python: takes this level's free slot
    /// and the ancestors' in turn.
    pub(crate) fn start(&self, request: Request) -> Start {
        let mut acquisition = Acquisition::new(&self.core, request);
        match acquisition.advance() {
            Stage::Held => Start::Held,
            _ => Start::Wait(acquisition.into_owned()),
        }
    }

    /// Takes `weight` slots of this limiter and its ancestors if all are free and nobody is
    /// queued; never waits. `False` once closed; a `ValueError` for a weight no level could
    /// ever serve.
    pub(crate) fn try_acquire(&self, py: Python<'_>, weight: u32) -> PyResult<bool> {
        let request = Request { weight, priority: 0 };
        if let Some((depth, err)) = self.core.unservable(request) {
            return Err(self.at(depth).rejected(py, &err, "unnamed"));
        }
        // An acquisition that stops short of `Held` gives back what it took when it drops.
        Ok(Acquisition::new(&self.core, request).advance() == Stage::Held)
    }

    /// Releases `weight` slots of this limiter and of its ancestors.
    pub(crate) fn release(&self, weight: u32) -> PyResult<()> {
        acquisition::release(&self.core, weight).map_err(|err| release_error(err, self.core.name()))
    }

    /// The error of a caller refused at this level; a full queue's is counted in the metrics.
    pub(crate) fn rejected(&self, py: Python<'_>, err: &AcquireError, source: &str) -> PyErr {
        if matches!(err, AcquireError::QueueFull { .. }) {
            self.record(py, intern!(py, "rejected"), ());
        }
        acquire_error(err, display_name(self.core.name(), source))
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

    /// The configured tracer, else the global `ferrolimit` tracer.
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }

    /// The tracer, or `None` when a span would certainly be dropped (see [`recording_tracer`]).
    pub(crate) fn recording_tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        recording_tracer(py, self.tracer.as_ref())
    }
}

/// `tracer` if one was configured, else the global `ferrolimit` tracer; or `None` when a span
/// would certainly be dropped: no tracer was configured and no global tracer provider is set, so
/// the default tracer is OpenTelemetry's no-op proxy. Skipping such a span changes nothing anyone
/// can observe and keeps it off the wait path.
pub(crate) fn recording_tracer<'py>(
    py: Python<'py>,
    tracer: Option<&Py<PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    static TRACE_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    if tracer.is_none() {
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
    tracer_or_default(py, tracer).map(Some)
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
