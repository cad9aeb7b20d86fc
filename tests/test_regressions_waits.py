"""Regression tests for the repros of `../shared/repros` about waiting and releasing: failed native
waits that stayed queued, a release too many, `acquire()` taking its slot before it is awaited, the
resume order across threads, and a child's release that fails half-way.

Each test names its repro; all failed on the build of 807758a except where a comment says it already
worked there.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import re
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest
import uvloop

from ferrolimit import ConcurrencyLimiter

pytestmark = pytest.mark.anyio

ASYNCIO_BACKENDS = [
    pytest.param('asyncio', id='asyncio'),
    pytest.param(('asyncio', {'use_uvloop': True}), id='uvloop'),
]
ALL_BACKENDS = [*ASYNCIO_BACKENDS, pytest.param('trio', id='trio')]

RELEASED_TOO_MANY_TIMES = 'semaphore released too many times'


def snapshot(limiter: ConcurrencyLimiter) -> tuple[int, ...]:
    stats = limiter.stats()
    return (
        stats.running,
        stats.waiting,
        stats.available,
        stats.acquired_total,
        stats.rejected_total,
        stats.cancelled_total,
    )


class Span:
    def __init__(self, end_error: BaseException | None) -> None:
        self.end_error = end_error

    def end(self) -> None:
        if self.end_error is not None:
            raise self.end_error

    def is_recording(self) -> bool:
        return False


class FailingTracer:
    """A tracer whose `start_span` raises (`start`), or whose spans raise in `end()` (`end`)."""

    def __init__(self, fails_in: str) -> None:
        self.fails_in = fails_in

    def start_span(self, name: str, attributes: Any = None, **kwargs: Any) -> Span:
        if self.fails_in == 'start':
            raise RuntimeError('exporter misconfigured')
        return Span(RuntimeError('exporter down'))


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect each test's garbage at its own teardown: on a broken build, a native awaitable freed by
    a collection in a later test (or in pytest's reporting) ran Python code from its destructor there."""
    yield
    gc.collect()


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects: a slot must come back without a collection."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def keep(how: str, awaitable: Awaitable[None]) -> asyncio.Future[Any]:
    """Run `awaitable` the way `how` says, keeping a reference to it as that way does."""
    if how == 'task':
        return asyncio.ensure_future(awaitable)
    if how == 'wait_for':
        return asyncio.ensure_future(asyncio.wait_for(awaitable, 5))
    return asyncio.gather(awaitable, return_exceptions=True)


async def fail_while_kept(
    how: str, awaitable: Awaitable[None], *limiters: ConcurrencyLimiter, handoff: bool = False
) -> tuple[str, list[tuple[int, int, int]]]:
    """Run `awaitable` as `how` says until it fails; return its error and each limiter's (running,
    waiting, available), read while `how` still references the failed awaitable.

    With `handoff`, once it waits, the first limiter's held slot is released (handed to it). The
    future, the awaitable and the error die with this frame: a failing assertion in the test does
    not keep them alive in its traceback."""
    future = keep(how, awaitable)
    if handoff:
        await anyio.wait_all_tasks_blocked()
        assert limiters[0].waiting_count == 1
        limiters[0].release()
    await asyncio.wait([future])
    error = future.result()[0] if how == 'gather' else future.exception()
    counts = [(limiter.running_count, limiter.waiting_count, limiter.available_count) for limiter in limiters]
    return f'{type(error).__name__}: {error}', counts


# --- repro_zombie_waiter.py, repro_parent_reject_leak.py ---------------------------------------
# A native asyncio wait that failed after queueing kept its place (or its child slot) until the
# awaitable object was freed, and a task, `wait_for` or `gather(return_exceptions=True)` keeps it.

HOLDERS = ['task', 'wait_for', 'gather']


@pytest.mark.usefixtures('no_gc')
@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
@pytest.mark.parametrize('how', HOLDERS)
async def test_a_wait_whose_start_span_raises_leaves_the_queue_at_once(how: str) -> None:
    """repro_zombie_waiter.py: the dead waiter stayed queued and the next release went to it."""
    limiter = ConcurrencyLimiter(1, name='L', tracer=FailingTracer('start'))  # type: ignore[arg-type]
    assert limiter.try_acquire()
    outcome = await fail_while_kept(how, limiter.acquire('first'), limiter)
    assert outcome == ('RuntimeError: exporter misconfigured', [(1, 0, 0)])
    limiter.release()
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)
    assert limiter.try_acquire()  # a live caller gets the slot


@pytest.mark.usefixtures('no_gc')
@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
@pytest.mark.parametrize('how', HOLDERS)
async def test_a_wait_whose_span_end_raises_gives_its_slot_back_at_once(how: str) -> None:
    """repro_zombie_waiter.py (span.end raising): the failed waiter kept the slot handed to it."""
    limiter = ConcurrencyLimiter(1, name='L', tracer=FailingTracer('end'))  # type: ignore[arg-type]
    assert limiter.try_acquire()
    outcome = await fail_while_kept(how, limiter.acquire('first'), limiter, handoff=True)
    assert outcome == ('RuntimeError: exporter down', [(0, 0, 1)])
    assert limiter.try_acquire()


