//! The blocking API for plain threads: `acquire_blocking` and `with limiter.blocking(source):`.
//!
//! A thread that must wait parks with the GIL released, in short slices: between two slices it
//! takes the GIL back just long enough to run Python's signal handlers, so Ctrl-C reaches it
//! promptly. A release wakes it by unparking it. On an interrupt or a timeout the wait is given
//! up like any other: a slot handed over at that instant passes to the next waiter.
//!
//! A thread that runs an event loop is refused a wait (`RuntimeError`): it would freeze the loop.
//!
//! A limiter with a parent is acquired level by level, each with its own wait (and span), within
//! one time limit; a wait given up at the parent's level gives back the slots held below it.

use crate::ConcurrencyLimiter;
use crate::acquisition::{Acquisition, Stage};
use crate::error::AcquireError;
use crate::python::docstrings::docstring;
use crate::python::errors::timeout_message;
use crate::python::handle::Handle;
use crate::python::span::span_fields;
use crate::python::span::{close_span, open_span};
use crate::waiters::Request;
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a parked thread goes without looking at Python's signals.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

enum Parked {
    Granted,
    /// The queue refused the waiter (the limiter was closed, or shrunk below its weight).
    Refused(AcquireError),
    TimedOut,
    /// A slice ended: time to look at the signals.
    Slice,
}

/// Waits for a slot of `handle`'s limiter and of its ancestors on this thread, the GIL
/// released; `timeout` bounds the whole wait. On an error the acquisition drops, giving back
/// whatever it held.
pub(crate) fn acquire_blocking(
    py: Python<'_>,
    handle: &Handle,
    source: &str,
    timeout: Option<Duration>,
    request: Request,
) -> PyResult<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut acquisition = Acquisition::new(&handle.core, request);
    while acquisition.advance() != Stage::Held {
        let level = handle.at(acquisition.depth());
        wait_level(py, &mut acquisition, level, source, deadline, &waker)?;
    }
    Ok(())
}

/// Waits until `deadline` for a slot of the level where `acquisition` stopped (`level`'s).
fn wait_level(
    py: Python<'_>,
    acquisition: &mut Acquisition<&ConcurrencyLimiter>,
    level: &Handle,
    source: &str,
    deadline: Option<Instant>,
    waker: &Waker,
) -> PyResult<()> {
    let arrived = Instant::now();
    let waiting = match acquisition.enqueue(waker) {
        Ok(Stage::Queued { waiting, .. }) => waiting,
        Ok(_) => return Ok(()),
        Err(err) => return Err(level.rejected(py, &err, source)),
    };
    if let Err(err) = refuse_on_event_loop(py, level, source, waiting) {
        acquisition.cancel();
        return Err(err);
    }
    let span = enter_span(py, level, source, waiting)?;
    let outcome = loop {
        let parked = py.detach(|| {
            let now = Instant::now();
            let slice_end = deadline.map_or(now + SIGNAL_CHECK_INTERVAL, |d| d.min(now + SIGNAL_CHECK_INTERVAL));
            loop {
                match acquisition.take_granted() {
                    Ok(true) => return Parked::Granted,
                    Ok(false) => {}
                    Err(err) => return Parked::Refused(err),
                }
                let now = Instant::now();
                if now >= slice_end {
                    return if deadline.is_some_and(|d| now >= d) {
                        Parked::TimedOut
                    } else {
                        Parked::Slice
                    };
                }
                std::thread::park_timeout(slice_end - now);
            }
        });
        match parked {
            Parked::Granted => {
                level.record_wait(py, arrived);
                break Ok(());
            }
            Parked::Refused(err) => break Err(level.rejected(py, &err, source)),
            Parked::TimedOut => break Err(PyTimeoutError::new_err(timeout_message(level.core.name(), source))),
            Parked::Slice => {
                if let Err(err) = py.check_signals() {
                    break Err(err);
                }
            }
        }
    };
    if outcome.is_err() {
        // Before the span's Python code: a slot handed over meanwhile passes on at once.
        acquisition.cancel();
    }
    // A failure to close the span after the slot was taken means the caller never gets it:
    // `acquire_blocking` returns the error and its acquisition, dropped, gives the slots back.
    let closed = span.map_or(Ok(()), |span| close_span(py, &span, outcome.as_ref().err()));
    outcome.and(closed)
}

/// A `RuntimeError` if this thread runs an event loop, which the wait would freeze
/// (`ferrolimit._blocking`).
fn refuse_on_event_loop(py: Python<'_>, level: &Handle, source: &str, waiting: usize) -> PyResult<()> {
    static REFUSE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let waiting_for = level.core.wait_span_fields(source, waiting).name;
    REFUSE
        .import(py, "ferrolimit._blocking", "refuse_blocking_wait_on_loop")?
        .call1((waiting_for,))
        .map(drop)
}

/// Opens the wait span of a blocking waiter, unless it would certainly be dropped.
fn enter_span<'py>(
    py: Python<'py>,
    handle: &Handle,
    source: &str,
    waiting: usize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(tracer) = handle.recording_tracer(py)? else {
        return Ok(None);
    };
    let (name, attributes) = span_fields(py, handle.core.wait_span_fields(source, waiting))?;
    open_span(py, &tracer, name, &attributes).map(Some)
}

// `with limiter.blocking(source):` holds one slot (or `weight` slots) for the block, on a plain
// thread.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "BlockingContext")]
#[doc = docstring!(BlockingContext)]
pub(crate) struct PyBlockingContext {
    handle: Arc<Handle>,
    source: String,
    timeout: Option<Duration>,
    request: Request,
}

impl PyBlockingContext {
    pub(crate) const fn new(handle: Arc<Handle>, source: String, timeout: Option<Duration>, request: Request) -> Self {
        Self {
            handle,
            source,
            timeout,
            request,
        }
    }
}

#[pymethods]
impl PyBlockingContext {
    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        acquire_blocking(py, &self.handle, &self.source, self.timeout, self.request)
    }

    fn __exit__(&self, _exc_type: &Bound<'_, PyAny>, _exc: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) -> PyResult<()> {
        self.handle.release(self.request.weight)
    }
}
