# Ported from pydantic/pydantic-ai, file tests/test_concurrency.py, as of commit
# ad382077f75c94482e82541b33322169343ebf13 ("Add concurrency limiting for Agents and Models", #4149), the file
# as released in v1.54.0 through v1.60.0 (changed in v1.61.0). The port was made from a fragment of that file that
# names no version; the commit is the one whose file the fragment matches. The pydantic-ai these tests run with is
# newer (pydantic-ai-slim 2.68.0 when this header was written). The suite runs against ferrolimit in two ways:
#
# 1. directly, through ferrolimit's own API (`ferrolimit.ConcurrencyLimiter`, `get_concurrency_context`, ...);
# 2. through pydantic-ai with `ferrolimit.install()` in effect (`Agent(max_concurrency=...)`,
#    `ConcurrencyLimitedModel`, `limit_model_concurrency`), asserting that the limiter pydantic-ai created is
#    ferrolimit's, so that these tests cannot silently exercise pydantic-ai's own limiter.
#
# Where the original waits with short sleeps for tasks to reach a state, this port waits with
# `anyio.wait_all_tasks_blocked()` and gates (events) instead, then asserts the state it waited for: nothing depends
# on timing. Basic companions the fragment omits (validation, `from_limit`, properties, names) are added in the same style.

# pyright: reportPrivateUsage=false, reportAttributeAccessIssue=false, reportUnknownMemberType=false
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast
from unittest.mock import AsyncMock

import anyio
import pydantic_ai
import pydantic_ai.concurrency
import pydantic_ai.exceptions
import pytest
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer
from pydantic_ai import Agent
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel, limit_model_concurrency
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

import ferrolimit
from ferrolimit import (
    AbstractConcurrencyLimiter,
    ConcurrencyLimit,
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    UserError,
    get_concurrency_context,
    normalize_to_limiter,
)

pytestmark = pytest.mark.anyio

MAX_RUNNING_MESSAGE = 'max_running must be >= 1, got {}. Use None for no concurrency limiting.'
MAX_QUEUED_MESSAGE = 'max_queued must be >= 0, got {}. Use None for unlimited queue.'


class AsyncBarrier:
    """A simple asyncio.Barrier-like implementation compatible with Python 3.10 using anyio."""

    def __init__(self, parties: int):
        self._parties = parties
        self._count = 0
        self._lock = anyio.Lock()
        self._event = anyio.Event()

    async def wait(self) -> None:
        async with self._lock:
            self._count += 1
            if self._count >= self._parties:
                self._event.set()
        await self._event.wait()


def exact(message: str) -> str:
    """A `pytest.raises(match=...)` pattern matching exactly `message`."""
    return f'^{re.escape(message)}$'


def assert_ferrolimit(limiter: object) -> ConcurrencyLimiter:
    """The limiter pydantic-ai created must be ferrolimit's, not its own."""
    assert type(limiter) is ferrolimit.ConcurrencyLimiter, type(limiter)
    return cast(ConcurrencyLimiter, limiter)


@pytest.fixture
def installed() -> Iterator[None]:
    """Route pydantic-ai's concurrency limiting through ferrolimit for the test."""
    ferrolimit.install()
    try:
        assert type(pydantic_ai.concurrency.ConcurrencyLimiter(1)) is ferrolimit.ConcurrencyLimiter
        yield
    finally:
        ferrolimit.uninstall()


# ---------------------------------------------------------------------------------------------------------------------
# 1. ferrolimit used directly
# ---------------------------------------------------------------------------------------------------------------------


