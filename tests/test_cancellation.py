"""Cancellation and timeouts: a waiter that gives up neither takes nor loses a slot, even when
a slot is handed to it at that very instant."""

from __future__ import annotations

import asyncio
import sys

import anyio
import pytest
from handoff import cancel_at_handoff

from ferrolimit import ConcurrencyLimiter

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_cancel_scope_at_the_instant_of_handoff(order: str) -> None:
    """With anyio, a cancel scope does not interrupt a wait that has already completed: after
    `releasefirst` the waiter may take its slot and use it. Either way nothing is lost."""
    limiter = ConcurrencyLimiter(1)

    def queued() -> None:
        assert limiter.waiting_count == 2

    await limiter.acquire('holder')
    entered = await cancel_at_handoff(limiter, limiter, limiter.release, order, queued)
    assert entered[-1] == 'next'
    if order == 'cancelfirst':
        assert entered == ['next']
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)
    assert limiter.stats().cancelled_total == (1 if entered == ['next'] else 0)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_task_cancel_at_the_instant_of_handoff(order: str) -> None:
    """`Task.cancel()` right after the slot was handed over: the slot passes to the next waiter."""
    limiter = ConcurrencyLimiter(1)
    entered: list[str] = []

    async def waiter(name: str) -> None:
        async with limiter(name):
            entered.append(name)

    await limiter.acquire('holder')
    cancelled = asyncio.create_task(waiter('cancelled'))
    await anyio.wait_all_tasks_blocked()
    following = asyncio.create_task(waiter('next'))
    await anyio.wait_all_tasks_blocked()
    if order == 'releasefirst':
        limiter.release()
        cancelled.cancel()
    else:
        cancelled.cancel()
        limiter.release()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await following
    assert entered == ['next']
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)
    assert limiter.stats().cancelled_total == 1


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_cancel_at_handoff_with_nobody_behind(order: str) -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def cancellable() -> None:
            with scope:
                async with limiter('maybe'):
                    pass

        tg.start_soon(cancellable)
        await anyio.wait_all_tasks_blocked()
        if order == 'releasefirst':
            limiter.release()
            scope.cancel()
        else:
            scope.cancel()
            limiter.release()
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)


async def test_timeout_with_fail_after() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            await limiter.acquire('late')
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (1, 0, 0)
    limiter.release()
    assert limiter.available_count == 1
    assert limiter.stats().cancelled_total == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason='asyncio.timeout needs Python 3.11')
@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_timeout_with_asyncio_timeout() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            async with limiter('late'):
                pytest.fail('timed-out waiter got through')  # pragma: no cover
    assert (limiter.running_count, limiter.waiting_count) == (1, 0)
    limiter.release()
    assert limiter.available_count == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason='asyncio.timeout needs Python 3.11')
@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_timeout_at_the_instant_of_handoff() -> None:
    limiter = ConcurrencyLimiter(1)
    entered: list[str] = []
    timeouts: list[asyncio.Timeout] = []

    async def timed_waiter() -> None:
        async with asyncio.timeout(None) as timeout:
            timeouts.append(timeout)
            async with limiter('timed'):
                entered.append('timed')

    async def waiter() -> None:
        async with limiter('next'):
            entered.append('next')

    await limiter.acquire('holder')
    timed = asyncio.create_task(timed_waiter())
    await anyio.wait_all_tasks_blocked()
    following = asyncio.create_task(waiter())
    await anyio.wait_all_tasks_blocked()
    # The deadline passes and the slot is handed to the timed waiter in the same loop step.
    timeouts[0].reschedule(asyncio.get_running_loop().time() - 1)
    limiter.release()
    with pytest.raises(TimeoutError):
        await timed
    await following
    assert entered == ['next']
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)


