"""Threads and loops sharing one limiter (issue: "one limiter for every thread, loop and runtime").

1. N threads (1, 2, 4, 8) each doing blocking acquire/release on one limiter, against
   `threading.BoundedSemaphore` with the same number of slots: acquisitions per second, median of
   interleaved rounds, and ferrolimit's throughput ratio.
2. Several event loops in threads (half asyncio, half uvloop) sharing one limiter, each running
   tasks that enter it with `async with`: acquisitions per second, with the max-holders invariant
   checked in the same run.

Run: `make bench` (or `python benches/bench_threads.py [--quick]`). Not a test: it asserts nothing
about speed; it prints medians and ratios from one run. Results go to benches/results/threads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from ferrolimit import ConcurrencyLimiter

SLOTS = 2


def _yield_gil() -> None:
    time.sleep(0)


def run_threads(
    n_threads: int,
    per_thread: int,
    make: Callable[[], tuple[Callable[[], Any], Callable[[], Any]]],
    body: Callable[[], Any] | None,
) -> float:
    """Acquisitions per second of `n_threads` threads doing `per_thread` acquire/body/release."""
    acquire, release = make()
    start = threading.Barrier(n_threads + 1)

    def worker() -> None:
        start.wait()
        if body is None:
            for _ in range(per_thread):
                acquire()
                release()
        else:
            for _ in range(per_thread):
                acquire()
                body()
                release()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return n_threads * per_thread / (time.perf_counter() - began)


def ferrolimit_pair() -> tuple[Callable[[], Any], Callable[[], Any]]:
    limiter = ConcurrencyLimiter(SLOTS)
    return limiter.acquire_blocking, limiter.release


def semaphore_pair() -> tuple[Callable[[], Any], Callable[[], Any]]:
    semaphore = threading.BoundedSemaphore(SLOTS)
    return semaphore.acquire, semaphore.release


def bench_blocking(rounds: int, per_thread: int, body: Callable[[], Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n_threads in (1, 2, 4, 8):
        ours: list[float] = []
        theirs: list[float] = []
        ratios: list[float] = []
        for _ in range(rounds):
            a = run_threads(n_threads, per_thread // n_threads, ferrolimit_pair, body)
            b = run_threads(n_threads, per_thread // n_threads, semaphore_pair, body)
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
        rows.append(
            {
                'threads': n_threads,
                'ferrolimit_per_s': statistics.median(ours),
                'bounded_semaphore_per_s': statistics.median(theirs),
                'ratio': statistics.median(ratios),
            }
        )
    return rows


def bench_loops(n_loops: int, tasks_per_loop: int, seconds: float) -> dict[str, Any]:
    limiter = ConcurrencyLimiter(SLOTS, name='loops')
    lock = threading.Lock()
    inside = 0
    peak = 0
    deadline = 0.0

    async def loop_main() -> None:
        async def task() -> None:
            nonlocal inside, peak
            while time.perf_counter() < deadline:
                async with limiter('loop'):
                    with lock:
                        inside += 1
                        peak = max(peak, inside)
                    await asyncio.sleep(0)
                    with lock:
                        inside -= 1

        await asyncio.gather(*(task() for _ in range(tasks_per_loop)))

    def thread_main(i: int) -> None:
        (uvloop.run if i % 2 else asyncio.run)(loop_main())

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(n_loops)]
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    stats = limiter.stats()
    return {
        'loops': n_loops,
        'tasks_per_loop': tasks_per_loop,
        'acquisitions_per_s': stats.acquired_total / elapsed,
        'peak_holders': peak,
        'max_running': SLOTS,
        'invariant_held': peak <= SLOTS and stats.running == 0 and stats.waiting == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer, shorter rounds')
    args = parser.parse_args()
    rounds, per_thread, seconds = (3, 20_000, 0.5) if args.quick else (7, 80_000, 2.0)

    blocking = {
        'empty body': bench_blocking(rounds, per_thread, None),
        # time.sleep(0) releases the GIL while the slot is held: other threads find it taken and wait.
        'body releases the GIL (time.sleep(0))': bench_blocking(rounds, per_thread // 10, _yield_gil),
    }
    for title, rows in blocking.items():
        print(f'Blocking acquire/release, {SLOTS} slots, {title}, median of {rounds} interleaved rounds\n')
        print('| threads | ferrolimit (acq/s) | threading.BoundedSemaphore (acq/s) | ratio | target >= 2x |')
        print('|---:|---:|---:|---:|:---:|')
        for row in rows:
            met = 'yes' if row['ratio'] >= 2 else 'no'
            print(
                f'| {row["threads"]} | {row["ferrolimit_per_s"]:,.0f} | {row["bounded_semaphore_per_s"]:,.0f} '
                f'| {row["ratio"]:.2f}x | {met} |'
            )
        print()
    loops = [bench_loops(n, 8, seconds) for n in (2, 4, 8)]
    print(f'Event loops in threads (half asyncio, half uvloop) sharing one limiter of {SLOTS}, {seconds:g} s each\n')
    print('| loops | tasks/loop | acquisitions/s | peak holders | invariant held |')
    print('|---:|---:|---:|---:|:---:|')
    for row in loops:
        print(
            f'| {row["loops"]} | {row["tasks_per_loop"]} | {row["acquisitions_per_s"]:,.0f} '
            f'| {row["peak_holders"]} | {"yes" if row["invariant_held"] else "NO"} |'
        )
    out = Path(__file__).parent / 'results'
    out.mkdir(exist_ok=True)
    (out / 'threads.json').write_text(json.dumps({'blocking': blocking, 'loops': loops}, indent=2))


if __name__ == '__main__':
    main()
