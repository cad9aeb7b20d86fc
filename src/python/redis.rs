//! `ferrolimit.RedisConcurrencyLimiter`: the native class over the core's Redis limiter, and the
//! operation a Python `acquire` awaits.
//!
//! Redis I/O runs on one tokio runtime shared by the process. An acquire is a task there; it
//! reports its events (queued, admitted, failed) to a [`PyRedisAcquire`], which wakes the Python
//! caller on its own event loop through [`LoopWake`], on asyncio and trio alike.
//!
//! Why not `pyo3-async-runtimes`' `future_into_py`: it bridges to asyncio only, and ferrolimit
//! supports trio as well; with it, trio would need this bridge anyway. It also has no way to tell
//! a cancellation that lost the race with an admission, which trio's abort needs (`withdraw`).
//! Speed is no reason either way (see `benches/README.md`): measured with the same Redis work
//! behind both, this bridge was 11% faster on an uncontended round trip and 15% slower (it also
//! opens the wait span) with 16 tasks on 4 slots.

use crate::python::args::{Arg, check_str, limits, source_or_unnamed, tracer_arg};
use crate::python::context::Context;
use crate::python::errors::{redis_error, release_error};
use crate::python::handle::tracer_or_default;
use crate::python::ready::ready;
use crate::python::span::span_fields;
use crate::python::wake::LoopWake;
use crate::redis::{Inner, Slot};
use crate::telemetry::display_name;
use crate::{RedisBuilder, RedisConcurrencyLimiter, RedisConnections, RedisLimiterError, ReleaseError};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyRuntimeWarning, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyString};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;
use tokio::runtime::Runtime;

/// The process's runtime for Redis I/O: two worker threads, started on first use. A child made
/// by `os.fork()` inherits the runtime but not its threads, so it starts one of its own (the
/// parent's is leaked: its threads exist only in the parent).
fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut current = RUNTIME.lock();
    if let Some((owner, runtime)) = *current
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrolimit-redis")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the Redis I/O runtime: {e}")))?;
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *current = Some((pid, runtime));
    Ok(runtime)
}

/// The core limiter of one process. After `os.fork()` the child rebuilds it from the same
/// settings on its own runtime (as redis-py's connection pool resets itself): the parent's
/// connections and I/O threads stay with the parent, and so do the slots it holds.
struct ProcessLimiter {
    pid: u32,
    limiter: Option<Arc<RedisConcurrencyLimiter>>,
}

impl Drop for ProcessLimiter {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Built in the parent: its locks may be held by threads the child does not have, and
            // its tasks run on a runtime without threads here. Leave it alone.
            std::mem::forget(self.limiter.take());
        }
    }
}

/// The Redis-backed limiter (documented in `_ferrolimit.pyi`).
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "RedisConcurrencyLimiter")]
pub(crate) struct PyRedisConcurrencyLimiter {
    /// The settings, without a runtime: `limiter()` builds from them in a forked child.
    builder: RedisBuilder,
    current: Mutex<ProcessLimiter>,
    key: String,
    name: Option<String>,
    max_running: usize,
    max_queued: Option<usize>,
    lease_seconds: f64,
    fail_open: bool,
    tracer: Option<Py<PyAny>>,
}

/// Builds a limiter on this process's runtime and on this process's connections to its server.
fn build(builder: &RedisBuilder) -> PyResult<Arc<RedisConcurrencyLimiter>> {
    let runtime = runtime()?;
    let limiter = builder
        .clone()
        .runtime(runtime.handle().clone())
        .connections(connections(builder.url(), runtime)?)
        .build()
        .map_err(|e| redis_error(&e, ""))?;
    Ok(Arc::new(limiter))
}

