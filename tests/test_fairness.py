"""FIFO order and no barging: a released slot goes to the oldest waiter, never to a newcomer."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ferrolimit import ConcurrencyLimiter, get_concurrency_context

pytestmark = pytest.mark.anyio


async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with get_concurrency_context(limiter, f'w{i}'):
            order.append(i)
            await anyio.lowlevel.checkpoint()

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(waiter, i)
            # Each waiter is queued before the next one starts.
            await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 20
        limiter.release()
    assert order == list(range(20))


async def test_fifo_with_several_slots() -> None:
    """Slots freed one at a time, from the test or from waiters leaving in any order, always go
    to the oldest waiter."""
    limiter = ConcurrencyLimiter(3)
    order: list[int] = []
    leave = [anyio.Event() for _ in range(30)]

    async def waiter(i: int) -> None:
        async with limiter:
            order.append(i)
            await leave[i].wait()

    for _ in range(3):
        await limiter.acquire('test')
    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
        # Free one slot at a time: first the test's own three, then waiters leave, newest first.
        for step in range(30):
            if step < 3:
                limiter.release()
            else:
                leave[step - 1 if step % 2 else step - 3].set()
            await anyio.wait_all_tasks_blocked()
            assert order == list(range(step + 1))
        for event in leave:
            event.set()
    assert limiter.available_count == 3


async def test_a_release_is_handed_to_the_waiter_not_to_try_acquire() -> None:
    limiter = ConcurrencyLimiter(1)
    entered = anyio.Event()

    async def waiter() -> None:
        async with limiter:
            entered.set()

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        limiter.release()
        # The waiter has not run yet, but the slot is already its own.
        assert not limiter.try_acquire()
        assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (1, 0, 0)
    assert entered.is_set()
    assert limiter.available_count == 1


async def test_a_newcomer_queues_behind_a_woken_waiter() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[str] = []

    async def enter(name: str) -> None:
        async with limiter(name):
            order.append(name)

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        tg.start_soon(enter, 'waiter')
        await anyio.wait_all_tasks_blocked()
        limiter.release()
        # Arrives after the release but before the waiter has run.
        tg.start_soon(enter, 'newcomer')
    assert order == ['waiter', 'newcomer']


async def test_release_from_another_task_wakes_the_waiter() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('a')
    got_it = anyio.Event()

    async def waiter() -> None:
        await limiter.acquire('b')
        got_it.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()

        async def releaser() -> None:
            limiter.release()  # releases the slot that the test's own task took

        tg.start_soon(releaser)
    assert got_it.is_set()
    assert limiter.running_count == 1
    limiter.release()
