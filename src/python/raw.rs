//! Types and functions built from C slots rather than `#[pyclass]`/`#[pyfunction]`, for the few
//! entry points every uncontended `async with` goes through (`get_concurrency_context`, the
//! context's `__aenter__`/`__aexit__`, the finished awaitable). pyo3's per-call trampoline,
//! argument parser and type check cost more there than the limiter's own work; `make bench`
//! measures the difference.
//!
//! The unsafe parts are here, behind a small API: [`RawType<T>`] builds a type whose instances
//! hold a `T`, allocated and filled in one step and freed by [`dealloc`]; every C method body
//! runs inside [`entry`], which hands it a scoped interpreter token and turns a panic into a
//! `PanicException`; whatever is not the fast path goes through [`run`], which also attaches to
//! the interpreter as pyo3 does. The three modules of C entry points (`context`, `ready`,
//! `context_call`) keep only the pointer reads of their own arguments.

#![allow(unsafe_code)]

use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::ffi::{CStr, c_int, c_void};
use std::marker::PhantomData;
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
///
/// # Safety
///
/// `pfunc` has the C signature that `CPython` expects for `slot`.
pub(crate) unsafe fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// The layout of an instance of a [`RawType<T>`]: the object header, then the Rust value.
#[repr(C)]
struct Object<T> {
    base: ffi::PyObject,
    value: T,
}

/// A final type with no constructor, whose instances each hold a `T` and come only from Rust
/// ([`instantiate`](Self::instantiate)): allocated and filled in one step, so no slot ever sees
/// an instance without its value.
pub(crate) struct RawType<T> {
    ty: Py<PyType>,
    value: PhantomData<fn(T) -> T>,
}

impl<T> RawType<T> {
    /// Creates the type. `name` is the qualified name (`module.Type`); `slots` should not include
    /// `Py_tp_doc` or `Py_tp_methods`; `gc`: instances take part in garbage collection (`slots`
    /// then has `Py_tp_traverse` and `Py_tp_clear`).
    ///
    /// # Safety
    ///
    /// Every method and slot function given reads its instance only through [`value`] with this
    /// `T`, and `Py_tp_dealloc` is [`dealloc::<T>`](dealloc) or does what it does.
    pub(crate) unsafe fn new(
        py: Python<'_>,
        name: &'static CStr,
        doc: &'static CStr,
        methods: Vec<ffi::PyMethodDef>,
        slots: &[ffi::PyType_Slot],
        gc: bool,
    ) -> PyResult<Self> {
        // CPython keeps pointers to the method table, as it does to the name: both must be static.
        let methods: &'static mut [ffi::PyMethodDef] =
            Box::leak(methods.into_iter().chain([ffi::PyMethodDef::zeroed()]).collect());
        // SAFETY: a static doc string, a static method table and the terminating entry.
        let mut slots: Vec<ffi::PyType_Slot> = slots
            .iter()
            .copied()
            .chain(unsafe {
                [
                    slot(ffi::Py_tp_doc, doc.as_ptr().cast_mut().cast()),
                    slot(ffi::Py_tp_methods, methods.as_mut_ptr().cast()),
                    slot(0, ptr::null_mut()),
                ]
            })
            .collect();
        let mut spec = ffi::PyType_Spec {
            name: name.as_ptr(),
            basicsize: c_int::try_from(size_of::<Object<T>>())
                .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("type too large"))?,
            itemsize: 0,
            // Not a base type, no instances from Python (`type(obj)()` raises `TypeError`), and
            // no attributes to set or replace: as a built-in type.
            flags: (ffi::Py_TPFLAGS_DEFAULT
                | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
                | ffi::Py_TPFLAGS_IMMUTABLETYPE
                | if gc { ffi::Py_TPFLAGS_HAVE_GC } else { 0 })
            .try_into()
            .unwrap_or_default(),
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec and its slots are valid for the call; the name, the doc and the
        // methods are static; the slots' contract is the caller's.
        let ty = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&raw mut spec))? };
        Ok(Self {
            ty: ty.cast_into::<PyType>()?.unbind(),
            value: PhantomData,
        })
    }

    /// The type object.
    pub(crate) fn get<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.ty.bind(py)
    }

    /// A new instance holding `value`.
    pub(crate) fn instantiate<'py>(&self, py: Python<'py>, value: T) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: the type is live; the result is a new reference or NULL with an error set.
        let obj = unsafe { ffi::PyType_GenericAlloc(self.ty.as_ptr().cast(), 0) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `obj` is a new, zeroed instance with the `Object<T>` layout (`new` sized it so).
        // A GC type's instance is already tracked, but the collector cannot run before the value
        // is written: nothing in between allocates or runs Python code.
        unsafe {
            ptr::write(&raw mut (*obj.cast::<Object<T>>()).value, value);
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }
}

