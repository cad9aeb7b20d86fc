"""RedisConcurrencyLimiter in one process: the limiter's contract, spans, errors and bad input.

Needs the Redis server `make test` starts (`FERROLIMIT_REDIS_URL`); skipped without it.
Multi-process and fault tests are in `test_redis_fleet.py`.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import re
import signal
import socket
import time
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from ferrolimit import (
    AbstractConcurrencyLimiter,
    ConcurrencyBackendError,
    ConcurrencyLimitExceeded,
    RedisConcurrencyLimiter,
    UserError,
    get_concurrency_context,
)

pytestmark = pytest.mark.anyio

# Nothing listens on the discard port of the loopback interface.
UNREACHABLE = 'redis://127.0.0.1:9'


async def until_waiting(limiter: RedisConcurrencyLimiter, n: int) -> None:
    """Wait (for an event, not a time) until `n` callers are queued fleet-wide."""
    with anyio.fail_after(30):
        # The count lives in Redis: there is no local event to wait on.
        while limiter.waiting_count != n:  # noqa: ASYNC110
            await anyio.sleep(0.002)


async def test_acquire_release_and_fleet_counts(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, name='pool')
    other = RedisConcurrencyLimiter(redis_url, redis_key, 2)  # another process, as far as Redis knows
    await limiter.acquire('a')
    await other.acquire('b')
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (2, 0, 0)
    assert (limiter.held_count, other.held_count) == (1, 1)
    limiter.release()  # sent in the background: this instance's own counts wait for it
    assert limiter.running_count == 1
    other.release()
    assert other.running_count == 0
    assert (limiter.name, limiter.max_running, limiter._max_queued, limiter.key) == ('pool', 2, None, redis_key)


async def test_context_managers(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    async with limiter:
        assert limiter.running_count == 1
    async with limiter('src'):
        assert limiter.running_count == 1
    async with get_concurrency_context(limiter, 'src'):
        assert limiter.running_count == 1
    assert limiter.running_count == 0


async def test_an_exception_in_the_body_releases_and_propagates(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    with pytest.raises(KeyError, match='boom'):
        async with limiter:
            raise KeyError('boom')
    assert limiter.running_count == 0


async def test_waiters_are_served_in_arrival_order(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with limiter:
            order.append(i)

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(waiter, i)
            await until_waiting(limiter, i + 1)
        limiter.release()
    assert order == [0, 1, 2, 3, 4]
    assert limiter.running_count == 0


async def test_max_queued_rejects_with_the_reference_message(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, max_queued=1, name='pool')
    await limiter.acquire('a')
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'b')
        await until_waiting(limiter, 1)
        with pytest.raises(ConcurrencyLimitExceeded) as info:
            await limiter.acquire('c')
        assert str(info.value) == 'Concurrency queue depth (2) exceeds max_queued (1) for pool'
        limiter.release()
    limiter.release()
    assert limiter.running_count == 0


async def test_unnamed_rejection_names_the_source(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, max_queued=0)
    await limiter.acquire('a')
    with pytest.raises(
        ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(1\) exceeds max_queued \(0\) for c$'
    ):
        await limiter.acquire('c')
    limiter.release()


@pytest.mark.parametrize('release_first', [True, False], ids=['releasefirst', 'releaselast'])
async def test_a_cancelled_waiter_neither_takes_nor_loses_a_slot(
    redis_url: str, redis_key: str, release_first: bool
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    for _ in range(10):
        await limiter.acquire('holder')
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, 'waiter')
            await until_waiting(limiter, 1)
            if release_first:
                limiter.release()
                tg.cancel_scope.cancel()
            else:
                tg.cancel_scope.cancel()
                limiter.release()
        # Whatever the race's outcome, the fleet's count matches what this process holds.
        assert limiter.running_count == limiter.held_count
        while limiter.held_count:
            limiter.release()
        assert limiter.running_count == 0
        assert limiter.waiting_count == 0


async def test_release_without_acquire_raises(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release()


async def test_only_a_waiter_opens_the_wait_span(
    redis_url: str, redis_key: str, tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, max_queued=5, name='pool', tracer=tracer)
    async with limiter('model:x'):
        pass
    assert exporter.get_finished_spans() == ()
    await limiter.acquire('model:x')
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'model:y')
        await until_waiting(limiter, 1)
        limiter.release()
    limiter.release()
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for pool concurrency'
    assert dict(span.attributes or {}) == {
        'source': 'model:y',
        'waiting_count': 1,
        'max_running': 1,
        'limiter_name': 'pool',
        'max_queued': 5,
    }


async def test_unreachable_redis_raises_a_backend_error() -> None:
    limiter = RedisConcurrencyLimiter(UNREACHABLE, 'k', 1, name='pool')
    with pytest.raises(ConcurrencyBackendError, match='^Redis is unavailable: ') as info:
        await limiter.acquire('a')
    assert not isinstance(info.value, ConcurrencyLimitExceeded)
    with pytest.raises(ConcurrencyBackendError, match='^Redis is unavailable: '):
        _ = limiter.running_count


@pytest.mark.parametrize('how', ['acquire', 'acquire_blocking', 'stats', 'resize'])
async def test_an_unreachable_server_is_named_without_its_password(how: str) -> None:
    """The error says which server it tried (`host:port/db`), never the credentials of the URL."""
    limiter = RedisConcurrencyLimiter('redis://app:s3cret@127.0.0.1:9/4', 'k', 1, name='pool')
    calls: dict[str, Callable[[], Awaitable[object] | object]] = {
        'acquire': lambda: limiter.acquire('a'),
        'acquire_blocking': lambda: limiter.acquire_blocking('a'),
        'stats': limiter.stats,
        'resize': lambda: setattr(limiter, 'max_running', 2),
    }
    with pytest.raises(ConcurrencyBackendError, match=r'^Redis is unavailable: 127\.0\.0\.1:9/4: ') as info:
        result = calls[how]()
        if inspect.isawaitable(result):
            await result
    assert 's3cret' not in str(info.value)
    assert 'app' not in str(info.value)


async def test_fail_open_proceeds_and_records_it_on_the_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    limiter = RedisConcurrencyLimiter(UNREACHABLE, 'k', 1, name='pool', tracer=tracer, fail_open=True)
    async with limiter('a'), limiter('b'):  # no limit while Redis is away
        assert limiter.held_count == 2
    assert limiter.held_count == 0
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert span.name == 'waiting for pool concurrency'
        assert (span.attributes or {})['fail_open'] is True
        (event,) = span.events
        assert event.name == 'exception'
        assert (event.attributes or {})['exception.type'] == 'ferrolimit.exceptions.ConcurrencyBackendError'


async def test_a_wrong_key_type_is_a_clear_error(redis_url: str, redis_key: str) -> None:
    # Make `{key}:holders` a string, through the Redis protocol itself.
    async with await anyio.connect_tcp('127.0.0.1', int(redis_url.rsplit(':', 1)[1].split('/')[0])) as conn:
        holders = f'{{{redis_key}}}:holders'.encode()
        await conn.send(b'*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nx\r\n' % (len(holders), holders))
        assert (await conn.receive()).startswith(b'+OK')
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, fail_open=True)
    with pytest.raises(ConcurrencyBackendError) as info:
        await limiter.acquire('a')
    assert str(info.value) == (
        f'Redis key {{{redis_key}}}:holders holds a string, expected a zset (is another program using this key?)'
    )


def test_bad_input() -> None:
    with pytest.raises(ValueError, match='^invalid Redis URL "http://x"'):
        RedisConcurrencyLimiter('http://x', 'k', 1)
    with pytest.raises(ValueError, match='^key must not be empty$'):
        RedisConcurrencyLimiter('redis://127.0.0.1', '', 1)
    with pytest.raises(UserError, match=r'^max_running must be >= 1, got 0\.'):
        RedisConcurrencyLimiter('redis://127.0.0.1', 'k', 0)
    with pytest.raises(UserError, match=r'^max_running must be >= 1, got -3\.'):
        RedisConcurrencyLimiter('redis://127.0.0.1', 'k', -3)
    with pytest.raises(UserError, match=r'^max_queued must be >= 0, got -1\.'):
        RedisConcurrencyLimiter('redis://127.0.0.1', 'k', 1, max_queued=-1)
    with pytest.raises(TypeError, match='^max_running must be an int, got str$'):
        RedisConcurrencyLimiter('redis://127.0.0.1', 'k', '1')  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match='^redis_url must be a str, got int$'):
        RedisConcurrencyLimiter(1, 'k', 1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match='^key must be a str, got bytes$'):
        RedisConcurrencyLimiter('redis://127.0.0.1', b'k', 1)  # pyright: ignore[reportArgumentType]
    for lease in (0, -1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='^lease_seconds must be a finite number between 0.03 and 86400, got '):
            RedisConcurrencyLimiter('redis://127.0.0.1', 'k', 1, lease_seconds=lease)
    with pytest.raises(TypeError, match='^lease_seconds must be a number, got str$'):
        RedisConcurrencyLimiter('redis://127.0.0.1', 'k', 1, lease_seconds='1')  # pyright: ignore[reportArgumentType]


def test_is_an_abstract_limiter() -> None:
    limiter = RedisConcurrencyLimiter('redis://127.0.0.1', 'k', 1)
    assert isinstance(limiter, AbstractConcurrencyLimiter)
    assert repr(limiter) == "RedisConcurrencyLimiter(key='k', max_running=1, max_queued=None, name=None, held=0)"
    assert limiter.lease_seconds == 30.0


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_pydantic_ai_agent_and_model(redis_url: str, redis_key: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.concurrency import AbstractConcurrencyLimiter as PydanticLimiter
    from pydantic_ai.exceptions import AgentRunError
    from pydantic_ai.models.concurrency import ConcurrencyLimitedModel
    from pydantic_ai.models.test import TestModel

    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, name='fleet')
    assert isinstance(limiter, PydanticLimiter)
    assert issubclass(ConcurrencyBackendError, AgentRunError)
    agent = Agent(TestModel(), max_concurrency=limiter)
    model_agent = Agent(ConcurrencyLimitedModel(TestModel(), limiter))
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(agent.run, 'hi')
            tg.start_soon(model_agent.run, 'hi')
    assert limiter.running_count == 0
    assert limiter.held_count == 0


def in_forked_child(body: Callable[[], None]) -> None:
    """Run `body` in a forked child (which reports through its exit code and never returns into
    pytest); fail if it raises or hangs."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:  # noqa: BLE001 (reported through the exit code)
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail('the forked child hung')
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
@pytest.mark.parametrize('used_before_fork', [True, False])
def test_a_forked_child_uses_its_own_connections(redis_url: str, redis_key: str, used_before_fork: bool) -> None:
    # As with a limiter created at import time under `gunicorn --preload`: the child must not use
    # the parent's connections or I/O threads (it has none of the threads), nor its slots.
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 2, lease_seconds=5)
    if used_before_fork:
        asyncio.run(limiter.acquire('parent'))

    async def child() -> None:
        assert limiter.held_count == 0
        assert limiter.running_count == int(used_before_fork)
        async with limiter('child'):
            assert (limiter.held_count, limiter.running_count) == (1, 1 + int(used_before_fork))
        assert limiter.running_count == int(used_before_fork)
        with pytest.raises(ValueError, match='released too many times'):
            limiter.release()  # the parent's slot is not the child's to release

    in_forked_child(lambda: asyncio.run(asyncio.wait_for(child(), 20)))
    assert limiter.held_count == int(used_before_fork)
    if used_before_fork:
        limiter.release()
    assert limiter.running_count == 0


