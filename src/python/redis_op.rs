//! One Redis operation in flight ([`PyRedisOp`], `_RedisOp`): an acquire, or a wait for the
//! limiter object to be idle. It is a task on the Redis runtime that reports its events
//! (queued, admitted, timed out, failed, idle), and the Python side that `ferrolimit._redis`
//! drives, woken on its own event loop through [`LoopWake`] (or, for the blocking API, on its
//! own thread).

use crate::RedisLimiterError;
use crate::python::docstrings::docstring;
use crate::python::errors::redis_error;
use crate::python::handle::recording_tracer;
use crate::python::redis_process::{runtime, wake_off_runtime};
use crate::python::span::span_fields;
use crate::python::wake::LoopWake;
use crate::redis::{Inner, Slot, Wait};
use crate::telemetry::display_name;
use crate::waiters::Request;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;
use tokio::runtime::Runtime;

/// What an operation reports, in order.
enum Event {
    /// The caller has to wait; the queue depth on arrival.
    Queued(usize),
    /// The caller holds the slots (already in the limiter's pool); the error if it failed open.
    Admitted(Slot, u32, Option<RedisLimiterError>),
    Failed(RedisLimiterError),
    /// A wait for idleness ended: `true` idle, `false` timed out.
    Idle(bool),
}

impl Event {
    /// Whether it is the operation's last event.
    const fn is_last(&self) -> bool {
        !matches!(self, Self::Queued(_))
    }
}

#[derive(Default)]
struct OpState {
    events: VecDeque<Event>,
    waker: Option<Waker>,
    cancelled: bool,
    /// Set with the last event: the task is done with Redis.
    finished: bool,
    task: Option<tokio::task::AbortHandle>,
}

/// Pushes an event (unless the operation was cancelled) and wakes the caller.
fn report(state: &Mutex<OpState>, event: Event) -> bool {
    let mut guard = state.lock();
    if guard.cancelled {
        return false;
    }
    guard.finished |= event.is_last();
    guard.events.push_back(event);
    let waker = guard.waker.take();
    drop(guard);
    if let Some(waker) = waker {
        wake_off_runtime(waker);
    }
    true
}

// One operation in flight: the task on the runtime, and the events it reported.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_RedisOp")]
#[doc = docstring!(_RedisOp)]
pub(crate) struct PyRedisOp {
    /// The acquire's limiter object and token (a cancel removes the token from Redis itself,
    /// without waiting for the task); `None` for a wait for idleness.
    acquire: Option<(Arc<Inner>, String)>,
    source: String,
    state: Arc<Mutex<OpState>>,
    /// Queue depth on arrival, once queued.
    waiting: Mutex<usize>,
    /// Why the slot was granted without limiting, once admitted that way.
    fail_open: Mutex<Option<String>>,
    /// The slots taken by `take()`, until the caller has them (`done()`); `cancel()` gives
    /// them back meanwhile (the wait span failed to end, say).
    granted: Mutex<Option<(Slot, u32)>>,
    /// The configured tracer, if any (else the global `ferrolimit` tracer).
    tracer: Option<Py<PyAny>>,
    /// The process the operation started in (see [`ProcessLimiter`]).
    pid: u32,
}

impl PyRedisOp {
    fn new(acquire: Option<(Arc<Inner>, String)>, source: String, tracer: Option<Py<PyAny>>) -> Self {
        Self {
            acquire,
            source,
            state: Arc::new(Mutex::new(OpState::default())),
            waiting: Mutex::new(0),
            fail_open: Mutex::new(None),
            granted: Mutex::new(None),
            tracer,
            pid: std::process::id(),
        }
    }

    fn spawn(self, runtime: &Runtime, work: impl Future<Output = ()> + Send + 'static) -> Self {
        let task = runtime.spawn(work);
        self.state.lock().task = Some(task.abort_handle());
        self
    }

