//! The slow path's waiter ([`PyWaiter`]): a caller's [`Acquisition`] kept by Python, the verbs
//! the asyncio and trio waits drive it with, and the spans and metrics of each level it waits at.

use crate::ConcurrencyLimiter;
use crate::acquisition::{Acquisition, Stage};
use crate::python::docstrings::docstring;
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
    /// The limiter the caller asked for.
    base: Arc<Handle>,
    acquisition: Acquisition<ConcurrencyLimiter>,
    /// When the caller arrived at the current level, for that level's wait-time metric.
    arrived: Instant,
}

// A caller on the slow path, level by level: at each level it queues itself with a waker for
// its loop (`enqueue`), `finish()`es once woken, and `climb()`s to the parent. It `cancel()`s on
// any exception, which also gives back the slots it holds below its current level. Dropping an
// unfinished waiter cancels it (its acquisition does), so a slot can never be stranded.
//
// Once it holds every level or is cancelled, it lets go of its state, the limiter's handle
// included: a finished waiter kept alive by a traceback or an event loop's bookkeeping keeps
// no keyed limiter's key in use.
//
// Nothing that can wake another waiter (and so run Python code) runs under the state's lock:
// `enqueue` and `cancel` take the acquisition out of it first.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_Waiter")]
#[doc = docstring!(_Waiter)]
pub(crate) struct PyWaiter {
    source: String,
    /// `None` once finished.
    state: Mutex<Option<WaitState>>,
}

impl PyWaiter {
    /// A caller of `base` whose lock-free first step stopped at some level (`acquisition`).
    pub(crate) fn new(base: Arc<Handle>, acquisition: Acquisition<ConcurrencyLimiter>, source: String) -> Self {
        Self {
            source,
            state: Mutex::new(Some(WaitState {
                base,
                acquisition,
                arrived: Instant::now(),
            })),
        }
    }

    /// Runs `f` on the state of an unfinished waiter.
    fn with_state<T>(&self, f: impl FnOnce(&mut WaitState) -> PyResult<T>) -> PyResult<T> {
        match self.state.lock().as_mut() {
            Some(state) => f(state),
            None => Err(misuse("a finished waiter was used")),
        }
    }

    /// Takes the acquisition out of the state (to drive it unlocked), with the limiter's handle.
    fn take(
        &self,
        stage_ok: impl FnOnce(Stage) -> bool,
        what: &str,
    ) -> PyResult<(Acquisition<ConcurrencyLimiter>, Arc<Handle>, Instant)> {
        self.with_state(|state| {
            if !stage_ok(state.acquisition.stage()) {
                return Err(misuse(what));
            }
            Ok((state.acquisition.take(), Arc::clone(&state.base), state.arrived))
        })
    }

    /// Puts back an acquisition taken out with [`take`](Self::take).
    fn put_back(&self, acquisition: Acquisition<ConcurrencyLimiter>) {
        if let Some(state) = self.state.lock().as_mut() {
            state.acquisition = acquisition;
        }
    }

    /// [`enqueue`](Self::enqueue) with the waker `wake`.
    pub(crate) fn enqueue_wake(&self, py: Python<'_>, wake: LoopWake) -> PyResult<bool> {
        let (mut acquisition, base, _) = self.take(|stage| stage == Stage::Arriving, "a waiter was queued twice")?;
        // Not under the lock: a rejection gives back the slots below, which wakes their waiters.
        let enqueued = acquisition.enqueue(&Arc::new(wake).into());
        let depth = acquisition.depth();
        self.put_back(acquisition);
        match enqueued {
            Ok(stage) => Ok(matches!(stage, Stage::Queued { .. })),
            Err(err) => Err(base.at(depth).rejected(py, &err, &self.source)),
        }
    }

    /// The handle of the limiter the caller asked for, the depth of its current level and the
    /// stage there.
    fn level(&self) -> PyResult<(Arc<Handle>, usize, Stage)> {
        self.with_state(|state| {
            Ok((
                Arc::clone(&state.base),
                state.acquisition.depth(),
                state.acquisition.stage(),
            ))
        })
    }
}

