//! `LimiterContext`: the async context manager `get_concurrency_context` and `limiter(source)`
//! return, holding one slot for its body.
//!
//! Its `__aenter__`/`__aexit__` are plain C methods (see [`raw`](crate::python::raw)): on a
//! native limiter with a free slot, entering is one compare-and-swap and returns the shared
//! finished awaitable, and leaving is one more. Whatever else happens (a wait, a parent level, an
//! error, another kind of limiter) goes through [`raw::run`].

#![allow(unsafe_code)]

use crate::python::errors::{not_initialised, release_error};
use crate::python::handle::{Handle, Start};
use crate::python::raw::{self, method_fast, method_noargs, slot};
use crate::python::ready::{ready, ready_ptr};
use crate::python::wait::wait;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::Arc;

/// What a context acquires: a native limiter (fast path) or any object with `acquire(source)`
/// and `release()`, such as a pydantic-ai `AbstractConcurrencyLimiter`.
enum Target {
    Native(Arc<Handle>),
    Generic(Py<PyAny>),
}

struct Fields {
    target: Target,
    source: Py<PyString>,
}

/// The instance layout.
#[repr(C)]
struct Object {
    base: ffi::PyObject,
    fields: Fields,
}

static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `LimiterContext` object.
pub(crate) struct Context(Py<PyAny>);

impl Context {
    /// A context for a native limiter.
    pub(crate) fn native(py: Python<'_>, handle: Arc<Handle>, source: &Bound<'_, PyString>) -> PyResult<Self> {
        Self::new(py, Target::Native(handle), source)
    }

    /// A context for any limiter with `acquire(source)` and `release()`.
    pub(crate) fn generic(py: Python<'_>, limiter: Py<PyAny>, source: &Bound<'_, PyString>) -> PyResult<Self> {
        Self::new(py, Target::Generic(limiter), source)
    }

    fn new(py: Python<'_>, target: Target, source: &Bound<'_, PyString>) -> PyResult<Self> {
        let ty = TYPE.get(py).ok_or_else(not_initialised)?;
        let fields = Fields {
            target,
            source: source.clone().unbind(),
        };
        let obj = raw::alloc(ty.bind(py))?;
        // SAFETY: `obj` is a new, zeroed instance of the type, whose layout is `Object`. It is
        // already tracked by the garbage collector, which cannot run before the fields are
        // written: nothing in between allocates or runs Python code.
        unsafe {
            ptr::write(&raw mut (*obj.cast::<Object>()).fields, fields);
            Ok(Self(Bound::from_owned_ptr(py, obj).unbind()))
        }
    }

    fn fields(&self) -> &Fields {
        // SAFETY: the constructors made this object with the `Object` layout, and it is alive.
        unsafe { fields(self.0.as_ptr()) }
    }

    /// Whether this context is for `source` (the same object, or an equal string).
    pub(crate) fn is_for(&self, source: &Bound<'_, PyString>) -> PyResult<bool> {
        let own = self.fields().source.bind(source.py());
        Ok(own.is(source) || own.as_any().eq(source)?)
    }

    /// Whether this context is for the very object `source`.
    pub(crate) fn is_for_object(&self, source: *mut ffi::PyObject) -> bool {
        self.fields().source.as_ptr() == source
    }

    pub(crate) fn clone_ref(&self, py: Python<'_>) -> Self {
        Self(self.0.clone_ref(py))
    }

    pub(crate) fn into_any(self) -> Py<PyAny> {
        self.0
    }
}

/// The fields of a live `LimiterContext`.
///
/// # Safety
///
/// `obj` is a live instance of the type, made by [`Context::new`].
unsafe fn fields<'a>(obj: *mut ffi::PyObject) -> &'a Fields {
    // SAFETY: the caller's contract.
    unsafe { &(*obj.cast::<Object>()).fields }
}

