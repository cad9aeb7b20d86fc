//! `wait_idle()` for Python: the native `_IdleWait` (an [`IdleWaiter`] woken on the caller's
//! event loop) that `ferrolimit._idle.wait_idle` drives on asyncio and trio.

use crate::ConcurrencyLimiter;
use crate::close::IdleWaiter;
use crate::python::docstrings::docstring;
use crate::python::wake::LoopWake;
use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::sync::Arc;
use std::time::Duration;

// One caller's wait for a limiter to be idle. Dropping it gives the wait up.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_IdleWait")]
#[doc = docstring!(_IdleWait)]
pub(crate) struct PyIdleWait(Mutex<IdleWaiter<ConcurrencyLimiter>>);

impl PyIdleWait {
    /// A wait for `limiter` to be idle, registered by its first `poll`.
    pub(crate) fn new(limiter: &ConcurrencyLimiter) -> Self {
        Self(Mutex::new(IdleWaiter::new(limiter.clone())))
    }

    /// The wait, unless it is in use at this moment (from another thread, or from a destructor
    /// that a dropped waker ran): an error rather than a lock to wait for holding the GIL.
    fn lock(&self) -> PyResult<MutexGuard<'_, IdleWaiter<ConcurrencyLimiter>>> {
        self.0
            .try_lock()
            .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: this wait_idle() is already running"))
    }
}

#[pymethods]
impl PyIdleWait {
    // Whether the limiter is idle now or was since the last call; if not, `callback(arg)` runs
    // on this thread's event loop (through `schedule(callback, arg)` from another thread) once
    // it is, or maybe earlier: then call again.
    #[doc = docstring!(_IdleWait.poll)]
    fn poll(&self, callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> PyResult<bool> {
        let waker = Arc::new(LoopWake::new(callback, arg, schedule)).into();
        let idle = self.lock()?.poll(&waker);
        // The waker, and any it replaced, drop only now, with the wait unlocked.
        drop(waker);
        Ok(idle)
    }

    // Gives the wait up; a wake-up already on its way may still run.
    #[doc = docstring!(_IdleWait.cancel)]
    fn cancel(&self) -> PyResult<()> {
        self.lock()?.cancel();
        Ok(())
    }
}

/// The coroutine of `wait_idle(timeout=)`: `True` once `limiter` holds no slot, `False` on
/// timeout.
pub(crate) fn wait_idle(
    py: Python<'_>,
    limiter: &ConcurrencyLimiter,
    timeout: Option<Duration>,
) -> PyResult<Py<PyAny>> {
    static WAIT_IDLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(WAIT_IDLE
        .import(py, "ferrolimit._idle", "wait_idle")?
        .call1((PyIdleWait::new(limiter), timeout.map(|t| t.as_secs_f64())))?
        .unbind())
}
