//! `ferrolimit.KeyedConcurrencyLimiter`: one limit per `str` key over the core's [`KeyedMap`],
//! each key's state a [`Handle`] (so every acquire form of the local limiter serves a key as it
//! is), alive only while the key is in use.

use crate::keyed::{KeyLimiter, KeySettings, KeyedMap};
use crate::python::acquire::PyAcquire;
use crate::python::args::{
    Arg, check_str, check_timeout, extract_limit, limits, name_arg, request_arg, source_or_unnamed, tracer_arg,
    weight_arg,
};
use crate::python::blocking::{PyBlockingContext, acquire_blocking};
use crate::python::context::Context;
use crate::python::docstrings::docstring;
use crate::python::errors::limit_error;
use crate::python::handle::Handle;
use crate::python::idle::PyIdleWait;
use crate::python::limiter::{PyConcurrencyLimiter, PyLimiterStats, limiter_builder, limiter_metrics, parent_arg};
use crate::{ConcurrencyLimiter, LimiterStats, MAX_RUNNING_LIMIT, check_max_running};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString};
use std::sync::{Arc, Weak};

/// A key's hash in the map and its text: Python's own string hash (cached in the `str`, so a key
/// is hashed once however often it is used) and its UTF-8 bytes (with lone surrogates passed
/// through, so that every `str` is a key of its own). A key that is not exactly a `str` is a
/// `TypeError`: a subclass may define its own equality and hash, which a map keyed by text
/// could not honour.
fn key_parts<'a, 'py>(key: &'a Bound<'py, PyAny>) -> PyResult<(u64, KeyText<'a, 'py>)> {
    let text = check_str(key, "key")?;
    if !text.is_exact_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "key must be a str, not a subclass of str ({})",
            text.get_type().name()?
        )));
    }
    #[allow(clippy::cast_sign_loss)] // any bits will do for a hash
    let hash = text.hash()? as u64;
    let bytes = match text.to_str() {
        Ok(text) => KeyText::Borrowed(text.as_bytes()),
        Err(_) => KeyText::Encoded(
            text.call_method1(intern!(key.py(), "encode"), ("utf-8", "surrogatepass"))?
                .cast_into::<PyBytes>()?,
        ),
    };
    Ok((hash, bytes))
}

/// A key's UTF-8 bytes: borrowed from the `str`, or encoded for a `str` with lone surrogates.
enum KeyText<'a, 'py> {
    Borrowed(&'a [u8]),
    Encoded(Bound<'py, PyBytes>),
}

impl KeyText<'_, '_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Borrowed(bytes) => bytes,
            Self::Encoded(bytes) => bytes.as_bytes(),
        }
    }
}

/// A key as the map keeps it: its UTF-8 bytes, inline up to [`INLINE_KEY`] bytes (user ids,
/// UUIDs: no allocation), on the heap beyond.
#[derive(PartialEq, Eq)]
enum KeyBytes {
    Inline(u8, [u8; INLINE_KEY]),
    Heap(Box<[u8]>),
}

/// The longest key kept inline (a 36-character UUID fits; the whole key is 40 bytes).
const INLINE_KEY: usize = 38;

impl KeyBytes {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_KEY => {
                let mut inline = [0; INLINE_KEY];
                inline[..bytes.len()].copy_from_slice(bytes);
                Self::Inline(len, inline)
            }
            _ => Self::Heap(bytes.into()),
        }
    }
}

impl std::borrow::Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl KeyLimiter for Handle {
    fn limiter(&self) -> &ConcurrencyLimiter {
        &self.core
    }

    fn limiter_mut(&mut self) -> &mut ConcurrencyLimiter {
        &mut self.core
    }
}

/// What the limiter, its key states' makers and its metrics' gauges share.
struct Keys {
    /// Keys by their UTF-8 bytes (see [`key_parts`]).
    map: KeyedMap<KeyBytes, Handle>,
    settings: KeySettings,
}

