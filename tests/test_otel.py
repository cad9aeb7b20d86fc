"""OpenTelemetry: exactly one span for a caller that waits, none on the fast path."""

from __future__ import annotations

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from ferrolimit import ConcurrencyLimiter, get_concurrency_context

pytestmark = pytest.mark.anyio


async def hold_and_wait(limiter: ConcurrencyLimiter, source: str, waiters: int = 1) -> None:
    await limiter.acquire(source)
    async with anyio.create_task_group() as tg:
        for _ in range(waiters):
            tg.start_soon(enter, limiter, source)
            await anyio.wait_all_tasks_blocked()
        limiter.release()


async def enter(limiter: ConcurrencyLimiter, source: str) -> None:
    async with get_concurrency_context(limiter, source):
        pass


async def test_fast_path_opens_no_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(2, tracer=tracer)
    for _ in range(10):
        async with get_concurrency_context(limiter, 'x'):
            pass
    await limiter.acquire('y')
    limiter.release()
    assert exporter.get_finished_spans() == ()


async def test_named_limiter_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, max_queued=5, name='pool', tracer=tracer)
    await hold_and_wait(limiter, 'model:gpt-4o')
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for pool concurrency'
    assert dict(span.attributes or {}) == {
        'source': 'model:gpt-4o',
        'waiting_count': 1,
        'max_running': 1,
        'limiter_name': 'pool',
        'max_queued': 5,
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_unnamed_limiter_span_uses_the_source(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, tracer=tracer)
    await hold_and_wait(limiter, 'agent:a')
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for agent:a concurrency'
    assert dict(span.attributes or {}) == {'source': 'agent:a', 'waiting_count': 1, 'max_running': 1}


async def test_waiting_count_attribute_counts_the_waiter_itself(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, tracer=tracer)
    await hold_and_wait(limiter, 's', waiters=3)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert sorted((span.attributes or {})['waiting_count'] for span in spans) == [1, 2, 3]


async def test_span_of_a_cancelled_waiter_records_the_cancellation(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    limiter = ConcurrencyLimiter(1, tracer=tracer)
    await limiter.acquire('holder')
    with anyio.move_on_after(0.01):
        await limiter.acquire('late')
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for late concurrency'
    assert span.end_time is not None
    # A cancellation is not an error (as with `start_as_current_span`): no status, no event.
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    limiter.release()


async def test_rejected_arrival_opens_no_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, max_queued=0, tracer=tracer)
    await limiter.acquire('holder')
    with pytest.raises(Exception, match='exceeds max_queued'):
        await limiter.acquire('rejected')
    assert exporter.get_finished_spans() == ()
    limiter.release()


async def test_span_is_the_current_span_while_waiting(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, tracer=tracer)
    await limiter.acquire('holder')
    with tracer.start_as_current_span('parent'):
        async with anyio.create_task_group() as tg:
            tg.start_soon(enter, limiter, 'child')
            await anyio.wait_all_tasks_blocked()
            limiter.release()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    wait_span = spans['waiting for child concurrency']
    assert wait_span.parent is not None
    assert wait_span.parent.span_id == spans['parent'].context.span_id


def test_default_tracer_is_the_global_one() -> None:
    limiter = ConcurrencyLimiter(1)
    assert limiter._get_tracer() is not None


async def test_span_of_a_timed_out_waiter_records_the_timeout(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, name='pool', tracer=tracer)
    await limiter.acquire('holder')
    with pytest.raises(TimeoutError):
        await limiter.acquire('late', timeout=0.01)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == 'TimeoutError: timed out waiting for pool concurrency'
    assert [event.name for event in span.events] == ['exception']
    limiter.release()


def test_blocking_waiter_opens_the_same_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, name='pool', tracer=tracer)
    limiter.acquire_blocking('holder')
    with pytest.raises(TimeoutError):
        limiter.acquire_blocking('late', timeout=0.01)
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for pool concurrency'
    assert dict(span.attributes or {}) == {
        'source': 'late',
        'waiting_count': 1,
        'max_running': 1,
        'limiter_name': 'pool',
    }
    assert span.status.status_code is StatusCode.ERROR
    limiter.release()


def test_default_tracer_spans_follow_a_provider_set_later() -> None:
    """Without a tracer or a global provider the wait span is skipped; once a provider is set,
    every kind of wait (asyncio, trio, blocking, Redis) opens it again (in a fresh interpreter)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = os.environ.get('FERROLIMIT_REDIS_URL')
    child = Path(__file__).with_name('span_skip_child.py')
    result = subprocess.run(
        [sys.executable, str(child), *([url] if url else [])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = [
        'waiting for local concurrency asyncio',
        'waiting for local concurrency trio',
        'waiting for local concurrency blocking',
    ] + (['waiting for fleet concurrency redis'] if url else [])
    assert result.stdout.splitlines() == expected
