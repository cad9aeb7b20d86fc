"""OpenTelemetry metrics with `meter=`, read back through an in-memory metric reader."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

pytestmark = pytest.mark.anyio


def collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points."""
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_gauges_histogram_and_counter(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    limiter = ConcurrencyLimiter(1, max_queued=1, name='pool', meter=provider.get_meter('test'))
    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'waiter')
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyLimitExceeded):
            await limiter.acquire('rejected')
        points = collect(reader)
        assert [(p.value, dict(p.attributes)) for p in points['ferrolimit.running']] == [(1, {'limiter_name': 'pool'})]
        assert [p.value for p in points['ferrolimit.waiting']] == [1]
        assert [p.value for p in points['ferrolimit.rejected']] == [1]
        limiter.release()
    points = collect(reader)
    (histogram,) = points['ferrolimit.wait_time']
    assert histogram.count == 1
    assert dict(histogram.attributes) == {'limiter_name': 'pool'}
    assert [p.value for p in points['ferrolimit.running']] == [1]
    assert [p.value for p in points['ferrolimit.waiting']] == [0]
    limiter.release()


async def test_fast_path_records_no_wait(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    limiter = ConcurrencyLimiter(2, meter=provider.get_meter('test'))
    for _ in range(10):
        async with limiter:
            pass
    points = collect(reader)
    assert 'ferrolimit.wait_time' not in points
    assert 'ferrolimit.rejected' not in points
    assert [(p.value, dict(p.attributes)) for p in points['ferrolimit.running']] == [(0, {})]


def test_blocking_waits_are_recorded(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    limiter = ConcurrencyLimiter(1, max_queued=0, meter=provider.get_meter('test'))
    limiter.acquire_blocking('holder')
    with pytest.raises(ConcurrencyLimitExceeded):
        limiter.acquire_blocking('rejected')
    assert [p.value for p in collect(reader)['ferrolimit.rejected']] == [1]
    limiter.release()


def test_no_meter_no_metrics(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.try_acquire()
    limiter.release()
    assert collect(reader) == {}


def test_from_limit_passes_the_meter(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    limiter = ConcurrencyLimiter.from_limit(3, name='x', meter=provider.get_meter('test'))
    assert limiter.try_acquire()
    assert [p.value for p in collect(reader)['ferrolimit.running']] == [1]
    limiter.release()
