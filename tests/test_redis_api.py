"""RedisConcurrencyLimiter's full API: weights, priorities, timeouts, try_acquire, the blocking
forms, stats(), the fleet-wide max_running setter, close()/wait_idle(), cancellation, and keys
expiring once idle.

Two limiter objects on one key stand for two processes (Redis cannot tell them apart). Every
wait is for an event (a fleet-wide count reaching a value, a task entering), never a fixed time,
and every test checks the counts come back exact. Needs the Redis server `make test` starts
(`FERROLIMIT_REDIS_URL`); skipped without it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from ferrolimit import (
    ConcurrencyLimitExceeded,
    LimiterClosedError,
    RedisConcurrencyLimiter,
    UserError,
)

pytestmark = pytest.mark.anyio

DEADLINE = 30  # seconds; generous, only reached when something is broken


def counts(limiter: RedisConcurrencyLimiter, *others: RedisConcurrencyLimiter) -> tuple[int, int, int]:
    """The fleet's (running, available, waiting), once every given object's releases are done.

    A release runs in the background, and only the releasing object's own counts wait for it:
    `others` are the other objects that may have released since.
    """
    for other in others:
        other.held_count  # noqa: B018
        other.running_count  # noqa: B018
    return limiter.running_count, limiter.available_count, limiter.waiting_count


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (for an event, not a time) until `condition()` holds."""
    with anyio.fail_after(DEADLINE):
        # The counts live in Redis: there is no local event to wait on.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.002)
    assert condition(), what


async def until_waiting(limiter: RedisConcurrencyLimiter, n: int) -> None:
    """Wait until exactly `n` callers are queued fleet-wide."""
    await until(lambda: limiter.waiting_count == n, f'waiting_count == {n}')


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """`until` for a plain thread."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def release_all(*limiters: RedisConcurrencyLimiter) -> None:
    for limiter in limiters:
        if limiter.held_count:
            limiter.release(weight=limiter.held_count)


def command(redis_url: str, *args: str) -> Any:
    """One command over a fresh connection, and its decoded reply (bulk strings as bytes)."""
    url = urllib.parse.urlparse(redis_url)
    request = b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((url.hostname or '127.0.0.1', url.port or 6379), timeout=5) as conn:
        conn.sendall(request)
        with conn.makefile('rb') as reply:
            return read_reply(reply)


def read_reply(reply: BinaryIO) -> Any:
    line = reply.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b'$':
        return None if int(rest) < 0 else reply.read(int(rest) + 2)[:-2]
    if kind == b'*':
        return [read_reply(reply) for _ in range(int(rest))]
    if kind == b'-':
        raise AssertionError(rest.decode())
    return rest


def keys_of(redis_url: str, key: str) -> list[bytes]:
    """Every Redis key whose name contains the limiter's key (`{key}:holders`, ...)."""
    pattern = '*' + re.sub(r'([\\*?\[\]])', r'\\\1', key) + '*'
    found: list[bytes] = command(redis_url, 'KEYS', pattern)
    return found


# --- weights -------------------------------------------------------------------------------


async def test_a_weight_counts_in_slots_and_waiting_counts_callers(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 5)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 5)
    await limiter.acquire(weight=3)
    assert counts(limiter, other) == (3, 2, 0)
    assert (limiter.held_count, other.held_count) == (3, 0)
    assert not other.try_acquire(weight=3)
    assert other.try_acquire(weight=2)
    assert counts(limiter, other) == (5, 0, 0)
    assert (limiter.held_count, other.held_count) == (3, 2)
    entered: list[str] = []

    async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int) -> None:
        await who.acquire(name, weight=weight)
        entered.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, limiter, 'w4', 4)
        await until_waiting(limiter, 1)
        tg.start_soon(waiter, other, 'w1', 1)
        await until_waiting(limiter, 2)
        # Two callers, five slots asked for: waiting_count counts callers.
        assert counts(other, limiter) == (5, 0, 2)
        limiter.release(weight=3)
        other.release(weight=2)
    assert sorted(entered) == ['w1', 'w4']
    assert counts(limiter, other) == (5, 0, 0)
    assert (limiter.held_count, other.held_count) == (4, 1)
    limiter.release(weight=4)
    other.release()
    assert counts(limiter, other) == (0, 5, 0)
    assert counts(other, limiter) == (0, 5, 0)


async def test_a_heavy_head_is_not_overtaken_by_a_lighter_later_waiter(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 5)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 5)
    await limiter.acquire(weight=4)
    order: list[str] = []

    async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int) -> None:
        await who.acquire(name, weight=weight)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, limiter, 'heavy', 3)
        await until_waiting(limiter, 1)
        tg.start_soon(waiter, other, 'light', 1)  # another process
        await until_waiting(limiter, 2)
        # One slot is free and `light` needs one, but `heavy` is ahead of it.
        assert counts(limiter, other) == (4, 1, 2)
        assert not other.try_acquire()
        await anyio.sleep(0.2)  # give a barging bug the chance to show (not a timed assertion)
        assert order == []
        assert counts(limiter, other) == (4, 1, 2)
        limiter.release(weight=2)  # 3 free: exactly what `heavy` needs, nothing left for `light`
        await until(lambda: order == ['heavy'], 'heavy admitted')
        assert counts(limiter, other) == (5, 0, 1)
        limiter.release(weight=2)
    assert order == ['heavy', 'light']
    assert counts(limiter, other) == (4, 1, 0)
    assert (limiter.held_count, other.held_count) == (3, 1)
    limiter.release(weight=3)
    other.release()
    assert counts(limiter, other) == (0, 5, 0)


