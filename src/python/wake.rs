//! Waking a parked waiter on its own event loop ([`LoopWake`], a [`std::task::Waker`]): directly
//! on the loop's thread, through the loop's thread-safe call from any other, in the order the
//! slots were handed over; and the interpreter-exit and fork hooks that keep wake-ups from other
//! threads out of a finalizing interpreter.

use crate::python::docstrings::docstring;
use crate::python::raw;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Wake;
use std::thread::ThreadId;

// Sets an asyncio waiter's future's result unless it was cancelled meanwhile.
#[pyfunction]
#[pyo3(name = "_resolve_future")]
#[doc = docstring!(_resolve_future)]
pub(crate) fn resolve_future(future: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// Wakes a parked waiter, directly on the thread that runs its event loop, through the loop's
/// thread-safe call from any other thread.
///
/// Wake-ups reach a loop in the order they were made, which is the order the slots were handed
/// over: a wake-up scheduled from another thread runs one loop step later than a direct one, so
/// while any scheduled wake-up of a loop is still pending, the loop's own releases schedule theirs
/// too instead of resolving directly (`pending` counts them, per loop thread).
pub(crate) struct LoopWake {
    thread: ThreadId,
    pending: Arc<AtomicUsize>,
    target: Target,
}

/// What a [`LoopWake`] wakes.
enum Target {
    /// An asyncio future: resolved with [`resolve_future`], from another thread through
    /// `event_loop.call_soon_threadsafe`.
    Future { future: Py<PyAny>, event_loop: Py<PyAny> },
    /// `callback(arg)`, from another thread `schedule(callback, arg)`; for trio
    /// `trio.lowlevel.reschedule(task)` and `TrioToken.run_sync_soon`.
    Call {
        callback: Py<PyAny>,
        arg: Py<PyAny>,
        schedule: Py<PyAny>,
    },
}

thread_local! {
    /// Scheduled, not yet run wake-ups for the event loop of this thread.
    static PENDING_WAKES: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

impl LoopWake {
    /// A waker that calls `callback(arg)` for the loop running on this thread, through
    /// `schedule(callback, arg)` from another thread.
    pub(crate) fn new(callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> Self {
        Self::with_target(Target::Call {
            callback,
            arg,
            schedule,
        })
    }

    /// A waker that resolves `future` of `event_loop`, the asyncio loop running on this thread.
    pub(crate) fn future(future: Py<PyAny>, event_loop: Py<PyAny>) -> Self {
        Self::with_target(Target::Future { future, event_loop })
    }

    fn with_target(target: Target) -> Self {
        Self {
            thread: std::thread::current().id(),
            pending: PENDING_WAKES.with(Arc::clone),
            target,
        }
    }

    fn wake_with(&self, py: Python<'_>) -> PyResult<()> {
        if std::thread::current().id() == self.thread && self.pending.load(Ordering::Acquire) == 0 {
            return match &self.target {
                Target::Future { future, .. } => resolve_future(future.bind(py)),
                Target::Call { callback, arg, .. } => callback.call1(py, (arg,)).map(drop),
            };
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let result = match &self.target {
            Target::Future { future, event_loop } => {
                let scheduled = self.scheduled(resolve_function(py)?.clone().into_any().unbind());
                event_loop
                    .call_method1(py, intern!(py, "call_soon_threadsafe"), (scheduled, future))
                    .map(drop)
            }
            Target::Call {
                callback,
                arg,
                schedule,
            } => schedule
                .call1(py, (self.scheduled(callback.clone_ref(py)), arg))
                .map(drop),
        };
        if result.is_err() {
            // Never scheduled (a closed loop): nothing will run it.
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    /// The wake-up to schedule on the loop: `callback`, counted pending until it ran.
    fn scheduled(&self, callback: Py<PyAny>) -> PyScheduledWake {
        PyScheduledWake {
            callback,
            pending: Arc::clone(&self.pending),
        }
    }
}

/// `resolve_future` as a Python function, made once.
fn resolve_function(py: Python<'_>) -> PyResult<&Bound<'_, PyCFunction>> {
    static RESOLVE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    Ok(RESOLVE
        .get_or_try_init(py, || wrap_pyfunction!(resolve_future, py).map(Bound::unbind))?
        .bind(py))
}

// A wake-up scheduled on a loop: runs the callback, then counts itself done.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_ScheduledWake")]
#[doc = docstring!(_ScheduledWake)]
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

// Registered with `atexit` by `ferrolimit._redis`: stops wake-ups from other threads, and waits
// (without the GIL) for those already under way.
#[pyfunction]
#[pyo3(name = "_before_exit")]
#[doc = docstring!(_before_exit)]
pub(crate) fn before_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        while WAKES_IN_FLIGHT.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    });
}

// Registered with `os.register_at_fork` by `ferrolimit._redis`: a forked child starts with no
// wake-up in flight (the threads that had one are the parent's) and is not exiting.
#[pyfunction]
#[pyo3(name = "_after_fork_in_child")]
#[doc = docstring!(_after_fork_in_child)]
pub(crate) fn after_fork_in_child() {
    WAKES_IN_FLIGHT.store(0, Ordering::SeqCst);
    EXITING.store(false, Ordering::SeqCst);
}