class TestConcurrencyLimiter:
    """Tests for the ConcurrencyLimiter class."""

    async def test_basic_acquisition(self):
        """Test that limiter limits concurrent access."""
        limiter = ConcurrencyLimiter(max_running=2)
        acquired: list[int] = []
        release = anyio.Event()

        async def acquire_and_hold(idx: int):
            async with get_concurrency_context(limiter, 'test'):
                acquired.append(idx)
                await release.wait()

        # Start 3 tasks with limit of 2
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(acquire_and_hold, i)
            await anyio.wait_all_tasks_blocked()
            # Only 2 can proceed (which two depends on the backend's task start order: trio shuffles it)
            assert len(acquired) == 2
            assert limiter.running_count == 2
            assert limiter.waiting_count == 1
            release.set()
        assert sorted(acquired) == [0, 1, 2]
        assert limiter.running_count == 0

    async def test_nowait_acquisition(self):
        """Test that immediate acquisition works."""
        limiter = ConcurrencyLimiter(max_running=10)
        # With high limit, should acquire immediately
        async with get_concurrency_context(limiter, 'test'):
            assert limiter.running_count == 1
            assert limiter.waiting_count == 0
        assert limiter.running_count == 0

    @pytest.mark.parametrize('max_running', [0, -1, -5])
    async def test_invalid_max_running(self, max_running: int):
        """Test that invalid concurrency limits are rejected before creating the limiter."""
        with pytest.raises(UserError, match=exact(MAX_RUNNING_MESSAGE.format(max_running))):
            ConcurrencyLimiter(max_running=max_running)

    @pytest.mark.parametrize('max_running', [0, -1, -5])
    async def test_invalid_concurrency_limit_config(self, max_running: int):
        """Test that invalid concurrency limit config values fail eagerly."""
        with pytest.raises(UserError, match=exact(MAX_RUNNING_MESSAGE.format(max_running))):
            ConcurrencyLimit(max_running=max_running)

    @pytest.mark.parametrize('max_queued', [-1, -5])
    async def test_invalid_max_queued(self, max_queued: int):
        """Test that a negative max_queued is rejected by both the config and the limiter."""
        with pytest.raises(UserError, match=exact(MAX_QUEUED_MESSAGE.format(max_queued))):
            ConcurrencyLimit(max_running=1, max_queued=max_queued)
        with pytest.raises(UserError, match=exact(MAX_QUEUED_MESSAGE.format(max_queued))):
            ConcurrencyLimiter(max_running=1, max_queued=max_queued)

    async def test_zero_max_queued_is_valid(self):
        """Test that max_queued=0 (no queue at all) is accepted."""
        assert ConcurrencyLimit(max_running=5, max_queued=0).max_queued == 0
        assert ConcurrencyLimiter(max_running=5, max_queued=0)._max_queued == 0

    async def test_user_error_is_pydantic_ai_user_error(self):
        """Test that `except` clauses written for pydantic-ai catch ferrolimit's validation errors."""
        with pytest.raises(pydantic_ai.exceptions.UserError, match=exact(MAX_RUNNING_MESSAGE.format(0))):
            ConcurrencyLimiter(max_running=0)

    async def test_waiting_count_tracking(self):
        """Test that waiting_count is accurately tracked."""
        limiter = ConcurrencyLimiter(max_running=1)
        started = anyio.Event()
        release = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'test'):
                started.set()
                await release.wait()

        async def waiter():
            async with get_concurrency_context(limiter, 'test'):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await started.wait()

            # Now limiter is held, check waiting count as we add waiters
            assert limiter.waiting_count == 0

            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 3

            release.set()
        assert limiter.waiting_count == 0
        assert limiter.running_count == 0

    async def test_backpressure_raises(self):
        """Test that exceeding max_queued raises ConcurrencyLimitExceeded."""
        limiter = ConcurrencyLimiter(max_running=1, max_queued=2)
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'test'):
                await hold.wait()

        async with anyio.create_task_group() as tg:
            # Fill the running slot
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1

            # Fill the queue (2 allowed)
            tg.start_soon(holder)
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 2

            # This should raise - queue is full
            with pytest.raises(
                ConcurrencyLimitExceeded, match=exact('Concurrency queue depth (3) exceeds max_queued (2) for test')
            ):
                async with get_concurrency_context(limiter, 'test'):
                    pass  # pragma: no cover

            # The rejected caller neither queued nor took a slot
            assert limiter.waiting_count == 2
            assert limiter.running_count == 1

            hold.set()
        assert limiter.running_count == 0

    async def test_backpressure_error_names_the_limiter(self):
        """Test that the error names the limiter (rather than the source) when it has a name."""
        limiter = ConcurrencyLimiter(max_running=1, max_queued=0, name='pool')
        await limiter.acquire('first')
        try:
            with pytest.raises(
                ConcurrencyLimitExceeded, match=exact('Concurrency queue depth (1) exceeds max_queued (0) for pool')
            ) as exc_info:
                await limiter.acquire('second')
        finally:
            limiter.release()
        assert isinstance(exc_info.value, pydantic_ai.exceptions.ConcurrencyLimitExceeded)
        assert limiter.running_count == 0

    async def test_backpressure_race_condition(self):
        """Test that max_queued is enforced atomically under concurrent load.

        This test verifies the fix for a race condition where multiple tasks could
        simultaneously pass the max_queued check before any of them actually started
        waiting on the limiter.
        """
        limiter = ConcurrencyLimiter(max_running=1, max_queued=1)
        hold = anyio.Event()
        started = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'holder'):
                started.set()
                await hold.wait()

        # Now launch multiple tasks simultaneously that all try to queue.
        # With max_queued=1, exactly one should succeed in queuing.
        num_concurrent = 5
        results: list[str] = []
        barrier = AsyncBarrier(num_concurrent)

        async def try_acquire(idx: int):
            # Use barrier to ensure all tasks try to acquire at the same time
            await barrier.wait()
            try:
                async with get_concurrency_context(limiter, f'task-{idx}'):
                    results.append(f'acquired-{idx}')
            except ConcurrencyLimitExceeded:
                results.append(f'rejected-{idx}')

        async with anyio.create_task_group() as tg:
            # Fill the running slot and wait for it to be held
            tg.start_soon(holder)
            await started.wait()

            # Launch all tasks simultaneously
            for i in range(num_concurrent):
                tg.start_soon(try_acquire, i)

            # Wait until every task has either been rejected or queued (instead of a sleep, which lets a slow task
            # acquire the freed slot instead of being rejected)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1
            assert len(results) == num_concurrent - 1

            # Release the holder
            hold.set()

        # Verify: exactly one task should have been allowed to queue and acquire
        # The rest should have been rejected
        acquired = [r for r in results if r.startswith('acquired-')]
        rejected = [r for r in results if r.startswith('rejected-')]
        assert len(acquired) == 1, f'Expected exactly 1 acquired, got {len(acquired)}: {acquired}'
        assert len(rejected) == num_concurrent - 1, f'Expected {num_concurrent - 1} rejected, got {len(rejected)}'
        assert limiter.waiting_count == 0
        assert limiter.running_count == 0

    async def test_from_int_limit(self):
        """Test creating from simple int."""
        limiter = ConcurrencyLimiter.from_limit(5)
        assert type(limiter) is ConcurrencyLimiter
        assert limiter.max_running == 5
        assert limiter._max_queued is None
        assert limiter.name is None

    @pytest.mark.parametrize(
        'limit_cls', [ConcurrencyLimit, pydantic_ai.concurrency.ConcurrencyLimit], ids=['ferrolimit', 'pydantic_ai']
    )
    async def test_from_limiter_config(self, limit_cls: Any):
        """Test creating from ConcurrencyLimit (ferrolimit's or pydantic-ai's)."""
        config = limit_cls(max_running=5, max_queued=10)
        limiter = ConcurrencyLimiter.from_limit(config)
        assert type(limiter) is ConcurrencyLimiter
        assert limiter.max_running == 5
        assert limiter._max_queued == 10

    async def test_from_invalid_limit(self):
        """Test that invalid normalized concurrency limits fail eagerly."""
        with pytest.raises(UserError, match=exact(MAX_RUNNING_MESSAGE.format(0))):
            ConcurrencyLimiter.from_limit(0)

    async def test_normalize_to_limiter(self):
        """Test normalize_to_limiter: None stays None, limits become limiters, limiters pass through unchanged."""
        assert normalize_to_limiter(None) is None

        limiter = normalize_to_limiter(3, name='normalized')
        assert type(limiter) is ConcurrencyLimiter
        assert limiter.max_running == 3
        assert limiter.name == 'normalized'

        limiter = normalize_to_limiter(ConcurrencyLimit(max_running=2, max_queued=4))
        assert type(limiter) is ConcurrencyLimiter
        assert limiter.max_running == 2
        assert limiter._max_queued == 4

        existing = ConcurrencyLimiter(max_running=1)
        assert normalize_to_limiter(existing) is existing
        pydantic_ai_limiter = pydantic_ai.concurrency.ConcurrencyLimiter(max_running=1)
        assert normalize_to_limiter(pydantic_ai_limiter) is pydantic_ai_limiter

    async def test_normalize_to_limiter_rejects_invalid_limit(self):
        """Test that invalid normalized concurrency limits fail before use."""
        with pytest.raises(UserError, match=exact(MAX_RUNNING_MESSAGE.format(0))):
            normalize_to_limiter(0)

    async def test_is_a_pydantic_ai_limiter(self):
        """Test that ferrolimit's limiter is an AbstractConcurrencyLimiter, ferrolimit's and pydantic-ai's."""
        limiter = ConcurrencyLimiter(max_running=1)
        assert isinstance(limiter, AbstractConcurrencyLimiter)
        assert isinstance(limiter, pydantic_ai.concurrency.AbstractConcurrencyLimiter)

    async def test_properties(self):
        """Test the various properties of ConcurrencyLimiter."""
        limiter = ConcurrencyLimiter(max_running=5, max_queued=7, name='test-limiter')
        assert limiter.max_running == 5
        assert limiter.running_count == 0
        assert limiter.available_count == 5
        assert limiter.waiting_count == 0
        assert limiter.name == 'test-limiter'
        assert limiter._max_queued == 7

        # After acquiring one slot
        await limiter.acquire('test')
        assert limiter.running_count == 1
        assert limiter.available_count == 4
        limiter.release()
        assert limiter.running_count == 0
        assert limiter.available_count == 5

    async def test_release_from_another_task(self):
        """Test that slots are not owned by tasks: a slot acquired on one task can be released on another."""
        limiter = ConcurrencyLimiter(max_running=1)
        await limiter.acquire('test')
        assert limiter.running_count == 1

        async def release() -> None:
            limiter.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
        assert limiter.running_count == 0
        assert limiter.available_count == 1


