//! `LimiterContext`: the async context manager `get_concurrency_context` and `limiter(source)`
//! return, holding one slot (or `weight` slots) for its body.
//!
//! Its `__aenter__`/`__aexit__` are plain C methods (see [`raw`](crate::python::raw)): on a
//! native limiter with a free slot, entering is one compare-and-swap and returns the shared
//! finished awaitable, and leaving is one more. Whatever else happens (a wait, a parent level, an
//! error, another kind of limiter) goes through [`raw::run`].

#![allow(unsafe_code)]

use crate::acquisition;
use crate::python::docstrings::c_docstring;
use crate::python::errors::not_initialised;
use crate::python::handle::{Handle, Start};
use crate::python::raw::{self, RawType, Release, method_fast, method_noargs, slot};
use crate::python::ready::{ready, ready_ptr};
use crate::python::wait::wait;
use crate::waiters::Request;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};
use std::ffi::{c_int, c_void};
use std::sync::Arc;

/// What a context acquires: a native limiter (fast path) or any object with `acquire(source)`
/// and `release()`, such as a pydantic-ai `AbstractConcurrencyLimiter`. The garbage collector
/// may clear the latter (`None`) to break a cycle through it.
enum Target {
    Native(Arc<Handle>),
    Generic(Mutex<Option<Py<PyAny>>>),
}

/// What a `LimiterContext` holds.
struct Fields {
    target: Target,
    source: Py<PyString>,
    /// The weight and priority of each entry (a generic limiter's are always one slot at the
    /// default priority).
    request: Request,
}

impl Fields {
    /// `__aenter__`: a new reference, or NULL with an error set.
    fn enter(&self, py: Python<'_>) -> *mut ffi::PyObject {
        match &self.target {
            Target::Native(handle) => match handle.start(self.request) {
                Start::Held => ready_ptr(py),
                Start::Wait(acquisition) => {
                    raw::run(py, |py| wait(handle, py, acquisition, self.source.bind(py), None))
                }
            },
            Target::Generic(limiter) => raw::run(py, |py| {
                let limiter = generic(py, limiter)?;
                if self.request == Request::ONE {
                    return limiter.call_method1(py, intern!(py, "acquire"), (&self.source,));
                }
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "weight"), self.request.weight)?;
                kwargs.set_item(intern!(py, "priority"), self.request.priority)?;
                limiter.call_method(py, intern!(py, "acquire"), (&self.source,), Some(&kwargs))
            }),
        }
    }

    /// `__aexit__`: a new reference, or NULL with an error set.
    fn exit(&self, py: Python<'_>) -> *mut ffi::PyObject {
        match &self.target {
            Target::Native(handle) => match acquisition::release_uncontended(&handle.core, self.request.weight) {
                Some(Ok(())) => ready_ptr(py),
                _ => raw::run(py, |py| {
                    handle.release(self.request.weight)?;
                    ready(py)
                }),
            },
            Target::Generic(limiter) => raw::run(py, |py| {
                let limiter = generic(py, limiter)?;
                if self.request == Request::ONE {
                    limiter.call_method0(py, intern!(py, "release"))?;
                } else {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "weight"), self.request.weight)?;
                    limiter.call_method(py, intern!(py, "release"), (), Some(&kwargs))?;
                }
                ready(py)
            }),
        }
    }
}

/// The limiter of a generic context, unless the garbage collector cleared it.
fn generic(py: Python<'_>, limiter: &Mutex<Option<Py<PyAny>>>) -> PyResult<Py<PyAny>> {
    limiter
        .lock()
        .as_ref()
        .map(|limiter| limiter.clone_ref(py))
        .ok_or_else(|| PyRuntimeError::new_err("ferrolimit: this context's limiter was garbage-collected"))
}

impl Release for Fields {
    fn release(self, py: Python<'_>) {
        self.source.drop_ref(py);
        match self.target {
            Target::Generic(limiter) => {
                if let Some(limiter) = limiter.into_inner() {
                    limiter.drop_ref(py);
                }
            }
            Target::Native(handle) => raw::attached_drop(|| drop(handle)),
        }
    }
}

static TYPE: PyOnceLock<RawType<Fields>> = PyOnceLock::new();

/// A `LimiterContext` object.
pub(crate) struct Context(Py<PyAny>);

