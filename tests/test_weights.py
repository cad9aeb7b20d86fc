"""Weights and priorities (`weight=`, `priority=`) on every acquire form of the local limiter.

Weights count in slots (tokio's `acquire_many`): head-of-line FIFO, a heavy head is never
overtaken by a lighter, later waiter. Priorities order the queue only: higher first, FIFO within
one priority, holders never pre-empted. Every test checks the counts come back exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ferrolimit import ConcurrencyLimiter

pytestmark = pytest.mark.anyio


def counts(limiter: ConcurrencyLimiter) -> tuple[int, int, int]:
    return limiter.running_count, limiter.available_count, limiter.waiting_count


async def test_a_weight_counts_in_slots() -> None:
    limiter = ConcurrencyLimiter(5)
    await limiter.acquire(weight=3)
    assert counts(limiter) == (3, 2, 0)
    assert not limiter.try_acquire(weight=3)
    assert limiter.try_acquire(weight=2)
    assert counts(limiter) == (5, 0, 0)
    limiter.release(weight=4)
    assert counts(limiter) == (1, 4, 0)
    async with limiter('ctx', weight=4):
        assert counts(limiter) == (5, 0, 0)
    limiter.release()
    assert counts(limiter) == (0, 5, 0)


async def test_a_heavy_head_is_not_overtaken_by_a_lighter_later_waiter() -> None:
    limiter = ConcurrencyLimiter(5)
    await limiter.acquire(weight=4)
    order: list[str] = []
    leave = anyio.Event()

    async def waiter(name: str, weight: int) -> None:
        async with limiter(name, weight=weight):
            order.append(name)
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'heavy', 3)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 'light', 1)
        await anyio.wait_all_tasks_blocked()
        # One slot is free and `light` needs one, but `heavy` is ahead of it.
        assert counts(limiter) == (4, 1, 2)
        assert order == []
        limiter.release(weight=2)
        await anyio.wait_all_tasks_blocked()
        assert order == ['heavy']
        limiter.release(weight=2)
        await anyio.wait_all_tasks_blocked()
        assert order == ['heavy', 'light']
        leave.set()
    assert counts(limiter) == (0, 5, 0)


async def test_one_release_serves_every_waiter_that_fits_in_order() -> None:
    limiter = ConcurrencyLimiter(6)
    await limiter.acquire(weight=6)
    entered: list[int] = []
    leave = anyio.Event()

    async def waiter(i: int, weight: int) -> None:
        async with limiter(f'w{i}', weight=weight):
            entered.append(i)
            await leave.wait()

    async with anyio.create_task_group() as tg:
        for i, weight in enumerate([2, 3, 2, 1]):
            tg.start_soon(waiter, i, weight)
            await anyio.wait_all_tasks_blocked()
        limiter.release(weight=6)
        await anyio.wait_all_tasks_blocked()
        # 2 + 3 fit in 6; the third (2) does not fit in the 1 left, and the fourth (1) must not
        # overtake it.
        assert sorted(entered) == [0, 1]
        assert counts(limiter) == (5, 1, 2)
        leave.set()
    # Served by one release together, the last two resume in the event loop's order.
    assert sorted(entered) == [0, 1, 2, 3]
    assert counts(limiter) == (0, 6, 0)


@pytest.mark.parametrize('weight', [0, -1, -(2**70)])
async def test_a_weight_below_one_is_a_value_error_on_every_form(weight: int) -> None:
    limiter = ConcurrencyLimiter(3)
    message = f'weight must be >= 1, got {weight}'
    with pytest.raises(ValueError, match=message):
        await limiter.acquire(weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter.acquire_blocking(weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter.blocking(weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter('x', weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter.try_acquire(weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter.release(weight=weight)
    assert counts(limiter) == (0, 3, 0)


@pytest.mark.parametrize('bad', [True, 1.0, '1', None])
async def test_a_weight_or_priority_that_is_not_an_int_is_a_type_error(bad: Any) -> None:
    limiter = ConcurrencyLimiter(3)
    for call in (
        lambda: limiter.acquire(weight=bad),
        lambda: limiter.acquire_blocking(weight=bad),
        lambda: limiter.blocking(weight=bad),
        lambda: limiter('x', weight=bad),
        lambda: limiter.try_acquire(weight=bad),
        lambda: limiter.release(weight=bad),
    ):
        with pytest.raises(TypeError, match='weight must be an int'):
            call()
    for call in (
        lambda: limiter.acquire(priority=bad),
        lambda: limiter.acquire_blocking(priority=bad),
        lambda: limiter.blocking(priority=bad),
        lambda: limiter('x', priority=bad),
    ):
        with pytest.raises(TypeError, match='priority must be an int'):
            call()
    assert counts(limiter) == (0, 3, 0)


@pytest.mark.parametrize('priority', [2**31, -(2**31) - 1, 2**80])
async def test_a_priority_beyond_32_bits_is_a_value_error(priority: int) -> None:
    limiter = ConcurrencyLimiter(3)
    with pytest.raises(ValueError, match='priority must be'):
        await limiter.acquire(priority=priority)
    await limiter.acquire(priority=2**31 - 1)
    await limiter.acquire(priority=-(2**31))
    assert counts(limiter) == (2, 1, 0)


async def test_a_weight_above_max_running_is_a_value_error_even_with_free_slots() -> None:
    limiter = ConcurrencyLimiter(3, name='gpu')
    message = r'weight \(4\) exceeds max_running \(3\) for gpu'
    with pytest.raises(ValueError, match=message):
        await limiter.acquire(weight=4)
    with pytest.raises(ValueError, match=message):
        async with limiter('x', weight=4):
            pytest.fail('entered')
    with pytest.raises(ValueError, match=message):
        limiter.acquire_blocking(weight=4)
    with pytest.raises(ValueError, match=message), limiter.blocking(weight=4):
        pytest.fail('entered')
    with pytest.raises(ValueError, match=message):
        limiter.try_acquire(weight=4)
    with pytest.raises(ValueError, match='weight must be <= 4294967295'):
        limiter.try_acquire(weight=2**32)
    assert counts(limiter) == (0, 3, 0)
    assert limiter.stats().rejected_total == 0


async def test_a_weight_above_the_parents_max_running_gives_the_childs_slots_back() -> None:
    parent = ConcurrencyLimiter(2, name='parent')
    child = ConcurrencyLimiter(5, name='child', parent=parent)
    with pytest.raises(ValueError, match=r'weight \(3\) exceeds max_running \(2\) for parent'):
        await child.acquire(weight=3)
    with pytest.raises(ValueError, match=r'weight \(3\) exceeds max_running \(2\) for parent'):
        child.try_acquire(weight=3)
    assert counts(child) == (0, 5, 0)
    assert counts(parent) == (0, 2, 0)
    assert child.try_acquire(weight=2)
    assert counts(parent) == (2, 0, 0)
    child.release(weight=2)
    assert counts(child) == counts(parent)[:1] + (5, 0)


async def test_releasing_more_than_is_held_changes_nothing() -> None:
    limiter = ConcurrencyLimiter(4)
    await limiter.acquire(weight=2)
    with pytest.raises(ValueError, match='released too many times'):
        limiter.release(weight=3)
    assert counts(limiter) == (2, 2, 0)
    limiter.release(weight=2)
    assert counts(limiter) == (0, 4, 0)


async def test_a_resize_below_a_queued_waiters_weight_refuses_it() -> None:
    limiter = ConcurrencyLimiter(4, name='pool')
    await limiter.acquire(weight=4)
    outcomes: dict[str, str] = {}

    async def waiter(name: str, weight: int) -> None:
        try:
            async with limiter(name, weight=weight):
                outcomes[name] = 'entered'
        except ValueError as e:
            outcomes[name] = str(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'heavy', 4)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 'light', 2)
        await anyio.wait_all_tasks_blocked()
        limiter.max_running = 3
        await anyio.wait_all_tasks_blocked()
        assert outcomes == {'heavy': 'weight (4) exceeds max_running (3) for pool'}
        assert limiter.waiting_count == 1
        # The shrink is a debt: holders' slots above the new limit vanish as they come back.
        limiter.release(weight=4)
    assert outcomes['light'] == 'entered'
    assert counts(limiter) == (0, 3, 0)


async def test_growing_serves_weighted_waiters_in_order() -> None:
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire(weight=2)
    entered: list[str] = []

    async def waiter(name: str, weight: int) -> None:
        await limiter.acquire(name, weight=weight)
        entered.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'a', 2)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 'b', 1)
        await anyio.wait_all_tasks_blocked()
        limiter.max_running = 4
        await anyio.wait_all_tasks_blocked()
        assert entered == ['a']
        limiter.max_running = 5
    assert entered == ['a', 'b']
    assert counts(limiter) == (5, 0, 0)


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_a_weighted_head_cancelled_at_the_instant_of_handoff(order: str) -> None:
    """The head (weight 3) is cancelled just after / just before the release that serves it:
    either it holds its 3 slots and gives them back, or the slots pass to the waiter behind."""
    limiter = ConcurrencyLimiter(3)
    await limiter.acquire(weight=3)
    entered: list[str] = []
    scope = anyio.CancelScope()

    async def heavy() -> None:
        with scope:
            async with limiter('heavy', weight=3):
                entered.append('heavy')

    async def light() -> None:
        async with limiter('light', weight=2):
            entered.append('light')

    async with anyio.create_task_group() as tg:
        tg.start_soon(heavy)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(light)
        await anyio.wait_all_tasks_blocked()
        assert counts(limiter) == (3, 0, 2)
        if order == 'releasefirst':
            limiter.release(weight=3)
            scope.cancel()
        else:
            scope.cancel()
            limiter.release(weight=3)
    assert entered[-1] == 'light'
    if order == 'cancelfirst':
        assert entered == ['light']
    assert counts(limiter) == (0, 3, 0)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_a_prioritized_waiter_task_cancelled_at_the_instant_of_handoff(order: str) -> None:
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire(weight=2)
    entered: list[str] = []

    async def waiter(name: str, weight: int, priority: int) -> None:
        async with limiter(name, weight=weight, priority=priority):
            entered.append(name)

    low = asyncio.create_task(waiter('low', 1, 0))
    await anyio.wait_all_tasks_blocked()
    high = asyncio.create_task(waiter('high', 2, 5))
    await anyio.wait_all_tasks_blocked()
    # `high` is served first: releasing 2 slots hands both to it.
    if order == 'releasefirst':
        limiter.release(weight=2)
        high.cancel()
    else:
        high.cancel()
        limiter.release(weight=2)
    with pytest.raises(asyncio.CancelledError):
        await high
    await low
    assert entered == ['low']
    assert counts(limiter) == (0, 2, 0)
    assert limiter.stats().cancelled_total == 1


async def test_a_weighted_waiter_times_out_holding_nothing() -> None:
    limiter = ConcurrencyLimiter(3)
    await limiter.acquire(weight=2)
    with pytest.raises(TimeoutError):
        await limiter.acquire('late', weight=2, timeout=0.02)
    assert counts(limiter) == (2, 1, 0)
    # A light waiter behind a timed-out heavy one is not stuck.
    await limiter.acquire(weight=1)
    limiter.release(weight=3)
    assert counts(limiter) == (0, 3, 0)


async def test_higher_priorities_first_fifo_within_one() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        async with limiter(name, priority=priority):
            order.append(name)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for name, priority in [('a0', 0), ('b5', 5), ('c0', 0), ('d9', 9), ('e5', 5), ('f-3', -3), ('g9', 9)]:
            tg.start_soon(waiter, name, priority)
            await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 7
        limiter.release()
    assert order == ['d9', 'g9', 'b5', 'e5', 'a0', 'c0', 'f-3']


async def test_a_high_priority_newcomer_queues_while_anyone_waits_and_never_preempts() -> None:
    """Holders keep their slots; a newcomer of any priority does not take a slot the head of
    the queue could use: it queues, ahead of lower priorities."""
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire(weight=2)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        async with limiter(name, priority=priority):
            order.append(name)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'low', 0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 'urgent', 100)
        await anyio.wait_all_tasks_blocked()
        assert counts(limiter) == (2, 0, 2)
        limiter.release()
        await anyio.wait_all_tasks_blocked()
        limiter.release()
    assert order == ['urgent', 'low']
    assert counts(limiter) == (0, 2, 0)


async def test_a_higher_priority_newcomer_may_use_slots_a_blocked_heavy_head_cannot() -> None:
    """The head of the queue needs 3 slots and 1 is free: a newcomer of a higher priority, which
    would be served before it anyway, takes that slot at once; one of the same priority queues."""
    limiter = ConcurrencyLimiter(3)
    await limiter.acquire(weight=2)
    entered: list[str] = []

    async def waiter(name: str, weight: int, priority: int) -> None:
        async with limiter(name, weight=weight, priority=priority):
            entered.append(name)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'heavy', 3, 0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, 'same', 1, 0)
        await anyio.wait_all_tasks_blocked()
        assert entered == []
        tg.start_soon(waiter, 'higher', 1, 1)
        await anyio.wait_all_tasks_blocked()
        assert entered == ['higher']
        limiter.release(weight=2)
    assert entered == ['higher', 'heavy', 'same']
    assert counts(limiter) == (0, 3, 0)


async def test_max_queued_counts_waiters_of_every_priority_and_weight() -> None:
    from ferrolimit import ConcurrencyLimitExceeded

    limiter = ConcurrencyLimiter(4, max_queued=2)
    await limiter.acquire(weight=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: limiter.acquire(weight=3, priority=-1))
        tg.start_soon(lambda: limiter.acquire(weight=1, priority=7))
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyLimitExceeded):
            await limiter.acquire(priority=1000)
        assert limiter.waiting_count == 2
        limiter.release(weight=4)
    assert counts(limiter) == (4, 0, 0)


def test_blocking_forms_take_and_give_back_weights() -> None:
    limiter = ConcurrencyLimiter(4)
    limiter.acquire_blocking('a', weight=3)
    assert counts(limiter) == (3, 1, 0)
    order: list[str] = []

    def worker(name: str, weight: int, priority: int) -> None:
        with limiter.blocking(name, weight=weight, priority=priority):
            order.append(name)

    threads = [
        threading.Thread(target=worker, args=('low', 2, 0)),
        threading.Thread(target=worker, args=('high', 2, 1)),
    ]
    for thread in threads:
        thread.start()
        deadline = time.monotonic() + 5
        while limiter.waiting_count < threads.index(thread) + 1:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    # Two slots free: enough for one of them, and `high` is served first; `low` only gets the
    # slots `high` gives back.
    limiter.release(weight=1)
    for thread in threads:
        thread.join(5)
    assert order == ['high', 'low']
    limiter.release(weight=2)
    assert counts(limiter) == (0, 4, 0)
    assert limiter.try_acquire()
    with pytest.raises(TimeoutError):
        limiter.acquire_blocking(weight=4, timeout=0.01)
    limiter.release()
    assert counts(limiter) == (0, 4, 0)


async def test_an_acquire_coroutine_keeps_its_weight_until_it_runs() -> None:
    limiter = ConcurrencyLimiter(3)
    pending: Awaitable[None] = limiter.acquire(weight=2, priority=3)
    assert counts(limiter) == (0, 3, 0)
    await pending
    assert counts(limiter) == (2, 1, 0)


async def test_the_default_weight_and_priority_are_one_and_zero() -> None:
    limiter = ConcurrencyLimiter(2)
    forms: list[Callable[[], Any]] = [
        lambda: limiter.acquire(weight=1, priority=0),
        lambda: limiter.acquire(),
    ]
    for form in forms:
        await form()
    assert counts(limiter) == (2, 0, 0)
    limiter.release(weight=1)
    limiter.release()
    assert counts(limiter) == (0, 2, 0)