/// The connections this process's limiters share with one server: one command connection and
/// one subscription per URL, however many limiters and keys. A forked child opens its own.
fn connections(url: &str, runtime: &Runtime) -> PyResult<RedisConnections> {
    static SHARED: Mutex<Option<(u32, HashMap<String, RedisConnections>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut shared = SHARED.lock();
    let by_url = match &mut *shared {
        Some((owner, by_url)) if *owner == pid => by_url,
        other => {
            // The parent's connections belong to the parent: leave them alone (see `runtime`).
            std::mem::forget(other.take());
            &mut other.insert((pid, HashMap::new())).1
        }
    };
    if let Some(connections) = by_url.get(url) {
        return Ok(connections.clone());
    }
    let connections = RedisConnections::with_runtime(url, runtime.handle().clone()).map_err(|e| redis_error(&e, ""))?;
    by_url.insert(url.to_owned(), connections.clone());
    Ok(connections)
}

impl PyRedisConcurrencyLimiter {
    /// This process's core limiter (built anew in a forked child).
    fn limiter(&self) -> PyResult<Arc<RedisConcurrencyLimiter>> {
        let pid = std::process::id();
        let mut current = self.current.lock();
        if current.pid != pid {
            let fresh = build(&self.builder)?;
            std::mem::forget(current.limiter.replace(fresh));
            current.pid = pid;
        }
        current
            .limiter
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: the Redis limiter was not built"))
    }

    fn inner(&self) -> PyResult<Arc<Inner>> {
        Ok(Arc::clone(self.limiter()?.inner()))
    }

    /// Reads the fleet-wide counts, blocking this thread (not the GIL) for one round trip.
    fn counts(&self, py: Python<'_>) -> PyResult<crate::RedisCounts> {
        let (runtime, limiter) = (runtime()?, self.limiter()?);
        py.detach(|| runtime.block_on(limiter.counts()))
            .map_err(|e| redis_error(&e, self.name.as_deref().unwrap_or("")))
    }

    fn tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        tracer_or_default(py, self.tracer.as_ref())
    }

    /// Starts an acquire and returns the coroutine that waits for it.
    fn start_acquire(slf: &Bound<'_, Self>, source: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        static ACQUIRE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        let this = slf.get();
        let tracer = this.tracer(py)?.unbind();
        let op = Py::new(
            py,
            PyRedisAcquire::start(
                runtime()?,
                &this.inner()?,
                source.to_string_lossy().into_owned(),
                tracer,
            ),
        )?;
        Ok(ACQUIRE
            .import(py, "ferrolimit._redis", "acquire")?
            .call1((op,))?
            .unbind())
    }
}

#[pymethods]
impl PyRedisConcurrencyLimiter {
    #[new]
    #[pyo3(
        signature = (redis_url, key, max_running, *, max_queued = None, lease_seconds = None, name = None, tracer = None, fail_open = false),
        text_signature = "(redis_url, key, max_running, *, max_queued=None, lease_seconds=30.0, name=None, tracer=None, fail_open=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        redis_url: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        lease_seconds: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        tracer: Option<Py<PyAny>>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let redis_url = check_str(redis_url, "redis_url")?.to_str()?.to_owned();
        let key = check_str(key, "key")?.to_str()?.to_owned();
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let tracer = tracer_arg(tracer, py)?;
        let lease = match lease_seconds {
            Some(seconds) => lease_duration(seconds)?,
            None => Duration::from_secs(30),
        };
        let mut builder = RedisConcurrencyLimiter::builder(redis_url, key.clone(), max_running as usize)
            .lease(lease)
            .fail_open(fail_open);
        if let Some(max_queued) = max_queued {
            builder = builder.max_queued(max_queued);
        }
        if let Some(name) = &name {
            builder = builder.name(name.clone());
        }
        let limiter = build(&builder)?;
        Ok(Self {
            builder,
            current: Mutex::new(ProcessLimiter {
                pid: std::process::id(),
                limiter: Some(limiter),
            }),
            key,
            name,
            max_running: max_running as usize,
            max_queued,
            lease_seconds: lease.as_secs_f64(),
            fail_open,
            tracer,
        })
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    #[getter]
    const fn lease_seconds(&self) -> f64 {
        self.lease_seconds
    }