@pytest.mark.usefixtures('no_gc')
@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
@pytest.mark.parametrize('how', HOLDERS)
async def test_a_caller_rejected_by_the_parent_gives_the_child_slot_back_at_once(how: str) -> None:
    """repro_parent_reject_leak.py: the child slot stayed held while the failed awaitable lived."""
    parent = ConcurrencyLimiter(1, max_queued=0, name='parent')
    child = ConcurrencyLimiter(2, parent=parent, name='child')
    assert parent.try_acquire()  # the parent is full and queues nobody
    outcome = await fail_while_kept(how, child.acquire('x'), child, parent)
    rejected = 'ConcurrencyLimitExceeded: Concurrency queue depth (1) exceeds max_queued (0) for parent'
    assert outcome == (rejected, [(0, 0, 2), (1, 0, 0)])
    parent.release()
    assert child.try_acquire()  # a child slot and the parent's only one
    child.release()
    assert (child.available_count, parent.available_count) == (2, 1)


# --- repro_underflow.py -----------------------------------------------------------------------


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize('behind', [False, True], ids=['alone', 'with_next'])
async def test_a_release_too_many_during_a_handoff_changes_nothing(behind: bool) -> None:
    """repro_underflow.py: an extra release() while the only slot is handed to a waiter that has not
    resumed did not raise, and cancelling that waiter then underflowed the holder count."""
    limiter = ConcurrencyLimiter(1, name='L')
    entered: list[str] = []
    assert limiter.try_acquire()
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def waiter(name: str) -> None:
            async with limiter(name):
                entered.append(name)

        async def cancellable() -> None:
            with scope:
                await waiter('w')

        tg.start_soon(cancellable)
        await anyio.wait_all_tasks_blocked()
        if behind:
            tg.start_soon(waiter, 'next')
            await anyio.wait_all_tasks_blocked()
        limiter.release()  # handed to 'w', which has not resumed
        before = snapshot(limiter)
        with pytest.raises(ValueError, match=re.escape(RELEASED_TOO_MANY_TIMES)):
            limiter.release()
        assert snapshot(limiter) == before
        scope.cancel()
    # On trio a waiter cancelled after its slot was handed over takes the slot and runs its block.
    assert entered[-1:] == ['next'] if behind else entered in ([], ['w'])
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)
    assert [limiter.try_acquire(), limiter.try_acquire()] == [True, False]
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
async def test_a_release_too_many_then_task_cancel_keeps_max_running() -> None:
    """repro_underflow.py, as written: `Task.cancel()` on the waiter the slot was handed to."""
    limiter = ConcurrencyLimiter(1, name='L')
    assert limiter.try_acquire()

    async def waiter() -> None:
        async with limiter('w'):
            pass

    task = asyncio.create_task(waiter())
    await anyio.wait_all_tasks_blocked()
    limiter.release()
    with pytest.raises(ValueError, match=re.escape(RELEASED_TOO_MANY_TIMES)):
        limiter.release()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)
    assert [limiter.try_acquire() for _ in range(4)] == [True, False, False, False]
    assert limiter.running_count == 1


# --- repro_eager_acquire.py -------------------------------------------------------------------
# `acquire()` took the slot when called and returned a finished non-coroutine object.


@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
async def test_wait_for_acquire_with_zero_timeout_takes_nothing_when_it_times_out() -> None:
    limiter = ConcurrencyLimiter(1)
    timed_out = False
    try:
        await asyncio.wait_for(limiter.acquire('x'), 0)
    except asyncio.TimeoutError:  # not yet the built-in TimeoutError on 3.10
        timed_out = True
    assert limiter.running_count == (0 if timed_out else 1)
    if sys.version_info < (3, 12):
        # Before 3.12, `wait_for(aw, 0)` never starts a coroutine: it times out.
        assert timed_out


@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
async def test_create_task_of_acquire_takes_the_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    task = asyncio.create_task(limiter.acquire('x'))  # type: ignore[arg-type]
    assert limiter.running_count == 0
    await task
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ASYNCIO_BACKENDS)
async def test_gather_of_acquire_takes_the_slot() -> None:
    # Already worked on 807758a (gather wraps any awaitable); kept as part of decision 4.
    limiter = ConcurrencyLimiter(1)
    await asyncio.gather(limiter.acquire('x'))
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
async def test_an_acquire_dropped_before_it_is_awaited_takes_nothing() -> None:
    limiter = ConcurrencyLimiter(1)
    awaitable = limiter.acquire('x')
    assert limiter.running_count == 0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # coroutine ... was never awaited
        del awaitable
    assert (limiter.running_count, limiter.available_count) == (0, 1)
    assert limiter.try_acquire()


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
async def test_task_group_start_soon_acquire_takes_the_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'x')
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ['trio'])
async def test_trio_nursery_start_soon_acquire_takes_the_slot() -> None:
    import trio

    limiter = ConcurrencyLimiter(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, 'x')
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize('busy', [False, True], ids=['free', 'busy'])
async def test_acquire_returns_a_coroutine(busy: bool) -> None:
    # On 807758a only the `free` cases failed: a free slot returned a finished `Ready`.
    limiter = ConcurrencyLimiter(1)
    if busy:
        assert limiter.try_acquire()
    awaitable = limiter.acquire('x')
    try:
        assert isinstance(awaitable, Coroutine)
    finally:
        awaitable.close()  # type: ignore[attr-defined]
    assert (limiter.running_count, limiter.waiting_count) == (int(busy), 0)