    /// Starts an acquire of `request` that gives up after `timeout`.
    pub(crate) fn acquire(
        runtime: &Runtime,
        inner: &Arc<Inner>,
        source: String,
        tracer: Option<Py<PyAny>>,
        request: Request,
        timeout: Option<Duration>,
    ) -> Self {
        let token = inner.new_token();
        let op = Self::new(Some((Arc::clone(inner), token.clone())), source, tracer);
        let (inner, state) = (Arc::clone(inner), Arc::clone(&op.state));
        op.spawn(runtime, async move {
            let queued = |waiting| {
                report(&state, Event::Queued(waiting));
            };
            let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
            let wait = Wait {
                deadline,
                count_drop: false,
            };
            let event = match inner.acquire_slot(token, request, wait, queued).await {
                Ok(admission) => {
                    inner.push_pooled(admission.slot.clone(), admission.weight);
                    let event = Event::Admitted(admission.slot.clone(), admission.weight, admission.fail_open);
                    if !report(&state, event) {
                        // Cancelled meanwhile: the cancellation already gave the token up on the
                        // server, so the slot only leaves the pool.
                        inner.discard_pooled_slot(&admission.slot, admission.weight);
                    }
                    return;
                }
                Err(err) => Event::Failed(err),
            };
            report(&state, event);
        })
    }

    /// Starts a wait for `idle` (a limiter's callers holding no slot), for at most `timeout`.
    pub(crate) fn wait_idle(
        runtime: &Runtime,
        idle: impl Future<Output = ()> + Send + 'static,
        timeout: Option<Duration>,
    ) -> Self {
        let op = Self::new(None, String::new(), None);
        let state = Arc::clone(&op.state);
        op.spawn(runtime, async move {
            let idle = if let Some(limit) = timeout {
                tokio::time::timeout(limit, idle).await.is_ok()
            } else {
                idle.await;
                true
            };
            report(&state, Event::Idle(idle));
        })
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
                "this operation was started before os.fork(), in the parent process; it cannot be \
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
        let Some((inner, token)) = &self.acquire else { return };
        // A wait given up, also one whose slots came but were never taken (as the local limiter
        // counts it).
        if !state.finished || state.events.iter().any(|e| matches!(e, Event::Admitted(..))) {
            inner.count_cancelled();
        }
        if !state.finished {
            // Leave the queue now rather than when the aborted task is next polled, so that this
            // process's next counts and acquires already see it. Should the task still get its
            // slot, it sees the cancellation and releases the slot itself.
            inner.leave_in_background(token.clone(), None, false);
        }
        for event in state.events.drain(..) {
            if let Event::Admitted(slot, weight, _) = event {
                inner.release_pooled_slot(&slot, weight);
            }
        }
    }
}

// An acquire not started yet: `start()` starts it, when the coroutine of `acquire()` first
// runs (as the local limiter's, calling `acquire()` takes nothing).
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_RedisStart")]
#[doc = docstring!(_RedisStart)]
pub(crate) struct PyRedisStart {
    inner: Arc<Inner>,
    source: String,
    tracer: Option<Py<PyAny>>,
    request: Request,
    timeout: Option<Duration>,
    pid: u32,
}

impl PyRedisStart {
    pub(crate) fn new(
        inner: &Arc<Inner>,
        source: String,
        tracer: Option<Py<PyAny>>,
        request: Request,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            inner: Arc::clone(inner),
            source,
            tracer,
            request,
            timeout,
            pid: std::process::id(),
        }
    }
}

#[pymethods]
impl PyRedisStart {
    // Starts the acquire.
    #[doc = docstring!(_RedisStart.start)]
    fn start(&self, py: Python<'_>) -> PyResult<PyRedisOp> {
        if self.pid != std::process::id() {
            return Err(PyRuntimeError::new_err(
                "this acquire was made before os.fork(), in the parent process; make a new one in the child",
            ));
        }
        let tracer = self.tracer.as_ref().map(|t| t.clone_ref(py));
        Ok(PyRedisOp::acquire(
            runtime()?,
            &self.inner,
            self.source.clone(),
            tracer,
            self.request,
            self.timeout,
        ))
    }
}

impl Drop for PyRedisStart {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // The parent's limiter object: its last drop would take locks of the parent's threads.
            std::mem::forget(Arc::clone(&self.inner));
        }
    }
}