async def test_the_fleet_limit_is_stored_by_the_first_limiter_and_followed_by_the_others(
    redis_url: str, redis_key: str
) -> None:
    small = RedisConcurrencyLimiter(redis_url, redis_key, 2)
    large = RedisConcurrencyLimiter(redis_url, redis_key, 3)  # another process, as far as Redis knows
    await small.acquire('a')
    assert small.other_max_running is None  # the first acquire on the key stores its limit
    await large.acquire('b')
    assert (large.other_max_running, large.max_running) == (2, 2)
    assert not large.try_acquire()  # 2 of the stored 2 are held
    message = (
        rf"^RedisConcurrencyLimiter\(key='{re.escape(redis_key)}'\): the fleet's max_running for this key is 2 in "
        r"Redis, stored by another process; this one's is 3 and it follows the stored value\. "
        r'Processes sharing a key should agree on max_running \(or set it for all with '
        r'`limiter\.max_running = n`\)\.$'
    )
    with pytest.warns(RuntimeWarning, match=message):
        large.release()
    assert large.running_count == 1  # released before the warning
    await large.acquire('b')
    large.release()  # no second warning for the same value (warnings are errors in this suite)
    large.max_running = 3  # a resize is adopted by every limiter, without a warning
    assert large.other_max_running is None
    await small.acquire('c')
    assert (small.other_max_running, small.max_running) == (None, 3)
    small.release()
    small.release()