class TestConcurrencyLimiterName:
    """Tests for ConcurrencyLimiter name parameter."""

    async def test_limiter_with_name(self):
        """Test that limiter name is properly set and accessible."""
        limiter = ConcurrencyLimiter(max_running=5, name='my-limiter')
        assert limiter.name == 'my-limiter'

    async def test_limiter_without_name(self):
        """Test that limiter name is None by default."""
        limiter = ConcurrencyLimiter(max_running=5)
        assert limiter.name is None

    async def test_from_limit_with_name(self):
        """Test creating limiter from limit with name."""
        limiter = ConcurrencyLimiter.from_limit(ConcurrencyLimit(max_running=5, max_queued=1), name='my-limit')
        assert limiter.name == 'my-limit'
        assert limiter.max_running == 5
        assert limiter._max_queued == 1


class TestGetConcurrencyContext:
    """Tests for the get_concurrency_context helper."""

    async def test_returns_context_when_provided(self):
        """Test that get_concurrency_context returns a working context."""
        limiter = ConcurrencyLimiter(max_running=1)
        async with get_concurrency_context(limiter, 'test'):
            # Should acquire and release
            assert limiter.running_count == 1
            assert limiter.available_count == 0
        assert limiter.running_count == 0
        assert limiter.available_count == 1

    async def test_returns_null_context_when_none(self):
        """Test that get_concurrency_context returns a no-op context when None."""
        entered = False
        async with get_concurrency_context(None, 'test'):
            entered = True  # Should be a no-op
        assert entered

    async def test_releases_and_propagates_on_exception(self):
        """Test that an exception in the body releases the slot and propagates unchanged."""
        limiter = ConcurrencyLimiter(max_running=1)
        error = KeyError('boom')
        with pytest.raises(KeyError) as exc_info:
            async with get_concurrency_context(limiter, 'test'):
                raise error
        assert exc_info.value is error
        assert limiter.running_count == 0

    async def test_works_with_pydantic_ai_limiter(self):
        """Test that ferrolimit's get_concurrency_context enters any AbstractConcurrencyLimiter, pydantic-ai's too."""
        limiter = pydantic_ai.concurrency.ConcurrencyLimiter(max_running=1)
        async with get_concurrency_context(limiter, 'test'):
            assert limiter.running_count == 1
        assert limiter.running_count == 0


