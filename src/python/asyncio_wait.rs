//! The slow path on asyncio without a Python frame: a native awaitable that drives a
//! [`PyWaiter`] and yields its loop's future to the task, as `asyncio.Future.__await__` does.
//!
//! It is the same state machine as `ferrolimit._wait.wait` (which serves trio): queue at the
//! current level, open the wait span, park on a fresh future; once woken, close the span, take
//! the slot and climb to the parent's level, until every level is held. With a time limit, a
//! `loop.call_at` timer kept while parked fails the future with `TimeoutError` at the deadline
//! (one deadline for every level). The task resumes the wait with `send(None)` when the future
//! resolves, or `throw()`s into it when the future failed or the task is cancelled; an exception
//! gives the place up (a slot handed over at that instant passes on) and returns every slot held
//! so far.

use crate::python::docstrings::docstring;
use crate::python::raw;
use crate::python::span::{close_span, open_span};
use crate::python::waiter::PyWaiter;
use crate::python::wake::LoopWake;
use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTimeoutError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyType};

enum Step {
    /// About to queue at the waiter's current level.
    Arrive,
    /// Parked on the loop's future (the task holds it), inside the wait span `span` (if any),
    /// with the deadline's `timer` (if any) scheduled.
    Parked {
        span: Option<Py<PyAny>>,
        timer: Option<Py<PyAny>>,
    },
    Done,
}

// The awaitable of a caller that waits on an asyncio (or uvloop) event loop.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_AsyncioWait")]
#[doc = docstring!(_AsyncioWait)]
pub(crate) struct PyAsyncioWait {
    waiter: PyWaiter,
    event_loop: Py<PyAny>,
    /// When the wait gives up, in the loop's time (`loop.time()`); `None` for no time limit.
    deadline: Option<f64>,
    step: Mutex<Step>,
}

/// The running asyncio loop of this thread, if any (`asyncio._get_running_loop()`).
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP.import(py, "asyncio", "_get_running_loop")?.call0()?;
    Ok((!event_loop.is_none()).then_some(event_loop))
}

/// Fails a parked waiter's future with `TimeoutError(message)` unless it was resolved meanwhile:
/// the timer of a wait with a time limit.
#[pyfunction]
fn expire(future: &Bound<'_, PyAny>, message: String) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(
            intern!(py, "set_exception"),
            (PyTimeoutError::new_err(message).into_value(py),),
        )?;
    }
    Ok(())
}