    #[getter]
    const fn fail_open(&self) -> bool {
        self.fail_open
    }

    #[getter]
    const fn max_running(&self) -> usize {
        self.max_running
    }

    #[getter]
    const fn _max_queued(&self) -> Option<usize> {
        self.max_queued
    }

    #[getter]
    fn running_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.running)
    }

    #[getter]
    fn waiting_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.waiting)
    }

    #[getter]
    fn available_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.counts(py)?.available)
    }

    #[getter]
    fn held_count(&self) -> PyResult<usize> {
        Ok(self.inner()?.pooled_count())
    }

    #[getter]
    fn lost_count(&self) -> PyResult<u64> {
        Ok(self.limiter()?.lost_total())
    }

    #[getter]
    fn other_max_running(&self) -> PyResult<Option<usize>> {
        Ok(self.limiter()?.other_max_running())
    }

    fn _get_tracer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.tracer(py)
    }

    #[pyo3(signature = (source = Arg::Omitted), text_signature = "($self, source='unnamed')")]
    fn acquire(slf: &Bound<'_, Self>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        Self::start_acquire(slf, &source_or_unnamed(slf.py(), &source)?)
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner()?;
        if !inner.release_pooled() {
            return Err(release_error(ReleaseError));
        }
        // Reported here, with the slot already given back, so that a warning turned into an
        // error cannot cost a slot.
        if let Some(other) = inner.unreported_max_running() {
            let message = format!(
                "RedisConcurrencyLimiter(key={}): another process used max_running={other} for this key \
                 within the last lease; this one uses {}. Processes sharing a key must agree on \
                 max_running: each admits up to its own.",
                PyString::new(py, &self.key).repr()?,
                self.max_running
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
        }
        Ok(())
    }

    #[pyo3(signature = (source = Arg::Omitted))]
    fn __call__(slf: &Bound<'_, Self>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Ok(Context::generic(py, slf.clone().into_any().unbind(), &source_or_unnamed(py, &source)?)?.into_any())
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::start_acquire(slf, intern!(slf.py(), "unnamed"))
    }

    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.release(py)?;
        ready(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = match &self.name {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "RedisConcurrencyLimiter(key={}, max_running={}, max_queued={}, name={name}, held={})",
            PyString::new(py, &self.key).repr()?,
            self.max_running,
            self.max_queued.map_or_else(|| "None".to_owned(), |q| q.to_string()),
            self.held_count()?,
        ))
    }
}

/// The longest lease: a day. A lease is how long a crashed process's slot stays taken, and the
/// holders renew theirs while they run, so a longer one only keeps lost slots longer.
const MAX_LEASE_SECONDS: f64 = 86_400.0;

/// Reads `lease_seconds`: a finite number of seconds from 0.03 to a day.
fn lease_duration(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let not_a_number = || {
        let type_name = value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("lease_seconds must be a number, got {type_name}"))
    };
    if value.is_instance_of::<PyBool>() {
        return Err(not_a_number());
    }
    let out_of_range = || {
        PyValueError::new_err(format!(
            "lease_seconds must be a finite number between 0.03 and {MAX_LEASE_SECONDS}, got {value}"
        ))
    };
    let seconds: f64 = match value.extract() {
        Ok(seconds) => seconds,
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => return Err(out_of_range()),
        Err(_) => return Err(not_a_number()),
    };
    if !(0.03..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(out_of_range());
    }
    Ok(Duration::from_secs_f64(seconds))
}

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
    tracer: Py<PyAny>,
    /// The process the operation started in (see [`ProcessLimiter`]).
    pid: u32,
}

impl PyRedisAcquire {
    fn start(runtime: &Runtime, inner: &Arc<Inner>, source: String, tracer: Py<PyAny>) -> Self {
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

    /// The tracer the wait span goes to.
    fn tracer<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.tracer.bind(py).clone()
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
