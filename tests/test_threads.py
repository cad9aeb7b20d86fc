"""One limiter shared by threads and event loops: blocking API, cross-thread handoff, timeouts,
Ctrl-C, resizing, and a many-thread stress run."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import anyio
import pytest
import uvloop

from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

pytestmark = pytest.mark.anyio


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `condition()` holds (for state that another thread changes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('condition not reached in time')
        time.sleep(0.001)


def test_acquire_blocking_and_blocking_context() -> None:
    limiter = ConcurrencyLimiter(2)
    limiter.acquire_blocking('a')
    with limiter.blocking('b'):
        assert limiter.running_count == 2
    assert limiter.running_count == 1
    limiter.release()
    assert limiter.available_count == 2


def test_blocking_waiters_are_served_in_fifo_order_across_threads() -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire_blocking('holder')
    order: list[int] = []
    leave = threading.Event()

    def worker(i: int) -> None:
        with limiter.blocking(f'w{i}'):
            order.append(i)
            leave.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for i, thread in enumerate(threads):
        thread.start()
        wait_until(lambda i=i: limiter.waiting_count == i + 1)
    leave.set()
    limiter.release()
    for thread in threads:
        thread.join()
    assert order == list(range(8))
    assert (limiter.running_count, limiter.available_count, limiter.waiting_count) == (0, 1, 0)


def test_gil_is_released_while_blocked() -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire_blocking('holder')
    done = threading.Event()

    def worker() -> None:
        limiter.acquire_blocking('w')
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    wait_until(lambda: limiter.waiting_count == 1)
    # Python code keeps running on this thread while the other one is parked.
    total = sum(range(100_000))
    assert total > 0 and not done.is_set()
    limiter.release()
    thread.join(timeout=10)
    assert done.is_set()
    limiter.release()


def test_acquire_blocking_timeout() -> None:
    limiter = ConcurrencyLimiter(1, name='pool')
    limiter.acquire_blocking('holder')
    with pytest.raises(TimeoutError, match='^timed out waiting for pool concurrency$'):
        limiter.acquire_blocking('late', timeout=0.02)
    with pytest.raises(TimeoutError), limiter.blocking('late', timeout=0):
        pass  # pragma: no cover
    assert (limiter.running_count, limiter.waiting_count) == (1, 0)
    assert limiter.stats().cancelled_total == 2
    limiter.release()


def test_acquire_blocking_rejects_when_the_queue_is_full() -> None:
    limiter = ConcurrencyLimiter(1, max_queued=0, name='q')
    limiter.acquire_blocking('holder')
    with pytest.raises(
        ConcurrencyLimitExceeded, match=r'^Concurrency queue depth \(1\) exceeds max_queued \(0\) for q$'
    ):
        limiter.acquire_blocking('late')
    limiter.release()


@pytest.mark.parametrize(
    ('timeout', 'error', 'message'),
    [
        (-1, ValueError, 'timeout must be a non-negative number, got -1'),
        (float('nan'), ValueError, 'timeout must be a non-negative number, got nan'),
        ('1', TypeError, 'timeout must be a number or None, got str'),
    ],
)
def test_invalid_timeouts(timeout: object, error: type[Exception], message: str) -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(error, match=f'^{message}$'):
        limiter.acquire_blocking('x', timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(error, match=f'^{message}$'):
        limiter.acquire('x', timeout=timeout)  # type: ignore[arg-type]
    assert limiter.available_count == 1


async def test_async_acquire_timeout() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    with pytest.raises(TimeoutError, match='^timed out waiting for late concurrency$'):
        await limiter.acquire('late', timeout=0.01)
    assert (limiter.running_count, limiter.waiting_count) == (1, 0)
    limiter.release()
    await limiter.acquire('fast', timeout=0)
    limiter.release()
    await limiter.acquire('inf', timeout=float('inf'))
    limiter.release()
    assert limiter.available_count == 1


async def test_async_acquire_within_its_timeout_gets_the_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            await limiter.acquire('w', timeout=30)

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        limiter.release()
    assert limiter.running_count == 1
    limiter.release()


def run_in_loop(kind: str, coro_fn: Callable[[], object]) -> threading.Thread:
    def target() -> None:
        if kind == 'uvloop':
            uvloop.run(coro_fn())  # type: ignore[arg-type]
        else:
            asyncio.run(coro_fn())  # type: ignore[arg-type]

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.mark.parametrize('kind', ['asyncio', 'uvloop'])
def test_release_in_one_thread_wakes_a_waiter_on_another_loop(kind: str) -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire_blocking('holder')
    got_it = threading.Event()

    async def waiter() -> None:
        async with limiter('loop-b'):
            got_it.set()

    thread = run_in_loop(kind, waiter)
    wait_until(lambda: limiter.waiting_count == 1)
    limiter.release()  # from this thread, which runs no loop at all
    thread.join(timeout=10)
    assert got_it.is_set()
    assert (limiter.running_count, limiter.available_count) == (0, 1)


class Gauge:
    """Holders of a limiter, counted across threads, with the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = self.peak = self.entries = 0

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.entries += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


