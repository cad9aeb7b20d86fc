//! The slow path's waiter ([`PyWaiter`]): a caller's [`Acquisition`] kept by Python, the verbs
//! the asyncio and trio waits drive it with, and the spans and metrics of each level it waits at.

use crate::ConcurrencyLimiter;
use crate::acquisition::{Acquisition, Stage};
use crate::python::errors::timeout_message;
use crate::python::handle::Handle;
use crate::python::span::span_fields;
use crate::python::wake::LoopWake;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::Instant;

/// A [`PyWaiter`]'s progress.
struct WaitState {
    acquisition: Acquisition<ConcurrencyLimiter>,
    /// When the caller arrived at the current level, for that level's wait-time metric.
    arrived: Instant,
}

/// A caller on the slow path, level by level: at each level it queues itself with a waker for
/// its loop (`enqueue`), `finish()`es once woken, and `climb()`s to the parent. It `cancel()`s on
/// any exception, which also gives back the slots it holds below its current level. Dropping an
/// unfinished waiter cancels it (its acquisition does), so a slot can never be stranded.
///
/// Nothing that can wake another waiter (and so run Python code) runs under the state's lock:
/// `enqueue` and `cancel` take the acquisition out of it first.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_Waiter")]
pub(crate) struct PyWaiter {
    /// The limiter the caller asked for.
    base: Arc<Handle>,
    source: String,
    state: Mutex<WaitState>,
}

impl PyWaiter {
    /// A caller of `base` whose lock-free first step stopped at some level (`acquisition`).
    pub(crate) fn new(base: Arc<Handle>, acquisition: Acquisition<ConcurrencyLimiter>, source: String) -> Self {
        Self {
            base,
            source,
            state: Mutex::new(WaitState {
                acquisition,
                arrived: Instant::now(),
            }),
        }
    }

    /// [`enqueue`](Self::enqueue) with the waker `wake`.
    pub(crate) fn enqueue_wake(&self, py: Python<'_>, wake: LoopWake) -> PyResult<bool> {
        let mut acquisition = {
            let mut state = self.state.lock();
            if state.acquisition.stage() != Stage::Arriving {
                return Err(misuse("a waiter was queued twice"));
            }
            state.acquisition.take()
        };
        // Not under the lock: a rejection gives back the slots below, which wakes their waiters.
        let enqueued = acquisition.enqueue(&Arc::new(wake).into());
        let depth = acquisition.depth();
        self.state.lock().acquisition = acquisition;
        match enqueued {
            Ok(stage) => Ok(matches!(stage, Stage::Queued { .. })),
            Err(err) => Err(self.base.at(depth).rejected(py, &err, &self.source)),
        }
    }

    /// The handle of the current level, and the stage there.
    fn level(&self) -> (&Handle, Stage) {
        let state = self.state.lock();
        (self.base.at(state.acquisition.depth()), state.acquisition.stage())
    }
}

fn misuse(what: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!("ferrolimit: {what}"))
}

#[pymethods]
impl PyWaiter {
    /// Queues the caller at its current level, to be woken by `callback(arg)` on this thread or
    /// `schedule(callback, arg)` from another. Returns `False` if a slot was free after all (the
    /// caller holds it), and raises `ConcurrencyLimitExceeded` if the queue is full (the waiter
    /// is then cancelled).
    fn enqueue(&self, py: Python<'_>, callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> PyResult<bool> {
        self.enqueue_wake(py, LoopWake::new(callback, arg, schedule))
    }

    /// The tracer the current level's wait span goes to, `None` when the span would certainly
    /// be dropped (no tracer given, no global tracer provider set).
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.level().0.recording_tracer(py)
    }

    /// The current level's wait span's name and attributes.
    pub(crate) fn span<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDict>)> {
        let (level, stage) = self.level();
        let waiting = match stage {
            Stage::Queued { waiting, .. } => waiting,
            _ => 0,
        };
        span_fields(py, level.core.wait_span_fields(&self.source, waiting))
    }

    /// The `TimeoutError` message for this waiter at its current level.
    pub(crate) fn timeout_message(&self) -> String {
        timeout_message(&self.level().0.core, &self.source)
    }

    /// Takes the slots a release handed over; only called once the waiter's future resolved.
    /// Raises the refusal if the waiter was refused instead (the limiter was closed, or shrunk
    /// below its weight); the waiter is then cancelled.
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let (mut acquisition, arrived) = {
            let mut state = self.state.lock();
            (state.acquisition.take(), state.arrived)
        };
        // Not under the lock: a refusal gives back the slots below, which wakes their waiters.
        let taken = acquisition.take_granted();
        let level = self.base.at(acquisition.depth());
        self.state.lock().acquisition = acquisition;
        match taken {
            Ok(true) => {
                level.record_wait(py, arrived);
                Ok(())
            }
            Ok(false) => Err(misuse("a waiter was woken without a slot")),
            Err(err) => Err(level.rejected(py, &err, &self.source)),
        }
    }

    /// Goes on from holding the current level's slot: takes the free slots of the ancestors in
    /// turn. `True` when the caller holds every level (the waiter is finished); `False` when it
    /// must wait at the next ancestor, which is now its current level.
    pub(crate) fn climb(&self) -> PyResult<bool> {
        let mut state = self.state.lock();
        if state.acquisition.stage() != Stage::Climbing {
            return Err(misuse("a waiter climbed without a slot"));
        }
        if state.acquisition.advance() == Stage::Held {
            return Ok(true);
        }
        state.arrived = Instant::now();
        Ok(false)
    }

    /// Leaves the queue if still queued (`True`); `False` if a slot was already handed over, which
    /// the caller must then take with `finish()`.
    fn withdraw(&self) -> bool {
        self.state.lock().acquisition.withdraw()
    }

    /// Gives up: leaves the queue (a slot handed over at the same instant passes to the next
    /// waiter) and gives back every slot held. Does nothing once finished.
    pub(crate) fn cancel(&self) {
        let acquisition = self.state.lock().acquisition.take();
        // Not under the lock: passing a slot on wakes another waiter, which runs Python code.
        drop(acquisition);
    }
}
