//! The pyo3 layer: the `ferrolimit._ferrolimit` extension module. It converts arguments, calls
//! the core and maps errors; the limiter logic lives in the core.
#![allow(clippy::needless_pass_by_value, clippy::unused_self, clippy::unnecessary_wraps)]

mod acquire;
mod args;
mod asyncio_wait;
mod blocking;
mod context;
mod context_call;
mod errors;
mod governor;
mod handle;
mod limiter;
mod raw;
mod ready;
mod redis;
mod session;
mod span;
mod wait;
mod waiter;
mod wake;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_ferrolimit")]
fn ferrolimit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<limiter::PyConcurrencyLimiter>()?;
    m.add_class::<limiter::PyLimiterStats>()?;
    m.add_class::<limiter::PyCounts>()?;
    m.add_class::<governor::PyConcurrencyGovernor>()?;
    m.add_class::<governor::PyConcurrencyPermit>()?;
    m.add_class::<governor::PyGovernorStats>()?;
    m.add_class::<session::PySessionLimiter>()?;
    m.add("LimiterContext", context::init(m.py())?)?;
    m.add_class::<waiter::PyWaiter>()?;
    m.add("Ready", ready::init(m.py())?)?;
    m.add_class::<wake::PyScheduledWake>()?;
    m.add_class::<asyncio_wait::PyAsyncioWait>()?;
    m.add_class::<blocking::PyBlockingContext>()?;
    m.add_class::<redis::PyRedisConcurrencyLimiter>()?;
    m.add_class::<redis::PyRedisAcquire>()?;
    context_call::add(m)?;
    m.add_function(wrap_pyfunction!(limiter::check_limits, m)?)?;
    m.add_function(wrap_pyfunction!(wake::resolve_future, m)?)?;
    m.add_function(wrap_pyfunction!(wake::before_exit, m)?)?;
    m.add_function(wrap_pyfunction!(wake::after_fork_in_child, m)?)?;
    Ok(())
}