def otel_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes without those logfire's exporter adds (`logfire.msg`, `logfire.span_type`)."""
    return {key: value for key, value in span['attributes'].items() if not key.startswith('logfire.')}


class TestConcurrencyLimiterSpans:
    """Tests for the span opened while waiting for a slot."""

    async def test_named_limiter_waiting_adds_limiter_name_attribute(self, capfire: CaptureLogfire):
        """Test that waiting with a named limiter adds limiter_name to span attributes."""
        limiter = ConcurrencyLimiter(max_running=1, name='test-pool')
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'test-source'):
                await hold.wait()

        # Start a waiter - this will trigger the span with limiter_name attribute
        async def waiter():
            async with get_concurrency_context(limiter, 'test-source'):
                pass

        async with anyio.create_task_group() as tg:
            # Start holder to occupy the slot
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1

            hold.set()

        # Verify span was created with the correct attributes
        spans = capfire.exporter.exported_spans_as_dict()
        assert len(spans) == 1
        span = spans[0]
        assert span['name'] == 'waiting for test-pool concurrency'
        attrs = span['attributes']
        assert attrs['source'] == 'test-source'
        assert attrs['limiter_name'] == 'test-pool'
        assert attrs['max_running'] == 1
        assert attrs['waiting_count'] == 1
        assert 'max_queued' not in attrs  # Should not be present when the queue is unbounded
        assert otel_attributes(span) == {
            'source': 'test-source',
            'waiting_count': 1,
            'max_running': 1,
            'limiter_name': 'test-pool',
        }

    async def test_unnamed_limiter_waiting_uses_source_in_span_name(self, capfire: CaptureLogfire):
        """Test that waiting without a limiter name uses source for span name."""
        limiter = ConcurrencyLimiter(max_running=1)  # No name
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'model:gpt-4'):
                await hold.wait()

        async def waiter():
            async with get_concurrency_context(limiter, 'model:gpt-4'):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1

            hold.set()

        # Verify span uses source in name when limiter has no name
        spans = capfire.exporter.exported_spans_as_dict()
        assert len(spans) == 1
        span = spans[0]
        assert span['name'] == 'waiting for model:gpt-4 concurrency'
        attrs = span['attributes']
        assert attrs['source'] == 'model:gpt-4'
        assert 'limiter_name' not in attrs  # Should not be present when name is None
        assert attrs['max_running'] == 1

    async def test_limiter_with_max_queued_includes_attribute_in_span(self, capfire: CaptureLogfire):
        """Test that max_queued is included in span attributes when set."""
        limiter = ConcurrencyLimiter(max_running=1, max_queued=5, name='queued-pool')
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'test'):
                await hold.wait()

        async def waiter():
            async with get_concurrency_context(limiter, 'test'):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1

            hold.set()

        # Verify max_queued is in span attributes
        spans = capfire.exporter.exported_spans_as_dict()
        assert len(spans) == 1
        attrs = spans[0]['attributes']
        assert attrs['max_queued'] == 5

    async def test_one_span_per_waiter_with_its_queue_position(self, capfire: CaptureLogfire):
        """Test that each waiter opens exactly one span, whose waiting_count counts itself and those ahead of it."""
        limiter = ConcurrencyLimiter(max_running=1, name='pool')
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'holder'):
                await hold.wait()

        async def waiter(idx: int):
            async with get_concurrency_context(limiter, f'waiter-{idx}'):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            for i in range(3):
                tg.start_soon(waiter, i)
                await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 3
            hold.set()

        spans = sorted(capfire.exporter.exported_spans_as_dict(), key=lambda span: span['attributes']['source'])
        assert [span['name'] for span in spans] == ['waiting for pool concurrency'] * 3
        assert [otel_attributes(span) for span in spans] == [
            {'source': f'waiter-{i}', 'waiting_count': i + 1, 'max_running': 1, 'limiter_name': 'pool'}
            for i in range(3)
        ]

    async def test_no_span_on_fast_path(self, capfire: CaptureLogfire):
        """Test that taking a free slot opens no span."""
        limiter = ConcurrencyLimiter(max_running=2, max_queued=0, name='fast')
        async with get_concurrency_context(limiter, 'first'), get_concurrency_context(limiter, 'second'):
            assert limiter.running_count == 2
        await limiter.acquire('third')
        limiter.release()
        assert capfire.exporter.exported_spans_as_dict() == []

    async def test_no_span_when_rejected(self, capfire: CaptureLogfire):
        """Test that a caller rejected by max_queued opens no span."""
        limiter = ConcurrencyLimiter(max_running=1, max_queued=0)
        async with get_concurrency_context(limiter, 'holder'):
            with pytest.raises(ConcurrencyLimitExceeded):
                await limiter.acquire('rejected')
        assert capfire.exporter.exported_spans_as_dict() == []

    async def test_default_tracer_is_ferrolimit(self, capfire: CaptureLogfire):
        """Test that without a tracer the span goes to the global provider, under the 'ferrolimit' scope."""
        limiter = ConcurrencyLimiter(max_running=1)
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'holder'):
                await hold.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(limiter.acquire, 'waiter')
            await anyio.wait_all_tasks_blocked()
            hold.set()
        limiter.release()

        [span] = capfire.exporter.exported_spans_as_dict(include_instrumentation_scope=True)
        assert span['name'] == 'waiting for waiter concurrency'
        assert span['instrumentation_scope'] == 'ferrolimit'