def command(redis_url: str, *args: str) -> Any:
    """One command over a fresh connection, and its decoded reply (bulk strings as bytes)."""
    url = urllib.parse.urlparse(redis_url)
    request = b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a), a.encode()) for a in args)
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
    return rest


def connected_clients(redis_url: str) -> int:
    """The server's count of client connections (this query's own included)."""
    info: bytes = command(redis_url, 'INFO', 'clients')
    return int(info.split(b'connected_clients:')[1].split(b'\r\n')[0])


async def test_limiters_on_one_server_share_two_connections(redis_url: str, redis_key: str) -> None:
    limiters = [RedisConcurrencyLimiter(redis_url, f'{redis_key}:{i}', 1) for i in range(2)]
    for limiter in limiters:  # this process's connections to the server are open from here on
        async with limiter:
            pass
    before = connected_clients(redis_url)
    limiters += [RedisConcurrencyLimiter(redis_url, f'{redis_key}:{i}', 1) for i in range(2, 20)]
    for limiter in limiters:
        async with limiter:
            pass
    assert connected_clients(redis_url) == before  # 20 limiters, no new connection

    # Every limiter still gets its own wake-ups: the shared subscription routes them by key.
    entered: list[int] = []
    all_in = anyio.Event()

    async def wait_on(i: int) -> None:
        async with limiters[i]:
            entered.append(i)
            if len(entered) == len(limiters):
                all_in.set()

    for limiter in limiters:
        await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(len(limiters)):
            tg.start_soon(wait_on, i)
        for limiter in limiters:
            await until_waiting(limiter, 1)
        # The default lease is 30 s, so a waiter's own poll comes only every 10 s: entering well
        # within that is the wake-up message, delivered to the right limiter.
        with anyio.fail_after(5):
            for limiter in limiters:
                limiter.release()
            await all_in.wait()
    assert sorted(entered) == list(range(len(limiters)))