fn expire_function(py: Python<'_>) -> PyResult<&Bound<'_, PyCFunction>> {
    static EXPIRE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    Ok(EXPIRE
        .get_or_try_init(py, || wrap_pyfunction!(expire, py).map(Bound::unbind))?
        .bind(py))
}

/// Cancels a deadline's timer; a timer that cannot be cancelled has nothing left to do.
fn cancel_timer(py: Python<'_>, timer: Option<&Py<PyAny>>) {
    if let Some(timer) = timer {
        drop(timer.call_method0(py, intern!(py, "cancel")));
    }
}

/// The exception `throw(typ, val)` raises in a coroutine: `val`, else `typ` (an instance, or a
/// class to instantiate).
pub(crate) fn thrown(typ: &Bound<'_, PyAny>, val: Option<&Bound<'_, PyAny>>) -> PyResult<PyErr> {
    Ok(match val.filter(|v| !v.is_none()) {
        Some(value) => PyErr::from_value(value.clone()),
        None if typ.is_instance_of::<PyType>() => PyErr::from_value(typ.call0()?),
        None => PyErr::from_value(typ.clone()),
    })
}

impl PyAsyncioWait {
    /// A wait on `event_loop` that gives up after `timeout` seconds (`None`: never).
    pub(crate) fn new(waiter: PyWaiter, event_loop: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Self> {
        let deadline = match timeout {
            Some(timeout) => Some(
                event_loop
                    .call_method0(intern!(event_loop.py(), "time"))?
                    .extract::<f64>()?
                    + timeout,
            ),
            None => None,
        };
        Ok(Self {
            waiter,
            event_loop: event_loop.unbind(),
            deadline,
            step: Mutex::new(Step::Arrive),
        })
    }

    /// Runs the state machine until it must park (returns the future to yield) or is done. A
    /// wait that fails gives its place and every slot it holds back at once, whoever still
    /// refers to this awaitable (a task's traceback, `gather(..., return_exceptions=True)`).
    fn step(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut step = self.lock()?;
        let result = self.advance(py, &mut step);
        drop(step);
        result.inspect_err(|_| self.waiter.cancel())
    }

    /// The state, unless another thread is driving this awaitable at this moment: that is an
    /// error (as for a generator), not a lock to wait for while holding the GIL.
    fn lock(&self) -> PyResult<MutexGuard<'_, Step>> {
        self.step
            .try_lock()
            .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: this wait is already running"))
    }

    fn advance(&self, py: Python<'_>, step: &mut Step) -> PyResult<Option<Py<PyAny>>> {
        loop {
            match std::mem::replace(step, Step::Done) {
                Step::Arrive => {
                    let event_loop = self.event_loop.bind(py);
                    let future = event_loop.call_method0(intern!(py, "create_future"))?;
                    let wake = LoopWake::future(future.clone().unbind(), self.event_loop.clone_ref(py));
                    if self.waiter.enqueue_wake(py, wake)? {
                        future.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
                        let timer = match self.deadline {
                            Some(deadline) => Some(
                                event_loop
                                    .call_method1(
                                        intern!(py, "call_at"),
                                        (deadline, expire_function(py)?, &future, self.waiter.timeout_message()?),
                                    )?
                                    .unbind(),
                            ),
                            None => None,
                        };
                        // Last: nothing may fail once the span is open.
                        let span = match self.open_span(py) {
                            Ok(span) => span,
                            Err(err) => {
                                cancel_timer(py, timer.as_ref());
                                return Err(err);
                            }
                        };
                        *step = Step::Parked { span, timer };
                        return Ok(Some(future.unbind()));
                    }
                    if self.waiter.climb()? {
                        return Ok(None);
                    }
                    *step = Step::Arrive;
                }
                Step::Parked { span, timer } => {
                    // Resumed with `send(None)`: the task only does that once the future has its
                    // result (a cancelled or failed future makes it `throw()` instead).
                    cancel_timer(py, timer.as_ref());
                    // A refusal (the limiter closed, or shrunk below the weight) ends the span
                    // as an error, as a timeout does.
                    let finished = self.waiter.finish(py);
                    if let Some(span) = span {
                        close_span(py, span.bind(py), finished.as_ref().err())?;
                    }
                    finished?;
                    if self.waiter.climb()? {
                        return Ok(None);
                    }
                    *step = Step::Arrive;
                }
                Step::Done => return Err(PyRuntimeError::new_err("cannot reuse already awaited wait")),
            }
        }
    }

    /// Opens the current level's wait span, unless it would certainly be dropped.
    fn open_span(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.waiter.tracer(py)? {
            Some(tracer) => {
                let (name, attributes) = self.waiter.span(py)?;
                Ok(Some(open_span(py, &tracer, name, &attributes)?.unbind()))
            }
            None => Ok(None),
        }
    }

    /// Leaves the queue and gives every slot back; records `err` on the span and returns it.
    fn give_up(&self, py: Python<'_>, span: Option<&Py<PyAny>>, err: PyErr) -> PyErr {
        self.waiter.cancel();
        match span.map_or(Ok(()), |span| close_span(py, span.bind(py), Some(&err))) {
            Ok(()) => err,
            Err(close_err) => close_err,
        }
    }
}

#[pymethods]
impl PyAsyncioWait {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py)
    }

    // As `__next__`, but a finished wait raises `StopIteration`, as a coroutine's `send` does.
    #[doc = docstring!(_AsyncioWait.send)]
    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py)?.ok_or_else(|| PyStopIteration::new_err(()))
    }

    // Called by the task when it is cancelled (or another exception is thrown in) while parked.
    #[pyo3(signature = (typ, val = None, _tb = None))]
    #[doc = docstring!(_AsyncioWait.throw)]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let err = thrown(typ, val)?;
        let step = std::mem::replace(&mut *self.lock()?, Step::Done);
        Err(if let Step::Parked { span, timer } = step {
            cancel_timer(py, timer.as_ref());
            self.give_up(py, span.as_ref(), err)
        } else {
            self.waiter.cancel();
            err
        })
    }

    #[doc = docstring!(_AsyncioWait.close)]
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let step = std::mem::replace(&mut *self.lock()?, Step::Done);
        self.waiter.cancel();
        if let Step::Parked { span, timer } = step {
            cancel_timer(py, timer.as_ref());
            if let Some(span) = span {
                close_span(py, span.bind(py), None)?;
            }
        }
        Ok(())
    }
}

impl Drop for PyAsyncioWait {
    fn drop(&mut self) {
        if let Step::Parked { span, timer } = std::mem::replace(self.step.get_mut(), Step::Done) {
            // CPython may free the awaitable while an exception propagates (see `raw`).
            Python::attach(|py| {
                raw::preserving_error(py, || {
                    cancel_timer(py, timer.as_ref());
                    if let Some(span) = span {
                        drop(close_span(py, span.bind(py), None));
                    }
                });
            });
        }
        // The waiter's own drop gives back its place and its slots.
    }
}
