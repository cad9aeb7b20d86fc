//! The Rust API's wait spans, read back through an in-memory OpenTelemetry exporter.

use ferrolimit::ConcurrencyLimiter;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

/// The global tracer provider, installed once for every test of this file; each test reads back
/// only the spans of its own limiters.
fn provider() -> &'static (SdkTracerProvider, InMemorySpanExporter) {
    static PROVIDER: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        (provider, exporter)
    })
}

/// The finished spans of limiters named `name`.
fn spans_of(name: &str) -> Vec<SpanData> {
    let (provider, exporter) = provider();
    provider.force_flush().unwrap();
    let limiter_name = KeyValue::new("limiter_name", Value::from(name.to_owned()));
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.attributes.contains(&limiter_name))
        .collect()
}

fn sorted_attributes(span: &SpanData) -> Vec<KeyValue> {
    let mut attributes = span.attributes.clone();
    attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    attributes
}

#[test]
fn only_a_waiter_opens_a_span_with_the_contract_name_and_attributes() {
    provider();
    let limiter = ConcurrencyLimiter::builder(1)
        .max_queued(4)
        .name("pool")
        .build()
        .unwrap();
    let holder = limiter.try_acquire().unwrap();
    {
        // Polling a second acquire makes it wait: that opens the span.
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiter = pin!(limiter.acquire_for("model:x"));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        drop(holder);
        let Poll::Ready(Ok(permit)) = waiter.as_mut().poll(&mut cx) else {
            panic!("not served")
        };
        drop(permit);
    }
    // The fast path opens none.
    drop(limiter.try_acquire());

    let spans = spans_of("pool");
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "waiting for pool concurrency");
    assert_eq!(span.instrumentation_scope.name(), "ferrolimit");
    assert_eq!(
        sorted_attributes(span),
        vec![
            KeyValue::new("limiter_name", Value::from("pool")),
            KeyValue::new("max_queued", 4i64),
            KeyValue::new("max_running", 1i64),
            KeyValue::new("source", Value::from("model:x")),
            KeyValue::new("waiting_count", 1i64),
        ]
    );
}

/// A caller that waits at the child's level opens the child's span; once it holds the child's
/// slot, waiting at the parent's level opens the parent's span, with the same source. The fast
/// path through both opens none.
#[test]
fn a_two_level_wait_opens_one_span_per_level_it_waits_at() {
    provider();
    let outer = ConcurrencyLimiter::builder(1).name("outer").build().unwrap();
    let inner = ConcurrencyLimiter::builder(1)
        .name("inner")
        .parent(outer.clone())
        .build()
        .unwrap();
    drop(inner.try_acquire().unwrap());

    let mut cx = Context::from_waker(Waker::noop());
    let inner_holder = inner.try_acquire().unwrap();
    let mut waiter = pin!(inner.acquire_for("model:y"));
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    // Swap the holder of the outer slot: the waiter gets the inner slot but not the outer one.
    let outer_holder = {
        let blocker = ConcurrencyLimiter::builder(1).parent(outer.clone()).build().unwrap();
        let mut blocker_waiter = pin!(blocker.acquire());
        assert!(blocker_waiter.as_mut().poll(&mut cx).is_pending()); // queued at `outer`
        drop(inner_holder); // `inner` to the waiter; `outer` to the blocker
        let Poll::Ready(Ok(permit)) = blocker_waiter.as_mut().poll(&mut cx) else {
            panic!("blocker not served")
        };
        permit
    };
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        spans_of("inner").len(),
        1,
        "the inner wait ended when the inner slot came"
    );
    assert_eq!(spans_of("outer").len(), 1, "only the blocker's outer wait has ended");
    drop(outer_holder);
    let Poll::Ready(Ok(permit)) = waiter.as_mut().poll(&mut cx) else {
        panic!("not served")
    };
    drop(permit);

    let [inner_span] = &spans_of("inner")[..] else {
        panic!("one inner span")
    };
    assert_eq!(inner_span.name, "waiting for inner concurrency");
    assert_eq!(
        sorted_attributes(inner_span),
        vec![
            KeyValue::new("limiter_name", Value::from("inner")),
            KeyValue::new("max_running", 1i64),
            KeyValue::new("source", Value::from("model:y")),
            KeyValue::new("waiting_count", 1i64),
        ]
    );
    let outer_spans = spans_of("outer");
    let sources: Vec<_> = outer_spans
        .iter()
        .map(|span| {
            assert_eq!(span.name, "waiting for outer concurrency");
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == "source")
                .map(|kv| kv.value.to_string())
        })
        .collect();
    assert_eq!(sources, [Some("unnamed".to_owned()), Some("model:y".to_owned())]);
}
