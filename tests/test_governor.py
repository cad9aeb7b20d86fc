"""`ConcurrencyGovernor`: the seed's behaviours, the starvation case it got wrong (queued tool calls
sat on global permits), permits, bad input, cancellation at either level and stress."""

from __future__ import annotations

import gc
import random

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from ferrolimit import ConcurrencyGovernor, ConcurrencyLimiter, ConcurrencyPermit, GovernorStats, UserError

pytestmark = pytest.mark.anyio


def layers(gov: ConcurrencyGovernor) -> list[tuple[int, int]]:
    """`(running, waiting)` of the stream, tool and global limiters."""
    limiters = [gov.stream_limiter, gov.tool_limiter, gov.global_limiter]
    return [(limiter.running_count, limiter.waiting_count) for limiter in limiters]


def assert_idle(gov: ConcurrencyGovernor) -> None:
    stats = gov.stats()
    assert (stats.streams_available, stats.tools_available, stats.global_available) == (
        stats.streams_max,
        stats.tools_max,
        stats.global_max,
    )
    assert layers(gov) == [(0, 0)] * 3


def take_tool(gov: ConcurrencyGovernor) -> ConcurrencyPermit:
    permit = gov.try_tool()
    assert permit is not None
    return permit


# The seed's six tests, ported.


def test_governor_limits_concurrent_operations() -> None:
    gov = ConcurrencyGovernor(2, 2, 4)
    p1 = take_tool(gov)
    p2 = take_tool(gov)
    assert gov.try_tool() is None
    p1.release()
    p3 = gov.try_tool()
    assert p3 is not None
    p2.release()
    p3.release()
    assert_idle(gov)


async def test_permits_released_on_exit() -> None:
    gov = ConcurrencyGovernor(1, 1, 2)
    async with gov.tool():
        assert gov.stats().tools_available == 0
        assert gov.stats().global_available == 1
    assert gov.stats().tools_available == 1
    assert gov.stats().global_available == 2


async def test_try_tool_returns_none_at_capacity() -> None:
    gov = ConcurrencyGovernor(1, 1, 1)
    async with gov.tool():
        assert gov.try_tool() is None


async def test_stats_report_correct_values() -> None:
    gov = ConcurrencyGovernor(max_streams=4, max_tools=8, max_global=16)
    stats = gov.stats()
    assert (stats.streams_available, stats.streams_max) == (4, 4)
    assert (stats.tools_available, stats.tools_max) == (8, 8)
    assert (stats.global_available, stats.global_max) == (16, 16)
    async with gov.stream():
        stats = gov.stats()
        assert (stats.streams_available, stats.global_available) == (3, 15)
        async with gov.tool():
            stats = gov.stats()
            assert (stats.tools_available, stats.global_available) == (7, 14)


async def test_global_limit_caps_total_operations() -> None:
    gov = ConcurrencyGovernor(4, 4, 2)
    async with gov.tool(), gov.stream():
        assert gov.try_tool() is None
        assert gov.try_stream() is None


def test_default_values() -> None:
    stats = ConcurrencyGovernor().stats()
    assert (stats.streams_max, stats.tools_max, stats.global_max) == (4, 8, 16)


# Beyond the seed.


async def test_a_stream_starts_at_once_while_tools_are_saturated_with_a_long_queue() -> None:
    """The seed's flaw: queued tool calls each held a global permit, so streams starved while
    the global limit was not really in use. Here a stream goes straight in."""
    gov = ConcurrencyGovernor(max_streams=4, max_tools=8, max_global=16)
    release_tools = anyio.Event()
    streamed: list[int] = []

    async def tool() -> None:
        async with gov.tool():
            await release_tools.wait()

    async def stream(i: int) -> None:
        async with gov.stream(f'stream:{i}'):
            streamed.append(i)

    async with anyio.create_task_group() as tg:
        for _ in range(108):
            tg.start_soon(tool)
        await anyio.wait_all_tasks_blocked()
        assert layers(gov) == [(0, 0), (8, 100), (8, 0)]
        assert gov.stats().global_available == 8
        for i in range(4):
            tg.start_soon(stream, i)
        await anyio.wait_all_tasks_blocked()
        # Every stream got in without waiting, however long the tool queue.
        assert sorted(streamed) == [0, 1, 2, 3]
        assert gov.stream_limiter.stats().acquired_total == 4
        assert gov.stream_limiter.stats().waiting == 0
        permit = gov.try_stream()
        assert permit is not None
        assert layers(gov) == [(1, 0), (8, 100), (9, 0)]
        permit.release()
        release_tools.set()
    assert_idle(gov)


