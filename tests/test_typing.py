"""The public API as a type checker sees it: pyright (strict) checks this file in `make lint`."""

from __future__ import annotations

import pytest
from typing_extensions import assert_type

import ferrolimit
from ferrolimit import (
    AbstractConcurrencyLimiter,
    ConcurrencyGovernor,
    ConcurrencyLimit,
    ConcurrencyLimiter,
    ConcurrencyPermit,
    GovernorStats,
    LimiterStats,
    RedisConcurrencyLimiter,
    SessionLimiter,
    get_concurrency_context,
    normalize_to_limiter,
)

pytestmark = pytest.mark.anyio


async def test_limiter_api_types() -> None:
    limiter = ConcurrencyLimiter(2, max_queued=3, name='typed')
    assert_type(limiter.max_running, int)
    assert_type(limiter.running_count, int)
    assert_type(limiter.waiting_count, int)
    assert_type(limiter.available_count, int)
    assert_type(limiter.name, str | None)
    assert_type(limiter.try_acquire(), bool)
    limiter.release()
    await limiter.acquire('typed')
    limiter.release()
    async with get_concurrency_context(limiter, 'typed'):
        pass
    async with limiter, limiter('typed'):
        pass
    stats = limiter.stats()
    assert_type(stats, LimiterStats)
    assert_type(stats.max_queued, int | None)
    assert_type(ConcurrencyLimiter.from_limit(ConcurrencyLimit(1)), ConcurrencyLimiter)


async def test_nested_limiter_types() -> None:
    parent = ConcurrencyLimiter(2)
    child = ConcurrencyLimiter(1, parent=parent)
    assert_type(child.parent, ConcurrencyLimiter | None)
    async with child('typed'):
        pass


async def test_governor_types() -> None:
    gov = ConcurrencyGovernor(max_streams=1, max_tools=2, max_global=2)
    async with gov.stream(), gov.tool('tool:typed'):
        pass
    permit = gov.try_tool()
    assert_type(permit, ConcurrencyPermit | None)
    assert permit is not None
    with permit as held:
        assert_type(held, ConcurrencyPermit)
    assert_type(permit.released, bool)
    assert_type(gov.try_stream(), ConcurrencyPermit | None)
    stats = gov.stats()
    assert_type(stats, GovernorStats)
    assert_type(stats.global_available, int)
    assert_type(gov.tool_limiter, ConcurrencyLimiter)


def test_abstract_limiter_and_normalize() -> None:
    limiter: AbstractConcurrencyLimiter = ConcurrencyLimiter(1)
    assert_type(normalize_to_limiter(limiter), AbstractConcurrencyLimiter | None)
    assert normalize_to_limiter(None) is None


def test_session_limiter_types() -> None:
    sessions = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=None)
    sessions.acquire_session('s')
    sessions.acquire_run('s', 'r')
    assert sessions.status()['active_runs'] == 1
    sessions.release_session('s')


def test_redis_limiter_types() -> None:
    # Constructing connects lazily: no server is needed to check the types.
    limiter = RedisConcurrencyLimiter('redis://127.0.0.1:6379/0', 'typed', 2, max_queued=3, lease_seconds=5.0)
    assert_type(limiter.max_running, int)
    assert_type(limiter.held_count, int)
    assert_type(limiter.lost_count, int)
    assert_type(limiter.key, str)
    assert_type(limiter.name, str | None)
    limiter_as_abstract: AbstractConcurrencyLimiter = limiter
    assert normalize_to_limiter(limiter_as_abstract) is limiter
    assert_type(ferrolimit.ConcurrencyBackendError('x'), ferrolimit.ConcurrencyBackendError)


def test_version_is_a_string() -> None:
    assert_type(ferrolimit.__version__, str)
