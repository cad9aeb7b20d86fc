"""Worker processes for `test_redis_fleet.py` (started with the `spawn` method, so importable)."""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event

from ferrolimit import ConcurrencyLimitExceeded, RedisConcurrencyLimiter


def stress(
    url: str,
    key: str,
    max_running: int,
    tasks: int,
    gauge: Synchronized[int],
    peak: Synchronized[int],
    done: Synchronized[int],
    barrier: Barrier,
) -> None:
    """Run `tasks` tasks through the limiter; count holders in `gauge`, outside the limiter."""

    async def main() -> None:
        limiter = RedisConcurrencyLimiter(url, key, max_running)

        async def one() -> None:
            async with limiter('stress'):
                with gauge.get_lock():
                    gauge.value += 1
                    peak.value = max(peak.value, gauge.value)
                await asyncio.sleep(0)
                with gauge.get_lock():
                    gauge.value -= 1
            with done.get_lock():
                done.value += 1

        await asyncio.gather(*(one() for _ in range(tasks)))

    barrier.wait()
    asyncio.run(main())


def fifo(url: str, key: str, commands: Connection, admitted: Connection) -> None:
    """Queue one waiter per label received on `commands`; send each label on `admitted` once
    it holds the slot (and before releasing it). Stops on `None`."""

    async def main() -> None:
        limiter = RedisConcurrencyLimiter(url, key, 1)
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []

        async def waiter(label: str) -> None:
            async with limiter(label):
                admitted.send(label)

        while (label := await loop.run_in_executor(None, commands.recv)) is not None:
            tasks.append(asyncio.create_task(waiter(label)))
            # Acknowledge once the acquire is under way: the parent then waits for it to queue.
            commands.send('started')
        await asyncio.gather(*tasks)

    asyncio.run(main())


def max_queued_race(
    url: str,
    key: str,
    max_queued: int,
    tasks: int,
    rejected: Synchronized[int],
    admitted: Synchronized[int],
    barrier: Barrier,
) -> None:
    """Start `tasks` acquires at once; count rejections and admissions."""

    async def main() -> None:
        limiter = RedisConcurrencyLimiter(url, key, 1, max_queued=max_queued)

        async def one() -> None:
            try:
                await limiter.acquire('race')
            except ConcurrencyLimitExceeded:
                with rejected.get_lock():
                    rejected.value += 1
                return
            with admitted.get_lock():
                admitted.value += 1
            limiter.release()

        await asyncio.gather(*(one() for _ in range(tasks)))

    barrier.wait()
    asyncio.run(main())


def hold(url: str, key: str, max_running: int, slots: int, lease_seconds: float, ready: Event) -> None:
    """Take `slots` slots, signal `ready`, and hold them until killed."""

    async def main() -> None:
        limiter = RedisConcurrencyLimiter(url, key, max_running, lease_seconds=lease_seconds)
        for _ in range(slots):
            await limiter.acquire('doomed')
        ready.set()
        await asyncio.Event().wait()  # until killed

    asyncio.run(main())


def hold_then_release(url: str, key: str, lease_seconds: float, ready: Event, go: Event, report: Connection) -> None:
    """Take the slot, signal `ready`, and release it once `go` is set; report `lost_count` and the
    fleet's `running_count` as seen after the release."""

    async def main() -> None:
        limiter = RedisConcurrencyLimiter(url, key, 1, lease_seconds=lease_seconds)
        await limiter.acquire('paused')
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        limiter.release()
        running = limiter.running_count  # waits for this process's own release
        report.send((limiter.lost_count, running))

    asyncio.run(main())