impl Keys {
    /// The counts of every key in use, summed (the limits are per key).
    fn total(&self) -> LimiterStats {
        let mut total = self.settings.unused_stats();
        for state in self.map.states() {
            let stats = state.core.stats();
            total.running += stats.running;
            total.waiting += stats.waiting;
            total.acquired_total += stats.acquired_total;
            total.rejected_total += stats.rejected_total;
            total.cancelled_total += stats.cancelled_total;
        }
        total.available = 0;
        total
    }
}

#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "KeyedConcurrencyLimiter")]
#[doc = docstring!(KeyedConcurrencyLimiter)]
pub(crate) struct PyKeyedConcurrencyLimiter {
    keys: Arc<Keys>,
    tracer: Option<Py<PyAny>>,
    metrics: Option<Py<PyAny>>,
    parent: Option<(Py<PyConcurrencyLimiter>, Arc<Handle>)>,
}

impl PyKeyedConcurrencyLimiter {
    /// The state of `key` (a `str`, else `TypeError`), made if the key is not in use.
    fn state(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Arc<Handle>> {
        let (hash, text) = key_parts(key)?;
        let text = text.bytes();
        Ok(self.keys.map.get_or_insert(
            hash,
            text,
            || KeyBytes::new(text),
            |state| self.keys.settings.recycle(state),
            || {
                Arc::new(Handle::new(
                    self.keys.settings.make(),
                    self.tracer.as_ref().map(|t| t.clone_ref(py)),
                    self.metrics.as_ref().map(|m| m.clone_ref(py)),
                    self.parent.as_ref().map(|(_, handle)| Arc::clone(handle)),
                ))
            },
        ))
    }

    /// The state of `key` if it is in use; creates none.
    fn existing(key: &Bound<'_, PyAny>, keys: &Keys) -> PyResult<Option<Arc<Handle>>> {
        let (hash, text) = key_parts(key)?;
        Ok(keys.map.get(hash, text.bytes()))
    }

    /// Gives up a reference from [`state`](Self::state), removing the key's state if unused.
    /// Never fails (its key was read once already): the caller's result, whatever it is, stands.
    fn done(&self, key: &Bound<'_, PyAny>, state: Arc<Handle>) {
        if let Ok((hash, text)) = key_parts(key) {
            self.keys.map.release_state(hash, text.bytes(), state);
        }
    }

    /// The counts of `key`: zeros (its totals too) for a key with no holder and no waiter, whether
    /// or not its state was reclaimed yet.
    fn key_stats(&self, key: &Bound<'_, PyAny>) -> PyResult<LimiterStats> {
        let stats = Self::existing(key, &self.keys)?.map(|state| state.core.stats());
        Ok(match stats {
            Some(stats) if stats.running > 0 || stats.waiting > 0 => stats,
            _ => self.keys.settings.unused_stats(),
        })
    }
}

#[pymethods]
impl PyKeyedConcurrencyLimiter {
    #[new]
    #[pyo3(signature = (max_running, *, max_queued = None, name = None, tracer = None, meter = None, parent = None))]
    fn new(
        py: Python<'_>,
        max_running: &Bound<'_, PyAny>,
        max_queued: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
        tracer: Option<Py<PyAny>>,
        meter: Option<&Bound<'_, PyAny>>,
        parent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (max_running, max_queued) = limits(max_running, max_queued)?;
        let parent = parent_arg(parent)?;
        let tracer = tracer_arg(tracer, py)?;
        let settings = KeySettings::new(limiter_builder(max_running, max_queued, name_arg(name)?, parent))
            .map_err(|e| limit_error(&e))?;
        let keys = Arc::new(Keys {
            map: KeyedMap::new(),
            settings,
        });
        let metrics = limiter_metrics(py, meter, keys.settings.name(), || PyKeyedCounts(Arc::downgrade(&keys)))?;
        Ok(Self {
            keys,
            tracer,
            metrics,
            parent: parent.map(|p| (p.clone().unbind(), Arc::clone(&p.get().handle))),
        })
    }