# --- repro_fifo_resume_order.py ---------------------------------------------------------------


async def loop_workload(limiter: ConcurrencyLimiter, deadline: float, waited: list[int]) -> None:
    """8 tasks enter `limiter` in turn until `deadline`; `waited` gets the tickets of those that waited."""
    tickets = itertools.count()
    entries = 0

    async def task() -> None:
        nonlocal entries
        while time.monotonic() < deadline:
            # Nothing yields between taking the ticket and queueing: the ticket is the arrival order.
            ticket, before = next(tickets), entries
            async with limiter('loop'):
                if entries != before:
                    waited.append(ticket)
                entries += 1
                await asyncio.sleep(0)

    await asyncio.gather(*(task() for _ in range(8)))


def blocking_workload(limiter: ConcurrencyLimiter, deadline: float) -> None:
    while time.monotonic() < deadline:
        with limiter.blocking('thread'):
            time.sleep(0)


def run_in_threads(targets: list[Callable[[], object]]) -> list[BaseException]:
    """Run each target on a thread of its own, with a tiny GIL switch interval; return their errors."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_waiters_of_one_loop_resume_in_handover_order_across_threads() -> None:
    """repro_fifo_resume_order.py: 12 loops in threads (half asyncio, half uvloop) and 4 blocking
    threads share one limiter, with a tiny GIL switch interval; two waiters of one loop must enter in
    arrival order.

    A race: on the build of 807758a this found inversions in every run tried, but it may pass there
    by luck. Bounded to about 1.5 s of wall time."""
    limiter = ConcurrencyLimiter(5, name='shared')
    deadline = time.monotonic() + 1.5
    waited_orders: list[list[int]] = [[] for _ in range(12)]
    targets: list[Callable[[], object]] = [
        functools.partial(uvloop.run if i % 2 else asyncio.run, loop_workload(limiter, deadline, waited))
        for i, waited in enumerate(waited_orders)
    ]
    targets += [functools.partial(blocking_workload, limiter, deadline) for _ in range(4)]
    assert run_in_threads(targets) == []
    assert sum(len(waited) for waited in waited_orders) > 100
    inversions = sum(sum(1 for a, b in itertools.pairwise(w) if b < a) for w in waited_orders)
    assert inversions == 0, f'{inversions} resume-order inversions'
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 5)


# --- repro_partial_release.py -----------------------------------------------------------------


def test_a_child_release_that_finds_the_parent_slot_gone_changes_nothing() -> None:
    """repro_partial_release.py: the child's release() freed the child's slot, then raised."""
    parent = ConcurrencyLimiter(2, name='parent')
    child = ConcurrencyLimiter(2, parent=parent, name='child')
    assert child.try_acquire()  # holds a child slot and a parent slot
    parent.release()  # gives the parent's slot back behind the child's back
    before = (snapshot(child), snapshot(parent))
    with pytest.raises(ValueError, match=re.escape(RELEASED_TOO_MANY_TIMES)):
        child.release()
    assert (snapshot(child), snapshot(parent)) == before
    assert (child.running_count, parent.running_count) == (1, 0)


@pytest.mark.parametrize('anyio_backend', ['trio'])
async def test_a_trio_wait_that_fails_before_parking_leaves_no_wake_up_behind() -> None:
    """The tracer hands the slot over (a release) while the wait span opens, then fails: the
    wait gives the slot back, and the wake-up sent for it must not resume the task later
    (trio: `RuntimeError: Should never have been rescheduled!` at its next checkpoint)."""
    import trio

    class ReleasingTracer:
        def start_span(self, name: str, attributes: object = None) -> object:
            limiter.release()
            raise RuntimeError('tracer failed')

    limiter = ConcurrencyLimiter(1, tracer=ReleasingTracer())  # type: ignore[arg-type]
    assert limiter.try_acquire()
    with pytest.raises(RuntimeError, match='tracer failed'):
        await limiter.acquire('x')
    assert (limiter.running_count, limiter.waiting_count) == (0, 0)
    await trio.sleep(0.05)
    assert limiter.try_acquire()
    limiter.release()