#[pymethods]
impl PyRedisOp {
    // Registers `callback(arg)` (or `schedule(callback, arg)` off the loop's thread) to run on
    // the next event; `False` if an event is already there.
    #[doc = docstring!(_RedisOp.wait)]
    fn wait(&self, callback: Py<PyAny>, arg: Py<PyAny>, schedule: Py<PyAny>) -> PyResult<bool> {
        let mut state = self.state()?;
        if !state.events.is_empty() {
            return Ok(false);
        }
        state.waker = Some(Arc::new(LoopWake::new(callback, arg, schedule)).into());
        Ok(true)
    }

    // Takes the next event: `True` once admitted (or idle), `False` when queued (or not idle in
    // time); raises the failure.
    #[doc = docstring!(_RedisOp.take)]
    fn take(&self) -> PyResult<bool> {
        let event = self.state()?.events.pop_front();
        match event {
            Some(Event::Queued(waiting)) => {
                *self.waiting.lock() = waiting;
                Ok(false)
            }
            Some(Event::Admitted(slot, weight, fail_open)) => {
                *self.fail_open.lock() = fail_open.map(|e| e.to_string());
                *self.granted.lock() = Some((slot, weight));
                Ok(true)
            }
            Some(Event::Idle(idle)) => Ok(idle),
            Some(Event::Failed(err)) => Err(redis_error(&err, display_name(self.name(), &self.source))),
            None => Err(PyRuntimeError::new_err(
                "ferrolimit: a Redis operation was woken without an event",
            )),
        }
    }

    // trio's abort: gives up if the caller has not been woken yet (`True`); `False` if a wake-up
    // is already on its way, and the caller must then `take()` as usual.
    #[doc = docstring!(_RedisOp.withdraw)]
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

    // Gives up: the place in the queue is left, and slots granted meanwhile (taken by `take()`
    // but not yet handed over by `done()` included) are passed on. In a forked child, nothing:
    // the operation is the parent's.
    #[doc = docstring!(_RedisOp.cancel)]
    fn cancel(&self) {
        if let Ok(mut state) = self.state() {
            self.cancel_locked(&mut state);
            drop(state);
            if let (Some((inner, _)), Some((slot, weight))) = (&self.acquire, self.granted.lock().take()) {
                inner.count_cancelled();
                inner.release_pooled_slot(&slot, weight);
            }
        }
    }

    // The caller has the slots `take()` reported: nothing gives them back any more.
    #[doc = docstring!(_RedisOp.done)]
    fn done(&self) {
        self.granted.lock().take();
    }

    // The tracer the wait span goes to, `None` when the span would certainly be dropped (no
    // tracer given, no global tracer provider set).
    #[doc = docstring!(_RedisOp.tracer)]
    fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        recording_tracer(py, self.tracer.as_ref())
    }

    // The wait span's name and attributes.
    #[doc = docstring!(_RedisOp.span)]
    fn span<'py>(&self, py: Python<'py>) -> PyResult<(String, Bound<'py, PyDict>)> {
        let Some((inner, _)) = &self.acquire else {
            return Err(PyRuntimeError::new_err(
                "ferrolimit: a wait for idleness has no wait span",
            ));
        };
        let waiting = *self.waiting.lock();
        span_fields(py, inner.wait_span_fields(&self.source, waiting))
    }

    // Why the slot was granted without limiting (Redis was unreachable), or `None`.
    #[doc = docstring!(_RedisOp.fail_open_error)]
    fn fail_open_error(&self) -> Option<String> {
        self.fail_open.lock().clone()
    }
}

impl PyRedisOp {
    /// The acquire's limiter name.
    fn name(&self) -> Option<&str> {
        self.acquire.as_ref().and_then(|(inner, _)| inner.name())
    }
}

impl Drop for PyRedisOp {
    fn drop(&mut self) {
        if self.forked() {
            // Started in the parent of this forked child: the parent's runtime gives its slot
            // back. The shared parts stay alive here, as their last drop would take locks that
            // threads the child does not have may hold.
            std::mem::forget(self.acquire.take());
            std::mem::forget(Arc::clone(&self.state));
            return;
        }
        let mut state = self.state.lock();
        self.cancel_locked(&mut state);
    }
}
