"""The limiter's basic contract: counts, errors and their exact texts, bad input."""

from __future__ import annotations

import pytest

import ferrolimit
from ferrolimit import (
    ConcurrencyLimit,
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    UserError,
    get_concurrency_context,
    normalize_to_limiter,
)

pytestmark = pytest.mark.anyio


def test_initial_counts() -> None:
    limiter = ConcurrencyLimiter(3, max_queued=5, name='pool')
    assert (limiter.max_running, limiter.running_count, limiter.available_count, limiter.waiting_count) == (3, 0, 3, 0)
    assert limiter.name == 'pool'
    assert limiter._max_queued == 5
    assert ConcurrencyLimiter(1)._max_queued is None
    assert ConcurrencyLimiter(1).name is None


async def test_counts_follow_acquire_and_release() -> None:
    limiter = ConcurrencyLimiter(2)
    await limiter.acquire('a')
    assert (limiter.running_count, limiter.available_count) == (1, 1)
    await limiter.acquire('b')
    assert (limiter.running_count, limiter.available_count) == (2, 0)
    limiter.release()
    limiter.release()
    assert (limiter.running_count, limiter.available_count) == (0, 2)


async def test_release_without_acquire_raises_and_changes_nothing() -> None:
    limiter = ConcurrencyLimiter(2)
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release()
    await limiter.acquire('a')
    limiter.release()
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter.release()
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 2, 0)
    assert limiter.stats().acquired_total == 1


async def test_exception_in_body_releases_and_propagates_unchanged() -> None:
    limiter = ConcurrencyLimiter(1)
    error = KeyError('boom')
    with pytest.raises(KeyError) as info:
        async with get_concurrency_context(limiter, 'x'):
            raise error
    assert info.value is error
    assert limiter.available_count == 1


async def test_async_with_limiter_and_call() -> None:
    limiter = ConcurrencyLimiter(2)
    async with limiter:
        assert limiter.running_count == 1
        async with limiter('inner'):
            assert limiter.running_count == 2
    assert limiter.running_count == 0


def test_try_acquire() -> None:
    limiter = ConcurrencyLimiter(1)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.release()
    assert limiter.try_acquire()
    limiter.release()


async def test_null_context() -> None:
    async with get_concurrency_context(None, 'x') as value:
        assert value is None
    async with get_concurrency_context(None):
        pass


