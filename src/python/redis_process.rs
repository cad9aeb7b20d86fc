//! The process's side of the Redis limiters: the tokio runtime their I/O runs on, the
//! connections they share per server, and the core limiter of each Python limiter, all rebuilt in
//! a child made by `os.fork()` (the parent's stay the parent's).

use crate::python::errors::redis_error;
use crate::{RedisBuilder, RedisConnections};
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::task::Waker;
use tokio::runtime::Runtime;

/// The process's runtime for Redis I/O: two worker threads, started on first use. A child made
/// by `os.fork()` inherits the runtime but not its threads, so it starts one of its own (the
/// parent's is leaked: its threads exist only in the parent).
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
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

/// Wakes `waker` (a Python caller's) from the process's wake-up thread rather than from the
/// calling one. The Redis runtime's two workers call this: a Python wake-up takes the GIL, and
/// a worker waiting for the GIL behind busy Python code would hold up every other task on it,
/// the renewal of leases included (a lease then runs out while its slot is held).
pub(crate) fn wake_off_runtime(waker: Waker) {
    static WAKER: Mutex<Option<(u32, Sender<Waker>)>> = Mutex::new(None);
    let pid = std::process::id();
    let sender = {
        let mut current = WAKER.lock();
        match &*current {
            Some((owner, sender)) if *owner == pid => Some(sender.clone()),
            _ => {
                let (sender, queue) = std::sync::mpsc::channel::<Waker>();
                let started = std::thread::Builder::new()
                    .name("ferrolimit-wake".to_owned())
                    .spawn(move || queue.into_iter().for_each(Waker::wake));
                // The parent's sender (after a fork) belongs to the parent: leave it alone.
                std::mem::forget(current.take());
                started.ok().map(|_| {
                    *current = Some((pid, sender.clone()));
                    sender
                })
            }
        }
    };
    match sender {
        Some(sender) => {
            if let Err(unsent) = sender.send(waker) {
                unsent.0.wake();
            }
        }
        // No thread could be started: wake from here.
        None => waker.wake(),
    }
}

/// A core limiter (plain or keyed) of one process. After `os.fork()` the child rebuilds it
/// from the same settings on its own runtime (as redis-py's connection pool resets itself): the
/// parent's connections and I/O threads stay with the parent, and so do the slots it holds.
pub(crate) struct ProcessLimiter<T> {
    current: Mutex<(u32, Option<Arc<T>>)>,
}

impl<T> ProcessLimiter<T> {
    pub(crate) fn new(limiter: T) -> Self {
        Self {
            current: Mutex::new((std::process::id(), Some(Arc::new(limiter)))),
        }
    }

    /// This process's limiter, made by `build` in a forked child.
    pub(crate) fn get(&self, build: impl FnOnce() -> PyResult<T>) -> PyResult<Arc<T>> {
        let pid = std::process::id();
        let mut current = self.current.lock();
        if current.0 != pid {
            let fresh = Arc::new(build()?);
            // Built in the parent: its locks may be held by threads the child does not have, and
            // its tasks run on a runtime without threads here. Leave it alone.
            std::mem::forget(current.1.replace(fresh));
            current.0 = pid;
        }
        current
            .1
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: the Redis limiter was not built"))
    }
}

impl<T> Drop for ProcessLimiter<T> {
    fn drop(&mut self) {
        let current = self.current.get_mut();
        if current.0 != std::process::id() {
            std::mem::forget(current.1.take());
        }
    }
}

/// `builder` on this process's runtime and this process's connections to its server.
pub(crate) fn on_this_process(builder: &RedisBuilder) -> PyResult<RedisBuilder> {
    let runtime = runtime()?;
    Ok(builder
        .clone()
        .runtime(runtime.handle().clone())
        .connections(connections(builder.url(), runtime)?))
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
