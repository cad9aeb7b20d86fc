"""A user's app that hands ferrolimit's limiters to pydantic-ai, as its annotations ask.

Type-checked by `tests/typing/check.sh` with pyright (strict) and mypy (strict) in an
environment with pydantic-ai installed. Never run: only the types matter.
"""

from __future__ import annotations

from pydantic_ai import Agent, ConcurrencyLimitedModel
from pydantic_ai.concurrency import AbstractConcurrencyLimiter, AnyConcurrencyLimit, get_concurrency_context
from pydantic_ai.models.test import TestModel

import ferrolimit


def agents(url: str) -> list[Agent[None, str]]:
    """Every kind of ferrolimit limit where pydantic-ai takes a limit."""
    limiter = ferrolimit.ConcurrencyLimiter(3, name='llm')
    redis = ferrolimit.RedisConcurrencyLimiter(url, 'llm', max_running=3)
    return [
        Agent(TestModel(), max_concurrency=limiter),
        Agent(TestModel(), max_concurrency=redis),
        Agent(TestModel(), max_concurrency=ferrolimit.ConcurrencyLimit(3)),
        Agent(TestModel(), max_concurrency=ferrolimit.ConcurrencyLimit(3, max_queued=10)),
        Agent(ConcurrencyLimitedModel(TestModel(), limiter=limiter)),
        Agent(ConcurrencyLimitedModel(TestModel(), limiter=ferrolimit.ConcurrencyLimit(2))),
    ]


def as_pydantic_ai(limiter: ferrolimit.AbstractConcurrencyLimiter) -> AbstractConcurrencyLimiter:
    """ferrolimit's abstract limiter is pydantic-ai's."""
    return limiter


def limits() -> list[AnyConcurrencyLimit]:
    """ferrolimit's limits are pydantic-ai's `AnyConcurrencyLimit`."""
    child = ferrolimit.ConcurrencyLimiter(1, parent=ferrolimit.ConcurrencyLimiter(2))
    return [child, ferrolimit.ConcurrencyLimit(1), ferrolimit.normalize_to_limiter(4), None, 5]


async def enter(limiter: ferrolimit.ConcurrencyLimiter) -> int:
    """pydantic-ai's context helper takes ferrolimit's limiter, and the limiter keeps its own API."""
    async with get_concurrency_context(limiter, 'model:test'):
        return limiter.running_count + limiter.stats().running