impl Context {
    /// A context for a native limiter, each entry asking for `request`.
    pub(crate) fn native(
        py: Python<'_>,
        handle: Arc<Handle>,
        source: &Bound<'_, PyString>,
        request: Request,
    ) -> PyResult<Self> {
        Self::new(py, Target::Native(handle), source, request)
    }

    /// A context for any limiter with `acquire(source)` and `release()`.
    /// A context over any limiter object with `acquire(source, *, weight, priority)` and
    /// `release(*, weight)` (called without the keywords for one slot at the default priority).
    pub(crate) fn generic(
        py: Python<'_>,
        limiter: Py<PyAny>,
        source: &Bound<'_, PyString>,
        request: Request,
    ) -> PyResult<Self> {
        Self::new(py, Target::Generic(Mutex::new(Some(limiter))), source, request)
    }

    fn new(py: Python<'_>, target: Target, source: &Bound<'_, PyString>, request: Request) -> PyResult<Self> {
        let fields = Fields {
            target,
            source: source.clone().unbind(),
            request,
        };
        let ty = TYPE.get(py).ok_or_else(not_initialised)?;
        Ok(Self(ty.instantiate(py, fields)?.unbind()))
    }

    fn fields(&self) -> &Fields {
        // SAFETY: the constructors made this object with `TYPE`, and it is alive while `self` is.
        unsafe { raw::value(self.0.as_ptr()) }
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

unsafe extern "C" fn aenter(slf: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method attached to the interpreter, with `slf` a live instance of
    // the type, which `TYPE` made.
    unsafe { raw::entry(|py| raw::value::<Fields>(slf).enter(py)) }
}

unsafe extern "C" fn aexit(
    slf: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: as for `aenter`.
    unsafe {
        raw::entry(|py| {
            if nargs == 3 {
                raw::value::<Fields>(slf).exit(py)
            } else {
                raw::type_error(py, c"LimiterContext.__aexit__() takes exactly 3 arguments")
            }
        })
    }
}

/// The garbage collector's view: a context refers to its type and to a limiter that is a Python
/// object (which may refer back to the context, as in `limiter.context = limiter('x')`). The
/// source is a `str`, which takes no part in cycles; a native limiter's handle is Rust's.
unsafe extern "C" fn traverse(obj: *mut ffi::PyObject, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
    // SAFETY: CPython traverses live instances of the type, which always hold their fields (see
    // `RawType::instantiate`), and `visit` is its own callback.
    unsafe {
        let own_type = visit(ffi::Py_TYPE(obj).cast(), arg);
        if own_type != 0 {
            return own_type;
        }
        match &raw::value::<Fields>(obj).target {
            // Held only for a clone: when it is held, leaving the reference unvisited merely
            // keeps the object alive for this collection.
            Target::Generic(limiter) => match limiter.try_lock().as_deref() {
                Some(Some(limiter)) => visit(limiter.as_ptr(), arg),
                _ => 0,
            },
            Target::Native(_) => 0,
        }
    }
}

/// Breaks a cycle through a generic limiter: drops the reference to it.
unsafe extern "C" fn clear(obj: *mut ffi::PyObject) -> c_int {
    // SAFETY: CPython clears live instances of the type, with the interpreter attached.
    unsafe {
        raw::guarded(0, |py| {
            if let Target::Generic(limiter) = &raw::value::<Fields>(obj).target {
                // Taken out first: the drop may run Python code that uses this context.
                let taken = limiter.lock().take();
                if let Some(limiter) = taken {
                    limiter.drop_ref(py);
                }
            }
            0
        })
    }
}

/// Creates the `LimiterContext` type (once) and returns it for the module's namespace.
pub(crate) fn init(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let ty = TYPE.get_or_try_init(py, || {
        // SAFETY: every method and slot reads the instance as `Fields`, and the deallocator is
        // `raw::dealloc::<Fields>`.
        unsafe {
            RawType::new(
                py,
                c"ferrolimit._ferrolimit.LimiterContext",
                c_docstring!(LimiterContext),
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
                    slot(ffi::Py_tp_dealloc, raw::dealloc::<Fields> as *mut c_void),
                    slot(ffi::Py_tp_traverse, traverse as *mut c_void),
                    slot(ffi::Py_tp_clear, clear as *mut c_void),
                ],
                true,
            )
        }
    })?;
    Ok(ty.get(py).clone())
}