@pytest.mark.parametrize(
    ('kwargs', 'error', 'message'),
    [
        ({'max_running': 0}, UserError, 'max_running must be >= 1, got 0. Use None for no concurrency limiting.'),
        ({'max_running': -5}, UserError, 'max_running must be >= 1, got -5. Use None for no concurrency limiting.'),
        (
            {'max_running': 1, 'max_queued': -1},
            UserError,
            'max_queued must be >= 0, got -1. Use None for unlimited queue.',
        ),
        ({'max_running': 2**31}, ValueError, 'max_running must be <= 2147483647, got 2147483648'),
        ({'max_running': 10**40}, ValueError, f'max_running must be <= 2147483647, got {10**40}'),
        (
            {'max_running': 1, 'max_queued': 10**40},
            ValueError,
            f'max_queued must be <= 18446744073709551615, got {10**40}',
        ),
        ({'max_running': '3'}, TypeError, 'max_running must be an int, got str'),
        ({'max_running': 2.5}, TypeError, 'max_running must be an int, got float'),
        ({'max_running': None}, TypeError, 'max_running must be an int, got NoneType'),
        ({'max_running': 1, 'max_queued': 1.0}, TypeError, 'max_queued must be an int, got float'),
    ],
)
def test_invalid_limits(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        ConcurrencyLimiter(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert type(info.value) is error


def test_concurrency_limit_validates_like_the_limiter() -> None:
    with pytest.raises(UserError, match=r'^max_running must be >= 1, got 0\. Use None for no concurrency limiting\.$'):
        ConcurrencyLimit(max_running=0)
    with pytest.raises(UserError, match=r'^max_queued must be >= 0, got -2\. Use None for unlimited queue\.$'):
        ConcurrencyLimit(max_running=1, max_queued=-2)
    assert ConcurrencyLimit(2, 3) == ConcurrencyLimit(max_running=2, max_queued=3)


def test_bool_is_not_a_limit() -> None:
    # pydantic-ai's own limiter takes `True` as 1; ferrolimit does not take a flag for a number.
    with pytest.raises(TypeError, match='^max_running must be an int, got bool$'):
        ConcurrencyLimiter(True)
    with pytest.raises(TypeError, match='^max_queued must be an int, got bool$'):
        ConcurrencyLimiter(1, max_queued=False)


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        ConcurrencyLimiter(1, name=3)  # type: ignore[arg-type]


async def test_source_must_be_a_string() -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(TypeError, match='^source must be a str, got int$'):
        await limiter.acquire(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='^source must be a str, got bytes$'):
        get_concurrency_context(limiter, b'x')  # type: ignore[arg-type]
    assert limiter.available_count == 1


async def test_source_none_is_not_a_source() -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(TypeError, match='^source must be a str, got NoneType$'):
        limiter(None)  # type: ignore[arg-type]
    async with limiter():
        assert limiter.running_count == 1


def test_get_concurrency_context_rejects_non_limiters() -> None:
    with pytest.raises(TypeError, match='^limiter must be an AbstractConcurrencyLimiter or None, got int$'):
        get_concurrency_context(5, 'x')  # type: ignore[arg-type]


def test_from_limit() -> None:
    limiter = ConcurrencyLimiter.from_limit(4, name='n')
    assert (limiter.max_running, limiter._max_queued, limiter.name) == (4, None, 'n')
    limiter = ConcurrencyLimiter.from_limit(ConcurrencyLimit(2, 7))
    assert (limiter.max_running, limiter._max_queued) == (2, 7)
    with pytest.raises(TypeError, match='^limit must be an int or a ConcurrencyLimit, got str$'):
        ConcurrencyLimiter.from_limit('3')  # type: ignore[arg-type]


def test_from_limit_on_a_subclass_returns_the_subclass() -> None:
    class Named(ConcurrencyLimiter):
        pass

    assert type(Named.from_limit(2)) is Named


def test_normalize_to_limiter() -> None:
    assert normalize_to_limiter(None) is None
    limiter = ConcurrencyLimiter(2)
    assert normalize_to_limiter(limiter) is limiter
    created = normalize_to_limiter(3, name='x')
    assert isinstance(created, ConcurrencyLimiter)
    assert (created.max_running, created.name) == (3, 'x')
    created = normalize_to_limiter(ConcurrencyLimit(1, 0))
    assert isinstance(created, ConcurrencyLimiter)
    assert created._max_queued == 0


def test_limiter_is_an_abstract_concurrency_limiter() -> None:
    assert isinstance(ConcurrencyLimiter(1), ferrolimit.AbstractConcurrencyLimiter)


async def test_max_queued_zero_rejects_any_wait() -> None:
    limiter = ConcurrencyLimiter(1, max_queued=0, name='zero')
    await limiter.acquire('a')
    with pytest.raises(ConcurrencyLimitExceeded) as info:
        await limiter.acquire('b')
    assert str(info.value) == 'Concurrency queue depth (1) exceeds max_queued (0) for zero'
    assert info.value.message == str(info.value)
    limiter.release()


async def test_rejection_message_names_the_source_when_unnamed() -> None:
    limiter = ConcurrencyLimiter(1, max_queued=0)
    await limiter.acquire('a')
    with pytest.raises(
        ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(1\) exceeds max_queued \(0\) for model:x$'
    ):
        async with get_concurrency_context(limiter, 'model:x'):
            pass
    with pytest.raises(ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(1\) exceeds max_queued \(0\)$'):
        await limiter.acquire('')
    limiter.release()


def test_stats_snapshot_fields_and_repr() -> None:
    limiter = ConcurrencyLimiter(2, max_queued=1, name='s')
    assert limiter.try_acquire()
    stats = limiter.stats()
    assert (stats.running, stats.waiting, stats.available, stats.max_running, stats.max_queued) == (1, 0, 1, 2, 1)
    assert (stats.acquired_total, stats.rejected_total, stats.cancelled_total) == (1, 0, 0)
    assert repr(stats).startswith('LimiterStats(running=1, waiting=0, available=1')
    assert repr(limiter) == "ConcurrencyLimiter(max_running=2, max_queued=1, name='s', running=1, waiting=0)"
    limiter.release()


def test_version() -> None:
    assert isinstance(ferrolimit.__version__, str)
    assert ferrolimit.__version__.count('.') == 2


def test_supports_trio() -> None:
    assert ferrolimit.SUPPORTS_TRIO is True
