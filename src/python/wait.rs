//! The slow path's entry: the awaitable of a caller that [`Handle::start`] could not seat, on
//! whichever event loop it runs (the native asyncio wait, else trio's `ferrolimit._wait.wait`).

use crate::ConcurrencyLimiter;
use crate::acquisition::Acquisition;
use crate::python::asyncio_wait::{PyAsyncioWait, running_loop};
use crate::python::handle::{Handle, Start};
use crate::python::ready::ready;
use crate::python::waiter::PyWaiter;
use crate::waiters::Request;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::sync::Arc;

/// Takes one free slot of `handle` and returns the finished awaitable, or returns the waiting one.
pub(crate) fn enter(handle: &Arc<Handle>, py: Python<'_>, source: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
    match handle.start(Request::ONE) {
        Start::Held => ready(py),
        Start::Wait(acquisition) => wait(handle, py, acquisition, source, None),
    }
}

/// The rest of an entry that [`Handle::start`] could not finish (`acquisition` stopped at a
/// level with no free slot): the waiting awaitable.
pub(crate) fn wait(
    handle: &Arc<Handle>,
    py: Python<'_>,
    acquisition: Acquisition<ConcurrencyLimiter>,
    source: &Bound<'_, PyString>,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    static WAIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let source = source.to_string_lossy().into_owned();
    let waiter = PyWaiter::new(Arc::clone(handle), acquisition, source);
    // On asyncio the wait needs no Python frame; trio's goes through `ferrolimit._wait.wait`.
    if let Some(event_loop) = running_loop(py)? {
        return Ok(Py::new(py, PyAsyncioWait::new(waiter, event_loop, timeout)?)?.into_any());
    }
    Ok(WAIT
        .import(py, "ferrolimit._wait", "wait")?
        .call1((waiter, timeout))?
        .unbind())
}
