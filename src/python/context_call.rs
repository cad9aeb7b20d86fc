//! `get_concurrency_context(limiter, source='unnamed')`. pydantic-ai calls it for every model
//! request and agent run, nearly always with a limiter and a source it has named before; that
//! call returns the limiter's cached context (or, for `None`, the shared finished awaitable) from
//! a plain C function, without pyo3's argument parser (see [`raw`](crate::python::raw)). Every
//! other call goes to the full implementation, [`full`].

#![allow(unsafe_code)]

use crate::python::args::{Arg, source_or_unnamed};
use crate::python::context::Context;
use crate::python::docstrings::c_docstring;
use crate::python::errors::not_initialised;
use crate::python::limiter::PyConcurrencyLimiter;
use crate::python::raw;
use crate::python::ready::ready;
use crate::waiters::Request;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

/// The full implementation as a pyo3 function, for every call the fast path does not answer.
static FULL: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();

/// `get_concurrency_context`, for the calls the fast path leaves to it (not in the module).
#[pyfunction]
#[pyo3(name = "get_concurrency_context", signature = (limiter, source = Arg::Omitted))]
fn full(py: Python<'_>, limiter: &Bound<'_, PyAny>, source: Arg<'_>) -> PyResult<Py<PyAny>> {
    let source = source_or_unnamed(py, &source)?;
    if limiter.is_none() {
        return ready(py);
    }
    let source = &source;
    // Only the exact native class takes the fast path: a subclass may override `acquire`.
    if let Ok(native) = limiter.cast_exact::<PyConcurrencyLimiter>() {
        return Ok(native.get().context(py, source)?.into_any());
    }
    if limiter.hasattr(intern!(py, "acquire"))? && limiter.hasattr(intern!(py, "release"))? {
        Ok(Context::generic(py, limiter.clone().unbind(), source, Request::ONE)?.into_any())
    } else {
        let type_name = limiter.get_type().name()?;
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "limiter must be an AbstractConcurrencyLimiter or None, got {type_name}"
        )))
    }
}

/// The answer to `get_concurrency_context(*args)` when it needs no work: `None`, or a native
/// limiter and the very source object of its cached context.
fn cached(py: Python<'_>, args: &[*mut ffi::PyObject]) -> Option<Py<PyAny>> {
    let (limiter, source) = match args {
        [limiter] => (limiter, None),
        [limiter, source] => (limiter, Some(*source)),
        _ => return None,
    };
    // SAFETY: CPython passes borrowed references to live objects.
    let limiter = unsafe { Bound::ref_from_ptr(py, limiter) };
    if limiter.is_none() {
        return ready(py).ok();
    }
    let context = limiter
        .cast_exact::<PyConcurrencyLimiter>()
        .ok()?
        .get()
        .cached_context(py)?;
    context.is_for_object(source?).then(|| context.clone_ref(py).into_any())
}

/// Calls [`full`] with the arguments of a vectorcall.
fn call_full(
    py: Python<'_>,
    args: &[*mut ffi::PyObject],
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    // SAFETY: CPython passes borrowed references to live objects.
    let args: Vec<Bound<'_, PyAny>> = args
        .iter()
        .map(|a| unsafe { Bound::from_borrowed_ptr(py, *a) })
        .collect();
    let keywords = if kwnames.is_null() {
        None
    } else {
        // SAFETY: `kwnames` is a live tuple of the keyword names.
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) };
        let dict = PyDict::new(py);
        for (name, value) in names.try_iter()?.zip(&args[nargs..]) {
            dict.set_item(name?, value)?;
        }
        Some(dict)
    };
    let full = FULL.get(py).ok_or_else(not_initialised)?;
    Ok(full
        .bind(py)
        .call(PyTuple::new(py, &args[..nargs])?, keywords.as_ref())?
        .unbind())
}

/// `get_concurrency_context`, a `METH_FASTCALL | METH_KEYWORDS` function.
unsafe extern "C" fn get_concurrency_context(
    _module: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let nargs = usize::try_from(nargs).unwrap_or_default();
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: `kwnames` is a live tuple of the keyword names.
        usize::try_from(unsafe { ffi::PyTuple_Size(kwnames) }).unwrap_or_default()
    };
    let args: &[*mut ffi::PyObject] = if nargs + nkw == 0 {
        &[]
    } else {
        // SAFETY: CPython passes `nargs` positional arguments followed by the keyword values.
        unsafe { std::slice::from_raw_parts(args, nargs + nkw) }
    };
    // SAFETY: CPython calls a function attached to the interpreter.
    unsafe {
        raw::entry(|py| {
            if nkw == 0
                && let Some(context) = cached(py, args)
            {
                return context.into_ptr();
            }
            raw::run(py, |py| call_full(py, args, nargs, kwnames))
        })
    }
}

/// Adds `get_concurrency_context` to the module.
pub(crate) fn add(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    FULL.get_or_try_init(py, || wrap_pyfunction!(full, module).map(Bound::unbind))?;
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"get_concurrency_context".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: get_concurrency_context,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c_docstring!(
            "get_concurrency_context(limiter, source='unnamed')",
            get_concurrency_context
        )
        .as_ptr(),
    }));
    // SAFETY: `def` is static, as CPython keeps a pointer to it; the result is a new reference
    // or NULL with an error set.
    let function = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(def, module.as_ptr(), module.name()?.as_ptr()),
        )?
    };
    module.add("get_concurrency_context", function)
}
