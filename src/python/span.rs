//! Opening and closing a wait span from Rust, through `ferrolimit._wait.open_span` and
//! `close_span`: the one definition of the span, shared with the Python slow path.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// Starts the wait span `name` on `tracer`, as a child of the current span.
pub(crate) fn open_span<'py>(
    py: Python<'py>,
    tracer: &Bound<'py, PyAny>,
    name: String,
    attributes: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    static OPEN_SPAN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    OPEN_SPAN
        .import(py, "ferrolimit._wait", "open_span")?
        .call1((tracer, name, attributes))
}

/// Ends a wait span, recording the error the wait ended on, if any.
pub(crate) fn close_span(py: Python<'_>, span: &Bound<'_, PyAny>, error: Option<&PyErr>) -> PyResult<()> {
    static CLOSE_SPAN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let error = error.map(|err| err.value(py).clone().into_any());
    CLOSE_SPAN
        .import(py, "ferrolimit._wait", "close_span")?
        .call1((span, error))
        .map(drop)
}
