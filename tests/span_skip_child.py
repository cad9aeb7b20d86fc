"""Child process of `test_otel.test_default_tracer_spans_follow_a_provider_set_later`.

A fresh interpreter, so that no global tracer provider is set at first. Every kind of wait (the
native asyncio one, trio's, a blocking thread's and, with a Redis URL as the argument, the
fleet-wide one) first runs without a provider: its span is skipped, as nobody could record it.
Then a provider is set, and the same waits must each produce their span: skipping follows the
provider, it is not decided once. Prints the finished spans' names, one per line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ferrolimit import ConcurrencyLimiter, RedisConcurrencyLimiter

REDIS_URL = sys.argv[1] if len(sys.argv) > 1 else None


async def queue_behind_a_holder_asyncio(limiter: ConcurrencyLimiter) -> None:
    await limiter.acquire('holder')
    waiter = asyncio.ensure_future(limiter.acquire('asyncio'))
    await asyncio.sleep(0)  # one step of the waiter: it queues
    assert limiter.waiting_count == 1
    limiter.release()
    await waiter
    limiter.release()


async def queue_behind_a_holder_trio(limiter: ConcurrencyLimiter) -> None:
    await limiter.acquire('holder')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, 'trio')
        await trio.testing.wait_all_tasks_blocked()
        limiter.release()
    limiter.release()


def queue_behind_a_holder_blocking(limiter: ConcurrencyLimiter) -> None:
    limiter.acquire_blocking('holder')
    waiter = threading.Thread(target=limiter.acquire_blocking, args=('blocking',))
    waiter.start()
    while limiter.waiting_count == 0:
        time.sleep(0.001)
    limiter.release()
    waiter.join()
    limiter.release()


async def queue_behind_a_holder_redis(limiter: RedisConcurrencyLimiter) -> None:
    await limiter.acquire('holder')
    waiter = asyncio.ensure_future(limiter.acquire('redis'))
    # The fleet-wide count is read from Redis: there is no event to wait on.
    while limiter.waiting_count == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    limiter.release()
    await waiter
    limiter.release()


def every_wait(limiters: tuple[ConcurrencyLimiter, RedisConcurrencyLimiter | None]) -> None:
    local, fleet = limiters
    asyncio.run(queue_behind_a_holder_asyncio(local))
    trio.run(queue_behind_a_holder_trio, local)
    queue_behind_a_holder_blocking(local)
    if fleet is not None:
        asyncio.run(queue_behind_a_holder_redis(fleet))


def main() -> None:
    local = ConcurrencyLimiter(1, name='local')
    fleet = (
        None
        if REDIS_URL is None
        else RedisConcurrencyLimiter(REDIS_URL, f'span-skip:{time.time_ns()}', 1, name='fleet')
    )
    every_wait((local, fleet))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    every_wait((local, fleet))
    for span in exporter.get_finished_spans():
        print(f'{span.name} {dict(span.attributes or {})["source"]}')


if __name__ == '__main__':
    main()