class TestConcurrencyLimiterWithTracer:
    """Tests for ConcurrencyLimiter with custom tracer."""

    async def test_custom_tracer_is_stored(self):
        """Test that custom tracer is stored and returned by _get_tracer."""
        custom_tracer = NoOpTracer()
        limiter = ConcurrencyLimiter(max_running=5, tracer=custom_tracer)

        # Verify the tracer is stored and returned
        assert limiter._get_tracer() is custom_tracer

    async def test_from_limit_with_tracer(self):
        """Test that from_limit passes tracer to the created limiter."""
        custom_tracer = NoOpTracer()
        limiter = ConcurrencyLimiter.from_limit(5, tracer=custom_tracer)
        assert limiter._get_tracer() is custom_tracer

    async def test_custom_tracer_receives_the_wait_span(self, capfire: CaptureLogfire):
        """Test that the wait span goes to the custom tracer, not to the global provider."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        limiter = ConcurrencyLimiter(max_running=1, name='traced', tracer=provider.get_tracer('custom'))
        hold = anyio.Event()

        async def holder():
            async with get_concurrency_context(limiter, 'holder'):
                await hold.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(limiter.acquire, 'waiter')
            await anyio.wait_all_tasks_blocked()
            hold.set()
        limiter.release()

        [span] = exporter.get_finished_spans()
        assert span.name == 'waiting for traced concurrency'
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == 'custom'
        assert dict(span.attributes or {}) == {
            'source': 'waiter',
            'waiting_count': 1,
            'max_running': 1,
            'limiter_name': 'traced',
        }
        assert capfire.exporter.exported_spans_as_dict() == []
        provider.shutdown()


# ---------------------------------------------------------------------------------------------------------------------
# 2. ferrolimit through pydantic-ai, with `ferrolimit.install()` in effect
# ---------------------------------------------------------------------------------------------------------------------


# pydantic-ai's agent runs need asyncio (they start asyncio tasks), whatever the limiter.
ASYNCIO_ONLY = pytest.mark.parametrize('anyio_backend', ['asyncio'])


class TestInstall:
    """The `installed` fixture really switches pydantic-ai's limiter to ferrolimit's, and back."""

    async def test_install_and_uninstall(self):
        assert type(Agent(TestModel(), max_concurrency=2)._concurrency_limiter) is not ConcurrencyLimiter
        ferrolimit.install()
        try:
            assert_ferrolimit(pydantic_ai.ConcurrencyLimiter(2))
            assert_ferrolimit(Agent(TestModel(), max_concurrency=2)._concurrency_limiter)
            assert_ferrolimit(ConcurrencyLimitedModel(TestModel(), limiter=2)._limiter)
        finally:
            ferrolimit.uninstall()
        assert type(pydantic_ai.ConcurrencyLimiter(2)) is pydantic_ai.ConcurrencyLimiter
        assert type(Agent(TestModel(), max_concurrency=2)._concurrency_limiter) is not ConcurrencyLimiter
        assert type(ConcurrencyLimitedModel(TestModel(), limiter=2)._limiter) is not ConcurrencyLimiter


@pytest.mark.usefixtures('installed')
class TestAgentConcurrency:
    """Tests for agent-level concurrency limiting."""

    @ASYNCIO_ONLY
    async def test_agent_concurrency_limit(self):
        """Test that agent respects max_concurrency."""
        agent = Agent(TestModel(), max_concurrency=2)
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        running = 0
        max_running = 0
        release = anyio.Event()

        @agent.tool_plain
        async def slow_tool() -> str:
            nonlocal running, max_running
            running += 1
            max_running = max(max_running, running)
            await release.wait()
            running -= 1
            return 'done'

        results: list[Any] = []

        async def run_agent():
            result = await agent.run('call slow_tool', model=TestModel(call_tools=['slow_tool']))
            results.append(result)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(run_agent)
            await anyio.wait_all_tasks_blocked()
            assert running == 2
            assert limiter.running_count == 2
            assert limiter.waiting_count == 3
            release.set()

        assert max_running == 2
        assert len(results) == 5
        assert limiter.running_count == 0

    @ASYNCIO_ONLY
    async def test_agent_concurrency_backpressure(self):
        """Test that agent raises when queue exceeds max_queued."""
        agent = Agent(TestModel(), name='busy', max_concurrency=ConcurrencyLimit(max_running=1, max_queued=1))
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        hold = anyio.Event()

        @agent.tool_plain
        async def hold_tool() -> str:
            await hold.wait()
            return 'done'

        async def run_agent():
            await agent.run('x', model=TestModel(call_tools=['hold_tool']))

        async with anyio.create_task_group() as tg:
            # Start 2 runs (1 running + 1 queued = at limit)
            tg.start_soon(run_agent)
            tg.start_soon(run_agent)
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1
            assert limiter.waiting_count == 1

            # Third should raise
            with pytest.raises(
                ConcurrencyLimitExceeded,
                match=exact('Concurrency queue depth (2) exceeds max_queued (1) for agent:busy'),
            ) as exc_info:
                await agent.run('x', model=TestModel(call_tools=['hold_tool']))
            assert isinstance(exc_info.value, pydantic_ai.exceptions.ConcurrencyLimitExceeded)

            hold.set()
        assert limiter.running_count == 0
        assert limiter.waiting_count == 0

    async def test_agent_no_limit_by_default(self):
        """Test that agents have no concurrency limit by default."""
        agent = Agent(TestModel())
        assert agent._concurrency_limiter is None

    async def test_none_still_means_no_limit(self):
        """Test that None remains the sanctioned 'no limiting' path."""
        assert pydantic_ai.concurrency.normalize_to_limiter(None) is None
        agent = Agent(TestModel(), max_concurrency=None)
        assert agent._concurrency_limiter is None

    async def test_agent_with_int_concurrency(self):
        """Test that agent accepts int for max_concurrency."""
        agent = Agent(TestModel(), max_concurrency=5)
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        assert limiter.max_running == 5
        assert limiter._max_queued is None

    async def test_agent_with_limiter_concurrency(self):
        """Test that agent accepts ConcurrencyLimit for max_concurrency."""
        agent = Agent(TestModel(), max_concurrency=ConcurrencyLimit(max_running=5, max_queued=10))
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        assert limiter.max_running == 5
        assert limiter._max_queued == 10

    async def test_agent_with_pydantic_ai_limit_config(self):
        """Test that agent accepts pydantic-ai's own ConcurrencyLimit for max_concurrency."""
        limit = pydantic_ai.ConcurrencyLimit(max_running=3, max_queued=4)
        agent = Agent(TestModel(), max_concurrency=limit)
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        assert limiter.max_running == 3
        assert limiter._max_queued == 4

    @pytest.mark.parametrize('max_running', [0, -1])
    async def test_agent_invalid_int_concurrency_limit(self, max_running: int):
        """Test that invalid agent concurrency limits fail eagerly at construction."""
        with pytest.raises(pydantic_ai.exceptions.UserError, match=exact(MAX_RUNNING_MESSAGE.format(max_running))):
            Agent(TestModel(), max_concurrency=max_running)


