"""The contended burst on trio: 1000 tasks through 10 slots, side by side in one run.

Run it with `make bench` (after a release build) or `python benches/bench_trio.py [--quick]`.
Each task does `async with <limiter>: await trio.lowlevel.checkpoint()`; a round runs every
variant once, in a shuffled order, and reports the overhead per task above the same burst without
a limiter (the floor), as a median of the per-round differences and as a ratio to
`trio.Semaphore`'s overhead. The anchors: `trio.Semaphore`, `trio.CapacityLimiter` and
pydantic-ai's own limiter (anyio, so it runs on trio too). The garbage collector is off inside
timed regions. Results also go to `benches/results/trio.json`.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pydantic_ai.concurrency as pai
import trio

import ferrolimit

TASKS = 1000
SLOTS = 10

Body = Callable[[], Awaitable[None]]


def limited(cm: Callable[[], Any]) -> Body:
    """A task body that holds a slot of `cm()` across one checkpoint."""

    async def body() -> None:
        async with cm():
            await trio.lowlevel.checkpoint()

    return body


async def floor() -> None:
    await trio.lowlevel.checkpoint()


def variants() -> dict[str, Body]:
    ferro = ferrolimit.ConcurrencyLimiter(SLOTS)
    pai_limiter = pai.ConcurrencyLimiter(SLOTS)
    semaphore = trio.Semaphore(SLOTS)
    capacity = trio.CapacityLimiter(SLOTS)
    return {
        'floor': floor,
        'ferrolimit': limited(lambda: ferrolimit.get_concurrency_context(ferro, 'bench')),
        'ferrolimit async with limiter': limited(lambda: ferro),
        'pydantic-ai': limited(lambda: pai.get_concurrency_context(pai_limiter, 'bench')),
        'trio.Semaphore': limited(lambda: semaphore),
        'trio.CapacityLimiter': limited(lambda: capacity),
    }


async def burst(body: Body) -> float:
    """Nanoseconds per task for one burst of `TASKS` tasks."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        async with trio.open_nursery() as nursery:
            for _ in range(TASKS):
                nursery.start_soon(body)
        return (time.perf_counter_ns() - start) / TASKS
    finally:
        gc.enable()


async def run(rounds: int) -> dict[str, list[float]]:
    bodies = variants()
    names = list(bodies)
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)
    for name in names:  # warm-up
        await burst(bodies[name])
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            times[name].append(await burst(bodies[name]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or '').splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds')
    parser.add_argument('--rounds', type=int, default=None)
    parser.add_argument('--json', type=Path, default=Path(__file__).with_name('results') / 'trio.json')
    args = parser.parse_args()
    rounds = args.rounds or (10 if args.quick else 40)
    times = trio.run(run, rounds)
    overhead = {
        name: [t - f for t, f in zip(values, times['floor'], strict=True)]
        for name, values in times.items()
        if name != 'floor'
    }
    sem = overhead['trio.Semaphore']
    print(f'## {TASKS} tasks through {SLOTS} slots on trio, one checkpoint inside ({rounds} rounds)')
    print(f'  {"floor":32} {statistics.median(times["floor"]):8.0f} ns/task')
    report: dict[str, Any] = {'rounds': rounds, 'floor_ns': statistics.median(times['floor'])}
    for name, values in overhead.items():
        ratio = statistics.median([v / s for v, s in zip(values, sem, strict=True)])
        med = statistics.median(values)
        report[name] = {'overhead_ns': med, 'ratio_to_trio_semaphore': ratio}
        print(f'  {name:32} overhead {med:8.0f} ns/task   x{ratio:.2f} of trio.Semaphore overhead')
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
    main()