/// The value of a live instance of a [`RawType<T>`].
///
/// # Safety
///
/// `obj` is a live instance made by [`RawType::instantiate`] for this `T`, and the reference
/// does not outlive it.
pub(crate) unsafe fn value<'a, T>(obj: *mut ffi::PyObject) -> &'a T {
    // SAFETY: the caller's contract.
    unsafe { &(*obj.cast::<Object<T>>()).value }
}

/// What an instance of a [`RawType`] holds, given back when the instance is freed.
pub(crate) trait Release {
    /// Drops the value. Python references should go with `Py::drop_ref`: pyo3 defers a plain
    /// drop while the interpreter finalizes, forever.
    fn release(self, py: Python<'_>);
}

impl Release for () {
    fn release(self, _py: Python<'_>) {}
}

/// `tp_dealloc` of a [`RawType<T>`]: releases the value and frees the instance.
///
/// # Safety
///
/// Only as the `Py_tp_dealloc` slot of a `RawType<T>`: `CPython` calls it once per instance,
/// attached to the interpreter.
pub(crate) unsafe extern "C" fn dealloc<T: Release>(obj: *mut ffi::PyObject) {
    // SAFETY: a dying instance of a heap type made by `RawType::new`: untracked first (if it is
    // a GC type) so that the collector never sees it without its value; the value is moved out
    // once and never read again; then the memory and the reference to the type go.
    unsafe {
        let ty = ffi::Py_TYPE(obj);
        if ffi::PyType_IS_GC(ty) != 0 {
            ffi::PyObject_GC_UnTrack(obj.cast());
        }
        let value = ptr::read(&raw const (*obj.cast::<Object<T>>()).value);
        guarded((), |py| value.release(py));
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(ty.cast());
    }
}

/// Runs the body of a C slot that returns no object (a deallocator, `tp_clear`) with a scoped
/// interpreter token. A panic returns `on_panic` instead of unwinding into `CPython`, and is
/// reported as unraisable (with the error indicator kept).
///
/// # Safety
///
/// Called only from a C slot that `CPython` calls with the interpreter attached.
pub(crate) unsafe fn guarded<R>(on_panic: R, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    // SAFETY: the caller's contract; the token cannot leave `f` (its lifetime is `f`'s own).
    let py = unsafe { Python::assume_attached() };
    let mut result = None;
    attached_drop(|| {
        result = Some(catch_unwind(AssertUnwindSafe(|| f(py))));
    });
    match result {
        Some(Ok(value)) => value,
        Some(Err(payload)) => {
            preserving_error(py, || panic_exception(payload.as_ref()).write_unraisable(py, None));
            on_panic
        }
        None => on_panic,
    }
}

/// Runs the body of a C method with the interpreter token: `f` returns a new reference, or NULL
/// with an error set. A panic becomes a `PanicException` instead of unwinding into `CPython`.
///
/// # Safety
///
/// Called only from a C method or slot that `CPython` calls with the interpreter attached.
pub(crate) unsafe fn entry(f: impl for<'py> FnOnce(Python<'py>) -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: the caller's contract; the token cannot leave `f` (its lifetime is `f`'s own).
    let py = unsafe { Python::assume_attached() };
    catch_unwind(AssertUnwindSafe(|| f(py))).unwrap_or_else(|payload| {
        panic_exception(payload.as_ref()).restore(py);
        ptr::null_mut()
    })
}

/// A `PanicException` carrying a panic's message.
fn panic_exception(payload: &(dyn std::any::Any + Send)) -> PyErr {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("panic from Rust code")
        .to_owned();
    PanicException::new_err((message,))
}

/// Runs `f` as a pyo3 entry point would: with pyo3 counting the thread as attached, a returned
/// error raised and a panic turned into a `PanicException`. Returns a new reference, or NULL with
/// an error set.
pub(crate) fn run(py: Python<'_>, f: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    let mut result = None;
    attached_drop(|| {
        let value =
            catch_unwind(AssertUnwindSafe(|| f(py))).unwrap_or_else(|payload| Err(panic_exception(payload.as_ref())));
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
pub(crate) fn type_error(_py: Python<'_>, message: &'static CStr) -> *mut ffi::PyObject {
    // SAFETY: the token proves the interpreter is attached.
    unsafe { ffi::PyErr_SetString(ffi::PyExc_TypeError, message.as_ptr()) };
    ptr::null_mut()
}