def gated_model(limiter: object, gate: anyio.Event, counter: dict[str, int]) -> ConcurrencyLimitedModel:
    """A TestModel whose requests wait on `gate`, counting concurrent requests, wrapped in ConcurrencyLimitedModel."""
    base_model = TestModel()
    original_request = TestModel.request.__get__(base_model)

    async def tracking_request(*args: Any, **kwargs: Any):
        counter['running'] += 1
        counter['max'] = max(counter['max'], counter['running'])
        try:
            await gate.wait()  # Simulate slow request
            return await original_request(*args, **kwargs)
        finally:
            counter['running'] -= 1

    base_model.request = tracking_request
    return ConcurrencyLimitedModel(base_model, limiter=limiter)  # pyright: ignore[reportArgumentType]


@pytest.mark.usefixtures('installed')
class TestConcurrencyLimitedModel:
    """Tests for the ConcurrencyLimitedModel wrapper."""

    @ASYNCIO_ONLY
    async def test_basic_concurrency_limit(self):
        """Test that ConcurrencyLimitedModel limits concurrent requests."""
        gate = anyio.Event()
        counter = {'running': 0, 'max': 0}
        model = gated_model(2, gate, counter)
        limiter = assert_ferrolimit(model._limiter)
        agent = Agent(model)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(agent.run, f'prompt {i}')
            await anyio.wait_all_tasks_blocked()
            assert counter['running'] == 2
            assert limiter.running_count == 2
            assert limiter.waiting_count == 3
            gate.set()

        assert counter['max'] == 2
        assert limiter.running_count == 0

    async def test_with_int_limiter(self):
        """Test ConcurrencyLimitedModel with int limiter."""
        model = ConcurrencyLimitedModel(TestModel(), limiter=5)
        limiter = assert_ferrolimit(model._limiter)
        assert limiter.max_running == 5
        assert limiter._max_queued is None

    async def test_with_concurrency_limit(self):
        """Test ConcurrencyLimitedModel with ConcurrencyLimit."""
        model = ConcurrencyLimitedModel(TestModel(), limiter=ConcurrencyLimit(max_running=5, max_queued=10))
        limiter = assert_ferrolimit(model._limiter)
        assert limiter.max_running == 5
        assert limiter._max_queued == 10

    async def test_with_shared_limiter(self):
        """Test ConcurrencyLimitedModel with shared ConcurrencyLimiter."""
        shared_limiter = ConcurrencyLimiter(max_running=3, name='shared-pool')
        model1 = ConcurrencyLimitedModel(TestModel(), limiter=shared_limiter)
        model2 = ConcurrencyLimitedModel(TestModel(), limiter=shared_limiter)

        # Both models should share the same limiter
        assert model1._limiter is model2._limiter is shared_limiter
        assert model1._limiter.name == 'shared-pool'

    @ASYNCIO_ONLY
    async def test_shared_limiter_limits_across_models(self):
        """Test that shared limiter limits concurrent requests across multiple models."""
        gate = anyio.Event()
        counter = {'running': 0, 'max': 0}
        shared_limiter = ConcurrencyLimiter(max_running=2)

        model1 = gated_model(shared_limiter, gate, counter)
        model2 = gated_model(shared_limiter, gate, counter)

        agent1 = Agent(model1)
        agent2 = Agent(model2)

        # Run 3 requests on each agent (6 total), but limit is 2
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(agent1.run, f'prompt {i}')
            for i in range(3):
                tg.start_soon(agent2.run, f'prompt {i}')
            await anyio.wait_all_tasks_blocked()
            assert counter['running'] == 2
            assert shared_limiter.waiting_count == 4
            gate.set()

        # Should never exceed 2 concurrent requests across both models
        assert counter['max'] == 2
        assert shared_limiter.running_count == 0

    async def test_limit_model_concurrency_helper(self):
        """Test the limit_model_concurrency helper function."""
        # With limiter
        model = limit_model_concurrency(TestModel(), limiter=5)
        assert isinstance(model, ConcurrencyLimitedModel)
        assert assert_ferrolimit(model._limiter).max_running == 5

        # With a ConcurrencyLimit
        model = limit_model_concurrency(TestModel(), limiter=ConcurrencyLimit(max_running=2, max_queued=3))
        assert isinstance(model, ConcurrencyLimitedModel)
        limiter = assert_ferrolimit(model._limiter)
        assert limiter.max_running == 2
        assert limiter._max_queued == 3

        # With an existing limiter (used as is)
        shared_limiter = ConcurrencyLimiter(max_running=1)
        model = limit_model_concurrency(TestModel(), limiter=shared_limiter)
        assert isinstance(model, ConcurrencyLimitedModel)
        assert model._limiter is shared_limiter

        # Without limiter (returns original)
        base_model = TestModel()
        model = limit_model_concurrency(base_model, limiter=None)
        assert model is base_model

        # With model name string
        model = limit_model_concurrency('test', limiter=5)
        assert isinstance(model, ConcurrencyLimitedModel)
        assert_ferrolimit(model._limiter)

    async def test_model_properties_delegated(self):
        """Test that model properties are properly delegated to wrapped model."""
        base_model = TestModel(model_name='custom-test')
        model = ConcurrencyLimitedModel(base_model, limiter=5)

        assert model.model_name == 'custom-test'
        assert model.system == 'test'