    #[getter]
    #[doc = docstring!(KeyedConcurrencyLimiter.name)]
    fn name(&self) -> Option<&str> {
        self.keys.settings.name()
    }

    #[getter]
    #[doc = docstring!(KeyedConcurrencyLimiter.parent)]
    fn parent(&self, py: Python<'_>) -> Option<Py<PyConcurrencyLimiter>> {
        self.parent.as_ref().map(|(p, _)| p.clone_ref(py))
    }

    #[getter]
    #[doc = docstring!(KeyedConcurrencyLimiter.max_running)]
    fn max_running(&self) -> usize {
        self.keys.settings.max_running()
    }

    #[setter]
    fn set_max_running(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = extract_limit(value, "max_running", MAX_RUNNING_LIMIT)?;
        let value = check_max_running(value).map_err(|e| limit_error(&e))?;
        self.keys
            .settings
            .set_max_running(value as usize, || self.keys.map.states())
            .map_err(|e| limit_error(&e))
    }

    #[getter]
    #[doc = docstring!(KeyedConcurrencyLimiter.max_queued)]
    fn max_queued(&self) -> Option<usize> {
        self.keys.settings.max_queued()
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(KeyedConcurrencyLimiter.acquire)]
    fn acquire(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<PyAcquire> {
        let timeout = check_timeout(timeout)?.map(|t| t.as_secs_f64());
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        Ok(PyAcquire::new(self.state(py, key)?, source, timeout, request))
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(KeyedConcurrencyLimiter.acquire_blocking)]
    fn acquire_blocking(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<()> {
        let timeout = check_timeout(timeout)?;
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?;
        let state = self.state(py, key)?;
        let acquired = acquire_blocking(py, &state, &source.to_string_lossy(), timeout, request);
        self.done(key, state);
        acquired
    }

    #[pyo3(
        signature = (key, source = Arg::Omitted, *, timeout = None, weight = Arg::Omitted, priority = Arg::Omitted),
        text_signature = "($self, key, source='unnamed', *, timeout=None, weight=1, priority=0)"
    )]
    #[doc = docstring!(KeyedConcurrencyLimiter.blocking)]
    fn blocking(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<PyBlockingContext> {
        let timeout = check_timeout(timeout)?;
        let request = request_arg(&weight, &priority)?;
        let source = source_or_unnamed(py, &source)?.to_string_lossy().into_owned();
        Ok(PyBlockingContext::new(self.state(py, key)?, source, timeout, request))
    }

    #[pyo3(signature = (key, *, weight = Arg::Omitted), text_signature = "($self, key, *, weight=1)")]
    #[doc = docstring!(KeyedConcurrencyLimiter.try_acquire)]
    fn try_acquire(&self, py: Python<'_>, key: &Bound<'_, PyAny>, weight: Arg<'_>) -> PyResult<bool> {
        let weight = weight_arg(&weight)?;
        let state = self.state(py, key)?;
        let taken = state.try_acquire(py, weight);
        self.done(key, state);
        taken
    }

    #[pyo3(signature = (key, *, weight = Arg::Omitted), text_signature = "($self, key, *, weight=1)")]
    #[doc = docstring!(KeyedConcurrencyLimiter.release)]
    fn release(&self, key: &Bound<'_, PyAny>, weight: Arg<'_>) -> PyResult<()> {
        let weight = weight_arg(&weight)?;
        let Some(state) = Self::existing(key, &self.keys)? else {
            let of = match self.keys.settings.name() {
                Some(name) => format!("keyed limiter {}", PyString::new(key.py(), name).repr()?),
                None => "this keyed limiter".to_owned(),
            };
            return Err(PyValueError::new_err(format!(
                "key {} holds no slot of {of}",
                key.repr()?
            )));
        };
        let released = state.release(weight);
        self.done(key, state);
        released
    }

    #[doc = docstring!(KeyedConcurrencyLimiter.running_count)]
    fn running_count(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.key_stats(key)?.running)
    }

