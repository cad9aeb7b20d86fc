"""The blocking API refuses to wait on a thread that runs an event loop (asyncio, uvloop, trio).

Such a wait would freeze the loop, and never end when a task on it holds the slot (before the
guard, every case below with the slot held hung forever). A free slot is still taken there; a
wait on any other thread (a worker from `to_thread`) is not refused; nothing is taken or left
queued by a refusal, at any level of a nested limiter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from test_regressions_inputs import ALL_BACKENDS

from ferrolimit import (
    ConcurrencyLimiter,
    KeyedConcurrencyLimiter,
    RedisConcurrencyLimiter,
    RedisKeyedConcurrencyLimiter,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=ALL_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@dataclass
class Target:
    """One limiter seen through the calls the test makes: hold, the blocking calls, the counts."""

    hold: Callable[[], Any]
    """Take the slot the blocking calls need, on the loop (awaitable)."""
    unhold: Callable[[], None]
    release: Callable[[], None]
    """Release what a blocking call took."""
    acquire_blocking: Callable[..., None]
    blocking: Callable[..., Any]
    counts: Callable[[], tuple[int, int]]
    """(running, waiting) of every level, summed."""


def local(name: str | None) -> Target:
    limiter = ConcurrencyLimiter(1, name=name)
    return Target(
        lambda: limiter.acquire(),
        limiter.release,
        limiter.release,
        limiter.acquire_blocking,
        limiter.blocking,
        lambda: (limiter.running_count, limiter.waiting_count),
    )


def child(name: str | None) -> Target:
    """The child is free, its parent is full: the refusal must give the child's slot back."""
    parent = ConcurrencyLimiter(1, name=name)
    limiter = ConcurrencyLimiter(1, parent=parent)
    return Target(
        lambda: parent.acquire(),
        parent.release,
        limiter.release,
        limiter.acquire_blocking,
        limiter.blocking,
        lambda: (
            limiter.running_count + parent.running_count,
            limiter.waiting_count + parent.waiting_count,
        ),
    )


def keyed(name: str | None) -> Target:
    limiter = KeyedConcurrencyLimiter(1, name=name)
    return Target(
        lambda: limiter.acquire('k'),
        lambda: limiter.release('k'),
        lambda: limiter.release('k'),
        lambda **kw: limiter.acquire_blocking('k', **kw),
        lambda **kw: limiter.blocking('k', **kw),
        lambda: (limiter.running_count('k'), limiter.waiting_count('k')),
    )


LOCAL: dict[str, Callable[[str | None], Target]] = {'local': local, 'child': child, 'keyed': keyed}


async def check(target: Target, waiting_for: str) -> None:
    refused = re.escape(f'waiting for {waiting_for} concurrency on a thread that runs an event loop')
    # A free slot is taken on the loop's thread: nothing to wait for.
    with target.blocking():
        assert target.counts()[0] >= 1
    target.acquire_blocking()
    target.release()
    await target.hold()
    calls: list[Callable[[], object]] = [
        target.acquire_blocking,
        lambda: target.acquire_blocking(timeout=30),
        lambda: target.acquire_blocking(timeout=0),
        lambda: target.blocking().__enter__(),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=f'^{refused}'):
            call()
        assert time.monotonic() - start < 5
        assert target.counts() == (1, 0)
    # Another thread waits as usual, until the loop's task gives the slot back.
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, lambda: target.acquire_blocking(timeout=30))
        await anyio.sleep(0.05)
        assert target.counts()[1] == 1
        target.unhold()
    target.release()
    assert target.counts() == (0, 0)


@pytest.mark.parametrize('make', LOCAL.values(), ids=list(LOCAL))
@pytest.mark.parametrize('name', ['llm', None])
async def test_a_blocking_wait_on_an_event_loop_thread_is_refused(
    make: Callable[[str | None], Target], name: str | None
) -> None:
    await check(make(name), name or 'unnamed')


async def test_a_redis_blocking_wait_on_an_event_loop_thread_is_refused(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, name='fleet')
    target = Target(
        lambda: limiter.acquire(),
        limiter.release,
        limiter.release,
        limiter.acquire_blocking,
        limiter.blocking,
        lambda: (limiter.held_count, limiter.waiting_count),
    )
    await check(target, 'fleet')


async def test_a_keyed_redis_blocking_wait_on_an_event_loop_thread_is_refused(redis_url: str, redis_key: str) -> None:
    limiter = RedisKeyedConcurrencyLimiter(redis_url, redis_key, 1)
    target = Target(
        lambda: limiter.acquire('k', 'src'),
        lambda: limiter.release('k'),
        lambda: limiter.release('k'),
        lambda **kw: limiter.acquire_blocking('k', 'src', **kw),
        lambda **kw: limiter.blocking('k', 'src', **kw),
        lambda: (limiter.held_count('k'), limiter.waiting_count('k')),
    )
    await check(target, 'src')