class TestAgentWithSharedLimiter:
    """Tests for agent with shared ConcurrencyLimiter."""

    async def test_agent_with_shared_limiter(self, installed: None):
        """Test that agents can share a ConcurrencyLimiter."""
        shared_limiter = ConcurrencyLimiter(max_running=2)

        agent1 = Agent(TestModel(), max_concurrency=shared_limiter)
        agent2 = Agent(TestModel(), max_concurrency=shared_limiter)

        # Both agents should share the same limiter
        assert agent1._concurrency_limiter is agent2._concurrency_limiter is shared_limiter

    @ASYNCIO_ONLY
    @pytest.mark.parametrize('install', [True, False], ids=['installed', 'not-installed'])
    async def test_shared_limiter_limits_across_agents(self, install: bool):
        """Test that a ferrolimit limiter shared by two agents limits their runs together.

        Without `install()`, pydantic-ai enters the ferrolimit limiter through its own `get_concurrency_context`.
        """
        if install:
            ferrolimit.install()
        try:
            shared_limiter = ConcurrencyLimiter(max_running=1, name='agents')
            agents = [Agent(TestModel(), max_concurrency=shared_limiter) for _ in range(2)]
            assert all(agent._concurrency_limiter is shared_limiter for agent in agents)
            release = anyio.Event()
            running = 0
            max_running = 0

            async def slow_tool() -> str:
                nonlocal running, max_running
                running += 1
                max_running = max(max_running, running)
                await release.wait()
                running -= 1
                return 'done'

            for agent in agents:
                agent.tool_plain(slow_tool)

            async with anyio.create_task_group() as tg:
                for agent in agents:
                    tg.start_soon(agent.run, 'x')
                await anyio.wait_all_tasks_blocked()
                assert running == 1
                assert shared_limiter.running_count == 1
                assert shared_limiter.waiting_count == 1
                release.set()
            assert max_running == 1
            assert shared_limiter.running_count == 0
        finally:
            if install:
                ferrolimit.uninstall()