async def test_a_stream_queues_at_the_global_level_behind_earlier_callers_only() -> None:
    """With global as the bottleneck, a stream waits in the global FIFO behind tool callers that
    hold a tool slot, never behind tool callers still waiting for one."""
    gov = ConcurrencyGovernor(max_streams=2, max_tools=3, max_global=2)
    order: list[str] = []
    gates = {name: anyio.Event() for name in ('t1', 't2', 't3', 't4', 's1')}

    async def run(name: str) -> None:
        async with gov.stream(name) if name.startswith('s') else gov.tool(name):
            order.append(name)
            await gates[name].wait()

    async with anyio.create_task_group() as tg:
        for name in ('t1', 't2', 't3', 't4', 's1'):
            tg.start_soon(run, name)
            await anyio.wait_all_tasks_blocked()
        # t1, t2 run; t3 holds a tool slot and waits for global; t4 waits for a tool slot;
        # s1 holds a stream slot and waits for global, behind t3.
        assert layers(gov) == [(1, 0), (3, 1), (2, 2)]
        gates['t1'].set()
        await anyio.wait_all_tasks_blocked()
        assert order == ['t1', 't2', 't3']  # t4 got t1's tool slot and now queues behind s1
        gates['t2'].set()
        await anyio.wait_all_tasks_blocked()
        assert order == ['t1', 't2', 't3', 's1']
        for name in ('t3', 's1', 't4'):
            gates[name].set()
    assert order == ['t1', 't2', 't3', 's1', 't4']
    assert_idle(gov)


async def test_context_managers_release_both_on_an_exception() -> None:
    gov = ConcurrencyGovernor(1, 1, 1)
    error = KeyError('boom')
    with pytest.raises(KeyError) as info:
        async with gov.stream():
            assert layers(gov) == [(1, 0), (0, 0), (1, 0)]
            raise error
    assert info.value is error
    assert_idle(gov)


def test_try_tool_gives_a_permit_that_releases_both() -> None:
    gov = ConcurrencyGovernor(1, 1, 2)
    permit = take_tool(gov)
    assert isinstance(permit, ConcurrencyPermit)
    assert not permit.released
    assert layers(gov) == [(0, 0), (1, 0), (1, 0)]
    assert gov.try_tool() is None
    permit.release()
    assert permit.released
    assert_idle(gov)


def test_a_permit_is_a_context_manager() -> None:
    gov = ConcurrencyGovernor(1, 1, 1)
    with take_tool(gov) as permit:
        assert isinstance(permit, ConcurrencyPermit)
        assert gov.try_stream() is None
    assert permit.released
    assert_idle(gov)
    with take_tool(gov) as permit:
        permit.release()  # an early release: leaving the block does not release again
    assert_idle(gov)


def test_double_release_is_a_clear_error_and_changes_nothing() -> None:
    gov = ConcurrencyGovernor(1, 2, 2)
    permit = take_tool(gov)
    other = take_tool(gov)
    permit.release()
    with pytest.raises(ValueError, match='^permit already released$'):
        permit.release()
    assert layers(gov) == [(0, 0), (1, 0), (1, 0)]
    other.release()
    assert_idle(gov)


def test_a_permit_dropped_while_held_is_released() -> None:
    gov = ConcurrencyGovernor(1, 1, 1)
    permit = take_tool(gov)
    assert repr(permit) == '<ConcurrencyPermit tool held>'
    del permit
    gc.collect()
    assert_idle(gov)


def test_try_stream() -> None:
    gov = ConcurrencyGovernor(1, 1, 2)
    permit = gov.try_stream()
    assert permit is not None
    assert gov.try_stream() is None
    assert take_tool(gov) is not None  # released at once: nothing keeps it
    assert layers(gov) == [(1, 0), (0, 0), (1, 0)]
    permit.release()
    assert_idle(gov)


def test_the_three_limiters() -> None:
    gov = ConcurrencyGovernor(2, 3, 4)
    assert isinstance(gov.stream_limiter, ConcurrencyLimiter)
    assert gov.stream_limiter.parent is gov.global_limiter
    assert gov.tool_limiter.parent is gov.global_limiter
    assert gov.global_limiter.parent is None
    assert [gov.stream_limiter.name, gov.tool_limiter.name, gov.global_limiter.name] == ['stream', 'tool', 'global']
    assert [gov.stream_limiter.max_running, gov.tool_limiter.max_running, gov.global_limiter.max_running] == [2, 3, 4]
    # Taking a slot through a limiter is taking it through the governor.
    assert gov.tool_limiter.try_acquire()
    assert layers(gov) == [(0, 0), (1, 0), (1, 0)]
    gov.tool_limiter.release()
    assert_idle(gov)


def test_stats_and_repr() -> None:
    gov = ConcurrencyGovernor(2, 3, 4)
    stats = gov.stats()
    assert isinstance(stats, GovernorStats)
    assert repr(stats) == (
        'GovernorStats(streams_available=2, streams_max=2, tools_available=3, tools_max=3, '
        'global_available=4, global_max=4)'
    )
    assert repr(gov) == (
        'ConcurrencyGovernor(max_streams=2, max_tools=3, max_global=4, streams_available=2, '
        'tools_available=3, global_available=4)'
    )