fn misuse(what: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!("ferrolimit: {what}"))
}

#[pymethods]
impl PyWaiter {
    // Queues the caller at its current level, to be woken by `callback(arg)` on this thread or
    // `schedule(callback, arg)` from another. Returns `False` if a slot was free after all (the
    // caller holds it), and raises `ConcurrencyLimitExceeded` if the queue is full (the waiter
    // is then cancelled).
    #[doc = docstring!(_Waiter.enqueue)]
    fn enqueue(&self, py: Python<'_>, callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> PyResult<bool> {
        self.enqueue_wake(py, LoopWake::new(callback, arg, schedule))
    }

    // The tracer the current level's wait span goes to, `None` when the span would certainly
    // be dropped (no tracer given, no global tracer provider set).
    #[doc = docstring!(_Waiter.tracer)]
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (base, depth, _) = self.level()?;
        base.at(depth).recording_tracer(py)
    }

    // The current level's wait span's name and attributes.
    #[doc = docstring!(_Waiter.span)]
    pub(crate) fn span<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDict>)> {
        let (base, depth, stage) = self.level()?;
        let waiting = match stage {
            Stage::Queued { waiting, .. } => waiting,
            _ => 0,
        };
        span_fields(py, base.at(depth).core.wait_span_fields(&self.source, waiting))
    }

    // The `TimeoutError` message for this waiter at its current level.
    #[doc = docstring!(_Waiter.timeout_message)]
    pub(crate) fn timeout_message(&self) -> PyResult<String> {
        let (base, depth, _) = self.level()?;
        Ok(timeout_message(base.at(depth).core.name(), &self.source))
    }

    // Takes the slots a release handed over; only called once the waiter's future resolved.
    // Raises the refusal if the waiter was refused instead (the limiter was closed, or shrunk
    // below its weight); the waiter is then cancelled.
    #[doc = docstring!(_Waiter.finish)]
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let (mut acquisition, base, arrived) = self.take(|_| true, "")?;
        // Not under the lock: a refusal gives back the slots below, which wakes their waiters.
        let taken = acquisition.take_granted();
        let depth = acquisition.depth();
        self.put_back(acquisition);
        let level = base.at(depth);
        match taken {
            Ok(true) => {
                level.record_wait(py, arrived);
                Ok(())
            }
            Ok(false) => Err(misuse("a waiter was woken without a slot")),
            Err(err) => Err(level.rejected(py, &err, &self.source)),
        }
    }

    // Goes on from holding the current level's slot: takes the free slots of the ancestors in
    // turn. `True` when the caller holds every level (the waiter is finished and lets go of
    // its state); `False` when it must wait at the next ancestor, which is now its current
    // level.
    #[doc = docstring!(_Waiter.climb)]
    pub(crate) fn climb(&self) -> PyResult<bool> {
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Err(misuse("a finished waiter was used"));
        };
        if state.acquisition.stage() != Stage::Climbing {
            return Err(misuse("a waiter climbed without a slot"));
        }
        if state.acquisition.advance() == Stage::Held {
            let finished = guard.take();
            drop(guard);
            // The handle drops unlocked: it may be the last reference to Python objects.
            drop(finished);
            return Ok(true);
        }
        state.arrived = Instant::now();
        Ok(false)
    }

    // Leaves the queue if still queued (`True`); `False` if a slot was already handed over (or
    // the waiter refused), which the caller must then take with `finish()`.
    #[doc = docstring!(_Waiter.withdraw)]
    fn withdraw(&self) -> PyResult<bool> {
        self.with_state(|state| Ok(state.acquisition.withdraw()))
    }

    // Gives up: leaves the queue (a slot handed over at the same instant passes to the next
    // waiter) and gives back every slot held. Does nothing once finished.
    #[doc = docstring!(_Waiter.cancel)]
    pub(crate) fn cancel(&self) {
        let state = self.state.lock().take();
        // Not under the lock: passing a slot on wakes another waiter, which runs Python code.
        drop(state);
    }
}