@ASYNCIO_ONLY
@pytest.mark.usefixtures('installed')
class TestSpansThroughPydanticAI:
    """The wait span, for limiters pydantic-ai created through ferrolimit."""

    async def test_agent_waiting_span(self, capfire: CaptureLogfire):
        """Test that a queued agent run opens one span, named after the agent's source."""
        agent = Agent(TestModel(), name='spanned', max_concurrency=ConcurrencyLimit(max_running=1, max_queued=3))
        limiter = assert_ferrolimit(agent._concurrency_limiter)
        hold = anyio.Event()

        @agent.tool_plain
        async def hold_tool() -> str:
            await hold.wait()
            return 'done'

        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, 'x')
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1
            tg.start_soon(agent.run, 'x')
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1
            hold.set()

        spans = capfire.exporter.exported_spans_as_dict(include_instrumentation_scope=True)
        assert len(spans) == 1
        span = spans[0]
        assert span['name'] == 'waiting for agent:spanned concurrency'
        assert span['instrumentation_scope'] == 'ferrolimit'
        assert otel_attributes(span) == {
            'source': 'agent:spanned',
            'waiting_count': 1,
            'max_running': 1,
            'max_queued': 3,
        }

    async def test_model_waiting_span(self, capfire: CaptureLogfire):
        """Test that a queued model request opens one span, named after the model's source."""
        gate = anyio.Event()
        counter = {'running': 0, 'max': 0}
        model = gated_model(1, gate, counter)
        limiter = assert_ferrolimit(model._limiter)
        agent = Agent(model)

        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, 'first')
            await anyio.wait_all_tasks_blocked()
            assert limiter.running_count == 1
            tg.start_soon(agent.run, 'second')
            await anyio.wait_all_tasks_blocked()
            assert limiter.waiting_count == 1
            gate.set()

        spans = capfire.exporter.exported_spans_as_dict()
        assert len(spans) == 1
        span = spans[0]
        assert span['name'] == 'waiting for model:test concurrency'
        assert otel_attributes(span) == {'source': 'model:test', 'waiting_count': 1, 'max_running': 1}

    async def test_named_shared_limiter_span(self, capfire: CaptureLogfire):
        """Test that a named limiter shared by models names the span after the limiter."""
        gate = anyio.Event()
        counter = {'running': 0, 'max': 0}
        shared_limiter = ConcurrencyLimiter(max_running=1, max_queued=2, name='openai-pool')
        agents = [Agent(gated_model(shared_limiter, gate, counter)) for _ in range(2)]

        async with anyio.create_task_group() as tg:
            tg.start_soon(agents[0].run, 'first')
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(agents[1].run, 'second')
            await anyio.wait_all_tasks_blocked()
            assert shared_limiter.waiting_count == 1
            gate.set()

        spans = capfire.exporter.exported_spans_as_dict()
        assert len(spans) == 1
        span = spans[0]
        assert span['name'] == 'waiting for openai-pool concurrency'
        assert otel_attributes(span) == {
            'source': 'model:test',
            'waiting_count': 1,
            'max_running': 1,
            'limiter_name': 'openai-pool',
            'max_queued': 2,
        }

    async def test_no_span_without_waiting(self, capfire: CaptureLogfire):
        """Test that agent runs and model requests that find a free slot open no span."""
        agent = Agent(ConcurrencyLimitedModel(TestModel(), limiter=1), max_concurrency=1)
        assert_ferrolimit(agent._concurrency_limiter)
        for _ in range(2):
            result = await agent.run('x')
            assert result.output
        assert capfire.exporter.exported_spans_as_dict() == []


@pytest.mark.usefixtures('installed')
class TestConcurrencyLimitedModelMethods:
    """Tests for ConcurrencyLimitedModel count_tokens and request_stream methods."""

    async def test_count_tokens(self):
        """Test that count_tokens delegates to wrapped model with concurrency limiting."""
        base_model = TestModel()
        model = ConcurrencyLimitedModel(base_model, limiter=5)
        limiter = assert_ferrolimit(model._limiter)
        running_during_call: list[int] = []

        async def count_tokens(*args: Any, **kwargs: Any) -> RequestUsage:
            running_during_call.append(limiter.running_count)
            return RequestUsage()

        # Mock count_tokens to return a value
        base_model.count_tokens = AsyncMock(side_effect=count_tokens)

        # count_tokens should delegate to wrapped model
        usage = await model.count_tokens([], None, ModelRequestParameters())
        assert usage is not None
        base_model.count_tokens.assert_called_once()
        assert running_during_call == [1]
        assert limiter.running_count == 0

    async def test_request_stream(self):
        """Test that request_stream is called with concurrency limiting."""
        base_model = TestModel()
        model = ConcurrencyLimitedModel(base_model, limiter=5)
        limiter = assert_ferrolimit(model._limiter)

        # request_stream should work
        events = 0
        async with model.request_stream([], None, ModelRequestParameters()) as stream:
            assert limiter.running_count == 1
            # Consume the stream
            async for _ in stream:
                events += 1
        assert events > 0
        assert limiter.running_count == 0

    async def test_request_stream_rejected_when_saturated(self):
        """Test that request_stream raises ConcurrencyLimitExceeded when the slot is held and no queue is allowed."""
        base_model = TestModel()
        model = ConcurrencyLimitedModel(base_model, limiter=ConcurrencyLimit(max_running=1, max_queued=0))
        limiter = assert_ferrolimit(model._limiter)

        async with model.request_stream([], None, ModelRequestParameters()):
            with pytest.raises(
                ConcurrencyLimitExceeded,
                match=exact('Concurrency queue depth (1) exceeds max_queued (0) for model:test'),
            ):
                async with model.request_stream([], None, ModelRequestParameters()):
                    pass  # pragma: no cover
            assert limiter.running_count == 1
        assert limiter.running_count == 0
