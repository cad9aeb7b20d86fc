//! The slow path's waiter ([`PyWaiter`]): a caller's place in the queues of its limiter and of
//! the limiter's parents, level by level, driven by the asyncio and trio waits.

use crate::python::errors::timeout_message;
use crate::python::handle::Handle;
use crate::python::span::span_fields;
use crate::python::wake::LoopWake;
use crate::waiters::WaiterId;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::Instant;

/// Where a [`PyWaiter`] stands at its current level.
enum Stage {
    /// Not queued there yet, holding nothing there.
    Arriving,
    /// Queued there: its place and the queue depth on arrival.
    Queued(WaiterId, usize),
    /// Holding that level's slot.
    Holding,
    /// Finished: the caller holds a slot at every level, or gave up and holds none.
    Done,
}

/// A [`PyWaiter`]'s progress up its limiter's chain of parents.
struct WaitState {
    /// The level being acquired: the limiter asked for or one of its ancestors. The waiter holds
    /// a slot of every level below it.
    level: Arc<Handle>,
    stage: Stage,
    /// When the caller arrived at `level`, for that level's wait-time metric.
    arrived: Instant,
}

/// A caller on the slow path, level by level: at each level it queues itself with a waker for
/// its loop (`enqueue`), `finish()`es once woken, and `climb()`s to the parent. It `cancel()`s on
/// any exception, which also gives back the slots it holds below its current level. Dropping an
/// unfinished waiter cancels it, so a slot can never be stranded.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_Waiter")]
pub(crate) struct PyWaiter {
    /// The limiter the caller asked for.
    base: Arc<Handle>,
    source: String,
    state: Mutex<WaitState>,
}

impl PyWaiter {
    /// A caller that holds nothing yet and waits at `handle`'s own level.
    pub(crate) fn new(handle: Arc<Handle>, source: String) -> Self {
        let level = Arc::clone(&handle);
        Self::climbing(handle, level, source)
    }

    /// A caller of `base` that holds the slots below `level` (an ancestor of `base`) and waits
    /// at `level`.
    pub(crate) fn climbing(base: Arc<Handle>, level: Arc<Handle>, source: String) -> Self {
        Self {
            base,
            source,
            state: Mutex::new(WaitState {
                level,
                stage: Stage::Arriving,
                arrived: Instant::now(),
            }),
        }
    }

    fn level(&self) -> Arc<Handle> {
        Arc::clone(&self.state.lock().level)
    }
}

fn misuse(what: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!("ferrolimit: {what}"))
}

#[pymethods]
impl PyWaiter {
    /// Queues the caller at its current level, to be woken by `callback(arg)` on this thread or
    /// `schedule(callback, arg)` from another. Returns `False` if a slot was free after all (the
    /// caller holds it), and raises `ConcurrencyLimitExceeded` if the queue is full.
    pub(crate) fn enqueue(
        &self,
        py: Python<'_>,
        callback: Py<PyAny>,
        arg: Py<PyAny>,
        schedule: Py<PyAny>,
    ) -> PyResult<bool> {
        let wake = LoopWake::new(callback, arg, schedule);
        let level = {
            let state = self.state.lock();
            if !matches!(state.stage, Stage::Arriving) {
                return Err(misuse("a waiter was queued twice"));
            }
            Arc::clone(&state.level)
        };
        // Not under the lock: a rejection runs the metrics' Python code.
        let place = level.enqueue(py, &Arc::new(wake).into(), &self.source)?;
        self.state.lock().stage = match place {
            Some((id, waiting)) => Stage::Queued(id, waiting),
            None => Stage::Holding,
        };
        Ok(place.is_some())
    }

    /// The tracer the current level's wait span goes to, `None` when the span would certainly
    /// be dropped (no tracer given, no global tracer provider set).
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.level().recording_tracer(py)
    }

    /// The current level's wait span's name and attributes.
    pub(crate) fn span<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDict>)> {
        let (level, waiting) = {
            let state = self.state.lock();
            let waiting = match state.stage {
                Stage::Queued(_, waiting) => waiting,
                _ => 0,
            };
            (Arc::clone(&state.level), waiting)
        };
        span_fields(py, level.core.wait_span_fields(&self.source, waiting))
    }

    /// The `TimeoutError` message for this waiter at its current level.
    pub(crate) fn timeout_message(&self) -> String {
        timeout_message(&self.level().core, &self.source)
    }

    /// Takes the slot a release handed over; only called once the waiter's future resolved.
    pub(crate) fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.state.lock();
        match state.stage {
            Stage::Queued(id, _) if state.level.core.semaphore().take_granted(id) => {
                state.stage = Stage::Holding;
                let (level, arrived) = (Arc::clone(&state.level), state.arrived);
                drop(state);
                level.record_wait(py, arrived);
                Ok(())
            }
            _ => Err(misuse("a waiter was woken without a slot")),
        }
    }

    /// Goes on from holding the current level's slot: takes the free slots of the ancestors in
    /// turn. `True` when the caller holds every level (the waiter is finished); `False` when it
    /// must wait at the next ancestor, which is now its current level.
    pub(crate) fn climb(&self) -> PyResult<bool> {
        let mut state = self.state.lock();
        if !matches!(state.stage, Stage::Holding) {
            return Err(misuse("a waiter climbed without a slot"));
        }
        match self.base.climb_from(&state.level) {
            None => {
                state.stage = Stage::Done;
                Ok(true)
            }
            Some(level) => {
                *state = WaitState {
                    level,
                    stage: Stage::Arriving,
                    arrived: Instant::now(),
                };
                Ok(false)
            }
        }
    }

    /// Leaves the queue if still queued (`True`); `False` if a slot was already handed over, which
    /// the caller must then take with `finish()`.
    fn withdraw(&self) -> bool {
        let mut state = self.state.lock();
        let Stage::Queued(id, _) = state.stage else {
            return true;
        };
        let withdrawn = state.level.core.semaphore().withdraw(id);
        if withdrawn {
            state.stage = Stage::Arriving;
        }
        withdrawn
    }

    /// Gives up: leaves the queue (a slot handed over at the same instant passes to the next
    /// waiter) and gives back every slot held. Does nothing once finished.
    pub(crate) fn cancel(&self) {
        let (level, stage) = {
            let mut state = self.state.lock();
            (
                Arc::clone(&state.level),
                std::mem::replace(&mut state.stage, Stage::Done),
            )
        };
        // Not under the lock: passing a slot on wakes another waiter, which runs Python code.
        let semaphore = level.core.semaphore();
        match stage {
            Stage::Done => return,
            Stage::Arriving => {}
            Stage::Queued(id, _) => {
                semaphore.cancel(id);
            }
            Stage::Holding => {
                let released = semaphore.release();
                debug_assert!(released.is_ok(), "a held slot's release found no holder");
            }
        }
        self.base.release_below(&level);
    }
}

impl Drop for PyWaiter {
    fn drop(&mut self) {
        self.cancel();
    }
}
