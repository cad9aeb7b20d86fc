//! The Rust API's wait span, read back through an in-memory OpenTelemetry exporter.

use ferrolimit::ConcurrencyLimiter;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

#[test]
fn only_a_waiter_opens_a_span_with_the_contract_name_and_attributes() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

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
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "waiting for pool concurrency");
    assert_eq!(span.instrumentation_scope.name(), "ferrolimit");
    let mut attributes: Vec<KeyValue> = span.attributes.clone();
    attributes.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    assert_eq!(
        attributes,
        vec![
            KeyValue::new("limiter_name", Value::from("pool")),
            KeyValue::new("max_queued", 4i64),
            KeyValue::new("max_running", 1i64),
            KeyValue::new("source", Value::from("model:x")),
            KeyValue::new("waiting_count", 1i64),
        ]
    );
}