@pytest.mark.parametrize(
    ('kwargs', 'error', 'message'),
    [
        ({'max_streams': 0}, UserError, 'max_streams must be >= 1, got 0'),
        ({'max_tools': -1}, UserError, 'max_tools must be >= 1, got -1'),
        ({'max_global': 0}, UserError, 'max_global must be >= 1, got 0'),
        ({'max_streams': 0, 'max_global': 0}, UserError, 'max_streams must be >= 1, got 0'),
        ({'max_tools': 2**31}, ValueError, 'max_tools must be <= 2147483647, got 2147483648'),
        ({'max_global': 10**40}, ValueError, f'max_global must be <= 2147483647, got {10**40}'),
        ({'max_streams': '4'}, TypeError, 'max_streams must be an int, got str'),
        ({'max_tools': None}, TypeError, 'max_tools must be an int, got NoneType'),
        ({'max_global': 1.5}, TypeError, 'max_global must be an int, got float'),
    ],
)
def test_invalid_limits(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        ConcurrencyGovernor(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert type(info.value) is error


async def test_a_global_limit_below_the_categories_is_the_effective_limit() -> None:
    """Decision: accepted; global is then each category's effective limit, shared FIFO."""
    gov = ConcurrencyGovernor(max_streams=4, max_tools=8, max_global=3)
    tools = [take_tool(gov) for _ in range(3)]
    assert gov.try_tool() is None
    assert gov.try_stream() is None
    stats = gov.stats()
    assert (stats.tools_available, stats.global_available) == (5, 0)
    for permit in tools:
        permit.release()
    assert_idle(gov)


async def test_cancelling_a_waiter_for_its_category_leaks_nothing() -> None:
    gov = ConcurrencyGovernor(1, 1, 4)
    async with gov.tool():
        with anyio.move_on_after(0.01):
            async with gov.tool():
                pytest.fail('got through')  # pragma: no cover
        assert layers(gov) == [(0, 0), (1, 0), (1, 0)]
    assert_idle(gov)
    assert gov.tool_limiter.stats().cancelled_total == 1


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_cancelling_a_waiter_for_the_global_slot_leaks_nothing(order: str) -> None:
    """Cancelled while it waits for a global slot: its tool slot goes back, and a global slot
    handed to it at that instant passes to the next waiter."""
    gov = ConcurrencyGovernor(max_streams=2, max_tools=2, max_global=1)
    entered: list[str] = []

    async def tool(name: str) -> None:
        async with gov.tool(name):
            entered.append(name)

    async def stream(name: str) -> None:
        async with gov.stream(name):
            entered.append(name)

    holder = gov.try_stream()
    assert holder is not None
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def cancellable() -> None:
            with scope:
                await tool('cancelled')

        tg.start_soon(cancellable)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(stream, 'next')
        await anyio.wait_all_tasks_blocked()
        assert layers(gov) == [(2, 0), (1, 0), (1, 2)]
        if order == 'releasefirst':
            holder.release()
            scope.cancel()
        else:
            scope.cancel()
            holder.release()
    assert entered[-1] == 'next'
    if order == 'cancelfirst':
        assert entered == ['next']
    assert_idle(gov)


async def test_a_timeout_at_the_global_level_gives_the_tool_slot_back() -> None:
    gov = ConcurrencyGovernor(max_streams=1, max_tools=1, max_global=1)
    async with gov.stream():
        with pytest.raises(TimeoutError, match='^timed out waiting for global concurrency$'):
            await gov.tool_limiter.acquire('late', timeout=0.01)
        assert layers(gov) == [(1, 0), (0, 0), (1, 0)]
    assert_idle(gov)


async def test_spans_name_the_layer_waited_at(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    gov = ConcurrencyGovernor(max_streams=1, max_tools=2, max_global=1, tracer=tracer)
    async with gov.tool('fast'):
        pass
    assert exporter.get_finished_spans() == ()
    holder = gov.try_tool()
    assert holder is not None
    async with anyio.create_task_group() as tg:

        async def enter() -> None:
            async with gov.tool('tool:search'):
                pass

        tg.start_soon(enter)
        await anyio.wait_all_tasks_blocked()
        holder.release()
    (span,) = exporter.get_finished_spans()
    assert span.name == 'waiting for global concurrency'
    assert dict(span.attributes or {}) == {
        'source': 'tool:search',
        'waiting_count': 1,
        'max_running': 1,
        'limiter_name': 'global',
    }


async def test_many_streams_and_tools_keep_every_limit() -> None:
    gov = ConcurrencyGovernor(max_streams=3, max_tools=4, max_global=5)
    inside = {'stream': 0, 'tool': 0}
    limits = {'stream': 3, 'tool': 4}
    violations: list[dict[str, int]] = []
    rng = random.Random(7)

    async def worker(kind: str, give_up: bool) -> None:
        with anyio.CancelScope() as scope:
            if give_up:
                scope.cancel()
            async with gov.stream() if kind == 'stream' else gov.tool():
                inside[kind] += 1
                try:
                    if inside[kind] > limits[kind] or sum(inside.values()) > 5:
                        violations.append(dict(inside))
                    await anyio.lowlevel.checkpoint()
                finally:
                    inside[kind] -= 1

    async with anyio.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(worker, rng.choice(['stream', 'tool']), rng.random() < 0.2)
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()
    assert violations == []
    assert_idle(gov)
