"""RedisConcurrencyLimiter across processes, and under faults: killed holders, a Redis restart,
a holder paused past its lease.

Needs the Redis server `make test` starts (`FERROLIMIT_REDIS_URL`); skipped without it. The
restart test runs its own `redis-server` (on a free loopback port, with persistence).
No assertion here is about time: waits are for events, with generous hang guards.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import fleet_workers
import pytest

from ferrolimit import ConcurrencyBackendError, RedisConcurrencyLimiter

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize('anyio_backend', ['asyncio'])]

# Processes are spawned, not forked: the parent may already run ferrolimit's I/O threads.
ctx = multiprocessing.get_context('spawn')
HANG_GUARD = 60


async def until(predicate: object, what: str) -> None:
    """Wait for an event (polled), failing only if it never comes."""
    assert callable(predicate)
    with anyio.fail_after(HANG_GUARD):
        # The state lives in Redis or another process: there is no local event to wait on.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def join_all(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.join(HANG_GUARD)
        if process.is_alive():  # pragma: no cover - only on a hang
            process.kill()
        assert process.exitcode == 0, f'{process.name} exited with {process.exitcode}'


async def test_8_processes_x_50_tasks_never_exceed_max_running(redis_url: str, redis_key: str) -> None:
    processes_n, tasks, max_running = 8, 50, 5
    gauge, peak, done = ctx.Value('i', 0), ctx.Value('i', 0), ctx.Value('i', 0)
    barrier = ctx.Barrier(processes_n)
    processes = [
        ctx.Process(
            target=fleet_workers.stress,
            args=(redis_url, redis_key, max_running, tasks, gauge, peak, done, barrier),
            name=f'stress-{i}',
        )
        for i in range(processes_n)
    ]
    for process in processes:
        process.start()
    await anyio.to_thread.run_sync(join_all, processes)
    assert done.value == processes_n * tasks
    assert 1 <= peak.value <= max_running
    assert gauge.value == 0
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, max_running)
    assert (limiter.running_count, limiter.waiting_count) == (0, 0)


async def test_fifo_across_two_processes(redis_url: str, redis_key: str) -> None:
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1)
    await limiter.acquire('holder')
    workers: list[tuple[multiprocessing.process.BaseProcess, object, object]] = []
    admitted_recv, admitted_send = ctx.Pipe(duplex=False)
    for i in range(2):
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(
            target=fleet_workers.fifo, args=(redis_url, redis_key, child_end, admitted_send), name=f'fifo-{i}'
        )
        process.start()
        workers.append((process, parent_end, child_end))
    labels = [f'w{i}' for i in range(8)]
    for n, label in enumerate(labels):
        _, commands, _ = workers[n % 2]  # alternate between the two processes
        commands.send(label)  # type: ignore[attr-defined]
        assert await anyio.to_thread.run_sync(commands.recv) == 'started'  # type: ignore[attr-defined]
        await until(lambda n=n: limiter.waiting_count == n + 1, f'{label} queued')
    for _, commands, _ in workers:
        commands.send(None)  # type: ignore[attr-defined]
    limiter.release()
    order = [await anyio.to_thread.run_sync(admitted_recv.recv) for _ in labels]
    await anyio.to_thread.run_sync(join_all, [w[0] for w in workers])
    assert order == labels
    assert limiter.running_count == 0


async def test_max_queued_is_exact_across_processes(redis_url: str, redis_key: str) -> None:
    processes_n, tasks, max_queued = 6, 5, 7
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 1, max_queued=max_queued)
    await limiter.acquire('holder')
    rejected, admitted = ctx.Value('i', 0), ctx.Value('i', 0)
    barrier = ctx.Barrier(processes_n)
    processes = [
        ctx.Process(
            target=fleet_workers.max_queued_race,
            args=(redis_url, redis_key, max_queued, tasks, rejected, admitted, barrier),
            name=f'race-{i}',
        )
        for i in range(processes_n)
    ]
    for process in processes:
        process.start()
    total = processes_n * tasks
    await until(lambda: rejected.value + limiter.waiting_count == total, 'every arrival decided')
    assert limiter.waiting_count == max_queued
    assert rejected.value == total - max_queued
    limiter.release()
    await anyio.to_thread.run_sync(join_all, processes)
    assert admitted.value == max_queued
    assert (limiter.running_count, limiter.waiting_count) == (0, 0)


async def test_killed_holder_loses_its_slots_within_the_lease(redis_url: str, redis_key: str) -> None:
    ready = ctx.Event()
    process = ctx.Process(target=fleet_workers.hold, args=(redis_url, redis_key, 3, 3, 1.0, ready), name='doomed')
    process.start()
    assert await anyio.to_thread.run_sync(ready.wait, HANG_GUARD)
    limiter = RedisConcurrencyLimiter(redis_url, redis_key, 3)
    assert limiter.running_count == 3
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    # The three slots come back once the dead process's leases run out; nothing else frees them.
    with anyio.fail_after(HANG_GUARD):
        for _ in range(3):
            await limiter.acquire('survivor')
    assert limiter.running_count == 3
    for _ in range(3):
        limiter.release()
    assert limiter.running_count == 0


async def test_a_holder_paused_past_its_lease_cannot_free_its_successors_slot(redis_url: str, redis_key: str) -> None:
    ready, go = ctx.Event(), ctx.Event()
    report_recv, report_send = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=fleet_workers.hold_then_release, args=(redis_url, redis_key, 0.5, ready, go, report_send), name='paused'
    )
    process.start()
    assert await anyio.to_thread.run_sync(ready.wait, HANG_GUARD)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGSTOP)  # no renewal can run now
    try:
        successor = RedisConcurrencyLimiter(redis_url, redis_key, 1)
        with anyio.fail_after(HANG_GUARD):
            await successor.acquire('successor')  # admitted once the paused lease ran out
    finally:
        os.kill(process.pid, signal.SIGCONT)
    go.set()
    lost, running_seen_by_paused = await anyio.to_thread.run_sync(report_recv.recv)
    await anyio.to_thread.run_sync(join_all, [process])
    assert lost == 1
    assert running_seen_by_paused == 1  # the successor's slot survived the stale release
    assert successor.running_count == 1
    successor.release()
    assert successor.running_count == 0


@dataclass
class PrivateRedis:
    """A redis-server of the test's own; with `persistent`, append-only persistence keeps the
    data across a restart, else a restart loses it."""

    port: int
    workdir: Path
    persistent: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self) -> None:
        server = shutil.which('redis-server')
        assert server is not None
        self.process = subprocess.Popen(
            [server, '--bind', '127.0.0.1', '--port', str(self.port), '--dir', str(self.workdir), '--save', '',
             '--appendonly', 'yes' if self.persistent else 'no', '--appendfsync', 'always',
             '--logfile', str(self.workdir / 'redis.log')],
        )  # fmt: skip
        for _ in range(500):
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=1) as conn:
                    conn.sendall(b'PING\r\n')
                    if conn.recv(64).startswith(b'+PONG'):
                        return
            except OSError:
                pass
            assert self.process.poll() is None, 'redis-server exited'
            time.sleep(0.02)
        raise AssertionError('redis-server did not start')

    def command(self, *args: str) -> bytes:
        """One command over a fresh connection; the first line of the reply."""
        request = b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a), a.encode()) for a in args)
        with socket.create_connection(('127.0.0.1', self.port), timeout=5) as conn:
            conn.sendall(request)
            return conn.recv(256).split(b'\r\n')[0]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(HANG_GUARD)
            self.process = None


@pytest.fixture(params=[True, False], ids=['persistent', 'volatile'])
def private_redis(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    if shutil.which('redis-server') is None:
        pytest.fail('redis-server is not installed (make test installs it)')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    server = PrivateRedis(port, tmp_path, request.param)
    server.start()
    yield server
    server.stop()


async def test_redis_restart_gives_clear_errors_and_no_over_admission(private_redis: PrivateRedis) -> None:
    """A restart keeps the slots held (persistent), or loses them (volatile): then the limiter
    sees the new epoch, admits nobody for one lease, and its holders re-register their slots."""
    limiter = RedisConcurrencyLimiter(private_redis.url, 'restart', 2, lease_seconds=2.0)
    await limiter.acquire('a')
    await limiter.acquire('b')
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await limiter.acquire('c')
        except ConcurrencyBackendError as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(lambda: limiter.waiting_count == 1, 'waiter queued')
        private_redis.stop()
    # The queued waiter was told, clearly, rather than left hanging.
    (error,) = errors
    assert str(error).startswith('Redis is unavailable: ')
    with pytest.raises(ConcurrencyBackendError, match='^Redis is unavailable: '):
        await limiter.acquire('d')
    with pytest.raises(ConcurrencyBackendError, match='^Redis is unavailable: '):
        _ = limiter.running_count

    private_redis.start()

    def running() -> int | None:
        try:
            return limiter.running_count
        except ConcurrencyBackendError:
            return None

    # Both slots are held again (kept, or re-registered), and a newcomer has to wait, also once
    # any recovery window is over.
    await until(lambda: running() == 2, 'slots held after the restart')
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 'e')
        await until(lambda: limiter.waiting_count == 1, 'newcomer queued')
        await until(lambda: private_redis.command('EXISTS', '{restart}:recovering') == b':0', 'recovered')
        assert (limiter.running_count, limiter.waiting_count) == (2, 1)
        limiter.release()
    assert limiter.running_count == 2
    limiter.release()
    limiter.release()
    assert (limiter.running_count, limiter.waiting_count, limiter.lost_count) == (0, 0, 0)
