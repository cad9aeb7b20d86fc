//! `ferrolimit.ConcurrencyGovernor` and its `ConcurrencyPermit`: thin wrappers over the core
//! governor, whose three limiters are exposed as native `ConcurrencyLimiter`s.

use crate::error::check_governor_limits;
use crate::python::args::{Arg, extract_limit, source_arg, tracer_arg};
use crate::python::docstrings::docstring;
use crate::python::errors::limit_error;
use crate::python::handle::Handle;
use crate::python::limiter::PyConcurrencyLimiter;
use crate::{ConcurrencyGovernor, GovernorStats, MAX_RUNNING_LIMIT};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The limit `arg` gives, `default` if left out.
fn resolve(arg: &Arg<'_>, what: &str, default: usize) -> PyResult<i128> {
    match arg {
        Arg::Omitted => Ok(default as i128),
        Arg::Given(value) => extract_limit(value, what, MAX_RUNNING_LIMIT),
    }
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "ConcurrencyGovernor")]
#[doc = docstring!(ConcurrencyGovernor)]
pub(crate) struct PyConcurrencyGovernor {
    core: ConcurrencyGovernor,
    streams: Py<PyConcurrencyLimiter>,
    tools: Py<PyConcurrencyLimiter>,
    global: Py<PyConcurrencyLimiter>,
}

#[pymethods]
impl PyConcurrencyGovernor {
    #[new]
    #[pyo3(
        signature = (
            max_streams = Arg::Omitted,
            max_tools = Arg::Omitted,
            max_global = Arg::Omitted,
            *,
            tracer = None,
            meter = None,
        ),
        text_signature = "(max_streams=4, max_tools=8, max_global=16, *, tracer=None, meter=None)"
    )]
    fn new(
        py: Python<'_>,
        max_streams: Arg<'_>,
        max_tools: Arg<'_>,
        max_global: Arg<'_>,
        tracer: Option<Py<PyAny>>,
        meter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (max_streams, max_tools, max_global) = check_governor_limits(
            resolve(&max_streams, "max_streams", 4)?,
            resolve(&max_tools, "max_tools", 8)?,
            resolve(&max_global, "max_global", 16)?,
        )
        .map_err(|e| limit_error(&e))?;
        let tracer = tracer_arg(tracer, py)?;
        let core = ConcurrencyGovernor::try_new(max_streams as usize, max_tools as usize, max_global as usize)
            .map_err(|e| limit_error(&e))?;
        let tracer = |py: Python<'_>| tracer.as_ref().map(|t| t.clone_ref(py));
        let global = Bound::new(
            py,
            PyConcurrencyLimiter::wrap(py, core.global_limiter().clone(), tracer(py), meter, None)?,
        )?;
        let nested = |limiter: &crate::ConcurrencyLimiter| {
            Py::new(
                py,
                PyConcurrencyLimiter::wrap(py, limiter.clone(), tracer(py), meter, Some(&global))?,
            )
        };
        Ok(Self {
            streams: nested(core.stream_limiter())?,
            tools: nested(core.tool_limiter())?,
            global: global.unbind(),
            core,
        })
    }

    #[pyo3(signature = (source = Arg::Omitted), text_signature = "($self, source='stream')")]
    #[doc = docstring!(ConcurrencyGovernor.stream)]
    fn stream(&self, py: Python<'_>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        let source = source_arg(&source, intern!(py, "stream"))?;
        Ok(self.streams.get().context(py, &source)?.into_any())
    }

    #[pyo3(signature = (source = Arg::Omitted), text_signature = "($self, source='tool')")]
    #[doc = docstring!(ConcurrencyGovernor.tool)]
    fn tool(&self, py: Python<'_>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        let source = source_arg(&source, intern!(py, "tool"))?;
        Ok(self.tools.get().context(py, &source)?.into_any())
    }

    #[doc = docstring!(ConcurrencyGovernor.try_stream)]
    fn try_stream(&self, py: Python<'_>) -> PyResult<Option<PyConcurrencyPermit>> {
        PyConcurrencyPermit::try_take(py, &self.streams.get().handle)
    }

    #[doc = docstring!(ConcurrencyGovernor.try_tool)]
    fn try_tool(&self, py: Python<'_>) -> PyResult<Option<PyConcurrencyPermit>> {
        PyConcurrencyPermit::try_take(py, &self.tools.get().handle)
    }

    #[doc = docstring!(ConcurrencyGovernor.stats)]
    fn stats(&self) -> PyGovernorStats {
        PyGovernorStats(self.core.stats())
    }

    #[getter]
    #[doc = docstring!(ConcurrencyGovernor.stream_limiter)]
    fn stream_limiter(&self, py: Python<'_>) -> Py<PyConcurrencyLimiter> {
        self.streams.clone_ref(py)
    }

    #[getter]
    #[doc = docstring!(ConcurrencyGovernor.tool_limiter)]
    fn tool_limiter(&self, py: Python<'_>) -> Py<PyConcurrencyLimiter> {
        self.tools.clone_ref(py)
    }

    #[getter]
    #[doc = docstring!(ConcurrencyGovernor.global_limiter)]
    fn global_limiter(&self, py: Python<'_>) -> Py<PyConcurrencyLimiter> {
        self.global.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        let s = self.core.stats();
        format!(
            "ConcurrencyGovernor(max_streams={}, max_tools={}, max_global={}, streams_available={}, \
             tools_available={}, global_available={})",
            s.streams_max, s.tools_max, s.global_max, s.streams_available, s.tools_available, s.global_available,
        )
    }
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "ConcurrencyPermit")]
#[doc = docstring!(ConcurrencyPermit)]
pub(crate) struct PyConcurrencyPermit {
    handle: Arc<Handle>,
    held: AtomicBool,
}