unsafe extern "C" fn aenter(slf: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython checked that `slf` is an instance of the type.
    let this = unsafe { fields(slf) };
    match &this.target {
        Target::Native(handle) => match handle.start() {
            // SAFETY: a C method; `ready_ptr` only clones a reference.
            Start::Held => ready_ptr(unsafe { raw::attached() }),
            start => raw::run(|py| wait(handle, py, start, this.source.bind(py), None)),
        },
        Target::Generic(limiter) => raw::run(|py| limiter.call_method1(py, intern!(py, "acquire"), (&this.source,))),
    }
}

unsafe extern "C" fn aexit(
    slf: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    if nargs != 3 {
        return raw::type_error(c"LimiterContext.__aexit__() takes exactly 3 arguments");
    }
    // SAFETY: CPython checked that `slf` is an instance of the type.
    let this = unsafe { fields(slf) };
    match &this.target {
        Target::Native(handle) => match handle.core.release_raw_uncontended() {
            // SAFETY: a C method; `ready_ptr` only clones a reference.
            Some(Ok(())) => ready_ptr(unsafe { raw::attached() }),
            _ => raw::run(|py| {
                handle.core.release_raw().map_err(release_error)?;
                ready(py)
            }),
        },
        Target::Generic(limiter) => raw::run(|py| {
            limiter.call_method0(py, intern!(py, "release"))?;
            ready(py)
        }),
    }
}

/// The garbage collector's view: a context refers to its type and to a limiter that is a Python
/// object (which may refer back to the context, as in `limiter.context = limiter('x')`). The
/// source is a `str`, which takes no part in cycles; a native limiter's handle is Rust's.
unsafe extern "C" fn traverse(obj: *mut ffi::PyObject, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
    // SAFETY: CPython traverses live instances of the type, whose fields are written (see
    // `Context::new`).
    unsafe {
        let own_type = visit(ffi::Py_TYPE(obj).cast(), arg);
        if own_type != 0 {
            return own_type;
        }
        match &fields(obj).target {
            Target::Generic(limiter) => visit(limiter.as_ptr(), arg),
            Target::Native(_) => 0,
        }
    }
}

unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: the object is dying: the collector must not see it again.
    unsafe { ffi::PyObject_GC_UnTrack(obj.cast()) };
    // SAFETY: CPython deallocates an instance once; its fields were written by `Context::new`
    // and are moved out here, never to be read again.
    let Fields { target, source } = unsafe { ptr::read(&raw const (*obj.cast::<Object>()).fields) };
    // SAFETY: a C slot. The references go at once (`drop_ref`), even while the interpreter
    // finalizes, when pyo3 would not attach and would defer a plain drop forever.
    let py = unsafe { raw::attached() };
    source.drop_ref(py);
    match target {
        Target::Generic(limiter) => limiter.drop_ref(py),
        Target::Native(handle) => raw::attached_drop(|| drop(handle)),
    }
    // SAFETY: as above; the fields are gone.
    unsafe { raw::free(obj) };
}

/// Creates the `LimiterContext` type (once) and returns it for the module's namespace.
pub(crate) fn init(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let ty = TYPE.get_or_try_init(py, || {
        raw::new_type(
            py,
            c"ferrolimit._ferrolimit.LimiterContext",
            c"`async with` one slot of a limiter, for one source.",
            size_of::<Object>(),
            vec![
                method_noargs(
                    c"__aenter__",
                    aenter,
                    c"__aenter__($self, /)\n--\n\nTakes a slot: returns an awaitable that finishes once the slot is held.",
                ),
                method_fast(
                    c"__aexit__",
                    aexit,
                    c"__aexit__($self, exc_type, exc, tb, /)\n--\n\nReleases the slot; an exception in the block propagates unchanged.",
                ),
            ],
            &[
                slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
                slot(ffi::Py_tp_traverse, traverse as *mut c_void),
            ],
            true,
        )
        .map(Bound::unbind)
    })?;
    Ok(ty.bind(py).clone())
}
