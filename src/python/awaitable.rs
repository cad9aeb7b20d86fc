//! The slow path of the awaitable path: the waiter's ticket ([`PyWaiter`]) and the waker that
//! resolves its future ([`LoopWake`]).
//!
//! A free slot is taken inside `__aenter__` itself (see [`context`](crate::python::context)),
//! which returns the finished awaitable. Only a caller that must wait gets an awaitable of its
//! own, which parks on a future of its own loop and is woken by [`LoopWake`] when a release hands
//! it a slot.

use crate::python::errors::timeout_message;
use crate::python::limiter::Handle;
use crate::python::raw;
use crate::telemetry::{AttrValue, WaitSpanFields};
use crate::waiters::WaiterId;
use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Wake;
use std::thread::ThreadId;
use std::time::Instant;

/// Sets an asyncio waiter's future's result unless it was cancelled meanwhile.
#[pyfunction]
pub(crate) fn resolve_future(future: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// Wakes a parked waiter: `callback(arg)` directly on the thread that runs its event loop,
/// `schedule(callback, arg)` (the loop's thread-safe call) from any other thread.
///
/// asyncio: `resolve_future(future)` and `loop.call_soon_threadsafe`; trio:
/// `trio.lowlevel.reschedule(task)` and `TrioToken.run_sync_soon`.
///
/// Wake-ups reach a loop in the order they were made, which is the order the slots were handed
/// over: a wake-up scheduled from another thread runs one loop step later than a direct one, so
/// while any scheduled wake-up of a loop is still pending, the loop's own releases schedule theirs
/// too instead of resolving directly (`pending` counts them, per loop thread).
pub(crate) struct LoopWake {
    thread: ThreadId,
    pending: Arc<AtomicUsize>,
    callback: Py<PyAny>,
    arg: Py<PyAny>,
    schedule: Py<PyAny>,
}

thread_local! {
    /// Scheduled, not yet run wake-ups for the event loop of this thread.
    static PENDING_WAKES: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

impl LoopWake {
    /// A waker for the loop running on this thread.
    pub(crate) fn new(callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> Self {
        Self {
            thread: std::thread::current().id(),
            pending: PENDING_WAKES.with(Arc::clone),
            callback,
            arg,
            schedule,
        }
    }

    fn wake_with(&self, py: Python<'_>) -> PyResult<()> {
        if std::thread::current().id() == self.thread && self.pending.load(Ordering::Acquire) == 0 {
            return self.callback.call1(py, (&self.arg,)).map(drop);
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let scheduled = PyScheduledWake {
            callback: self.callback.clone_ref(py),
            pending: Arc::clone(&self.pending),
        };
        let result = self.schedule.call1(py, (scheduled, &self.arg)).map(drop);
        if result.is_err() {
            // Never scheduled (a closed loop): nothing will run it.
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }
}

/// A wake-up scheduled on a loop: runs the callback, then counts itself done.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "ScheduledWake")]
pub(crate) struct PyScheduledWake {
    callback: Py<PyAny>,
    pending: Arc<AtomicUsize>,
}

#[pymethods]
impl PyScheduledWake {
    fn __call__(&self, py: Python<'_>, arg: &Bound<'_, PyAny>) -> PyResult<()> {
        let result = self.callback.call1(py, (arg,)).map(drop);
        self.pending.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

impl Wake for LoopWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Counted in flight before the check, so `before_exit` either sees this wake-up and waits
        // for it, or this wake-up sees the flag and stays out of a finalizing interpreter.
        WAKES_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if !EXITING.load(Ordering::SeqCst) {
            Python::try_attach(|py| {
                // A release may come from a destructor that CPython runs while an exception
                // propagates: the wake-up's Python calls run with that exception put aside.
                // Only a closed loop fails here: its task is being torn down, and the waiter's
                // cleanup (or its Waiter's drop) passes the handed-over slot on.
                raw::preserving_error(py, || drop(self.wake_with(py)));
            });
        }
        WAKES_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Set at interpreter exit: threads that are not Python's (the Redis I/O runtime) must not
/// attach to an interpreter that is being finalized.
static EXITING: AtomicBool = AtomicBool::new(false);
static WAKES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Registered with `atexit` by `ferrolimit._redis`: stops wake-ups from other threads, and waits
/// (without the GIL) for those already under way.
#[pyfunction]
pub(crate) fn before_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        while WAKES_IN_FLIGHT.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    });
}

/// Registered with `os.register_at_fork` by `ferrolimit._redis`: a forked child starts with no
/// wake-up in flight (the threads that had one are the parent's) and is not exiting.
#[pyfunction]
pub(crate) fn after_fork_in_child() {
    WAKES_IN_FLIGHT.store(0, Ordering::SeqCst);
    EXITING.store(false, Ordering::SeqCst);
}

/// A wait span's name and its attributes as a Python dict.
pub(crate) fn span_fields<'py>(py: Python<'py>, fields: WaitSpanFields<'_>) -> PyResult<(String, Bound<'py, PyDict>)> {
    let attributes = PyDict::new(py);
    for (key, value) in fields.attributes {
        match value {
            AttrValue::Str(s) => attributes.set_item(key, s)?,
            AttrValue::Int(i) => attributes.set_item(key, i)?,
        }
    }
    Ok((fields.name, attributes))
}

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
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "Waiter")]
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

    /// The current level's tracer, `None` when its span would certainly be dropped.
    pub(crate) fn recording_tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.level().recording_tracer(py)
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

    /// The tracer the current level's wait span goes to.
    pub(crate) fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.level().tracer(py)
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
    fn timeout_message(&self) -> String {
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