async def test_cancelling_many_queued_waiters_leaks_nothing() -> None:
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire('a')
    await limiter.acquire('b')
    async with anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(limiter.acquire, f'w{i}')
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 500
        tg.cancel_scope.cancel()
    assert (limiter.running_count, limiter.waiting_count) == (2, 0)
    limiter.release()
    limiter.release()
    assert limiter.available_count == 2
    assert limiter.stats().cancelled_total == 500


async def test_cancelling_every_other_waiter_keeps_fifo_for_the_rest() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[int] = []
    scopes: dict[int, anyio.CancelScope] = {}

    async def waiter(i: int) -> None:
        with scopes.setdefault(i, anyio.CancelScope()):
            async with limiter:
                order.append(i)

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
        for i in range(0, 10, 2):
            scopes[i].cancel()
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 5
        limiter.release()
    assert order == [1, 3, 5, 7, 9]
    assert limiter.available_count == 1


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_waiter_whose_task_is_garbage_collected_passes_its_slot_on() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    coro = limiter.acquire('abandoned')
    # Start the coroutine by hand so it queues, then drop it without finishing.
    future = coro.send(None)
    assert limiter.waiting_count == 1
    coro.close()
    del coro, future
    assert limiter.waiting_count == 0
    limiter.release()
    assert limiter.available_count == 1


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('order', ['releasefirst', 'throwfirst'])
async def test_exception_thrown_into_a_parked_native_waiter(order: str) -> None:
    """On asyncio a waiter without a time limit waits in a native awaitable; an exception thrown
    into it (as a task does on cancellation) gives its place up and passes a handed-over slot on."""
    from ferrolimit._ferrolimit import _AsyncioWait as AsyncioWait

    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    # `__aenter__` starts the wait when called (`acquire()` only when first awaited).
    awaitable = limiter('parked').__aenter__()
    assert type(awaitable) is AsyncioWait
    future = awaitable.send(None)
    assert isinstance(future, asyncio.Future)
    assert limiter.waiting_count == 1
    if order == 'releasefirst':
        limiter.release()  # handed to the parked waiter
    with pytest.raises(KeyError, match='boom'):
        awaitable.throw(KeyError('boom'))
    if order == 'throwfirst':
        limiter.release()
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)
    with pytest.raises(RuntimeError, match='cannot reuse already awaited'):
        awaitable.send(None)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_an_acquire_with_a_time_limit_is_a_coroutine() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    awaitable = limiter.acquire('timed', timeout=5)
    assert asyncio.iscoroutine(awaitable)
    awaitable.close()
    limiter.release()
    assert limiter.available_count == 1


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('outcome', ['granted', 'timed_out', 'cancelled'])
async def test_a_native_wait_with_a_time_limit_leaves_no_timer_behind(outcome: str) -> None:
    """On asyncio a wait with `timeout=` is native too, its deadline a `loop.call_at` timer: once the
    wait ends (a slot, the deadline, a cancellation) the timer is gone, and nothing is reported later."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    waiter = asyncio.create_task(limiter.acquire('timed', timeout=0.05 if outcome == 'timed_out' else 30))
    await anyio.wait_all_tasks_blocked()
    assert limiter.waiting_count == 1
    assert len(loop._scheduled) == timers_before + 1  # type: ignore[attr-defined]
    if outcome == 'granted':
        limiter.release()
        await waiter
        assert limiter.running_count == 1
        limiter.release()
    elif outcome == 'timed_out':
        with pytest.raises(TimeoutError, match='^timed out waiting for timed concurrency$'):
            await waiter
        limiter.release()
    else:
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.release()
    assert all(handle.cancelled() for handle in loop._scheduled[timers_before:])  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)
    assert reported == []


async def test_an_acquire_refuses_a_first_value_as_a_coroutine_does() -> None:
    limiter = ConcurrencyLimiter(1)
    acquire = limiter.acquire('x')
    with pytest.raises(TypeError, match="^can't send non-None value to a just-started coroutine$"):
        acquire.send(5)
    assert limiter.running_count == 0
    await acquire  # still unstarted: it takes its slot now
    assert limiter.running_count == 1
    limiter.release()
