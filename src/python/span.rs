//! A wait span from Rust: its fields as Python values, and opening and closing it as
//! `ferrolimit._wait.open_span` and `close_span` do on the Python slow path; an error is recorded
//! by `close_span` itself, the one place that knows how.

use crate::telemetry::{AttrValue, WaitSpanFields};
use pyo3::intern;
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
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "attributes"), attributes)?;
    tracer.call_method(intern!(py, "start_span"), (name,), Some(&kwargs))
}

/// Ends a wait span, recording the error the wait ended on, if any.
pub(crate) fn close_span(py: Python<'_>, span: &Bound<'_, PyAny>, error: Option<&PyErr>) -> PyResult<()> {
    static CLOSE_SPAN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    match error {
        None => span.call_method0(intern!(py, "end")).map(drop),
        Some(err) => CLOSE_SPAN
            .import(py, "ferrolimit._wait", "close_span")?
            .call1((span, err.value(py)))
            .map(drop),
    }
}

/// A wait span's name and its attributes as a Python dict.
pub(crate) fn span_fields<'py>(py: Python<'py>, fields: WaitSpanFields<'_>) -> PyResult<(String, Bound<'py, PyDict>)> {
    let attributes = PyDict::new(py);
    for (key, value) in fields.attributes {
        match value {
            AttrValue::Str(s) => attributes.set_item(key, s)?,
            AttrValue::Int(i) => attributes.set_item(key, i)?,
        }
    }
    Ok((fields.name, attributes))
}
