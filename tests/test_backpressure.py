"""`max_queued` and `waiting_count` are exact: every arrival that does not get a slot is counted
and checked at once, however many arrive together."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(('arrivals', 'max_queued'), [(5, 1), (1000, 10), (1000, 0), (50, 50)])
async def test_simultaneous_arrivals_admit_exactly_the_free_queue_places(arrivals: int, max_queued: int) -> None:
    limiter = ConcurrencyLimiter(1, max_queued=max_queued)
    admitted: list[int] = []
    rejected: list[int] = []

    async def arrive(i: int) -> None:
        try:
            async with limiter(f'task-{i}'):
                admitted.append(i)
        except ConcurrencyLimitExceeded:
            rejected.append(i)

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(arrivals):
            tg.start_soon(arrive, i)
        await anyio.wait_all_tasks_blocked()
        queued = min(arrivals, max_queued)
        assert limiter.waiting_count == queued
        assert len(rejected) == arrivals - queued
        limiter.release()
    assert len(admitted) == queued
    assert limiter.stats().rejected_total == arrivals - queued
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)


async def test_max_queued_while_slots_churn() -> None:
    """The reference let all of 1,000 arrivals queue past `max_queued=10` while slots churned."""
    limiter = ConcurrencyLimiter(3, max_queued=10)
    peak_waiting = 0
    rejected = 0

    async def arrive() -> None:
        nonlocal peak_waiting, rejected
        try:
            async with limiter:
                peak_waiting = max(peak_waiting, limiter.waiting_count)
                await anyio.lowlevel.checkpoint()
        except ConcurrencyLimitExceeded:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(arrive)
    assert peak_waiting <= 10
    assert rejected > 0
    assert limiter.stats().rejected_total == rejected
    assert limiter.stats().acquired_total == 1000 - rejected


async def test_waiting_count_sees_a_whole_burst() -> None:
    """10,000 arrivals through 7 slots: all 9,993 that must wait are counted at once."""
    limiter = ConcurrencyLimiter(7)
    release = anyio.Event()
    inside = 0
    peak = 0

    async def arrive() -> None:
        nonlocal inside, peak
        async with limiter:
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(10_000):
            tg.start_soon(arrive)
        await anyio.wait_all_tasks_blocked()
        assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (7, 9_993, 0)
        release.set()
    assert peak == 7
    stats = limiter.stats()
    assert (stats.running, stats.waiting, stats.available) == (0, 0, 7)
    assert stats.acquired_total == 10_000
    assert (stats.rejected_total, stats.cancelled_total) == (0, 0)


async def test_rejection_leaves_counts_untouched() -> None:
    limiter = ConcurrencyLimiter(1, max_queued=1)
    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'queued')
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(2\) exceeds max_queued \(1\)'):
            await limiter.acquire('rejected')
        assert (limiter.running_count, limiter.waiting_count) == (1, 1)
        limiter.release()
    assert (limiter.running_count, limiter.waiting_count) == (1, 0)
    limiter.release()
