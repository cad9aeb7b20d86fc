//! The pyo3 layer: the `ferrolimit._ferrolimit` extension module. It converts arguments, calls
//! the core and maps errors; the limiter logic lives in the core.
#![allow(clippy::needless_pass_by_value, clippy::unused_self, clippy::unnecessary_wraps)]
// The doc attributes of the Python classes and methods are their Python docstrings (generated
// from the stubs, `docstrings.rs`), in Markdown for Python readers rather than for rustdoc.
#![allow(clippy::doc_markdown)]

mod acquire;
mod args;
mod asyncio_wait;
mod blocking;
mod context;
mod context_call;
mod docstrings;
mod errors;
mod governor;
mod handle;
mod idle;
mod keyed;
mod limiter;
mod raw;
mod ready;
mod redis;
mod redis_keyed;
mod redis_op;
mod redis_process;
mod session;
mod span;
mod wait;
mod waiter;
mod wake;

use pyo3::prelude::*;

/// The module as Python sees it: the public API (in `__all__`), then, under underscore names and
/// off `__all__`, the internals that `ferrolimit`'s own Python modules use.
#[pymodule]
#[pyo3(name = "_ferrolimit")]
mod native {
    #[pymodule_export]
    use super::blocking::PyBlockingContext;
    #[pymodule_export]
    use super::governor::{PyConcurrencyGovernor, PyConcurrencyPermit, PyGovernorStats};
    #[pymodule_export]
    use super::keyed::PyKeyedConcurrencyLimiter;
    #[pymodule_export]
    use super::limiter::{PyConcurrencyLimiter, PyLimiterStats};
    #[pymodule_export]
    use super::redis::PyRedisConcurrencyLimiter;
    #[pymodule_export]
    use super::redis_keyed::PyRedisKeyedConcurrencyLimiter;
    #[pymodule_export]
    use super::session::PySessionLimiter;
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("LimiterContext", super::context::init(py)?)?;
        super::context_call::add(m)?;
        // Internals: `setattr` leaves them out of `__all__`.
        m.setattr("_Ready", super::ready::init(py)?)?;
        m.setattr("_Counts", py.get_type::<super::limiter::PyCounts>())?;
        m.setattr("_Waiter", py.get_type::<super::waiter::PyWaiter>())?;
        m.setattr("_ScheduledWake", py.get_type::<super::wake::PyScheduledWake>())?;
        m.setattr("_IdleWait", py.get_type::<super::idle::PyIdleWait>())?;
        m.setattr("_AsyncioWait", py.get_type::<super::asyncio_wait::PyAsyncioWait>())?;
        m.setattr("_RedisOp", py.get_type::<super::redis_op::PyRedisOp>())?;
        m.setattr("_RedisStart", py.get_type::<super::redis_op::PyRedisStart>())?;
        m.setattr("_check_limits", wrap_pyfunction!(super::limiter::check_limits, m)?)?;
        m.setattr("_resolve_future", wrap_pyfunction!(super::wake::resolve_future, m)?)?;
        m.setattr("_before_exit", wrap_pyfunction!(super::wake::before_exit, m)?)?;
        m.setattr(
            "_after_fork_in_child",
            wrap_pyfunction!(super::wake::after_fork_in_child, m)?,
        )?;
        Ok(())
    }
}
