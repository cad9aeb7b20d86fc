"""A user's app that uses ferrolimit without pydantic-ai.

Type-checked by `tests/typing/check.sh` with pyright (strict) and mypy (strict), both with and
without pydantic-ai installed; `assert_type` pins the types the stubs give. Never run.
"""

from __future__ import annotations

import threading

from typing_extensions import assert_type

import ferrolimit
from ferrolimit import AbstractConcurrencyLimiter, ConcurrencyLimit, ConcurrencyLimiter, LimiterStats


class Counting(AbstractConcurrencyLimiter):
    """A user's own limiter, on ferrolimit's abstract base."""

    def __init__(self) -> None:
        self.held = 0

    async def acquire(self, source: str) -> None:
        """Take a slot."""
        self.held += 1

    def release(self) -> None:
        """Give one back."""
        self.held -= 1


async def use(url: str) -> None:
    """The main API, with the types a user sees."""
    limiter = ConcurrencyLimiter(2, max_queued=3, name='typed')
    assert_type(limiter.max_running, int)
    assert_type(limiter.name, str | None)
    assert_type(limiter.try_acquire(), bool)
    assert_type(limiter.stats(), LimiterStats)
    assert_type(ConcurrencyLimiter.from_limit(ConcurrencyLimit(1)), ConcurrencyLimiter)
    assert_type(ConcurrencyLimit(2).max_queued, int | None)
    async with limiter('typed'):
        pass
    with limiter.blocking():
        pass
    await limiter.acquire('typed', timeout=1.0)
    limiter.release()
    keyed = ferrolimit.KeyedConcurrencyLimiter(2)
    async with keyed('user-1'):
        pass
    redis = ferrolimit.RedisConcurrencyLimiter(url, 'typed', max_running=2)
    async with redis('typed'):
        pass
    limiters: list[AbstractConcurrencyLimiter] = [limiter, redis, Counting()]
    assert_type(ferrolimit.normalize_to_limiter(limiters[0]), AbstractConcurrencyLimiter | None)
    threading.Thread(target=limiter.release).start()
