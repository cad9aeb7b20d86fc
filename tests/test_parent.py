"""Nested limiters, `ConcurrencyLimiter(..., parent=other)`: a slot of the child and of the parent,
the parent's taken only once the child's is held, released together, at both levels on cancel,
timeout, rejection, threads and stress."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from handoff import cancel_at_handoff
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

pytestmark = pytest.mark.anyio


def counts(limiter: ConcurrencyLimiter) -> tuple[int, int, int]:
    """`(running, waiting, available)`."""
    return limiter.running_count, limiter.waiting_count, limiter.available_count


def pair(child_max: int, parent_max: int, **parent_kwargs: object) -> tuple[ConcurrencyLimiter, ConcurrencyLimiter]:
    parent = ConcurrencyLimiter(parent_max, name='parent', **parent_kwargs)  # type: ignore[arg-type]
    return ConcurrencyLimiter(child_max, name='child', parent=parent), parent


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `condition()` holds (for state that another thread changes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('condition not reached in time')
        time.sleep(0.001)


def test_parent_property() -> None:
    child, parent = pair(1, 1)
    assert child.parent is parent
    assert parent.parent is None
    assert ConcurrencyLimiter(1, parent=None).parent is None


def test_parent_must_be_a_ferrolimit_limiter() -> None:
    with pytest.raises(TypeError, match='^parent must be a ferrolimit ConcurrencyLimiter or None, got int$'):
        ConcurrencyLimiter(1, parent=3)  # type: ignore[arg-type]
    pydantic_ai_concurrency = pytest.importorskip('pydantic_ai.concurrency')
    other = pydantic_ai_concurrency.ConcurrencyLimiter(1)
    with pytest.raises(TypeError, match='^parent must be a ferrolimit ConcurrencyLimiter or None, got'):
        ConcurrencyLimiter(1, parent=other)


def test_a_subclass_can_be_a_parent() -> None:
    class Named(ConcurrencyLimiter):
        pass

    parent = Named(1)
    child = ConcurrencyLimiter(1, parent=parent)
    assert child.try_acquire()
    assert (child.running_count, parent.running_count) == (1, 1)
    child.release()
    assert parent.available_count == 1


async def test_acquire_and_release_take_and_give_both() -> None:
    child, parent = pair(3, 4)
    await child.acquire('a')
    assert (counts(child), counts(parent)) == ((1, 0, 2), (1, 0, 3))
    async with child, child('b'):
        assert (counts(child), counts(parent)) == ((3, 0, 0), (3, 0, 1))
    child.release()
    assert (counts(child), counts(parent)) == ((0, 0, 3), (0, 0, 4))
    assert (child.stats().acquired_total, parent.stats().acquired_total) == (3, 3)


async def test_an_exception_in_the_body_releases_both_and_propagates() -> None:
    child, parent = pair(1, 1)
    error = KeyError('boom')
    with pytest.raises(KeyError) as info:
        async with child('x'):
            raise error
    assert info.value is error
    assert (counts(child), counts(parent)) == ((0, 0, 1), (0, 0, 1))


def test_try_acquire_takes_both_or_neither() -> None:
    child, parent = pair(2, 1)
    assert parent.try_acquire()
    assert not child.try_acquire()
    assert (counts(child), counts(parent)) == ((0, 0, 2), (1, 0, 0))
    parent.release()
    assert child.try_acquire()
    assert (counts(child), counts(parent)) == ((1, 0, 1), (1, 0, 0))
    child.release()


async def test_release_without_a_matching_acquire_raises_and_changes_nothing() -> None:
    child, parent = pair(2, 1)
    with pytest.raises(ValueError, match='^semaphore released too many times for child$'):
        child.release()
    await parent.acquire('sibling')
    async with anyio.create_task_group() as tg:
        tg.start_soon(child.acquire, 'waits-for-the-parent')
        await anyio.wait_all_tasks_blocked()
        # The waiter holds a child slot, but no caller holds both: nothing to release.
        assert (counts(child), counts(parent)) == ((1, 0, 1), (1, 1, 0))
        with pytest.raises(ValueError, match='^semaphore released too many times for child$'):
            child.release()
        assert (counts(child), counts(parent)) == ((1, 0, 1), (1, 1, 0))
        parent.release()
    child.release()
    assert (counts(child), counts(parent)) == ((0, 0, 2), (0, 0, 1))


async def test_a_caller_queued_for_the_child_holds_nothing_of_the_parent() -> None:
    child, parent = pair(1, 3)
    await child.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(child.acquire, f'w{i}')
        await anyio.wait_all_tasks_blocked()
        assert counts(child) == (1, 20, 0)
        assert counts(parent) == (1, 0, 2)
        # The parent's free slots are still there for anyone else.
        assert parent.try_acquire()
        assert parent.try_acquire()
        parent.release()
        parent.release()
        tg.cancel_scope.cancel()
    child.release()
    assert (counts(child), counts(parent)) == ((0, 0, 1), (0, 0, 3))
    assert child.stats().cancelled_total == 20


async def test_a_caller_waiting_for_the_parent_holds_the_child_slot() -> None:
    child, parent = pair(2, 1)
    entered: list[str] = []

    async def enter() -> None:
        async with child('w'):
            entered.append('w')

    await parent.acquire('sibling')
    async with anyio.create_task_group() as tg:
        tg.start_soon(enter)
        await anyio.wait_all_tasks_blocked()
        assert (counts(child), counts(parent)) == ((1, 0, 1), (1, 1, 0))
        parent.release()
    assert entered == ['w']
    assert (counts(child), counts(parent)) == ((0, 0, 2), (0, 0, 1))


async def test_waiters_of_sibling_children_are_served_fifo_at_the_parent() -> None:
    parent = ConcurrencyLimiter(1)
    a = ConcurrencyLimiter(5, parent=parent)
    b = ConcurrencyLimiter(5, parent=parent)
    order: list[str] = []

    async def enter(limiter: ConcurrencyLimiter, name: str) -> None:
        async with limiter(name):
            order.append(name)

    await parent.acquire('holder')
    async with anyio.create_task_group() as tg:
        for limiter, name in [(b, 'b1'), (a, 'a1'), (b, 'b2'), (a, 'a2')]:
            tg.start_soon(enter, limiter, name)
            await anyio.wait_all_tasks_blocked()
        assert parent.waiting_count == 4
        parent.release()
    assert order == ['b1', 'a1', 'b2', 'a2']


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_cancel_while_waiting_for_the_child(order: str) -> None:
    child, parent = pair(1, 2)

    def queued() -> None:
        assert (counts(child), counts(parent)) == ((1, 2, 0), (1, 0, 1))

    await child.acquire('holder')
    entered = await cancel_at_handoff(child, child, child.release, order, queued)
    assert entered[-1] == 'next'
    if order == 'cancelfirst':
        assert entered == ['next']
    assert (counts(child), counts(parent)) == ((0, 0, 1), (0, 0, 2))


@pytest.mark.parametrize('order', ['releasefirst', 'cancelfirst'])
async def test_cancel_while_waiting_for_the_parent(order: str) -> None:
    """Cancelled at the parent's level: the child slot goes back, and a parent slot handed over at
    that instant passes to the next waiter at the parent."""
    child, parent = pair(2, 1)
    sibling = ConcurrencyLimiter(1, parent=parent)

    def queued() -> None:
        assert (counts(child), counts(sibling), counts(parent)) == ((1, 0, 1), (1, 0, 0), (1, 2, 0))

    await parent.acquire('holder')
    entered = await cancel_at_handoff(child, sibling, parent.release, order, queued)
    assert entered[-1] == 'next'
    if order == 'cancelfirst':
        assert entered == ['next']
    assert (counts(child), counts(sibling), counts(parent)) == ((0, 0, 2), (0, 0, 1), (0, 0, 1))


async def test_cancelling_waiters_at_both_levels_at_once_leaks_nothing() -> None:
    child, parent = pair(3, 1)
    await parent.acquire('holder')
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(child.acquire, f'w{i}')
        await anyio.wait_all_tasks_blocked()
        # Three hold a child slot and wait for the parent; the rest wait for the child.
        assert (counts(child), counts(parent)) == ((3, 47, 0), (1, 3, 0))
        tg.cancel_scope.cancel()
    assert (counts(child), counts(parent)) == ((0, 0, 3), (1, 0, 0))
    parent.release()
    assert parent.available_count == 1


async def test_timeout_while_waiting_for_the_parent_releases_the_child_slot() -> None:
    child, parent = pair(1, 1)
    await parent.acquire('holder')
    with pytest.raises(TimeoutError, match='^timed out waiting for parent concurrency$'):
        await child.acquire('late', timeout=0.01)
    assert (counts(child), counts(parent)) == ((0, 0, 1), (1, 0, 0))
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            await child.acquire('late')
    assert (counts(child), counts(parent)) == ((0, 0, 1), (1, 0, 0))
    assert parent.stats().cancelled_total == 2
    parent.release()
    await child.acquire('now', timeout=0)
    child.release()


async def test_a_timeout_after_waiting_at_both_levels_leaks_nothing() -> None:
    child, parent = pair(1, 1)
    await child.acquire('holder')
    async with anyio.create_task_group() as tg:

        async def late() -> None:
            # One time limit for the whole wait; it runs out at the parent's level (unless the
            # machine is slow enough for it to run out at the child's).
            with pytest.raises(TimeoutError, match='^timed out waiting for (child|parent) concurrency$'):
                await child.acquire('late', timeout=0.2)

        tg.start_soon(late)
        await anyio.wait_all_tasks_blocked()
        # Hand the child slot over while keeping the parent's: the caller goes on to wait there.
        sibling = ConcurrencyLimiter(1, parent=parent)
        tg.start_soon(sibling.acquire, 'sibling')
        await anyio.wait_all_tasks_blocked()
        child.release()
    assert (counts(child), counts(parent)) == ((0, 0, 1), (1, 0, 0))
    sibling.release()
    assert parent.available_count == 1


async def test_a_full_parent_queue_rejects_and_gives_the_child_slot_back() -> None:
    child, parent = pair(1, 1, max_queued=0)
    await parent.acquire('holder')
    with pytest.raises(
        ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(1\) exceeds max_queued \(0\) for parent$'
    ):
        await child.acquire('x')
    assert (counts(child), counts(parent)) == ((0, 0, 1), (1, 0, 0))
    parent.release()


async def test_three_levels_cancelled_at_the_top_give_back_both_lower_slots() -> None:
    root = ConcurrencyLimiter(1, name='root')
    middle = ConcurrencyLimiter(2, parent=root)
    leaf = ConcurrencyLimiter(3, parent=middle)
    await root.acquire('holder')
    with anyio.move_on_after(0.01):
        await leaf.acquire('x')
    assert (counts(leaf), counts(middle), counts(root)) == ((0, 0, 3), (0, 0, 2), (1, 0, 0))
    root.release()
    async with leaf('y'):
        assert (leaf.running_count, middle.running_count, root.running_count) == (1, 1, 1)
    assert (counts(leaf), counts(middle), counts(root)) == ((0, 0, 3), (0, 0, 2), (0, 0, 1))


def test_resizing_the_child_leaves_the_parent_alone() -> None:
    child, parent = pair(1, 2)
    child.max_running = 3
    assert (child.max_running, parent.max_running) == (3, 2)
    assert child.try_acquire()
    assert child.try_acquire()
    assert not child.try_acquire()  # the parent is full
    assert (counts(child), counts(parent)) == ((2, 0, 1), (2, 0, 0))
    child.release()
    child.release()


async def test_a_wait_at_each_level_opens_that_levels_span(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    outer = ConcurrencyLimiter(1, name='outer', tracer=tracer)
    inner = ConcurrencyLimiter(1, name='inner', parent=outer, tracer=tracer)
    blocker = ConcurrencyLimiter(1, parent=outer)
    async with inner('fast'):
        pass
    assert exporter.get_finished_spans() == ()

    await inner.acquire('holder')
    release_blocker = anyio.Event()

    async def hold_outer() -> None:
        async with blocker('blocker'):
            await release_blocker.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(inner.acquire, 'model:a')  # waits for the inner slot
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold_outer)  # waits for the outer slot
        await anyio.wait_all_tasks_blocked()
        inner.release()  # inner slot to 'model:a', outer slot to the blocker
        await anyio.wait_all_tasks_blocked()
        assert (counts(inner), counts(outer)) == ((1, 0, 0), (1, 1, 0))
        release_blocker.set()
    inner.release()
    # trio may resume the two woken tasks in either order: compare without it.
    spans = sorted((span.name, sorted((span.attributes or {}).items())) for span in exporter.get_finished_spans())
    assert spans == sorted(
        (name, sorted(attributes.items()))
        for name, attributes in [
            (
                'waiting for inner concurrency',
                {'source': 'model:a', 'waiting_count': 1, 'max_running': 1, 'limiter_name': 'inner'},
            ),
            (
                'waiting for outer concurrency',
                {'source': 'blocker', 'waiting_count': 1, 'max_running': 1, 'limiter_name': 'outer'},
            ),
            (
                'waiting for outer concurrency',
                {'source': 'model:a', 'waiting_count': 1, 'max_running': 1, 'limiter_name': 'outer'},
            ),
        ]
    )


def test_blocking_takes_both_levels() -> None:
    child, parent = pair(1, 2)
    child.acquire_blocking('a')
    assert (counts(child), counts(parent)) == ((1, 0, 0), (1, 0, 1))
    child.release()
    with child.blocking('b'):
        assert (counts(child), counts(parent)) == ((1, 0, 0), (1, 0, 1))
    assert (counts(child), counts(parent)) == ((0, 0, 1), (0, 0, 2))


def test_blocking_timeout_at_the_parent_releases_the_child_slot() -> None:
    child, parent = pair(1, 1)
    parent.acquire_blocking('holder')
    with pytest.raises(TimeoutError, match='^timed out waiting for parent concurrency$'):
        child.acquire_blocking('late', timeout=0.02)
    with pytest.raises(TimeoutError), child.blocking('late', timeout=0):
        pass  # pragma: no cover
    assert (counts(child), counts(parent)) == ((0, 0, 1), (1, 0, 0))
    parent.release()


def test_a_blocked_thread_waits_at_the_parent_and_is_woken_by_a_release() -> None:
    child, parent = pair(2, 1)
    parent.acquire_blocking('holder')
    done = threading.Event()

    def worker() -> None:
        with child.blocking('thread'):
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    wait_until(lambda: parent.waiting_count == 1)
    assert child.running_count == 1
    parent.release()
    thread.join(timeout=10)
    assert done.is_set()
    assert (counts(child), counts(parent)) == ((0, 0, 2), (0, 0, 1))


async def test_many_tasks_on_two_children_keep_the_invariants_at_both_levels() -> None:
    parent = ConcurrencyLimiter(4, name='parent')
    children = [ConcurrencyLimiter(3, parent=parent), ConcurrencyLimiter(2, parent=parent)]
    inside = [0, 0]
    violations: list[tuple[int, int, int]] = []
    rng = random.Random(4)

    async def worker(which: int, give_up: bool) -> None:
        child = children[which]
        with anyio.CancelScope() as scope:
            if give_up:
                scope.cancel()  # gives up at its first wait, at whichever level that is
            async with child(f'w{which}'):
                inside[which] += 1
                try:
                    if inside[which] > child.max_running or sum(inside) > parent.max_running:
                        violations.append((which, inside[which], sum(inside)))
                    await anyio.lowlevel.checkpoint()
                finally:
                    inside[which] -= 1

    async with anyio.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(worker, i % 2, rng.random() < 0.2)
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()
    assert violations == []
    for child in children:
        assert (child.running_count, child.waiting_count) == (0, 0)
    assert counts(parent) == (0, 0, 4)


class Tally:
    """Callers inside each of two children, the peaks and the entries, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = [0, 0]
        self.peaks = [0, 0, 0]
        self.entries = 0

    def enter(self, which: int) -> None:
        with self.lock:
            self.entries += 1
            self.inside[which] += 1
            self.peaks[which] = max(self.peaks[which], self.inside[which])
            self.peaks[2] = max(self.peaks[2], sum(self.inside))

    def leave(self, which: int) -> None:
        with self.lock:
            self.inside[which] -= 1