async def loop_workload(limiter: ConcurrencyLimiter, gauge: Gauge, deadline: float, waited: list[int]) -> None:
    """8 tasks entering `limiter` until `deadline`; `waited` gets the arrival tickets of the tasks
    that had to wait, in the order they entered.

    A task's ticket is its arrival (nothing yields between taking it and queueing); it waited if
    another task of the loop entered meanwhile. Tasks that took a free slot at once are not
    recorded: one can enter while a waiter that was already handed its slot has not resumed.
    """
    tickets = itertools.count()
    entries = 0

    async def task() -> None:
        nonlocal entries
        while time.monotonic() < deadline:
            ticket, before = next(tickets), entries
            async with limiter('loop'):
                if entries != before:
                    waited.append(ticket)
                entries += 1
                gauge.enter()
                await asyncio.sleep(0)
                gauge.leave()

    await asyncio.gather(*(task() for _ in range(8)))


def test_loops_in_threads_and_blocking_threads_share_one_limiter() -> None:
    """16 loops (half asyncio, half uvloop) and 4 blocking threads through one limiter of 5: never
    more than 5 holders, FIFO within each loop, every count back to zero."""
    limiter = ConcurrencyLimiter(5, name='shared')
    gauge = Gauge()
    deadline = time.monotonic() + 2.0
    waited_orders: list[list[int]] = [[] for _ in range(16)]

    def blocking_worker() -> None:
        while time.monotonic() < deadline:
            with limiter.blocking('thread'):
                gauge.enter()
                time.sleep(0)
                gauge.leave()

    threads = [
        run_in_loop(
            'uvloop' if i % 2 else 'asyncio', lambda i=i: loop_workload(limiter, gauge, deadline, waited_orders[i])
        )
        for i in range(16)
    ]
    threads += [threading.Thread(target=blocking_worker) for _ in range(4)]
    for thread in threads[16:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert gauge.peak <= 5
    assert gauge.entries > 100
    assert sum(len(waited) for waited in waited_orders) > 100
    assert all(waited == sorted(waited) for waited in waited_orders), 'a later arrival overtook an earlier waiter'
    stats = limiter.stats()
    assert (stats.running, stats.waiting, stats.available) == (0, 0, 5)
    assert stats.acquired_total == gauge.entries


def test_resize_up_wakes_waiters_at_once_and_down_waits_for_holders() -> None:
    limiter = ConcurrencyLimiter(2)
    limiter.acquire_blocking('a')
    limiter.acquire_blocking('b')
    entered: list[int] = []
    leave = threading.Event()

    def worker(i: int) -> None:
        with limiter.blocking():
            entered.append(i)
            leave.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for i, thread in enumerate(threads):
        thread.start()
        wait_until(lambda i=i: limiter.waiting_count == i + 1)
    limiter.max_running = 5
    # Three new slots went straight to the three oldest waiters.
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (5, 3, 0)
    wait_until(lambda: len(entered) == 3)
    assert sorted(entered) == [0, 1, 2]

    limiter.max_running = 1
    assert (limiter.max_running, limiter.running_count, limiter.available_count) == (1, 5, 0)
    limiter.release()
    limiter.release()
    # The test's own two slots are retired: still three holders, nobody else admitted.
    assert (limiter.running_count, limiter.waiting_count) == (3, 3)
    leave.set()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(entered) == list(range(6))
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)


def test_resize_validation() -> None:
    limiter = ConcurrencyLimiter(2)
    with pytest.raises(Exception, match='max_running must be >= 1, got 0'):
        limiter.max_running = 0
    with pytest.raises(TypeError):
        limiter.max_running = '3'  # type: ignore[assignment]
    assert limiter.max_running == 2


CTRL_C_CHILD = """
import signal, sys, threading, time
import ferrolimit
# Ctrl-C raises KeyboardInterrupt even when this process was started with SIGINT ignored (a
# background job's children are).
signal.signal(signal.SIGINT, signal.default_int_handler)
limiter = ferrolimit.ConcurrencyLimiter(1)
limiter.acquire_blocking('holder')


def report_queued():
    # The main thread counts as waiting only from inside `acquire_blocking`, within the `try:`.
    deadline = time.monotonic() + 10
    while limiter.waiting_count != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    print('queued' if limiter.waiting_count == 1 else 'not queued', flush=True)


try:
    print('waiting', flush=True)
    threading.Thread(target=report_queued, daemon=True).start()
    limiter.acquire_blocking('blocked')
except KeyboardInterrupt:
    print('interrupted', limiter.running_count, limiter.waiting_count, limiter.available_count, flush=True)
    limiter.release()
    print('after', limiter.running_count, limiter.available_count, flush=True)
"""


@pytest.mark.skipif(sys.platform == 'win32', reason='SIGINT to a child process')
def test_ctrl_c_interrupts_a_blocked_thread_promptly() -> None:
    # The signal goes out only once the child is inside its `try:` (it prints 'waiting' there) and
    # parked in `acquire_blocking` (its limiter counts it as waiting): a KeyboardInterrupt raised
    # before the `try:` would escape, and one raised before the wait would not test the wait.
    child = subprocess.Popen([sys.executable, '-c', textwrap.dedent(CTRL_C_CHILD)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == 'waiting'
        assert child.stdout.readline().strip() == 'queued'
        os.kill(child.pid, signal.SIGINT)
        # The wait looks at signals every 20 ms; `timeout` only guards against a hang.
        out, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:  # pragma: no cover - only when the test fails
            child.kill()
            child.communicate()
    assert out.split('\n')[:2] == ['interrupted 1 0 0', 'after 0 1']
    assert child.returncode == 0
