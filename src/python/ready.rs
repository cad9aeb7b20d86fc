//! The shared finished awaitable of the fast path: `Ready`, an awaitable whose value is `None`
//! and which finishes on its first step; also a no-op async context manager. One instance serves
//! every call that did not have to wait.
//!
//! Every uncontended `async with` awaits it twice (`__await__`, then `__next__`, once for
//! `__aenter__` and once for `__aexit__`), and none of its slots can fail, so they are plain C
//! functions (see [`raw`](crate::python::raw)).

#![allow(unsafe_code)]

use crate::python::docstrings::c_docstring;
use crate::python::errors::not_initialised;
use crate::python::raw::{self, RawType, method_fast, method_noargs, slot};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::ffi::c_void;
use std::ptr;

/// `__await__`, `__iter__` and `__aenter__`: the object itself.
unsafe extern "C" fn itself(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython passes a live object and takes a new reference back.
    unsafe { ffi::Py_INCREF(slf) };
    slf
}

/// `__next__`: finished at once. NULL with no error set ends the iteration with the value `None`,
/// without creating a `StopIteration`.
unsafe extern "C" fn finished(_slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    ptr::null_mut()
}

unsafe extern "C" fn aenter(slf: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: as for `itself`.
    unsafe { itself(slf) }
}

unsafe extern "C" fn aexit(
    slf: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    if nargs == 3 {
        // SAFETY: as for `itself`.
        unsafe { itself(slf) }
    } else {
        // SAFETY: CPython calls a method attached to the interpreter.
        unsafe { raw::entry(|py| raw::type_error(py, c"_Ready.__aexit__() takes exactly 3 arguments")) }
    }
}

/// The type and its one instance. The type has no constructor: Python code cannot create more
/// instances, and this one lives as long as the process.
fn build(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: no method or slot reads anything past the object header (the value is `()`),
    // and the deallocator is `raw::dealloc::<()>`.
    let ty = unsafe {
        RawType::<()>::new(
            py,
            c"ferrolimit._ferrolimit._Ready",
            c_docstring!(_Ready),
            vec![
                method_noargs(
                    c"__aenter__",
                    aenter,
                    c"__aenter__($self, /)\n--\n\nReturns this object, which finishes at once when awaited.",
                ),
                method_fast(
                    c"__aexit__",
                    aexit,
                    c"__aexit__($self, exc_type, exc, tb, /)\n--\n\nReturns this object, which finishes at once when awaited.",
                ),
            ],
            &[
                slot(ffi::Py_am_await, itself as *mut c_void),
                slot(ffi::Py_tp_iter, itself as *mut c_void),
                slot(ffi::Py_tp_iternext, finished as *mut c_void),
                slot(ffi::Py_tp_dealloc, raw::dealloc::<()> as *mut c_void),
            ],
            false,
        )?
    };
    Ok(ty.instantiate(py, ())?.unbind())
}

static READY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Creates the `Ready` type and its instance (once), and returns the type for the module's
/// namespace.
pub(crate) fn init(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(READY.get_or_try_init(py, || build(py))?.bind(py).get_type())
}

/// The shared finished awaitable (an error only if the module's initialisation did not run).
pub(crate) fn ready(py: Python<'_>) -> PyResult<Py<PyAny>> {
    READY
        .get(py)
        .map(|ready| ready.clone_ref(py))
        .ok_or_else(not_initialised)
}

/// [`ready`] as a C method returns it: a new reference, or NULL with the error set.
pub(crate) fn ready_ptr(py: Python<'_>) -> *mut ffi::PyObject {
    match ready(py) {
        Ok(ready) => ready.into_ptr(),
        Err(err) => {
            err.restore(py);
            ptr::null_mut()
        }
    }
}
