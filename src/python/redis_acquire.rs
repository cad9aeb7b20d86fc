//! One `RedisConcurrencyLimiter.acquire()` in flight ([`PyRedisAcquire`]): a task on the Redis
//! runtime that reports its events (queued, admitted, failed), and the Python side that
//! `ferrolimit._redis.acquire` drives, woken on its own event loop through [`LoopWake`].

use crate::RedisLimiterError;
use crate::python::errors::redis_error;
use crate::python::handle::recording_tracer;
use crate::python::span::span_fields;
use crate::python::wake::LoopWake;
use crate::redis::{Inner, Slot};
use crate::telemetry::display_name;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use tokio::runtime::Runtime;

/// What an acquire reports, in order.
enum Event {
    /// The caller has to wait; the queue depth on arrival.
    Queued(usize),
    /// The caller holds a slot (already in the limiter's pool); the error if it failed open.
    Admitted(Slot, Option<RedisLimiterError>),
    Failed(RedisLimiterError),
}

#[derive(Default)]
struct OpState {
    events: VecDeque<Event>,
    waker: Option<Waker>,
    cancelled: bool,
    /// Set with the last event (admitted or failed): the task is done with Redis.
    finished: bool,
    task: Option<tokio::task::AbortHandle>,
}

/// Pushes an event (unless the operation was cancelled) and wakes the caller.
fn report(state: &Mutex<OpState>, event: Event) -> bool {
    let mut guard = state.lock();
    if guard.cancelled {
        return false;
    }
    if matches!(event, Event::Admitted(..) | Event::Failed(_)) {
        guard.finished = true;
    }
    guard.events.push_back(event);
    let waker = guard.waker.take();
    drop(guard);
    if let Some(waker) = waker {
        waker.wake();
    }
    true
}

/// One `acquire` in flight: the task on the runtime, and the events it reported.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_RedisAcquire")]
pub(crate) struct PyRedisAcquire {
    inner: Arc<Inner>,
    /// The acquire's token: a cancel removes it from Redis itself, without waiting for the task.
    token: String,
    source: String,
    state: Arc<Mutex<OpState>>,
    /// Queue depth on arrival, once queued.
    waiting: Mutex<usize>,
    /// Why the slot was granted without limiting, once admitted that way.
    fail_open: Mutex<Option<String>>,
    /// The configured tracer, if any (else the global `ferrolimit` tracer).
    tracer: Option<Py<PyAny>>,
    /// The process the operation started in (see [`ProcessLimiter`]).
    pid: u32,
}

impl PyRedisAcquire {
    pub(crate) fn start(runtime: &Runtime, inner: &Arc<Inner>, source: String, tracer: Option<Py<PyAny>>) -> Self {
        let state = Arc::new(Mutex::new(OpState::default()));
        let token = inner.new_token();
        let task = {
            let (inner, state, token) = (Arc::clone(inner), Arc::clone(&state), token.clone());
            runtime.spawn(async move {
                let result = inner
                    .acquire_slot(token, |waiting| {
                        report(&state, Event::Queued(waiting));
                    })
                    .await;
                let event = match result {
                    Ok(admission) => {
                        inner.push_pooled(admission.slot.clone());
                        let slot = admission.slot.clone();
                        if !report(&state, Event::Admitted(slot, admission.fail_open)) {
                            // Cancelled meanwhile: the slot goes straight back.
                            inner.release_pooled_slot(&admission.slot);
                        }
                        return;
                    }
                    Err(err) => Event::Failed(err),
                };
                report(&state, event);
            })
        };
        state.lock().task = Some(task.abort_handle());
        Self {
            inner: Arc::clone(inner),
            token,
            source,
            state,
            waiting: Mutex::new(0),
            fail_open: Mutex::new(None),
            tracer,
            pid: std::process::id(),
        }
    }

    /// Whether this is a forked child of the process that started the operation.
    fn forked(&self) -> bool {
        self.pid != std::process::id()
    }