impl PyConcurrencyPermit {
    /// A permit for a slot of `handle`'s limiter and its ancestors, if all are free.
    fn try_take(py: Python<'_>, handle: &Arc<Handle>) -> PyResult<Option<Self>> {
        Ok(handle.try_acquire(py, 1)?.then(|| Self {
            handle: Arc::clone(handle),
            held: AtomicBool::new(true),
        }))
    }

    /// Releases the slots unless already released; whether this call released them.
    fn release_once(&self) -> PyResult<bool> {
        if self.held.swap(false, Ordering::AcqRel) {
            self.handle.release(1)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

#[pymethods]
impl PyConcurrencyPermit {
    #[doc = docstring!(ConcurrencyPermit.release)]
    fn release(&self) -> PyResult<()> {
        if self.release_once()? {
            Ok(())
        } else {
            Err(PyValueError::new_err("permit already released"))
        }
    }

    #[getter]
    #[doc = docstring!(ConcurrencyPermit.released)]
    fn released(&self) -> bool {
        !self.held.load(Ordering::Acquire)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _exc_type: &Bound<'_, PyAny>, _exc: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) -> PyResult<()> {
        self.release_once().map(drop)
    }

    fn __repr__(&self) -> String {
        let name = self.handle.core.name().unwrap_or("unnamed");
        let state = if self.released() { "released" } else { "held" };
        format!("<ConcurrencyPermit {name} {state}>")
    }
}

impl Drop for PyConcurrencyPermit {
    fn drop(&mut self) {
        if self.held.swap(false, Ordering::AcqRel) {
            // A held permit stands for one slot at each level, so this only fails if a stray
            // `release()` on a limiter gave the permit's slot back already: then there is
            // nothing left to give back, and nothing to report from a destructor.
            let _ = self.handle.core.release();
        }
    }
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "GovernorStats")]
#[doc = docstring!(GovernorStats)]
pub(crate) struct PyGovernorStats(GovernorStats);

#[pymethods]
impl PyGovernorStats {
    #[getter]
    #[doc = docstring!(GovernorStats.streams_available)]
    const fn streams_available(&self) -> usize {
        self.0.streams_available
    }
    #[getter]
    #[doc = docstring!(GovernorStats.streams_max)]
    const fn streams_max(&self) -> usize {
        self.0.streams_max
    }
    #[getter]
    #[doc = docstring!(GovernorStats.tools_available)]
    const fn tools_available(&self) -> usize {
        self.0.tools_available
    }
    #[getter]
    #[doc = docstring!(GovernorStats.tools_max)]
    const fn tools_max(&self) -> usize {
        self.0.tools_max
    }
    #[getter]
    #[doc = docstring!(GovernorStats.global_available)]
    const fn global_available(&self) -> usize {
        self.0.global_available
    }
    #[getter]
    #[doc = docstring!(GovernorStats.global_max)]
    const fn global_max(&self) -> usize {
        self.0.global_max
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        format!(
            "GovernorStats(streams_available={}, streams_max={}, tools_available={}, tools_max={}, \
             global_available={}, global_max={})",
            s.streams_available, s.streams_max, s.tools_available, s.tools_max, s.global_available, s.global_max,
        )
    }
}
