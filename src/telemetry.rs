//! The OpenTelemetry wait span: its name and attributes, in one place for Rust and Python.
//!
//! Only a caller that has to wait opens a span, named `waiting for {name or source} concurrency`
//! with the attributes `source`, `waiting_count`, `max_running`, `limiter_name` (when named) and
//! `max_queued` (when set), exactly as pydantic-ai's limiter does.

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::Tracer;
use opentelemetry::{KeyValue, Value};

/// Instrumentation scope of the spans the Rust API opens.
pub(crate) const TRACER_NAME: &str = "ferrolimit";

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
}

/// Name and attributes of one wait span.
#[derive(Debug)]
pub(crate) struct WaitSpanFields<'a> {
    pub(crate) name: String,
    pub(crate) attributes: Vec<(&'static str, AttrValue<'a>)>,
}

/// Saturating conversion for attribute values (OpenTelemetry integers are `i64`).
fn attr_int(n: usize) -> AttrValue<'static> {
    AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The name a span or error gives the limiter: its own name if non-empty, else the caller's source.
pub(crate) fn display_name<'a>(limiter_name: Option<&'a str>, source: &'a str) -> &'a str {
    limiter_name.filter(|n| !n.is_empty()).unwrap_or(source)
}

/// The span a waiter opens.
pub(crate) fn wait_span_fields<'a>(
    limiter_name: Option<&'a str>,
    source: &'a str,
    waiting: usize,
    max_running: usize,
    max_queued: Option<usize>,
) -> WaitSpanFields<'a> {
    let display = display_name(limiter_name, source);
    let mut attributes = vec![
        ("source", AttrValue::Str(source)),
        ("waiting_count", attr_int(waiting)),
        ("max_running", attr_int(max_running)),
    ];
    if let Some(name) = limiter_name {
        attributes.push(("limiter_name", AttrValue::Str(name)));
    }
    if let Some(max_queued) = max_queued {
        attributes.push(("max_queued", attr_int(max_queued)));
    }
    WaitSpanFields {
        name: format!("waiting for {display} concurrency"),
        attributes,
    }
}

/// An open wait span of the Rust API; it ends when dropped.
pub(crate) struct WaitSpan(#[allow(dead_code, reason = "held only to end the span on drop")] BoxedSpan);

impl std::fmt::Debug for WaitSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WaitSpan")
    }
}

impl WaitSpan {
    /// Opens the span on the global tracer provider, as a child of the current context.
    pub(crate) fn start(fields: WaitSpanFields<'_>) -> Self {
        let tracer = global::tracer(TRACER_NAME);
        let attributes = fields.attributes.into_iter().map(|(key, value)| {
            let value = match value {
                AttrValue::Str(s) => Value::from(s.to_owned()),
                AttrValue::Int(i) => Value::I64(i),
            };
            KeyValue::new(key, value)
        });
        Self(
            tracer
                .span_builder(fields.name)
                .with_attributes(attributes)
                .start(&tracer),
        )
    }
}
