"""Graceful shutdown of the local limiter: `close()`, `closed`, `wait_idle()`, `LimiterClosedError`.

A closed limiter refuses every queued waiter and every new acquire (`try_acquire()` returns
False); holders keep their slots and release them normally; `wait_idle()` returns True once no
slot is held and never takes one. Waiters on other event loops and on plain threads are refused
too, and nothing leaks.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

import ferrolimit
from ferrolimit import ConcurrencyLimiter, LimiterClosedError

pytestmark = pytest.mark.anyio


def counts(limiter: ConcurrencyLimiter) -> tuple[int, int, int]:
    return limiter.running_count, limiter.available_count, limiter.waiting_count


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_limiter_closed_error_is_exported_and_a_runtime_error() -> None:
    assert ferrolimit.LimiterClosedError is LimiterClosedError
    assert 'LimiterClosedError' in ferrolimit.__all__
    assert issubclass(LimiterClosedError, RuntimeError)


async def test_close_refuses_queued_and_new_callers_and_keeps_holders() -> None:
    limiter = ConcurrencyLimiter(2, name='api')
    await limiter.acquire(weight=2)
    refused: list[str] = []

    async def waiter(name: str) -> None:
        with pytest.raises(LimiterClosedError, match='concurrency limiter closed for api'):
            await limiter.acquire(name)
        refused.append(name)

    async with anyio.create_task_group() as tg:
        for name in ('a', 'b', 'c'):
            tg.start_soon(waiter, name)
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 3
        assert not limiter.closed
        limiter.close()
        assert limiter.closed
    assert sorted(refused) == ['a', 'b', 'c']
    assert counts(limiter) == (2, 0, 0)
    with pytest.raises(LimiterClosedError):
        await limiter.acquire()
    with pytest.raises(LimiterClosedError):
        async with limiter('ctx'):
            pytest.fail('entered')
    with pytest.raises(LimiterClosedError):
        limiter.acquire_blocking(timeout=1)
    assert not limiter.try_acquire()
    limiter.close()  # idempotent
    limiter.release(weight=2)
    assert counts(limiter) == (0, 2, 0)
    assert not limiter.try_acquire()
    assert limiter.stats().rejected_total == 0


async def test_a_closed_limiter_refuses_even_with_free_slots() -> None:
    limiter = ConcurrencyLimiter(3)
    limiter.close()
    with pytest.raises(LimiterClosedError):
        await limiter.acquire()
    with pytest.raises(LimiterClosedError):
        async with ferrolimit.get_concurrency_context(limiter, 'x'):
            pytest.fail('entered')
    assert counts(limiter) == (0, 3, 0)


async def test_a_closed_parent_refuses_a_childs_callers_and_gives_the_childs_slot_back() -> None:
    parent = ConcurrencyLimiter(2, name='parent')
    child = ConcurrencyLimiter(2, name='child', parent=parent)
    parent.close()
    assert not child.closed
    with pytest.raises(LimiterClosedError, match='for parent'):
        await child.acquire()
    assert not child.try_acquire()
    assert counts(child) == (0, 2, 0)
    assert counts(parent) == (0, 2, 0)


async def test_a_caller_waiting_at_the_parent_of_a_closed_child_is_never_admitted() -> None:
    """It holds the child's slot while queued at the parent: closing the child refuses it when
    the parent's slot comes (the slot passes on), instead of admitting it through a closed
    limiter."""
    parent = ConcurrencyLimiter(1)
    child = ConcurrencyLimiter(1, parent=parent)
    assert parent.try_acquire()
    outcome: list[str] = []

    async def climber() -> None:
        try:
            await child.acquire('climber')
            outcome.append('admitted')
        except LimiterClosedError:
            outcome.append('refused')

    async def parent_waiter() -> None:
        async with parent('next'):
            outcome.append('parent waiter')

    async with anyio.create_task_group() as tg:
        tg.start_soon(climber)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(parent_waiter)
        await anyio.wait_all_tasks_blocked()
        assert (child.running_count, parent.waiting_count) == (1, 2)
        child.close()
        parent.release()
    assert outcome == ['refused', 'parent waiter']
    assert counts(child) == (0, 1, 0)
    assert counts(parent) == (0, 1, 0)


async def test_close_records_the_refusal_on_the_wait_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = ConcurrencyLimiter(1, name='spans', tracer=tracer)
    await limiter.acquire()
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            with pytest.raises(LimiterClosedError):
                await limiter.acquire('w')

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        limiter.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for spans concurrency'
    assert span.status.status_code == StatusCode.ERROR
    assert 'LimiterClosedError' in (span.status.description or '')
    limiter.release()


@pytest.mark.parametrize('order', ['releasefirst', 'closefirst'])
async def test_a_waiter_handed_a_slot_just_before_close_keeps_it_or_raises(order: str) -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    outcome: list[str] = []

    async def waiter() -> None:
        try:
            async with limiter('w'):
                outcome.append('entered')
        except LimiterClosedError:
            outcome.append('refused')

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        if order == 'releasefirst':
            limiter.release()
            limiter.close()
        else:
            limiter.close()
            limiter.release()
    assert outcome in (['entered'], ['refused'])
    if order == 'closefirst':
        assert outcome == ['refused']
    assert counts(limiter) == (0, 1, 0)
    assert await limiter.wait_idle(timeout=0)


async def test_wait_idle_returns_at_once_when_nothing_is_held() -> None:
    limiter = ConcurrencyLimiter(2)
    assert await limiter.wait_idle()
    assert await limiter.wait_idle(timeout=0)


async def test_wait_idle_times_out_while_a_slot_is_held() -> None:
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire()
    started = time.monotonic()
    assert not await limiter.wait_idle(timeout=0.05)
    assert time.monotonic() - started >= 0.04
    assert not await limiter.wait_idle(timeout=0)
    limiter.release()
    assert await limiter.wait_idle(timeout=0)


async def test_wait_idle_waits_for_the_last_holder_and_is_not_a_waiter() -> None:
    limiter = ConcurrencyLimiter(2, max_queued=0)
    await limiter.acquire(weight=2)
    done: list[bool] = []

    async def idle() -> None:
        done.append(await limiter.wait_idle())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(idle)
        await anyio.wait_all_tasks_blocked()
        # Not a waiter: not counted, not under max_queued, takes no slot.
        assert counts(limiter) == (2, 0, 0)
        limiter.release()
        await anyio.wait_all_tasks_blocked()
        assert done == []
        limiter.release()
    assert done == [True, True, True]
    assert counts(limiter) == (0, 2, 0)


async def test_wait_idle_does_not_return_at_a_handoff() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    done: list[bool] = []
    leave = anyio.Event()

    async def holder() -> None:
        async with limiter('next'):
            await leave.wait()

    async def idle() -> None:
        done.append(await limiter.wait_idle())

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(idle)
        await anyio.wait_all_tasks_blocked()
        limiter.release()  # straight to `holder`: the limiter is never idle
        await anyio.wait_all_tasks_blocked()
        assert done == []
        assert limiter.running_count == 1
        leave.set()
    assert done == [True]


async def test_a_cancelled_wait_idle_leaves_nothing_behind() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    with anyio.move_on_after(0.01):
        await limiter.wait_idle()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.wait_idle)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    # The registrations are gone: the limiter returns to its uncontended fast path.
    limiter.release()
    assert counts(limiter) == (0, 1, 0)
    assert limiter.try_acquire()
    limiter.release()


async def test_close_then_wait_idle_is_a_graceful_shutdown() -> None:
    limiter = ConcurrencyLimiter(3)
    finished: list[int] = []

    async def job(i: int) -> None:
        async with limiter(f'job{i}'):
            await anyio.sleep(0.01 * (i + 1))
            finished.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(job, i)
        await anyio.wait_all_tasks_blocked()
        limiter.close()
        assert await limiter.wait_idle(timeout=5)
        assert sorted(finished) == [0, 1, 2]
    assert counts(limiter) == (0, 3, 0)


@pytest.mark.parametrize('bad', ['1', True, -1.0, float('nan')])
async def test_wait_idle_rejects_a_bad_timeout(bad: object) -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises((TypeError, ValueError)):
        await limiter.wait_idle(timeout=bad)  # type: ignore[arg-type]


class Refusals:
    """What the waiters of `test_close_refuses_waiters_on_other_loops_and_threads` saw, from
    several threads."""

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self.limiter = limiter
        self.outcomes: list[str] = []
        self.idle: list[bool] = []
        self.lock = threading.Lock()

    async def acquire(self, label: str) -> None:
        try:
            await self.limiter.acquire(label, timeout=30)
        except LimiterClosedError:
            with self.lock:
                self.outcomes.append(f'{label} refused')

    def blocking(self) -> None:
        try:
            with self.limiter.blocking('thread', weight=1, priority=3):
                pass
        except LimiterClosedError:
            with self.lock:
                self.outcomes.append('thread refused')

    async def on_asyncio(self) -> None:
        await asyncio.gather(self.acquire('asyncio'), self.acquire('asyncio'))
        self.idle.append(await self.limiter.wait_idle(timeout=10))

    async def on_trio(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.acquire, 'trio')
            nursery.start_soon(self.acquire, 'trio')
        self.idle.append(await self.limiter.wait_idle(timeout=10))


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_close_refuses_waiters_on_other_loops_and_threads() -> None:
    """Waiters parked on asyncio and trio loops in other threads and on plain threads all end
    with `LimiterClosedError`; wait_idle() on each loop returns once the holder leaves."""
    limiter = ConcurrencyLimiter(1)
    limiter.acquire_blocking('holder')
    seen = Refusals(limiter)
    threads = [
        threading.Thread(target=asyncio.run, args=(seen.on_asyncio(),)),
        threading.Thread(target=trio.run, args=(seen.on_trio,)),
        threading.Thread(target=seen.blocking),
        threading.Thread(target=seen.blocking),
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: limiter.waiting_count == 6, 'every waiter queued')
    limiter.close()
    wait_for(lambda: len(seen.outcomes) == 6, 'every waiter refused')
    assert sorted(seen.outcomes) == ['asyncio refused'] * 2 + ['thread refused'] * 2 + ['trio refused'] * 2
    await asyncio.sleep(0.01)
    assert seen.idle == []
    limiter.release()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert seen.idle == [True, True]
    assert counts(limiter) == (0, 1, 0)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_release_on_another_thread_wakes_wait_idle() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    timer = threading.Timer(0.02, limiter.release)
    timer.start()
    assert await limiter.wait_idle(timeout=10)
    timer.join()


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_garbage_collected_wait_idle_gives_its_registration_up() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    pending = limiter.wait_idle()
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task, pending
    gc.collect()
    limiter.release()
    assert counts(limiter) == (0, 1, 0)
    assert await limiter.wait_idle(timeout=0)


async def test_close_does_not_wait_and_wait_idle_does_not_close() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    assert not await limiter.wait_idle(timeout=0.01)
    assert not limiter.closed
    limiter.close()
    assert limiter.running_count == 1
    limiter.release()
    assert await limiter.wait_idle(timeout=1)
    await anyio.lowlevel.checkpoint()
