"""RedisKeyedConcurrencyLimiter: one fleet-wide limit per key, the surface of the keyed limiter.

Needs the Redis server `make test` starts (`FERROLIMIT_REDIS_URL`); skipped without it.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest
from test_redis import command

from ferrolimit import LimiterClosedError, RedisKeyedConcurrencyLimiter, UserError

pytestmark = pytest.mark.anyio


async def until(predicate: object, what: str, deadline: float = 10.0) -> None:
    """Wait (polling) until `predicate()` is true; fail after `deadline` seconds."""
    assert callable(predicate)
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, f'timed out waiting for {what}'
        await anyio.sleep(0.005)


async def test_each_key_has_its_own_fleet_wide_limit(redis_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2, name='per-user')
    other_process = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    await keyed.acquire('alice', 'chat', weight=2)
    assert not other_process.try_acquire('alice')  # the same key, fleet-wide
    assert other_process.try_acquire('bob')  # another key
    assert (keyed.running_count('alice'), keyed.available_count('alice'), keyed.running_count('bob')) == (2, 0, 1)
    stats = keyed.stats('alice')
    assert (stats.running, stats.waiting, stats.max_running, stats.acquired_total) == (2, 0, 2, 2)
    assert (keyed.held_count('alice'), keyed.held_count('bob'), other_process.held_count('bob')) == (2, 0, 1)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        async with other_process('alice', name, priority=priority):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 'low', 0)
        await until(lambda: keyed.waiting_count('alice') == 1, 'the first waiter')
        tg.start_soon(waiter, 'high', 1)
        await until(lambda: keyed.waiting_count('alice') == 2, 'the second waiter')
        keyed.release('alice')  # one slot: the waiters pass it on, in priority order
    assert order == ['high', 'low']
    keyed.release('alice')
    with pytest.raises(ValueError, match=r'^semaphore released too many times for per-user$'):
        keyed.release('alice')
    other_process.release('bob')
    with pytest.raises(TimeoutError, match='^timed out waiting for per-user concurrency$'):
        await keyed.acquire('carol', weight=2)
        await keyed.acquire('carol', timeout=0.05)
    keyed.release('carol', weight=2)


async def test_keys_leave_no_state_here_or_in_redis(redis_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 1, lease_seconds=0.2)
    assert keyed.running_count('never-used') == 0
    for i in range(300):
        async with keyed(f'user-{i}'):
            pass
    await until(lambda: len(keyed) == 0, 'every key state to go')
    await until(lambda: command(redis_url, 'KEYS', f'{{{redis_key}:*') == [], 'the Redis keys to expire')


async def test_resize_close_and_wait_idle_cover_every_key(redis_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 1)
    await keyed.acquire('a')
    keyed.max_running = 2
    assert keyed.max_running == 2
    await keyed.acquire('a')  # the resized key
    await keyed.acquire('b', weight=2)  # a new key gets the new limit
    with pytest.raises(UserError):
        keyed.max_running = 0
    failures: list[BaseException] = []

    async def refused() -> None:
        try:
            await keyed.acquire('b')
        except LimiterClosedError as e:
            failures.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(refused)
        await until(lambda: keyed.waiting_count('b') == 1, 'the waiter')
        keyed.close()
    assert keyed.closed and len(failures) == 1
    assert not keyed.try_acquire('c')
    assert not await keyed.wait_idle(timeout=0.05)
    keyed.release('a', weight=2)
    keyed.release('b', weight=2)
    assert await keyed.wait_idle(timeout=5)


async def test_a_resize_reaches_idle_keys_whose_limit_was_built_elsewhere(redis_url: str, redis_key: str) -> None:
    """A key idle in Redis with a built value takes the value of a resize on its next use by
    the resized limiter (its own, or another process's); a key that another process resized
    keeps that resize."""
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    other_process = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    async with keyed('alice'):
        pass
    async with other_process('bob'):
        pass
    await until(lambda: len(keyed) == 0 and len(other_process) == 0, 'the keys to be unused here')
    keyed.max_running = 1  # no key in use here: it reaches 'alice' and 'bob' on their next use
    await keyed.acquire('alice')
    assert not keyed.try_acquire('alice')
    assert keyed.try_acquire('bob')
    assert not other_process.try_acquire('bob'), 'the other process follows the resize'
    assert (keyed.stats('alice').max_running, other_process.stats('bob').max_running) == (1, 1)
    keyed.release('alice')
    keyed.release('bob')
    # A key the other process resized keeps that resize when it is idle.
    await other_process.acquire('carol')
    other_process.max_running = 3  # carol is in use there: resized fleet-wide
    other_process.release('carol')
    await until(lambda: len(other_process) == 0, 'carol to be unused here')
    assert keyed.try_acquire('carol', weight=3)
    assert keyed.stats('carol').max_running == 3
    keyed.release('carol', weight=3)


async def test_a_later_resize_reaches_idle_keys_an_earlier_resize_set(redis_url: str, redis_key: str) -> None:
    """The last resize wins on an idle key, whichever process made the earlier one (found by
    tests/fuzz_redis_keyed.py: the later one was ignored for as long as the key stayed alive)."""
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    other_process = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    await keyed.acquire('alice')
    await other_process.acquire('bob')
    keyed.max_running = 3  # alice is in use here: stored fleet-wide as a resize
    other_process.max_running = 4  # bob is in use there: the same
    keyed.release('alice')
    other_process.release('bob')
    await until(lambda: len(keyed) == 0 and len(other_process) == 0, 'the keys to be unused here')
    keyed.max_running = 5  # later than both: every key this object uses from now on
    for key in ['alice', 'bob']:
        assert keyed.try_acquire(key, weight=5), key
        assert (keyed.stats(key).max_running, other_process.stats(key).max_running) == (5, 5)
        keyed.release(key, weight=5)
    # ... and an earlier resize does not undo a later one: the other process's 4 came before 5.
    await until(lambda: len(keyed) == 0, 'the keys to be unused here')
    assert other_process.try_acquire('alice')
    assert other_process.stats('alice').max_running == 5
    other_process.release('alice')


async def test_the_counts_of_a_key_nobody_uses_after_a_resize(redis_url: str, redis_key: str) -> None:
    """Zeros and this object's limit, not an 'unexpected reply' (found by the keyed fuzzer)."""
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    keyed.max_running = 3
    stats = keyed.stats('never-used')
    assert (stats.running, stats.waiting, stats.available, stats.max_running) == (0, 0, 3, 3)
    assert (keyed.running_count('never-used'), keyed.available_count('never-used')) == (0, 3)
    assert command(redis_url, 'KEYS', f'{redis_key}:*') == [], 'reading the counts creates nothing'


def test_the_blocking_forms_from_threads(redis_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 1)
    keyed.acquire_blocking('k', 'main')
    entered = threading.Event()

    def worker() -> None:
        with keyed.blocking('k', 'worker', timeout=10):
            entered.set()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while keyed.waiting_count('k') != 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not entered.is_set()
    keyed.release('k')
    thread.join(10)
    assert entered.is_set() and keyed.running_count('k') == 0


def test_bad_keys_and_arguments(redis_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 2)
    for call in (
        lambda: keyed.try_acquire(1),  # pyright: ignore[reportArgumentType]
        lambda: keyed.release(None),  # pyright: ignore[reportArgumentType]
        lambda: keyed.running_count(b'k'),  # pyright: ignore[reportArgumentType]
        lambda: keyed(3),  # pyright: ignore[reportArgumentType]
        lambda: keyed.blocking(3.0),  # pyright: ignore[reportArgumentType]
    ):
        with pytest.raises(TypeError, match='^key must be a str'):
            call()
    with pytest.raises(ValueError, match=r'^weight \(3\) exceeds max_running \(2\)'):
        keyed.try_acquire('k', weight=3)
    with pytest.raises(ValueError, match='weight must be >= 1'):
        keyed.try_acquire('k', weight=0)
    assert (
        repr(keyed)
        == f"RedisKeyedConcurrencyLimiter(key_prefix='{redis_key}', max_running=2, max_queued=None, name=None)"
    )