    #[doc = docstring!(KeyedConcurrencyLimiter.waiting_count)]
    fn waiting_count(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.key_stats(key)?.waiting)
    }

    #[doc = docstring!(KeyedConcurrencyLimiter.available_count)]
    fn available_count(&self, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.key_stats(key)?.available)
    }

    #[doc = docstring!(KeyedConcurrencyLimiter.stats)]
    fn stats(&self, key: &Bound<'_, PyAny>) -> PyResult<PyLimiterStats> {
        Ok(PyLimiterStats(self.key_stats(key)?))
    }

    fn __len__(&self) -> usize {
        self.keys.map.sweep()
    }

    #[doc = docstring!(KeyedConcurrencyLimiter.close)]
    fn close(&self) {
        self.keys.settings.close(&self.keys.map.states());
    }

    #[getter]
    #[doc = docstring!(KeyedConcurrencyLimiter.closed)]
    fn closed(&self) -> bool {
        self.keys.settings.is_closed()
    }

    #[pyo3(signature = (*, timeout = None))]
    #[doc = docstring!(KeyedConcurrencyLimiter.wait_idle)]
    fn wait_idle(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        static WAIT_ALL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let timeout = check_timeout(timeout)?.map(|t| t.as_secs_f64());
        let waits = PyKeyedIdleWaits(Arc::downgrade(&self.keys));
        Ok(WAIT_ALL
            .import(py, "ferrolimit._idle", "wait_all_idle")?
            .call1((waits, timeout))?
            .unbind())
    }

    #[pyo3(signature = (key, source = Arg::Omitted, *, weight = Arg::Omitted, priority = Arg::Omitted))]
    fn __call__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        source: Arg<'_>,
        weight: Arg<'_>,
        priority: Arg<'_>,
    ) -> PyResult<Py<PyAny>> {
        let source = source_or_unnamed(py, &source)?;
        let request = request_arg(&weight, &priority)?;
        Ok(Context::native(py, self.state(py, key)?, &source, request)?.into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let settings = &self.keys.settings;
        let name = match settings.name() {
            Some(name) => PyString::new(py, name).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "KeyedConcurrencyLimiter(max_running={}, max_queued={}, name={name}, keys={})",
            settings.max_running(),
            settings
                .max_queued()
                .map_or_else(|| "None".to_owned(), |q| q.to_string()),
            self.keys.map.sweep(),
        ))
    }
}

/// The metrics' gauges' view of a keyed limiter: its counts summed over the keys in use. It
/// holds the keys weakly, so the limiter and its metrics do not keep each other alive.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_KeyedCounts")]
struct PyKeyedCounts(Weak<Keys>);

#[pymethods]
impl PyKeyedCounts {
    fn stats(&self) -> PyLimiterStats {
        PyLimiterStats(self.0.upgrade().map_or_else(LimiterStats::default, |keys| keys.total()))
    }
}

/// What `ferrolimit._idle.wait_all_idle` waits on: the idle waits of the keys holding slots.
#[pyclass(frozen, module = "ferrolimit._ferrolimit", name = "_KeyedIdleWaits")]
struct PyKeyedIdleWaits(Weak<Keys>);

#[pymethods]
impl PyKeyedIdleWaits {
    /// A wait for each key that holds a slot right now; empty once none does.
    fn __call__(&self) -> Vec<PyIdleWait> {
        self.0.upgrade().map_or_else(Vec::new, |keys| {
            keys.map
                .states()
                .iter()
                .filter(|state| state.core.running_count() > 0)
                .map(|state| PyIdleWait::new(&state.core))
                .collect()
        })
    }
}
