"""`KeyedConcurrencyLimiter`: one limit per `str` key, a parent over all keys, and a key's state
alive only while the key is in use (memory back to nothing once keys go idle)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ferrolimit import (
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    KeyedConcurrencyLimiter,
    LimiterClosedError,
)

pytestmark = pytest.mark.anyio


def counts(keyed: KeyedConcurrencyLimiter, key: str) -> tuple[int, int, int]:
    return keyed.running_count(key), keyed.available_count(key), keyed.waiting_count(key)


async def test_each_key_has_its_own_limit_and_fifo_queue() -> None:
    keyed = KeyedConcurrencyLimiter(1, name='per-user')
    order: list[str] = []

    async def call(key: str, name: str) -> None:
        async with keyed(key, name):
            order.append(name)
            await anyio.lowlevel.checkpoint()

    await keyed.acquire('alice')
    async with anyio.create_task_group() as tg:
        for name in ('a1', 'a2', 'a3'):
            tg.start_soon(call, 'alice', name)
            await anyio.wait_all_tasks_blocked()
        # Bob is not held up by Alice's queue.
        tg.start_soon(call, 'bob', 'b1')
        await anyio.wait_all_tasks_blocked()
        assert order == ['b1']
        assert counts(keyed, 'alice') == (1, 0, 3)
        assert len(keyed) == 1
        keyed.release('alice')
    assert order == ['b1', 'a1', 'a2', 'a3']
    assert counts(keyed, 'alice') == (0, 1, 0)
    assert len(keyed) == 0


async def test_a_parent_caps_every_key_together() -> None:
    provider = ConcurrencyLimiter(3, name='provider')
    keyed = KeyedConcurrencyLimiter(2, parent=provider)
    assert keyed.parent is provider
    assert keyed.try_acquire('a')
    assert keyed.try_acquire('a')
    assert not keyed.try_acquire('a')
    assert keyed.try_acquire('b')
    assert not keyed.try_acquire('c'), 'the parent is full'
    assert provider.running_count == 3
    entered: list[str] = []

    async def call() -> None:
        async with keyed('c', 'c'):
            entered.append('c')

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert provider.waiting_count == 1
        keyed.release('a')
    assert entered == ['c']
    keyed.release('a')
    keyed.release('b')
    assert provider.running_count == 0
    assert len(keyed) == 0


@pytest.mark.parametrize('bad', [1, None, b'k', ('k',)])
async def test_a_key_that_is_not_a_str_is_a_type_error_on_every_method(bad: Any) -> None:
    keyed = KeyedConcurrencyLimiter(2)
    calls = [
        lambda: keyed.acquire(bad),
        lambda: keyed.acquire_blocking(bad),
        lambda: keyed.blocking(bad),
        lambda: keyed(bad),
        lambda: keyed.try_acquire(bad),
        lambda: keyed.release(bad),
        lambda: keyed.running_count(bad),
        lambda: keyed.waiting_count(bad),
        lambda: keyed.available_count(bad),
        lambda: keyed.stats(bad),
    ]
    for call in calls:
        with pytest.raises(TypeError, match='key must be a str'):
            call()
    assert len(keyed) == 0


async def test_unknown_keys_read_as_zeros_and_create_no_state() -> None:
    keyed = KeyedConcurrencyLimiter(3, max_queued=5)
    stats = keyed.stats('nobody')
    assert (stats.running, stats.waiting, stats.available, stats.max_running, stats.max_queued) == (0, 0, 3, 3, 5)
    assert counts(keyed, 'nobody') == (0, 3, 0)
    assert len(keyed) == 0
    with pytest.raises(ValueError, match="key 'nobody' holds no slot"):
        keyed.release('nobody')
    await keyed.acquire('k', weight=2)
    with pytest.raises(ValueError, match='released too many times'):
        keyed.release('k', weight=3)
    assert counts(keyed, 'k') == (2, 1, 0)
    keyed.release('k', weight=2)
    assert len(keyed) == 0


async def test_max_queued_weights_and_priorities_are_per_key() -> None:
    keyed = KeyedConcurrencyLimiter(2, max_queued=1)
    await keyed.acquire('a', weight=2)
    order: list[str] = []

    async def call(key: str, name: str, priority: int) -> None:
        async with keyed(key, name, priority=priority):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 'a', 'queued', 0)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyLimitExceeded):
            await keyed.acquire('a')
        # Another key's queue is its own.
        await keyed.acquire('b', weight=2)
        tg.start_soon(call, 'b', 'b-low', 0)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ValueError, match=r'weight \(3\) exceeds max_running \(2\)'):
            await keyed.acquire('b', weight=3)
        keyed.release('a', weight=2)
        keyed.release('b', weight=2)
    assert sorted(order) == ['b-low', 'queued']
    assert len(keyed) == 0


async def test_resize_applies_to_keys_in_use_and_to_new_keys() -> None:
    keyed = KeyedConcurrencyLimiter(1)
    await keyed.acquire('a')
    entered: list[str] = []

    async def call() -> None:
        async with keyed('a', 'w'):
            entered.append('w')

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        keyed.max_running = 2
    assert entered == ['w']
    assert keyed.max_running == 2
    assert counts(keyed, 'new') == (0, 2, 0)
    keyed.release('a')


async def test_a_cancelled_or_timed_out_waiter_leaves_no_state_behind() -> None:
    keyed = KeyedConcurrencyLimiter(1)
    await keyed.acquire('k')
    with anyio.move_on_after(0.01):
        await keyed.acquire('k', 'cancelled')
    with pytest.raises(TimeoutError):
        await keyed.acquire('k', 'late', timeout=0.01)
    assert counts(keyed, 'k') == (1, 0, 0)
    keyed.release('k')
    assert len(keyed) == 0
    never_awaited = keyed.acquire('x')
    assert len(keyed) == 1, 'a live coroutine keeps its key'
    never_awaited.close()
    del never_awaited
    gc.collect()
    assert len(keyed) == 0


async def test_close_refuses_waiters_of_every_key_and_wait_idle_waits_for_all() -> None:
    keyed = KeyedConcurrencyLimiter(1, name='tenants')
    await keyed.acquire('a')
    await keyed.acquire('b')
    refused: list[str] = []
    idle: list[bool] = []

    async def waiter(key: str) -> None:
        try:
            await keyed.acquire(key)
        except LimiterClosedError:
            refused.append(key)

    async def wait_idle() -> None:
        idle.append(await keyed.wait_idle())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'a')
        tg.start_soon(waiter, 'b')
        tg.start_soon(wait_idle)
        await anyio.wait_all_tasks_blocked()
        keyed.close()
        assert keyed.closed
        await anyio.wait_all_tasks_blocked()
        assert sorted(refused) == ['a', 'b']
        assert not keyed.try_acquire('new')
        with pytest.raises(LimiterClosedError, match='for tenants'):
            await keyed.acquire('new')
        keyed.release('a')
        await anyio.wait_all_tasks_blocked()
        assert idle == []
        keyed.release('b')
    assert idle == [True]
    assert len(keyed) == 0


async def test_wait_idle_times_out_and_is_true_at_once_when_nothing_is_held() -> None:
    keyed = KeyedConcurrencyLimiter(2)
    assert await keyed.wait_idle(timeout=0)
    await keyed.acquire('a')
    assert not await keyed.wait_idle(timeout=0.02)
    keyed.release('a')
    assert await keyed.wait_idle(timeout=0)


async def test_wait_idle_waits_for_the_keys_held_at_the_call_each_once() -> None:
    """A key that goes idle counts even if it is taken again before the wait looks; a key taken
    after the call is not waited for (a busy keyed limiter cannot keep `wait_idle` forever)."""
    keyed = KeyedConcurrencyLimiter(1)
    await keyed.acquire('a')
    idle: list[bool] = []

    async def wait_idle() -> None:
        idle.append(await keyed.wait_idle())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_idle)
            await anyio.wait_all_tasks_blocked()
            await keyed.acquire('later')
            keyed.release('a')
            await keyed.acquire('a')  # taken again before the waiter runs: 'a' was idle once
            await anyio.wait_all_tasks_blocked()
    assert idle == [True]
    assert (keyed.running_count('a'), keyed.running_count('later')) == (1, 1)
    keyed.release('a')
    keyed.release('later')


def test_blocking_forms_and_threads() -> None:
    keyed = KeyedConcurrencyLimiter(1)
    keyed.acquire_blocking('k', 'main')
    done: list[str] = []

    def worker() -> None:
        with keyed.blocking('k', 'thread', timeout=10):
            done.append('thread')

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while keyed.waiting_count('k') == 0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(TimeoutError):
        keyed.acquire_blocking('k', timeout=0.01)
    keyed.release('k')
    thread.join(10)
    assert done == ['thread']
    assert len(keyed) == 0


def _rss_bytes() -> int:
    with open(f'/proc/{os.getpid()}/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_million_distinct_keys_leave_nothing_behind() -> None:
    """Each key is used once, by `async with`, `acquire`/`release` or `try_acquire`: the keyed
    limiter ends with no key and the process's memory where it started (one leaked state per key
    would be hundreds of megabytes)."""
    keyed = KeyedConcurrencyLimiter(2)
    for i in range(20_000):  # warm up the allocator and the map's growth
        async with keyed(f'warm{i}'):
            pass
    assert len(keyed) == 0
    gc.collect()
    before = _rss_bytes()
    for i in range(1_000_000):
        key = f'user{i}'
        if i % 3 == 0:
            async with keyed(key, 'chat'):
                pass
        elif i % 3 == 1:
            await keyed.acquire(key)
            keyed.release(key)
        else:
            assert keyed.try_acquire(key)
            keyed.release(key)
    assert len(keyed) == 0
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 16 * 1024 * 1024, f'memory grew by {grown / 1e6:.1f} MB over a million keys'


async def test_metrics_are_attributed_by_name_and_summed_over_keys(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    keyed = KeyedConcurrencyLimiter(1, name='per-user', meter=provider.get_meter('test'))
    await keyed.acquire('a')
    await keyed.acquire('b')
    async with anyio.create_task_group() as tg:
        tg.start_soon(keyed.acquire, 'a')
        await anyio.wait_all_tasks_blocked()
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: [(p.value, dict(p.attributes)) for p in metric.data.data_points]
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        assert points['ferrolimit.running'] == [(2, {'limiter_name': 'per-user'})]
        assert points['ferrolimit.waiting'] == [(1, {'limiter_name': 'per-user'})]
        keyed.release('a')
    keyed.release('a')
    keyed.release('b')
    assert len(keyed) == 0


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_keys_shared_by_tasks_threads_and_loops_never_exceed_their_limit() -> None:
    keyed = KeyedConcurrencyLimiter(2)
    peak: dict[str, int] = {}
    running: dict[str, int] = {}
    lock = threading.Lock()

    async def hammer(key: str) -> None:
        for _ in range(200):
            async with keyed(key):
                with lock:
                    running[key] = running.get(key, 0) + 1
                    peak[key] = max(peak.get(key, 0), running[key])
                await asyncio.sleep(0)
                with lock:
                    running[key] -= 1

    async def loop_main() -> None:
        await asyncio.gather(*(hammer(f'k{i % 3}') for i in range(12)))

    threads = [threading.Thread(target=asyncio.run, args=(loop_main(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    await loop_main()
    for thread in threads:
        thread.join(60)
    assert set(peak) == {'k0', 'k1', 'k2'}
    assert max(peak.values()) <= 2
    assert len(keyed) == 0


def test_a_str_subclass_key_is_a_type_error_and_any_str_is_a_key() -> None:
    """A subclass may define its own equality and hash, which a map keyed by text cannot honour:
    it is refused rather than given a second state for the same text. A `str` with lone
    surrogates is a key of its own."""

    class UserId(str):
        __slots__ = ()

        def __hash__(self) -> int:
            return hash(self.lower())

    keyed = KeyedConcurrencyLimiter(1)
    assert keyed.try_acquire('Alice')
    with pytest.raises(TypeError, match='not a subclass of str'):
        keyed.try_acquire(UserId('Alice'))
    surrogate = b'user-\xff'.decode('utf-8', 'surrogateescape')
    assert keyed.try_acquire(surrogate)
    assert keyed.running_count(surrogate) == 1
    assert keyed.running_count('user-\udcfe') == 0
    keyed.release(surrogate)
    keyed.release('Alice')
    assert len(keyed) == 0


async def test_a_key_with_no_holder_reads_as_zeros_before_its_state_is_reclaimed() -> None:
    keyed = KeyedConcurrencyLimiter(2)
    async with keyed('a'):
        assert keyed.stats('a').acquired_total == 1
    stats = keyed.stats('a')
    assert (stats.running, stats.acquired_total) == (0, 0)


def test_resizes_racing_each_other_leave_every_key_at_the_final_limit() -> None:
    """Resizing wakes waiters, which runs Python code in the middle of the loop over the keys: a
    destructor that resizes again there must not leave keys at the first value."""
    keyed = KeyedConcurrencyLimiter(1)
    keys = [f'k{i}' for i in range(50)]
    fired: list[bool] = []

    class Resizer:
        def __init__(self) -> None:
            self.me = self  # a cycle: freed by the garbage collector, at some allocation

        def __del__(self) -> None:
            if not fired:
                fired.append(True)
                keyed.max_running = 5

    async def main() -> None:
        for key in keys:
            assert keyed.try_acquire(key)
        waiters = [asyncio.ensure_future(keyed.acquire(key)) for key in keys]
        await asyncio.sleep(0)
        Resizer()
        gc.set_threshold(1)  # a collection at (nearly) every allocation
        try:
            keyed.max_running = 2  # wakes the 50 waiters, one key after another
        finally:
            gc.set_threshold(700, 10, 10)
        await asyncio.gather(*waiters)

    asyncio.run(main())
    assert fired
    assert keyed.max_running == 5
    assert {keyed.stats(key).max_running for key in keys} == {5}