    /// The operation's state, unless this is a forked child: there the parent's I/O threads,
    /// which update it, do not exist, and may have held its lock at the fork.
    fn state(&self) -> PyResult<parking_lot::MutexGuard<'_, OpState>> {
        if self.forked() {
            return Err(PyRuntimeError::new_err(
                "this acquire was started before os.fork(), in the parent process; it cannot be \
                 awaited in the child",
            ));
        }
        Ok(self.state.lock())
    }

    /// Stops the task and gives back a slot it was granted but the caller never took.
    fn cancel_locked(&self, state: &mut OpState) {
        if state.cancelled {
            return;
        }
        state.cancelled = true;
        if let Some(task) = state.task.take() {
            task.abort();
        }
        if !state.finished {
            // Leave the queue now rather than when the aborted task is next polled, so that this
            // process's next counts and acquires already see it. Should the task still get its
            // slot, it sees the cancellation and releases the slot itself.
            self.inner.leave_in_background(self.token.clone(), false);
        }
        for event in state.events.drain(..) {
            if let Event::Admitted(slot, _) = event {
                self.inner.release_pooled_slot(&slot);
            }
        }
    }
}

#[pymethods]
impl PyRedisAcquire {
    /// Registers `callback(arg)` (or `schedule(callback, arg)` off the loop's thread) to run on
    /// the next event; `False` if an event is already there.
    fn wait(&self, callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> PyResult<bool> {
        let mut state = self.state()?;
        if !state.events.is_empty() {
            return Ok(false);
        }
        state.waker = Some(Arc::new(LoopWake::new(callback, arg, schedule)).into());
        Ok(true)
    }

    /// Takes the next event: `True` once admitted, `False` when queued; raises the failure.
    fn take(&self) -> PyResult<bool> {
        let event = self.state()?.events.pop_front();
        match event {
            Some(Event::Queued(waiting)) => {
                *self.waiting.lock() = waiting;
                Ok(false)
            }
            Some(Event::Admitted(_, fail_open)) => {
                *self.fail_open.lock() = fail_open.map(|e| e.to_string());
                Ok(true)
            }
            Some(Event::Failed(err)) => Err(redis_error(&err, display_name(self.inner.name(), &self.source))),
            None => Err(PyRuntimeError::new_err(
                "ferrolimit: an acquire was woken without an event",
            )),
        }
    }

    /// trio's abort: gives up if the caller has not been woken yet (`True`); `False` if a wake-up
    /// is already on its way, and the caller must then `take()` as usual.
    fn withdraw(&self) -> bool {
        let Ok(mut state) = self.state() else {
            return true; // a forked child: nothing of the parent's to give up here
        };
        if state.waker.take().is_none() {
            return false;
        }
        self.cancel_locked(&mut state);
        true
    }

    /// Gives up: the place in the queue is left, and a slot granted meanwhile is passed on. In a
    /// forked child, nothing: the operation is the parent's.
    fn cancel(&self) {
        if let Ok(mut state) = self.state() {
            self.cancel_locked(&mut state);
        }
    }

    /// The tracer the wait span goes to, `None` when the span would certainly be dropped (no
    /// tracer given, no global tracer provider set).
    fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        recording_tracer(py, self.tracer.as_ref())
    }

    /// The wait span's name and attributes.
    fn span<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDict>)> {
        let waiting = *self.waiting.lock();
        span_fields(py, self.inner.wait_span_fields(&self.source, waiting))
    }

    /// Why the slot was granted without limiting (Redis was unreachable), or `None`.
    fn fail_open_error(&self) -> Option<String> {
        self.fail_open.lock().clone()
    }
}

impl Drop for PyRedisAcquire {
    fn drop(&mut self) {
        if self.forked() {
            // Started in the parent of this forked child: the parent's runtime gives its slot
            // back. The shared parts stay alive here, as their last drop would take locks that
            // threads the child does not have may hold.
            std::mem::forget(Arc::clone(&self.inner));
            std::mem::forget(Arc::clone(&self.state));
            return;
        }
        let mut state = self.state.lock();
        self.cancel_locked(&mut state);
    }
}
