"""RedisConcurrencyLimiter: acquire/release round trip and a contended fleet, with reference points.

Needs a Redis server at `FERROLIMIT_REDIS_URL` (`make bench` starts one on loopback) and a
release build (`make build-prod`). Reference points, measured in the same rounds:

- `local`: ferrolimit's in-process `ConcurrencyLimiter` (no network at all);
- `incr/decr`: a plain Redis counter, `INCR` then `DECR`, over a minimal asyncio RESP client:
  two round trips, no limiting, no queue, no lease. It is the floor of any Redis-based limiter
  driven from Python.

1. **Round trip**: one task, `await acquire()` + `release()` back to back on a free slot (also
   with `weight=3, priority=1`, and over TLS with an ACL user when `FERROLIMIT_REDIS_TLS_URL` is
   set, as `make bench` does: target at most 1.3x the plain round trip).
2. **Sync round trip**, for sync workers: `try_acquire()` + `release()`, `acquire_blocking()` +
   `release()`, `with blocking():` and a keyed limiter's `try_acquire(key)` on a fresh key each
   time, against `INCR` then `DECR` over a blocking socket (`incr/decr`).
3. **Contended**: 4 processes x 8 tasks share one key with `max_running=4`; each task does
   `iterations` acquire/release cycles holding the slot for one `asyncio.sleep(0)`. The time is
   the wall time of the slowest process divided by the cycles of all processes. For `local`, each
   process has its own limiter of 4 slots (so nothing is shared: a floor, not a competitor).

Every round runs each variant once; printed are medians over rounds, with `[p25-p75]`, and the
median of the per-round ratios against `incr/decr`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable

import ferrolimit
from ferrolimit import ConcurrencyLimiter, RedisConcurrencyLimiter, RedisKeyedConcurrencyLimiter

PROCESSES, TASKS, MAX_RUNNING = 4, 8, 4


class Counter:
    """`INCR`/`DECR` on one key over one connection: the plain-Redis reference."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str):
        self._reader, self._writer = reader, writer
        key_bytes = key.encode()
        self._incr = b'*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n' % (len(key_bytes), key_bytes)
        self._decr = b'*2\r\n$4\r\nDECR\r\n$%d\r\n%s\r\n' % (len(key_bytes), key_bytes)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, key: str) -> Counter:
        parsed = urllib.parse.urlparse(url)
        reader, writer = await asyncio.open_connection(parsed.hostname or '127.0.0.1', parsed.port or 6379)
        return cls(reader, writer, key)

    async def _call(self, command: bytes) -> int:
        async with self._lock:  # one request in flight per connection, like a simple client
            self._writer.write(command)
            line = await self._reader.readline()
        assert line.startswith(b':'), line
        return int(line[1:])

    async def acquire(self) -> None:
        await self._call(self._incr)

    async def release(self) -> None:
        await self._call(self._decr)

    def close(self) -> None:
        self._writer.close()


class SyncCounter:
    """`INCR`/`DECR` on one key over a blocking socket: the plain-Redis reference for threads."""

    def __init__(self, url: str, key: str) -> None:
        parsed = urllib.parse.urlparse(url)
        self._conn = socket.create_connection((parsed.hostname or '127.0.0.1', parsed.port or 6379))
        self._reply = self._conn.makefile('rb')
        key_bytes = key.encode()
        self._incr = b'*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n' % (len(key_bytes), key_bytes)
        self._decr = b'*2\r\n$4\r\nDECR\r\n$%d\r\n%s\r\n' % (len(key_bytes), key_bytes)

    def _call(self, command: bytes) -> None:
        self._conn.sendall(command)
        line = self._reply.readline()
        assert line.startswith(b':'), line

    def cycle(self) -> None:
        self._call(self._incr)
        self._call(self._decr)

    def close(self) -> None:
        self._reply.close()
        self._conn.close()


