//! Types and functions built from C slots rather than `#[pyclass]`/`#[pyfunction]`, for the few
//! entry points every uncontended `async with` goes through (`get_concurrency_context`, the
//! context's `__aenter__`/`__aexit__`, the finished awaitable). pyo3's per-call trampoline,
//! argument parser and type check cost more there than the limiter's own work; `make bench`
//! measures the difference. Only the fast path runs bare: everything else goes through [`run`],
//! which attaches to the interpreter as pyo3 does and turns a panic into an exception.

#![allow(unsafe_code)]

use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::ffi::{CStr, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

/// A `METH_NOARGS` method.
pub(crate) type NoArgs = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;

/// A `METH_FASTCALL` method.
pub(crate) type Fast =
    unsafe extern "C" fn(*mut ffi::PyObject, *mut *mut ffi::PyObject, ffi::Py_ssize_t) -> *mut ffi::PyObject;

/// A `METH_NOARGS` method definition; `doc` may start with a text signature.
pub(crate) fn method_noargs(name: &'static CStr, function: NoArgs, doc: &'static CStr) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: function },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: doc.as_ptr(),
    }
}

/// A `METH_FASTCALL` method definition; `doc` may start with a text signature.
pub(crate) fn method_fast(name: &'static CStr, function: Fast, doc: &'static CStr) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFast: function,
        },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: doc.as_ptr(),
    }
}

/// A type slot.
pub(crate) fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// Creates a final type with no constructor: instances come only from Rust.
///
/// `name` is the qualified name (`module.Type`); `basicsize` the size of an instance's struct,
/// which must start with a `PyObject`; `slots` should not include `Py_tp_doc` or `Py_tp_methods`;
/// `gc`: instances take part in garbage collection (`slots` then has `Py_tp_traverse`).
pub(crate) fn new_type<'py>(
    py: Python<'py>,
    name: &'static CStr,
    doc: &'static CStr,
    basicsize: usize,
    methods: Vec<ffi::PyMethodDef>,
    slots: &[ffi::PyType_Slot],
    gc: bool,
) -> PyResult<Bound<'py, PyType>> {
    // CPython keeps pointers to the method table, as it does to the name: both must be static.
    let methods: &'static mut [ffi::PyMethodDef] =
        Box::leak(methods.into_iter().chain([ffi::PyMethodDef::zeroed()]).collect());
    let mut slots: Vec<ffi::PyType_Slot> = slots
        .iter()
        .copied()
        .chain([
            slot(ffi::Py_tp_doc, doc.as_ptr().cast_mut().cast()),
            slot(ffi::Py_tp_methods, methods.as_mut_ptr().cast()),
            slot(0, ptr::null_mut()),
        ])
        .collect();
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: c_int::try_from(basicsize)
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("type too large"))?,
        itemsize: 0,
        // Not a base type, no instances from Python (`type(obj)()` raises `TypeError`), and no
        // attributes to set or replace: as a built-in type.
        flags: (ffi::Py_TPFLAGS_DEFAULT
            | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
            | ffi::Py_TPFLAGS_IMMUTABLETYPE
            | if gc { ffi::Py_TPFLAGS_HAVE_GC } else { 0 })
        .try_into()
        .unwrap_or_default(),
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the spec and its slots are valid for the call; the name, the doc and the methods
    // are static.
    let ty = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&raw mut spec))? };
    Ok(ty.cast_into::<PyType>()?)
}

/// A new, zeroed instance of `ty`, to be filled in by the caller.
pub(crate) fn alloc(ty: &Bound<'_, PyType>) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: `ty` is a live type; the result is a new reference or NULL with an error set.
    let obj = unsafe { ffi::PyType_GenericAlloc(ty.as_ptr().cast(), 0) };
    if obj.is_null() {
        Err(PyErr::fetch(ty.py()))
    } else {
        Ok(obj)
    }
}

/// Frees an instance whose fields were dropped, and releases its reference to its (heap) type.
///
/// # Safety
///
/// `obj` is an instance of a heap type created by [`new_type`], not used again.
pub(crate) unsafe fn free(obj: *mut ffi::PyObject) {
    // SAFETY: the caller's contract; `Py_tp_free` is always set on a ready type.
    unsafe {
        let ty = ffi::Py_TYPE(obj);
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(ty.cast());
    }
}

/// Runs `f` as a pyo3 entry point would: attached to the interpreter, with a returned error
/// raised and a panic turned into a `PanicException`. Returns a new reference, or NULL with an
/// error set.
pub(crate) fn run(f: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    let mut result = None;
    attached_drop(|| {
        // SAFETY: called from a C method or slot, with the interpreter attached.
        let py = unsafe { attached() };
        let value = catch_unwind(AssertUnwindSafe(|| f(py))).unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panic from Rust code")
                .to_owned();
            Err(PanicException::new_err((message,)))
        });
        result = Some(match value {
            Ok(value) => value.into_ptr(),
            Err(err) => {
                err.restore(py);
                ptr::null_mut()
            }
        });
    });
    result.unwrap_or_else(ptr::null_mut)
}

/// Runs `f` with pyo3 counting this thread as attached, so that the references it drops are
/// released at once rather than deferred; directly if pyo3 refuses (a finalizing interpreter).
pub(crate) fn attached_drop(f: impl FnOnce()) {
    let mut f = Some(f);
    Python::try_attach(|_| f.take().map(|f| f()));
    if let Some(f) = f {
        f();
    }
}

/// Runs `f` with the error indicator saved and cleared, then restores it. For Python calls made
/// where an exception may be propagating: a destructor (`CPython` frees objects while unwinding)
/// or a waker run from one. Python code must never run with an error set (the interpreter then
/// loses the pending exception and crashes), and the pending exception must survive intact.
pub(crate) fn preserving_error<T>(_py: Python<'_>, f: impl FnOnce() -> T) -> T {
    let (mut ptype, mut pvalue, mut ptraceback) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    // SAFETY: the token proves the interpreter is attached; `PyErr_Fetch` moves the indicator's
    // three references (NULL when clear) into the locals and clears it, `PyErr_Restore` moves
    // them back (replacing whatever `f` left set), so no reference is lost or duplicated.
    unsafe { ffi::PyErr_Fetch(&raw mut ptype, &raw mut pvalue, &raw mut ptraceback) };
    let result = f();
    // SAFETY: as above.
    unsafe { ffi::PyErr_Restore(ptype, pvalue, ptraceback) };
    result
}

/// Raises `TypeError(message)` and returns NULL, for an argument count a raw method rejects.
pub(crate) fn type_error(message: &'static CStr) -> *mut ffi::PyObject {
    // SAFETY: called from a method, with the interpreter attached.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_TypeError, message.as_ptr()) };
    ptr::null_mut()
}

/// The interpreter token inside a C slot or method.
///
/// # Safety
///
/// Called only by `CPython`, with the interpreter attached; the token must not outlive the call.
/// Code using it must drop no `Py` (pyo3 would defer that decref): it may clone or hand over
/// references, and everything else goes through [`run`].
pub(crate) unsafe fn attached() -> Python<'static> {
    // SAFETY: the caller's contract.
    unsafe { Python::assume_attached() }
}