async def test_a_key_listened_on_again_gets_its_wake_ups(redis_url: str, redis_key: str) -> None:
    # A message on a channel nobody in this process listens on any more unsubscribes it (the
    # pauses let the last limiter's background release end, then the unsubscribe go out); a
    # limiter created on that key afterwards subscribes it again. Round 0 skips the pauses, so the
    # new limiter's subscribe and the unsubscribe may go out in either order.
    for round_ in range(10):
        gone = RedisConcurrencyLimiter(redis_url, redis_key, 1)
        async with gone:
            pass
        del gone
        gc.collect()
        pause = 0.0 if round_ == 0 else 0.1
        await anyio.sleep(pause)
        command(redis_url, 'PUBLISH', f'{{{redis_key}}}:wake', 'nobody')
        await anyio.sleep(pause)
        limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
        await limiter.acquire('holder')
        woken = anyio.Event()

        async def wait(limiter: RedisConcurrencyLimiter = limiter, woken: anyio.Event = woken) -> None:
            async with limiter:
                woken.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await until_waiting(limiter, 1)
            limiter.release()
            # Its own poll would come after 10 s (a third of the default lease).
            with anyio.fail_after(5):
                await woken.wait()
        assert limiter.running_count == 0, round_


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_a_forked_child_leaves_the_parents_waiter_alone(redis_url: str, redis_key: str) -> None:
    # The child inherits a task waiting on the parent's acquire and cancels it, as a worker that
    # tears down its inherited loop would; the parent's place in the queue is unaffected.
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, lease_seconds=5)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(limiter.acquire('holder'))
        waiter = loop.create_task(limiter.acquire('waiter'))
        loop.run_until_complete(until_waiting(limiter, 1))

        def child() -> None:
            waiter.cancel()
            loop.run_until_complete(anyio.wait_all_tasks_blocked())  # the cancelled waiter has ended
            assert waiter.cancelled()

        in_forked_child(child)
        assert limiter.waiting_count == 1
        limiter.release()
        loop.run_until_complete(asyncio.wait_for(waiter, 10))
        assert (limiter.held_count, limiter.running_count) == (1, 1)
        limiter.release()
    finally:
        loop.close()


def test_a_dropped_limiter_unsubscribes_its_key(redis_url: str, redis_key: str) -> None:
    def channels() -> list[bytes]:
        found: list[bytes] = command(redis_url, 'PUBSUB', 'CHANNELS', f'{{{redis_key}:*}}:wake')
        return found

    async def use(limiters: list[RedisConcurrencyLimiter]) -> None:
        for limiter in limiters:
            async with limiter:
                pass

    def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, channels()
            time.sleep(0.01)

    limiters = [RedisConcurrencyLimiter(redis_url, f'{redis_key}:{i}', 1) for i in range(10)]
    asyncio.run(use(limiters))
    until(lambda: len(channels()) == 10)
    del limiters[5:]
    gc.collect()
    until(lambda: len(channels()) == 5)
    del limiters
    gc.collect()
    until(lambda: channels() == [])
