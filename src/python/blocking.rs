//! The blocking API for plain threads: `acquire_blocking` and `with limiter.blocking(source):`.
//!
//! A thread that must wait parks with the GIL released, in short slices: between two slices it
//! takes the GIL back just long enough to run Python's signal handlers, so Ctrl-C reaches it
//! promptly. A release wakes it by unparking it. On an interrupt or a timeout the wait is given
//! up like any other: a slot handed over at that instant passes to the next waiter.
//!
//! A limiter with a parent is acquired level by level, each with its own wait (and span), within
//! one time limit; a wait given up at the parent's level gives back the slots held below it.

use crate::python::errors::{release_error, timeout_message};
use crate::python::handle::Handle;
use crate::python::span::span_fields;
use crate::python::span::{close_span, open_span};
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;
use std::sync::Arc;
use std::task::Wake;
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
    TimedOut,
    /// A slice ended: time to look at the signals.
    Slice,
}

/// Waits for a slot of `handle`'s limiter and of its ancestors on this thread, the GIL
/// released; `timeout` bounds the whole wait.
pub(crate) fn acquire_blocking(
    py: Python<'_>,
    handle: &Handle,
    source: &str,
    timeout: Option<Duration>,
) -> PyResult<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut level = handle;
    loop {
        if let Err(err) = acquire_level(py, level, source, deadline) {
            handle.release_below(level);
            return Err(err);
        }
        match &level.parent {
            Some(parent) => level = parent,
            None => break,
        }
    }
    handle.core.acquired_raw();
    Ok(())
}

/// Waits for a slot of `handle`'s own level until `deadline`.
fn acquire_level(py: Python<'_>, handle: &Handle, source: &str, deadline: Option<Instant>) -> PyResult<()> {
    let semaphore = handle.core.semaphore();
    if semaphore.try_acquire() {
        return Ok(());
    }
    let arrived = Instant::now();
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let Some((id, waiting)) = handle.enqueue(py, &waker, source)? else {
        return Ok(());
    };
    let span = match enter_span(py, handle, source, waiting) {
        Ok(span) => span,
        Err(err) => {
            semaphore.cancel(id);
            return Err(err);
        }
    };
    let outcome = loop {
        let parked = py.detach(|| {
            let now = Instant::now();
            let slice_end = deadline.map_or(now + SIGNAL_CHECK_INTERVAL, |d| d.min(now + SIGNAL_CHECK_INTERVAL));
            loop {
                if semaphore.take_granted(id) {
                    return Parked::Granted;
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
                handle.record_wait(py, arrived);
                break Ok(());
            }
            Parked::TimedOut => break Err(PyTimeoutError::new_err(timeout_message(&handle.core, source))),
            Parked::Slice => {
                if let Err(err) = py.check_signals() {
                    break Err(err);
                }
            }
        }
    };
    if outcome.is_err() {
        semaphore.cancel(id);
    }
    let closed = span.map_or(Ok(()), |span| close_span(py, &span, outcome.as_ref().err()));
    if outcome.is_ok() && closed.is_err() {
        // Raising means the caller never got the slot: give it back.
        semaphore.release().map_err(release_error)?;
    }
    outcome.and(closed)
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

/// `with limiter.blocking(source):` holds one slot for the block, on a plain thread.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "BlockingContext")]
pub(crate) struct PyBlockingContext {
    handle: Arc<Handle>,
    source: String,
    timeout: Option<Duration>,
}

impl PyBlockingContext {
    pub(crate) const fn new(handle: Arc<Handle>, source: String, timeout: Option<Duration>) -> Self {
        Self {
            handle,
            source,
            timeout,
        }
    }
}

#[pymethods]
impl PyBlockingContext {
    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        acquire_blocking(py, &self.handle, &self.source, self.timeout)
    }

    fn __exit__(&self, _exc_type: &Bound<'_, PyAny>, _exc: &Bound<'_, PyAny>, _tb: &Bound<'_, PyAny>) -> PyResult<()> {
        self.handle.release()
    }
}
