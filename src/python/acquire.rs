//! What `ConcurrencyLimiter.acquire()` returns: a coroutine that takes the slot when it is first
//! awaited, as pydantic-ai's `async def acquire` does, not when `acquire()` is called.
//!
//! So it can be handed to `asyncio.create_task`, `asyncio.wait_for`, `gather` or trio's
//! `start_soon` (it is a `collections.abc.Coroutine`), and one that is dropped, closed or
//! cancelled before its first step takes nothing. Its first step takes a free slot (one
//! compare-and-swap, no wait) or starts the wait, which it then drives as `yield from` drives a
//! sub-iterator: the native asyncio wait, or `ferrolimit._wait.wait` on trio and for waits with
//! a time limit. The wait gives its place and slots back itself when it fails or is cancelled.

use crate::python::asyncio_wait::thrown;
use crate::python::handle::{Handle, Start};
use crate::python::wait::wait;
use crate::waiters::Request;
use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use std::sync::Arc;

enum State {
    /// Not awaited yet: holds nothing but the handle of the limiter to take the slots of.
    Created {
        handle: Arc<Handle>,
        timeout: Option<f64>,
        request: Request,
    },
    /// Suspended in its wait.
    Waiting(Py<PyAny>),
    /// Finished, failed or closed.
    Done,
}

/// What the coroutine is resumed with.
enum Input<'py> {
    Send(Bound<'py, PyAny>),
    /// The exception `throw()` raises here, and its arguments as given, to pass on.
    Throw(PyErr, Bound<'py, PyTuple>),
}

/// The coroutine `acquire()` returns. Once started it holds the limiter's handle only through
/// its wait, which lets go of it when finished: a finished coroutine kept alive by a traceback
/// keeps no keyed limiter's key in use.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_Acquire")]
pub(crate) struct PyAcquire {
    source: Py<PyString>,
    state: Mutex<State>,
}

impl PyAcquire {
    pub(crate) fn new(
        handle: Arc<Handle>,
        source: Bound<'_, PyString>,
        timeout: Option<f64>,
        request: Request,
    ) -> Self {
        Self {
            source: source.unbind(),
            state: Mutex::new(State::Created {
                handle,
                timeout,
                request,
            }),
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, State>> {
        // As for a generator, a coroutine already running (on another thread) is an error, not
        // a lock to wait for while holding the GIL.
        self.state
            .try_lock()
            .ok_or_else(|| PyRuntimeError::new_err("coroutine ferrolimit acquire() is already running"))
    }

    /// Runs one step: `Some(value)` to yield to the event loop, `None` once the slot is held.
    fn resume(&self, py: Python<'_>, input: Input<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut state = self.lock()?;
        let wait = match std::mem::replace(&mut *state, State::Done) {
            State::Waiting(wait) => wait,
            State::Created {
                handle,
                timeout,
                request,
            } => match input {
                Input::Send(value) if !value.is_none() => {
                    *state = State::Created {
                        handle,
                        timeout,
                        request,
                    };
                    return Err(PyTypeError::new_err(
                        "can't send non-None value to a just-started coroutine",
                    ));
                }
                Input::Send(_) => match handle.start(request) {
                    Start::Held => return Ok(None),
                    Start::Wait(acquisition) => wait(&handle, py, acquisition, self.source.bind(py), timeout)?,
                },
                // Never started: nothing is held, the exception goes straight back.
                Input::Throw(err, _) => return Err(err),
            },
            State::Done => {
                return Err(match input {
                    Input::Throw(err, _) => err,
                    Input::Send(_) => PyRuntimeError::new_err("cannot reuse already awaited coroutine"),
                });
            }
        };
        let result = match input {
            Input::Send(value) => wait.bind(py).call_method1(intern!(py, "send"), (value,)),
            Input::Throw(_, args) => wait.bind(py).call_method1(intern!(py, "throw"), args),
        };
        match result {
            Ok(value) => {
                *state = State::Waiting(wait);
                Ok(Some(value.unbind()))
            }
            Err(err) if err.is_instance_of::<PyStopIteration>(py) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// A finished step: `StopIteration`, as a coroutine's `send` and `throw` raise.
fn finished(value: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    value.ok_or_else(|| PyStopIteration::new_err(()))
}

#[pymethods]
impl PyAcquire {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.resume(py, Input::Send(py.None().into_bound(py)))
    }

    fn send(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        finished(self.resume(py, Input::Send(value))?)
    }

    #[pyo3(signature = (typ, val = None, tb = None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let err = thrown(&typ, val.as_ref())?;
        // Passed on as given: the three-argument form is deprecated from Python 3.12.
        let none = || py.None().into_bound(py);
        let args = match (val, tb) {
            (None, None) => PyTuple::new(py, [typ])?,
            (val, None) => PyTuple::new(py, [typ, val.unwrap_or_else(none)])?,
            (val, Some(tb)) => PyTuple::new(py, [typ, val.unwrap_or_else(none), tb])?,
        };
        finished(self.resume(py, Input::Throw(err, args))?)
    }

    /// Gives up: a wait in progress leaves its queue and gives back what it holds.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let state = std::mem::replace(&mut *self.lock()?, State::Done);
        if let State::Waiting(wait) = state {
            wait.bind(py).call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }
}