def sync_cycle(variant: str, url: str, key: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """One acquire+release of `variant` from a plain thread, and what closes it."""
    if variant == 'incr/decr':
        counter = SyncCounter(url, key)
        return counter.cycle, counter.close
    if variant == 'keyed try_acquire, fresh key':
        keyed = RedisKeyedConcurrencyLimiter(url, key, MAX_RUNNING)
        keys = iter(range(10**9))

        def fresh() -> None:
            k = f'user-{next(keys)}'
            assert keyed.try_acquire(k)
            keyed.release(k)

        return fresh, lambda: None
    limiter = RedisConcurrencyLimiter(url, key, MAX_RUNNING)

    def try_acquire() -> None:
        assert limiter.try_acquire()
        limiter.release()

    def acquire_blocking() -> None:
        limiter.acquire_blocking('bench')
        limiter.release()

    def blocking() -> None:
        with limiter.blocking('bench'):
            pass

    cycles = {'try_acquire': try_acquire, 'acquire_blocking': acquire_blocking, 'with blocking()': blocking}
    return cycles[variant], lambda: None


def sync_round_trip(variant: str, url: str, key: str, n: int) -> float:
    """Seconds per acquire+release on a free slot, from this (plain) thread."""
    cycle, close = sync_cycle(variant, url, key)
    cycle()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        cycle()
    elapsed = time.perf_counter() - start
    close()
    return elapsed / n


async def round_trip(variant: str, url: str, key: str, n: int) -> float:
    """Seconds per acquire+release on a free slot."""
    if variant == 'incr/decr':
        counter = await Counter.connect(url, key)
        start = time.perf_counter()
        for _ in range(n):
            await counter.acquire()
            await counter.release()
        elapsed = time.perf_counter() - start
        counter.close()
        return elapsed / n
    limiter = ConcurrencyLimiter(MAX_RUNNING) if variant == 'local' else RedisConcurrencyLimiter(url, key, MAX_RUNNING)
    await limiter.acquire('warm-up')
    limiter.release()
    weight, priority = (3, 1) if variant.endswith('weight=3 priority=1') else (1, 0)
    start = time.perf_counter()
    for _ in range(n):
        await limiter.acquire('bench', weight=weight, priority=priority)
        limiter.release(weight=weight)
    elapsed = time.perf_counter() - start
    if isinstance(limiter, RedisConcurrencyLimiter):
        assert limiter.running_count == 0
    return elapsed / n


def contended_worker(variant: str, url: str, key: str, iterations: int, barrier: object, out: object) -> None:
    async def main() -> float:
        if variant == 'incr/decr':
            counters = [await Counter.connect(url, key) for _ in range(TASKS)]

            async def run(i: int) -> None:
                for _ in range(iterations):
                    await counters[i].acquire()
                    await asyncio.sleep(0)
                    await counters[i].release()
        else:
            limiter = (
                ConcurrencyLimiter(MAX_RUNNING)
                if variant == 'local'
                else RedisConcurrencyLimiter(url, key, MAX_RUNNING)
            )
            await limiter.acquire('warm-up')
            limiter.release()

            async def run(i: int) -> None:
                for _ in range(iterations):
                    async with limiter('bench'):
                        await asyncio.sleep(0)

        barrier.wait()  # type: ignore[attr-defined]
        start = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(TASKS)))
        return time.perf_counter() - start

    out.put(asyncio.run(main()))  # type: ignore[attr-defined]


def contended(variant: str, url: str, key: str, iterations: int) -> float:
    """Seconds per acquire/release cycle across the fleet."""
    ctx = multiprocessing.get_context('spawn')
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [
        ctx.Process(target=contended_worker, args=(variant, url, key, iterations, barrier, out))
        for _ in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    times = [out.get(timeout=300) for _ in processes]
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    return max(times) / (PROCESSES * TASKS * iterations)


def summarize(name: str, samples: dict[str, list[float]]) -> list[str]:
    rows = [
        f'### {name}',
        '',
        '| variant | median per op | [p25-p75] | ratio vs incr/decr |',
        '| --- | --- | --- | --- |',
    ]
    reference = samples['incr/decr']
    for variant, values in samples.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        ratios = [v / r for v, r in zip(values, reference, strict=True)]
        rows.append(
            f'| {variant} | {statistics.median(values) * 1e6:.1f} us | '
            f'{q[0] * 1e6:.1f}-{q[2] * 1e6:.1f} us | {statistics.median(ratios):.2f}x |'
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--n', type=int, default=2000, help='round trips per sample')
    parser.add_argument('--iterations', type=int, default=100, help='cycles per task in the contended run')
    parser.add_argument('--quick', action='store_true', help='3 rounds, smaller samples')
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.n, args.iterations = 3, 500, 30
    url = os.environ.get('FERROLIMIT_REDIS_URL')
    if not url:
        sys.exit('FERROLIMIT_REDIS_URL is not set (make bench starts a Redis server)')
    print(f'ferrolimit {ferrolimit.__version__} from {ferrolimit.__file__}; Redis at {url}')
    variants = ['local', 'incr/decr', 'redis limiter']
    tls_url = os.environ.get('FERROLIMIT_REDIS_TLS_URL')
    trip_variants = [*variants, 'redis limiter weight=3 priority=1', *(['redis limiter over TLS'] if tls_url else [])]
    sync_variants = ['incr/decr', 'try_acquire', 'acquire_blocking', 'with blocking()', 'keyed try_acquire, fresh key']
    trip: dict[str, list[float]] = {v: [] for v in trip_variants}
    sync: dict[str, list[float]] = {v: [] for v in sync_variants}
    fleet: dict[str, list[float]] = {v: [] for v in variants}
    stamp = time.time_ns()
    for r in range(args.rounds):
        for v in trip_variants:
            server = tls_url if v.endswith('over TLS') and tls_url else url
            trip[v].append(asyncio.run(round_trip(v, server, f'ferrolimit-bench:{stamp}:{r}:{v}', args.n)))
        for v in sync_variants:
            sync[v].append(sync_round_trip(v, url, f'ferrolimit-bench:{stamp}:{r}:sync:{v}', args.n))
        for v in variants:
            fleet[v].append(contended(v, url, f'ferrolimit-bench:{stamp}:{r}:{v}:fleet', args.iterations))
        print(f'round {r + 1}/{args.rounds} done', file=sys.stderr)
    print()
    print('\n'.join(summarize('1. Acquire/release round trip, one task, loopback', trip)))
    if tls_url:
        ratios = [tls / plain for tls, plain in zip(trip['redis limiter over TLS'], trip['redis limiter'], strict=True)]
        print(f'  TLS / plain round trip: {statistics.median(ratios):.2f}x (median of rounds; target <= 1.3x)')
    print()
    print('\n'.join(summarize('2. Sync round trip from a plain thread, loopback', sync)))
    print()
    print(
        '\n'.join(summarize(f'3. Contended: {PROCESSES} processes x {TASKS} tasks, max_running={MAX_RUNNING}', fleet))
    )


if __name__ == '__main__':
    main()