def loop_worker(child: ConcurrencyLimiter, which: int, tally: Tally, deadline: float) -> None:
    async def task() -> None:
        while time.monotonic() < deadline:
            async with child('loop'):
                tally.enter(which)
                await asyncio.sleep(0)
                tally.leave(which)

    async def main() -> None:
        await asyncio.gather(*(task() for _ in range(6)))

    asyncio.run(main())


def blocking_worker(child: ConcurrencyLimiter, which: int, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        with child.blocking('thread'):
            tally.enter(which)
            time.sleep(0)
            tally.leave(which)


def test_threads_and_loops_share_nested_limiters() -> None:
    """4 event loops and 4 blocking threads through two children of one parent."""
    parent = ConcurrencyLimiter(3)
    children = [ConcurrencyLimiter(2, parent=parent), ConcurrencyLimiter(2, parent=parent)]
    tally = Tally()
    deadline = time.monotonic() + 1.0
    threads = [
        threading.Thread(target=worker, args=(children[i % 2], i % 2, tally, deadline))
        for worker in (loop_worker, blocking_worker)
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert tally.peaks[0] <= 2 and tally.peaks[1] <= 2 and tally.peaks[2] <= 3
    # Typically 20k-30k entries on 2 cores, ~2k with the machine 6x oversubscribed: a run that
    # admitted nobody, or hardly anybody, fails.
    assert tally.entries > 200
    assert parent.stats().acquired_total == tally.entries
    for child in children:
        assert counts(child) == (0, 0, 2)
    assert counts(parent) == (0, 0, 3)