async def test_releasing_more_than_is_held_raises_and_changes_nothing(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release()
    await limiter.acquire(weight=2)
    await other.acquire()  # slots of another object are not this one's to release
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release(weight=3)
    assert counts(limiter, other) == (3, 1, 0)
    assert limiter.held_count == 2
    limiter.release()
    limiter.release()
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release()
    assert counts(limiter, other) == (1, 3, 0)
    assert (limiter.held_count, other.held_count) == (0, 1)
    other.release()
    assert counts(limiter, other) == (0, 4, 0)


async def test_one_release_spans_several_acquires(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    for _ in range(3):
        await limiter.acquire()
    assert (limiter.held_count, other.running_count) == (3, 3)
    limiter.release(weight=3)
    assert limiter.held_count == 0
    assert counts(other, limiter) == (0, 4, 0)
    await limiter.acquire(weight=2)
    await limiter.acquire()
    assert limiter.try_acquire()
    limiter.release(weight=4)
    assert limiter.held_count == 0
    assert counts(other, limiter) == (0, 4, 0)


async def test_a_partial_release_of_one_acquire_frees_slots_for_waiters(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    await limiter.acquire(weight=3)
    entered: list[int] = []

    async def waiter(i: int) -> None:
        await other.acquire(f'w{i}')
        entered.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 0)
        await until_waiting(other, 1)
        tg.start_soon(waiter, 1)
        await until_waiting(other, 2)
        limiter.release(weight=1)
        await until(lambda: entered == [0], 'the first waiter admitted')
        assert counts(other, limiter) == (3, 0, 1)
        assert limiter.held_count == 2
        limiter.release(weight=1)
    assert entered == [0, 1]
    assert counts(other, limiter) == (3, 0, 0)
    assert limiter.held_count == 1
    limiter.release(weight=1)
    assert limiter.held_count == 0
    assert counts(other, limiter) == (2, 1, 0)
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release(weight=1)
    other.release(weight=2)
    assert counts(limiter, other) == (0, 3, 0)


@pytest.mark.parametrize('weight', [0, -1, -(2**70)])
async def test_a_weight_below_one_is_a_value_error_on_every_form(redis_url: str, redis_key: str, weight: int) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    message = f'^weight must be >= 1, got {weight}$'
    with pytest.raises(ValueError, match=message):
        await limiter.acquire(weight=weight)
    with pytest.raises(ValueError, match=message):
        limiter.acquire_blocking(weight=weight)
    with pytest.raises(ValueError, match=message), limiter.blocking(weight=weight):
        pytest.fail('entered')
    with pytest.raises(ValueError, match=message):
        async with limiter('x', weight=weight):
            pytest.fail('entered')
    with pytest.raises(ValueError, match=message):
        limiter.try_acquire(weight=weight)
    await limiter.acquire()
    with pytest.raises(ValueError, match=message):
        limiter.release(weight=weight)
    assert counts(limiter) == (1, 2, 0)
    limiter.release()
    assert counts(limiter) == (0, 3, 0)
    assert limiter.stats().rejected_total == 0


@pytest.mark.parametrize('bad', [True, 1.0, '1', None])
async def test_a_weight_or_priority_that_is_not_an_int_is_a_type_error(
    redis_url: str, redis_key: str, bad: Any
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    kind = type(bad).__name__
    weight_forms: list[Callable[[], Any]] = [
        lambda: limiter.acquire(weight=bad),
        lambda: limiter.acquire_blocking(weight=bad),
        lambda: limiter.blocking(weight=bad).__enter__(),
        lambda: limiter('x', weight=bad),
        lambda: limiter.try_acquire(weight=bad),
        lambda: limiter.release(weight=bad),
    ]
    for call in weight_forms:
        with pytest.raises(TypeError, match=f'^weight must be an int, got {kind}$'):
            call()
    priority_forms: list[Callable[[], Any]] = [
        lambda: limiter.acquire(priority=bad),
        lambda: limiter.acquire_blocking(priority=bad),
        lambda: limiter.blocking(priority=bad).__enter__(),
        lambda: limiter('x', priority=bad),
    ]
    for call in priority_forms:
        with pytest.raises(TypeError, match=f'^priority must be an int, got {kind}$'):
            call()
    assert counts(limiter) == (0, 3, 0)
    assert limiter.held_count == 0


async def test_a_priority_beyond_32_bits_is_a_value_error(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    for priority in (2**31, -(2**31) - 1):
        with pytest.raises(ValueError, match=f'^priority must be between -2147483648 and 2147483647, got {priority}$'):
            await limiter.acquire(priority=priority)
    await limiter.acquire(priority=2**31 - 1)
    await limiter.acquire(priority=-(2**31))
    assert counts(limiter) == (2, 1, 0)
    limiter.release(weight=2)
    assert counts(limiter) == (0, 3, 0)


async def test_a_weight_above_max_running_is_a_value_error_even_with_free_slots(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3, name='gpu')
    message = r'^weight \(4\) exceeds max_running \(3\) for gpu$'
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
    unnamed = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    with pytest.raises(ValueError, match=r'^weight \(4\) exceeds max_running \(3\) for model:x$'):
        await unnamed.acquire('model:x', weight=4)
    with pytest.raises(ValueError, match=r'^weight \(5\) exceeds max_running \(3\) for thread$'):
        unnamed.acquire_blocking('thread', weight=5)
    assert counts(limiter) == (0, 3, 0)
    assert limiter.waiting_count == 0
    assert limiter.stats().rejected_total == 0
    # The whole limit in one acquire is fine.
    await limiter.acquire(weight=3)
    assert counts(limiter) == (3, 0, 0)
    limiter.release(weight=3)


async def test_an_unnamed_try_acquire_above_max_running_names_the_default_source(
    redis_url: str, redis_key: str
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    with pytest.raises(ValueError, match=r'^weight \(4\) exceeds max_running \(3\) for unnamed$'):
        limiter.try_acquire(weight=4)


async def test_the_weight_bound_is_the_fleets_stored_max_running(redis_url: str, redis_key: str) -> None:
    first = RedisConcurrencyLimiter(redis_url, redis_key, 5, name='first')
    second = RedisConcurrencyLimiter(redis_url, redis_key, 5, name='second')
    await second.acquire(weight=5)  # second has seen the limit of 5
    second.release(weight=5)
    first.max_running = 3  # for the whole fleet
    with pytest.raises(ValueError, match=r'^weight \(4\) exceeds max_running \(3\) for second$'):
        second.try_acquire(weight=4)
    with pytest.raises(ValueError, match=r'^weight \(4\) exceeds max_running \(3\) for second$'):
        await second.acquire(weight=4)
    assert second.max_running == 3
    assert second.try_acquire(weight=3)
    assert counts(first, second) == (3, 0, 0)
    second.release(weight=3)
    assert counts(first, second) == (0, 3, 0)


# --- priorities ----------------------------------------------------------------------------


async def test_higher_priorities_first_fifo_within_one_across_two_objects(redis_url: str, redis_key: str) -> None:
    limiters = [RedisConcurrencyLimiter(redis_url, redis_key, 1) for _ in range(2)]
    await limiters[0].acquire('holder')
    order: list[str] = []

    async def waiter(who: RedisConcurrencyLimiter, name: str, priority: int) -> None:
        async with who(name, priority=priority):
            order.append(name)
            await anyio.lowlevel.checkpoint()

    arrivals = [('a0', 0), ('b5', 5), ('c0', 0), ('d9', 9), ('e5', 5), ('f-3', -3), ('g9', 9)]
    async with anyio.create_task_group() as tg:
        for i, (name, priority) in enumerate(arrivals):
            tg.start_soon(waiter, limiters[i % 2], name, priority)
            await until_waiting(limiters[0], i + 1)
        assert counts(limiters[1], limiters[0]) == (1, 0, 7)
        limiters[0].release()
    assert order == ['d9', 'g9', 'b5', 'e5', 'a0', 'c0', 'f-3']
    assert counts(limiters[0], limiters[1]) == (0, 1, 0)
    assert [limiter.held_count for limiter in limiters] == [0, 0]


async def test_a_newcomer_never_takes_a_free_slot_while_anyone_it_does_not_outrank_waits(
    redis_url: str, redis_key: str
) -> None:
    """The head needs 3 slots and 1 is free: a newcomer of the same or a lower priority queues
    (even on another object); one of a higher priority, served before the head anyway, takes it."""
    mine = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    theirs = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    await mine.acquire(weight=2)
    entered: list[str] = []
    leave = {name: anyio.Event() for name in ('heavy', 'same', 'lower', 'higher')}

    async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int, priority: int) -> None:
        async with who(name, weight=weight, priority=priority):
            entered.append(name)
            await leave[name].wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, mine, 'heavy', 3, 0)
        await until_waiting(mine, 1)
        tg.start_soon(waiter, theirs, 'same', 1, 0)
        await until_waiting(mine, 2)
        tg.start_soon(waiter, theirs, 'lower', 3, -1)
        await until_waiting(mine, 3)
        # One slot is free, but try_acquire (priority 0) does not outrank `heavy`.
        assert counts(theirs, mine) == (2, 1, 3)
        assert not theirs.try_acquire()
        assert not mine.try_acquire()
        assert entered == []
        tg.start_soon(waiter, theirs, 'higher', 1, 1)
        await until(lambda: entered == ['higher'], 'the higher-priority newcomer took the free slot')
        assert counts(mine, theirs) == (3, 0, 3)
        leave['higher'].set()
        await until(lambda: mine.running_count == 2, 'higher released')
        mine.release(weight=2)
        await until(lambda: entered == ['higher', 'heavy'], 'heavy admitted')
        assert counts(mine, theirs) == (3, 0, 2)
        leave['heavy'].set()
        # 3 free: `same` (1) goes first; `lower` (3) waits for it.
        await until(lambda: entered == ['higher', 'heavy', 'same'], 'same admitted')
        assert counts(mine, theirs) == (1, 2, 1)
        leave['same'].set()
        await until(lambda: len(entered) == 4, 'lower admitted')
        leave['lower'].set()
    assert entered == ['higher', 'heavy', 'same', 'lower']
    assert counts(mine, theirs) == (0, 3, 0)


# --- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize('name', ['pool', None])
async def test_a_timeout_raises_with_the_message_and_leaks_nothing(
    redis_url: str, redis_key: str, name: str | None
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, name=name)
    await limiter.acquire(weight=2)
    label = name or 'model:x'
    with pytest.raises(TimeoutError, match=f'^timed out waiting for {label} concurrency$'):
        await limiter.acquire('model:x', timeout=0.05, weight=2, priority=3)
    assert counts(limiter) == (2, 0, 0)
    with pytest.raises(TimeoutError, match=f'^timed out waiting for {name or "unnamed"} concurrency$'):
        await limiter.acquire(timeout=0)
    assert counts(limiter) == (2, 0, 0)
    assert limiter.held_count == 2
    assert limiter.stats().cancelled_total == 2
    limiter.release(weight=2)
    # Nothing left behind: a later acquire is admitted.
    await limiter.acquire('later', timeout=DEADLINE, weight=2)
    assert counts(limiter) == (2, 0, 0)
    limiter.release(weight=2)
    assert counts(limiter) == (0, 2, 0)


async def test_a_light_waiter_behind_a_timed_out_heavy_head_is_admitted(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    await limiter.acquire(weight=2)
    outcome: list[str] = []
    heavy_deadline: list[float] = []
    light_admitted: list[float] = []

    async def heavy() -> None:
        heavy_deadline.append(time.monotonic() + 0.3)
        with pytest.raises(TimeoutError):
            await limiter.acquire('heavy', weight=2, timeout=0.3)
        outcome.append('heavy timed out')

    async def light() -> None:
        await other.acquire('light')
        light_admitted.append(time.monotonic())
        outcome.append('light')

    async with anyio.create_task_group() as tg:
        tg.start_soon(heavy)
        await until_waiting(limiter, 1)
        tg.start_soon(light)
        # `light` queues behind `heavy`, or is already admitted if `heavy` timed out meanwhile.
        await until(lambda: limiter.waiting_count == 2 or bool(outcome), 'light queued')
    # The free slot `heavy` could not use goes to `light` once `heavy` gave up (not before: the
    # head of the queue blocks it), with no release. Which task resumes first is the loop's choice.
    assert sorted(outcome) == ['heavy timed out', 'light']
    assert light_admitted[0] >= heavy_deadline[0]
    assert counts(limiter, other) == (3, 0, 0)
    limiter.release(weight=2)
    other.release()
    assert counts(limiter, other) == (0, 3, 0)


async def test_a_timeout_of_zero_takes_a_free_slot(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    assert counts(limiter) == (0, 2, 0)
    # It is a race with the timer (about half are refused here): try a few times.
    for _ in range(20):
        try:
            await limiter.acquire('now', timeout=0)
            limiter.acquire_blocking('now', timeout=0)
            assert counts(limiter) == (2, 0, 0)
        finally:
            release_all(limiter)


# --- try_acquire ---------------------------------------------------------------------------


async def test_try_acquire(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    assert limiter.try_acquire(weight=2)
    assert not other.try_acquire(weight=2)
    assert counts(limiter, other) == (2, 1, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(other.acquire, 'queued', weight=2))
        await until_waiting(limiter, 1)
        # A slot is free, but someone is queued.
        assert not limiter.try_acquire()
        assert not other.try_acquire()
        assert counts(limiter, other) == (2, 1, 1)
        limiter.release(weight=2)
    assert counts(limiter, other) == (2, 1, 0)
    assert limiter.try_acquire()
    assert counts(limiter, other) == (3, 0, 0)
    limiter.release()
    assert limiter.running_count == 2
    limiter.close()
    assert not limiter.try_acquire()  # free slot, nobody queued, but closed
    assert other.try_acquire()  # another object is not closed
    assert counts(limiter, other) == (3, 0, 0)
    other.release(weight=3)
    assert counts(other, limiter) == (0, 3, 0)
    stats = limiter.stats()
    assert (stats.rejected_total, stats.cancelled_total) == (0, 0)


# --- the blocking API ----------------------------------------------------------------------


def test_blocking_forms_from_threads_with_weight_and_priority(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    limiter.acquire_blocking('main', weight=3)
    assert counts(limiter, other) == (3, 1, 0)
    order: list[str] = []

    def worker(who: RedisConcurrencyLimiter, name: str, weight: int, priority: int) -> None:
        with who.blocking(name, weight=weight, priority=priority, timeout=DEADLINE):
            order.append(name)

    threads = [
        threading.Thread(target=worker, args=(limiter, 'low', 2, 0)),
        threading.Thread(target=worker, args=(other, 'high', 2, 1)),
    ]
    for i, thread in enumerate(threads):
        thread.start()
        wait_for(lambda i=i: limiter.waiting_count == i + 1, f'{i + 1} threads queued')
    # Two slots free: enough for one of them, and `high` is served first; `low` only gets the
    # slots `high` gives back.
    release = threading.Thread(target=limiter.release, kwargs={'weight': 1})  # from another thread
    release.start()
    release.join(DEADLINE)
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert order == ['high', 'low']
    assert counts(limiter, other) == (2, 2, 0)
    assert (limiter.held_count, other.held_count) == (2, 0)

    with pytest.raises(TimeoutError, match='^timed out waiting for late concurrency$'):
        other.acquire_blocking('late', weight=3, timeout=0.05, priority=7)
    assert counts(limiter, other) == (2, 2, 0)
    with pytest.raises(KeyError), other.blocking('body', weight=2):
        assert counts(limiter, other) == (4, 0, 0)
        raise KeyError('boom')
    assert counts(limiter, other) == (2, 2, 0)
    limiter.release(weight=2)
    assert counts(limiter, other) == (0, 4, 0)


def test_a_blocked_thread_is_admitted_when_another_thread_releases(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    holder_ready = threading.Event()
    holder_go = threading.Event()
    admitted = threading.Event()

    def holder() -> None:
        limiter.acquire_blocking('holder', weight=3)
        holder_ready.set()
        holder_go.wait(DEADLINE)
        limiter.release(weight=3)

    def waiter() -> None:
        limiter.acquire_blocking('waiter', weight=3, timeout=DEADLINE)
        admitted.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    assert holder_ready.wait(DEADLINE)
    threads[1].start()
    wait_for(lambda: limiter.waiting_count == 1, 'waiter queued')
    assert not admitted.is_set()
    holder_go.set()
    assert admitted.wait(DEADLINE)
    for thread in threads:
        thread.join(DEADLINE)
    assert counts(limiter) == (3, 0, 0)
    assert limiter.held_count == 3
    limiter.release(weight=3)
    assert counts(limiter) == (0, 3, 0)


async def test_acquire_blocking_in_a_worker_thread_while_tasks_release(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, name='pool')
    await limiter.acquire(weight=2)
    entered: list[str] = []

    def in_thread(name: str, weight: int, priority: int) -> None:
        limiter.acquire_blocking(name, weight=weight, priority=priority, timeout=DEADLINE)
        entered.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, functools.partial(in_thread, 'low', 2, 0))
        await until_waiting(limiter, 1)
        tg.start_soon(anyio.to_thread.run_sync, functools.partial(in_thread, 'high', 1, 4))
        await until_waiting(limiter, 2)
        limiter.release()
        await until(lambda: entered == ['high'], 'high admitted')
        assert counts(limiter) == (2, 0, 1)
        limiter.release(weight=2)  # the task's other slot and `high`'s
    assert entered == ['high', 'low']
    assert counts(limiter) == (2, 0, 0)
    with pytest.raises(TimeoutError, match='^timed out waiting for pool concurrency$'):
        await anyio.to_thread.run_sync(functools.partial(limiter.acquire_blocking, 'x', timeout=0.05))
    limiter.release(weight=2)
    assert counts(limiter) == (0, 2, 0)


# --- stats() -------------------------------------------------------------------------------


async def test_stats_fleet_counts_and_this_objects_totals(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3, max_queued=1)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3, max_queued=1)
    stats = limiter.stats()
    assert (stats.running, stats.waiting, stats.available, stats.max_running, stats.max_queued) == (0, 0, 3, 3, 1)
    assert (stats.acquired_total, stats.rejected_total, stats.cancelled_total) == (0, 0, 0)
    await limiter.acquire()
    await limiter.acquire()
    assert other.try_acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other.acquire, 'queued')
        await until_waiting(limiter, 1)
        stats = limiter.stats()
        assert (stats.running, stats.waiting, stats.available, stats.max_running, stats.max_queued) == (3, 1, 0, 3, 1)
        with pytest.raises(ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(2\) exceeds max_queued \(1\)'):
            await limiter.acquire('rejected')
        limiter.release()
    with pytest.raises(TimeoutError):
        await limiter.acquire('timed out', timeout=0.01)
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'cancelled')
        await until_waiting(limiter, 1)
        tg.cancel_scope.cancel()
    assert counts(limiter, other) == (3, 0, 0)
    # The cancelled wait is counted once its task is torn down, on the I/O thread.
    await until(lambda: limiter.stats().cancelled_total >= 2, 'both given-up waits counted')
    stats = limiter.stats()
    assert (stats.running, stats.waiting, stats.available, stats.max_running, stats.max_queued) == (3, 0, 0, 3, 1)
    assert (stats.acquired_total, stats.rejected_total, stats.cancelled_total) == (2, 1, 2)
    stats = other.stats()
    assert (stats.running, stats.waiting, stats.available) == (3, 0, 0)
    assert (stats.acquired_total, stats.rejected_total, stats.cancelled_total) == (2, 0, 0)
    release_all(limiter, other)
    assert counts(limiter, other) == (0, 3, 0)
    stats = other.stats()
    assert (stats.running, stats.waiting, stats.available, stats.max_running) == (0, 0, 3, 3)


async def test_stats_acquired_total_counts_slots_like_the_local_limiter(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 5)
    await limiter.acquire(weight=3)
    assert limiter.try_acquire(weight=2)
    limiter.release(weight=5)
    assert limiter.stats().acquired_total == 5


# --- the max_running setter ----------------------------------------------------------------


async def test_setting_max_running_is_fleet_wide(redis_url: str, redis_key: str) -> None:
    setter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    follower = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    await follower.acquire(weight=2)
    assert not follower.try_acquire()
    setter.max_running = 4
    assert setter.max_running == 4
    assert setter.available_count == 2
    # The follower sees it from its next call to Redis, and admits accordingly.
    assert follower.try_acquire(weight=2)
    assert follower.max_running == 4
    assert follower.other_max_running is None
    assert counts(follower, setter) == (4, 0, 0)
    assert follower.stats().max_running == 4
    follower.release(weight=4)  # no RuntimeWarning (warnings are errors in this suite): a resize is adopted
    setter.max_running = 1
    assert follower.stats().max_running == 1
    with pytest.raises(ValueError, match=r'^weight \(2\) exceeds max_running \(1\) for x$'):
        await follower.acquire('x', weight=2)
    await follower.acquire()
    assert not setter.try_acquire()
    follower.release()
    assert counts(setter, follower) == (0, 1, 0)


async def test_growing_admits_queued_waiters_in_order(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    await limiter.acquire(weight=2)
    entered: list[str] = []

    async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int) -> None:
        await who.acquire(name, weight=weight)
        entered.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, other, 'a', 2)
        await until_waiting(limiter, 1)
        tg.start_soon(waiter, limiter, 'b', 1)
        await until_waiting(limiter, 2)
        limiter.max_running = 4  # two new slots: exactly `a`'s weight
        await until(lambda: entered == ['a'], 'a admitted')
        assert counts(limiter, other) == (4, 0, 1)
        other.max_running = 5  # from another object
    assert entered == ['a', 'b']
    assert counts(limiter, other) == (5, 0, 0)
    release_all(limiter, other)
    assert counts(limiter, other) == (0, 5, 0)


async def test_shrinking_below_a_queued_waiters_weight_refuses_it(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 4, name='pool')
    other = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    await limiter.acquire(weight=4)
    outcomes: dict[str, str] = {}

    async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int) -> None:
        try:
            await who.acquire(name, weight=weight)
        except ValueError as e:
            outcomes[name] = str(e)
        else:
            outcomes[name] = 'entered'

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, limiter, 'heavy', 4)
        await until_waiting(limiter, 1)
        tg.start_soon(waiter, other, 'heavier', 4)  # another object, unnamed: the source is named
        await until_waiting(limiter, 2)
        tg.start_soon(waiter, other, 'light', 2)
        await until_waiting(limiter, 3)
        limiter.max_running = 3
        await until(lambda: len(outcomes) == 2, 'the two heavy waiters refused')
        # The limit in the message: see the xfail test below.
        assert re.fullmatch(r'weight \(4\) exceeds max_running \(\d+\) for pool', outcomes['heavy'])
        assert re.fullmatch(r'weight \(4\) exceeds max_running \(\d+\) for heavier', outcomes['heavier'])
        assert limiter.waiting_count == 1
        # Holders keep their slots; what comes back above the new limit is retired.
        assert counts(other, limiter) == (4, 0, 1)
        limiter.release(weight=1)
        assert counts(limiter, other) == (3, 0, 1)
        limiter.release(weight=1)
        assert counts(limiter, other) == (2, 1, 1)  # `light` needs 2
        assert 'light' not in outcomes
        limiter.release(weight=2)
    assert outcomes['light'] == 'entered'
    assert counts(limiter, other) == (2, 1, 0)
    assert (limiter.max_running, other.max_running) == (3, 3)
    other.release(weight=2)
    assert counts(limiter, other) == (0, 3, 0)


async def test_a_refusal_by_a_shrink_names_the_new_limit(redis_url: str, redis_key: str) -> None:
    resizer = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 4)
    await resizer.acquire(weight=4)
    refused: list[str] = []

    async def waiter() -> None:
        with pytest.raises(ValueError) as info:
            await other.acquire('w', weight=4)
        refused.append(str(info.value))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until_waiting(resizer, 1)
        resizer.max_running = 3
    resizer.release(weight=4)
    assert refused == ['weight (4) exceeds max_running (3) for w']


async def test_invalid_max_running_values_change_nothing(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    await limiter.acquire()
    for value in (0, -1):
        with pytest.raises(
            UserError, match=rf'^max_running must be >= 1, got {value}\. Use None for no concurrency limiting\.$'
        ):
            limiter.max_running = value
    for value, kind in ((True, 'bool'), ('3', 'str'), (2.0, 'float'), (None, 'NoneType')):
        with pytest.raises(TypeError, match=f'^max_running must be an int, got {kind}$'):
            limiter.max_running = value  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(ValueError, match=r'^max_running must be <= 2147483647, got 2147483648$'):
        limiter.max_running = 2**31
    assert limiter.max_running == 2
    assert other.stats().max_running == 2
    assert counts(other, limiter) == (1, 1, 0)
    limiter.release()


# --- close() and wait_idle() ---------------------------------------------------------------


async def test_close_refuses_this_objects_waiters_only_and_keeps_holders(redis_url: str, redis_key: str) -> None:
    closing = RedisConcurrencyLimiter(redis_url, redis_key, 1, name='api')
    staying = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    await closing.acquire()
    refused: list[str] = []
    entered: list[str] = []

    async def closing_waiter(name: str) -> None:
        with pytest.raises(LimiterClosedError, match='^concurrency limiter closed for api$'):
            await closing.acquire(name, weight=1, priority=5)
        refused.append(name)

    async def staying_waiter(name: str) -> None:
        async with staying(name):
            entered.append(name)

    async with anyio.create_task_group() as tg:
        for i, name in enumerate(['c1', 's1', 'c2', 's2', 'c3']):
            tg.start_soon(closing_waiter if name.startswith('c') else staying_waiter, name)
            await until_waiting(staying, i + 1)
        assert not closing.closed
        closing.close()
        assert closing.closed
        assert not staying.closed
        await until(lambda: len(refused) == 3, "the closed object's waiters refused")
        assert sorted(refused) == ['c1', 'c2', 'c3']
        assert counts(staying, closing) == (1, 0, 2)
        assert entered == []
        with pytest.raises(LimiterClosedError, match='^concurrency limiter closed for api$'):
            await closing.acquire()
        with pytest.raises(LimiterClosedError):
            async with closing('ctx', weight=1):
                pytest.fail('entered')
        with pytest.raises(LimiterClosedError):
            closing.acquire_blocking(timeout=1)
        assert not closing.try_acquire()
        closing.close()  # idempotent
        assert closing.closed
        assert closing.held_count == 1
        closing.release()  # a holder keeps its slot and releases it as usual
    assert entered == ['s1', 's2']
    assert counts(staying, closing) == (0, 1, 0)
    assert await closing.wait_idle(timeout=0)
    assert not closing.try_acquire()
    assert staying.try_acquire()
    staying.release()


async def test_close_refuses_a_blocked_thread(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    await limiter.acquire()

    def blocked() -> None:
        with pytest.raises(LimiterClosedError, match='^concurrency limiter closed for thread$'):
            limiter.acquire_blocking('thread')

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, blocked)
        await until_waiting(limiter, 1)
        limiter.close()
    assert counts(limiter) == (1, 0, 0)
    limiter.release()
    assert counts(limiter) == (0, 1, 0)


async def test_wait_idle(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, max_queued=0)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2, max_queued=0)
    assert await limiter.wait_idle()
    assert await limiter.wait_idle(timeout=0)
    await other.acquire()
    assert await limiter.wait_idle(timeout=0)  # another object's holders do not count
    other.release()
    assert other.running_count == 0  # its release is done
    await limiter.acquire(weight=2)
    assert not await limiter.wait_idle(timeout=0.05)
    assert not await limiter.wait_idle(timeout=0)
    done: list[bool] = []

    async def idle() -> None:
        done.append(await limiter.wait_idle(timeout=DEADLINE))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(idle)
        await anyio.sleep(0.05)  # let them start (nothing to poll: they are no waiters)
        # Not waiters: not counted, not under max_queued (0), and they take no slot.
        assert counts(limiter, other) == (2, 0, 0)
        with pytest.raises(ConcurrencyLimitExceeded):
            await other.acquire()
        assert done == []
        limiter.release(weight=1)
        assert limiter.running_count == 1
        await anyio.sleep(0.05)  # not a timed assertion: a premature wake-up would show here
        assert done == []
        limiter.release(weight=1)
    assert done == [True, True, True]
    assert counts(limiter, other) == (0, 2, 0)
    assert await limiter.wait_idle(timeout=0)
    with pytest.raises(ValueError):
        await limiter.wait_idle(timeout=-1)


# --- the context manager -------------------------------------------------------------------


async def test_the_context_manager_holds_its_weight_with_a_priority(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    async with limiter('src', weight=2, priority=1):
        assert counts(other, limiter) == (2, 1, 0)
        assert limiter.held_count == 2
        assert not other.try_acquire(weight=2)
    assert counts(other, limiter) == (0, 3, 0)
    assert limiter.held_count == 0
    with pytest.raises(KeyError, match='boom'):
        async with limiter('src', weight=3, priority=-1):
            assert counts(other, limiter) == (3, 0, 0)
            raise KeyError('boom')
    assert counts(other, limiter) == (0, 3, 0)
    assert limiter.held_count == 0
    # A prioritized context manager waits by priority too.
    await other.acquire(weight=3)
    order: list[str] = []

    async def enter(name: str, priority: int) -> None:
        async with limiter(name, weight=2, priority=priority):
            order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(enter, 'low', 0)
        await until_waiting(other, 1)
        tg.start_soon(enter, 'high', 1)
        await until_waiting(other, 2)
        other.release(weight=3)
    assert order == ['high', 'low']
    assert counts(other, limiter) == (0, 3, 0)


# --- cancellation --------------------------------------------------------------------------


async def test_a_cancelled_weighted_waiter_leaves_the_queue_and_the_slots_pass_on(
    redis_url: str, redis_key: str
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    await limiter.acquire(weight=2)
    entered: list[str] = []
    scope = anyio.CancelScope()

    async def heavy() -> None:
        with scope:
            await limiter.acquire('heavy', weight=2, priority=5)
            entered.append('heavy')

    async def light() -> None:
        await other.acquire('light')
        entered.append('light')

    async with anyio.create_task_group() as tg:
        tg.start_soon(heavy)
        await until_waiting(limiter, 1)
        tg.start_soon(light)
        await until_waiting(limiter, 2)
        assert counts(limiter, other) == (2, 1, 2)
        scope.cancel()
        # The head left: the free slot it blocked goes to `light`, with no release.
    assert entered == ['light']
    assert counts(limiter, other) == (3, 0, 0)
    await until(lambda: limiter.stats().cancelled_total >= 1, 'the cancelled wait counted')
    assert limiter.stats().cancelled_total == 1
    release_all(limiter, other)
    assert counts(limiter, other) == (0, 3, 0)


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_a_weighted_head_cancelled_at_the_instant_of_handoff(redis_url: str, redis_key: str, order: str) -> None:
    """The head (weight 3) is cancelled just after / just before the release that serves it:
    either it holds its 3 slots and gives them back, or the slots pass to the waiter behind."""
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    for _ in range(5):
        await limiter.acquire(weight=3)
        entered: list[str] = []
        scope = anyio.CancelScope()

        async def heavy(scope: anyio.CancelScope = scope, entered: list[str] = entered) -> None:
            with scope:
                async with limiter('heavy', weight=3, priority=1):
                    entered.append('heavy')

        async def light(entered: list[str] = entered) -> None:
            async with other('light', weight=2):
                entered.append('light')

        async with anyio.create_task_group() as tg:
            tg.start_soon(heavy)
            await until_waiting(limiter, 1)
            tg.start_soon(light)
            await until_waiting(limiter, 2)
            assert counts(limiter, other) == (3, 0, 2)
            if order == 'releasefirst':
                limiter.release(weight=3)
                scope.cancel()
            else:
                scope.cancel()
                limiter.release(weight=3)
        assert entered[-1:] == ['light']
        if order == 'cancelfirst':
            assert entered == ['light']
        assert counts(limiter, other) == (0, 3, 0)
        assert (limiter.held_count, other.held_count) == (0, 0)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_a_prioritized_waiter_task_cancelled_at_the_instant_of_handoff(
    redis_url: str, redis_key: str, order: str
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    for _ in range(5):
        await limiter.acquire(weight=2)
        entered: list[str] = []

        async def waiter(who: RedisConcurrencyLimiter, name: str, weight: int, priority: int) -> None:
            async with who(name, weight=weight, priority=priority):
                entered.append(name)  # noqa: B023 - awaited within the iteration

        low = asyncio.create_task(waiter(other, 'low', 1, 0))
        await until_waiting(limiter, 1)
        high = asyncio.create_task(waiter(limiter, 'high', 2, 5))
        await until_waiting(limiter, 2)
        # `high` is served first: releasing 2 slots hands both to it.
        if order == 'releasefirst':
            limiter.release(weight=2)
            high.cancel()
        else:
            high.cancel()
            limiter.release(weight=2)
        with pytest.raises(asyncio.CancelledError):
            await high
        with anyio.fail_after(DEADLINE):
            await low
        assert entered == ['low']
        assert counts(limiter, other) == (0, 2, 0)
        assert (limiter.held_count, other.held_count) == (0, 0)
        # Not checked here: stats().cancelled_total (see the xfail test below).
        assert limiter.stats().waiting == 0


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_waiter_cancelled_after_its_grant_counts_as_cancelled(redis_url: str, redis_key: str) -> None:
    holder = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    await holder.acquire(weight=2)
    low = asyncio.create_task(other.acquire('low'))
    await until_waiting(limiter, 1)
    high = asyncio.create_task(limiter.acquire('high', weight=2, priority=5))
    await until_waiting(limiter, 2)
    holder.release(weight=2)
    # Block the event loop until `high` got its slots, so that it is cancelled before it resumes.
    wait_for(lambda: limiter.held_count == 2, 'high granted')
    high.cancel()
    with pytest.raises(asyncio.CancelledError):
        await high
    with anyio.fail_after(DEADLINE):
        await low
    assert counts(limiter, holder, other) == (1, 1, 0)
    assert limiter.held_count == 0
    other.release()
    assert limiter.stats().cancelled_total == 1


async def test_every_acquire_cancelled_early_is_counted(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    await limiter.acquire()
    for _ in range(20):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await limiter.acquire('cancelled')
    assert counts(limiter) == (1, 0, 0)
    with anyio.move_on_after(1):  # the count may be taken on the I/O thread a moment later
        while limiter.stats().cancelled_total < 20:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    limiter.release()
    assert limiter.stats().cancelled_total == 20


# --- keys expire when idle -----------------------------------------------------------------


async def test_keys_expire_once_idle_and_the_limiter_works_at_once_afterwards(redis_url: str, redis_key: str) -> None:
    lease = 0.1
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, lease_seconds=lease)
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2, lease_seconds=lease)
    await limiter.acquire(weight=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(other.acquire, 'queued', priority=3))
        await until_waiting(limiter, 1)
        with pytest.raises(TimeoutError):
            await other.acquire('timed out', weight=2, timeout=0.01)
        limiter.release()
    assert keys_of(redis_url, redis_key) != []
    release_all(limiter, other)
    assert counts(limiter, other) == (0, 2, 0)

    async def expired() -> None:
        with anyio.fail_after(DEADLINE):
            while keys_of(redis_url, redis_key):  # noqa: ASYNC110
                await anyio.sleep(0.05)

    await expired()
    # The keys are gone, but this is no data loss: the same objects are admitted at once, with
    # no recovery window of a lease.
    assert limiter.try_acquire(weight=2)
    assert counts(other, limiter) == (2, 0, 0)
    limiter.release(weight=2)
    await expired()
    await limiter.acquire('again', weight=2, timeout=lease / 2)
    assert counts(other, limiter) == (2, 0, 0)
    limiter.release(weight=2)
    await expired()
    await other.acquire('other', timeout=lease / 2, priority=1)
    assert counts(limiter, other) == (1, 1, 0)
    other.release()
    await expired()
    assert await limiter.wait_idle(timeout=0)


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_nested_agent_run_on_a_held_redis_limiter_raises(redis_url: str, redis_key: str) -> None:
    """pydantic-ai refuses a nested run on the limiter its task holds only for its own class's
    instances: a Redis limiter is one (a virtual subclass), so the run raises instead of hanging."""
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    agent = Agent(TestModel(), max_concurrency=limiter)
    with anyio.fail_after(10):
        async with agent.iter('outer'):
            with pytest.raises(RuntimeError, match='already holds a slot for this agent concurrency limiter'):
                await agent.run('inner')
    assert limiter.held_count == 0


def test_after_an_idle_expiry_the_later_resize_comes_back(redis_url: str, redis_key: str) -> None:
    """The first user of an expired key stores its own (older) resize; the object with the later
    one does not adopt it, and restores its own on its next use (found by a helper: the fleet
    settled on the earlier value for good)."""
    first = RedisConcurrencyLimiter(redis_url, redis_key, 2, lease_seconds=0.05)
    last = RedisConcurrencyLimiter(redis_url, redis_key, 2, lease_seconds=0.05)
    first.max_running = 5
    last.max_running = 7
    deadline = time.monotonic() + 10
    while command(redis_url, 'EXISTS', f'{{{redis_key}}}:limit') != b'0' and time.monotonic() < deadline:
        time.sleep(0.05)  # the state expires idle (about three leases)
    assert time.monotonic() < deadline, 'the state did not expire'
    assert first.try_acquire()
    assert last.stats().max_running == 5, 'the state holds what its first user stored'
    first.release()

    deadline = time.monotonic() + 10
    while last.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert last.try_acquire(weight=7), 'the later resize is stored again'
    last.release(weight=7)
    assert (last.stats().max_running, first.stats().max_running) == (7, 7)
