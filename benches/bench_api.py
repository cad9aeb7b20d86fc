"""What the one-API surface costs (`API.md` section 6): weights, priorities and keyed limits.

Side by side in one run, with the method of `bench_python.py` (interleaved, shuffled rounds; a
ratio is the median of per-round ratios, `[p25-p75]` its spread; the garbage collector paused in
timed regions):

1. uncontended `async with`: the plain limiter against `limiter(source, weight=3)`,
   `limiter(source, priority=1)`, a keyed limiter's key in use, and a fresh key on each entry;
   ratios to the plain limiter and to the floor (an empty Python async context manager).
   Targets: the plain limiter at most 0.62x the floor (issue 13's), a fresh key at most 2x the
   plain limiter in the same call form (`keyed(key, 'src')` against `limiter('src')`, both over
   the same list of keys made before the timed region);
2. contended: 1000 tasks through 10 slots (weight 2 through 20), each awaiting once inside:
   plain, weighted, prioritized (random priorities) and one keyed key, as overhead over the
   floor task, relative to the plain limiter's;
3. memory of idle keys: a million distinct keys used one after another, then the process's RSS
   and `len(keyed)`. Target: 0 bytes per idle key.

Usage: `python benches/bench_api.py [--quick]` (release build: `make build-prod`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_python import FLOOR, Floor, cm_loop, gc_paused, median, per_round, shuffled, summary, time_loop

import ferrolimit

PLAIN = 'async with limiter'
FRESH = "keyed(fresh key, 'src')"
PLAIN_KEYS = "limiter('src'), over the same keys"
TARGET_FLOOR_RATIO = 0.62
TARGET_FRESH_KEY_RATIO = 2.0


class FreshKeys:
    """`n` times `async with keyed(key, 'src')` (or, for comparison, `limiter('src')`) over `n` keys
    never used before, made before the timed region: what is timed is the acquire and release."""

    def __init__(
        self, keyed: ferrolimit.KeyedConcurrencyLimiter | None, limiter: ferrolimit.ConcurrencyLimiter
    ) -> None:
        self.keyed = keyed
        self.limiter = limiter
        self.counter = iter(range(1 << 62))
        self.keys: list[str] = []

    def prepare(self, n: int) -> None:
        self.keys = [f'user-{next(self.counter)}' for _ in range(n)]

    async def __call__(self, n: int) -> None:
        keys, self.keys = self.keys, []
        assert len(keys) == n, 'prepare(n) first'
        if self.keyed is None:
            limiter = self.limiter
            for _key in keys:
                async with limiter('src'):
                    pass
        else:
            keyed = self.keyed
            for key in keys:
                async with keyed(key, 'src'):
                    pass


def context_loop(make: Callable[[], Any]) -> Callable[[int], Awaitable[None]]:
    """`n` times `async with make()`."""

    async def run(n: int) -> None:
        for _ in range(n):
            async with make():
                pass

    return run


def uncontended_variants() -> dict[str, Callable[[int], Awaitable[None]]]:
    limiter = ferrolimit.ConcurrencyLimiter(10)
    keyed = ferrolimit.KeyedConcurrencyLimiter(10)
    return {
        FLOOR: cm_loop(Floor()),
        PLAIN: cm_loop(limiter),
        "limiter('src')": context_loop(lambda: limiter('src')),
        "limiter('src', weight=3)": context_loop(lambda: limiter('src', weight=3)),
        "limiter('src', priority=1)": context_loop(lambda: limiter('src', priority=1)),
        "keyed('user', 'src'), key in use": context_loop(lambda: keyed('user', 'src')),
        FRESH: FreshKeys(ferrolimit.KeyedConcurrencyLimiter(10), limiter),
        PLAIN_KEYS: FreshKeys(None, limiter),
    }


async def timed(run: Callable[[int], Awaitable[None]], n: int) -> float:
    """`time_loop`, with the keys of a `FreshKeys` made first."""
    if isinstance(run, FreshKeys):
        run.prepare(n)
    return await time_loop(run, n)


async def uncontended(rounds: int, sample_ms: float) -> dict[str, Any]:
    variants = uncontended_variants()
    sizes = {name: max(1000, int(sample_ms * 1e6 / await timed(run, 2000))) for name, run in variants.items()}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(6)
    for _ in range(rounds):
        for name in shuffled(list(variants), rng):
            samples[name].append(await timed(variants[name], sizes[name]))
    return {
        'samples': samples,
        'median_ns': {name: median(values) for name, values in samples.items()},
        'to_floor': {name: summary(per_round(v, samples[FLOOR], lambda a, b: a / b)) for name, v in samples.items()},
        'to_plain': {name: summary(per_round(v, samples[PLAIN], lambda a, b: a / b)) for name, v in samples.items()},
    }


def burst_variants() -> dict[str, Callable[[], Awaitable[None]]]:
    plain = ferrolimit.ConcurrencyLimiter(10)
    heavy = ferrolimit.ConcurrencyLimiter(20)
    ranked = ferrolimit.ConcurrencyLimiter(10)
    keyed = ferrolimit.KeyedConcurrencyLimiter(10)
    rng = random.Random(7)
    priorities = [rng.randrange(-3, 4) for _ in range(1024)]
    counter = iter(range(1 << 62))

    async def floor() -> None:
        await asyncio.sleep(0)

    async def with_plain() -> None:
        async with plain('src'):
            await asyncio.sleep(0)

    async def with_weight() -> None:
        async with heavy('src', weight=2):
            await asyncio.sleep(0)

    async def with_priority() -> None:
        async with ranked('src', priority=priorities[next(counter) % 1024]):
            await asyncio.sleep(0)

    async def with_key() -> None:
        async with keyed('user', 'src'):
            await asyncio.sleep(0)

    return {
        FLOOR: floor,
        'plain': with_plain,
        'weight=2 (20 slots)': with_weight,
        'random priorities': with_priority,
        'one keyed key': with_key,
    }


async def time_burst(body: Callable[[], Awaitable[None]], n: int) -> float:
    loop = asyncio.get_running_loop()
    with gc_paused():
        start = time.perf_counter_ns()
        await asyncio.gather(*[loop.create_task(body()) for _ in range(n)])  # type: ignore[arg-type]
        return (time.perf_counter_ns() - start) / n


async def contended(rounds: int, tasks: int) -> dict[str, Any]:
    variants = burst_variants()
    for body in variants.values():
        await time_burst(body, tasks)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(8)
    for _ in range(rounds):
        for name in shuffled(list(variants), rng):
            samples[name].append(await time_burst(variants[name], tasks))
    overhead = {n: per_round(v, samples[FLOOR], lambda a, b: a - b) for n, v in samples.items() if n != FLOOR}
    return {
        'median_ns_per_task': {name: median(values) for name, values in samples.items()},
        'overhead_to_plain': {
            name: summary(per_round(values, overhead['plain'], lambda a, b: a / b)) for name, values in overhead.items()
        },
    }


def rss_bytes() -> int:
    with open(f'/proc/{os.getpid()}/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


async def idle_keys(n: int) -> dict[str, Any]:
    keyed = ferrolimit.KeyedConcurrencyLimiter(2)
    for i in range(50_000):
        async with keyed(f'warm-{i}'):
            pass
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        async with keyed(f'user-{i}'):
            pass
    keys_left = len(keyed)
    gc.collect()
    grown = rss_bytes() - before
    return {'keys': n, 'keys_left': keys_left, 'rss_growth_bytes': grown, 'bytes_per_idle_key': grown / n}


def fmt(r: dict[str, float]) -> str:
    return f'x{r["median"]:.2f} [{r["p25"]:.2f}-{r["p75"]:.2f}]'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer rounds and keys')
    args = parser.parse_args()
    rounds = 7 if args.quick else 21
    print('# ferrolimit: weights, priorities and keyed limits')

    res = asyncio.run(uncontended(rounds, 10.0 if args.quick else 20.0))
    print('\n## 1. uncontended `async with` (median ns; x floor; x plain limiter)')
    for name, ns in res['median_ns'].items():
        print(f'  {name:<36} {ns:7.0f} ns   floor {fmt(res["to_floor"][name])}   plain {fmt(res["to_plain"][name])}')
    plain_floor = res['to_floor'][PLAIN]['median']
    fresh_to_plain = summary(per_round(res['samples'][FRESH], res['samples'][PLAIN_KEYS], lambda a, b: a / b))
    fresh = fresh_to_plain['median']
    print(f"  a fresh key against limiter('src') over the same keys: {fmt(fresh_to_plain)}")
    print(f'  target: plain <= {TARGET_FLOOR_RATIO}x floor: {"yes" if plain_floor <= TARGET_FLOOR_RATIO else "NO"}')
    print(
        f"  target: fresh key <= {TARGET_FRESH_KEY_RATIO}x limiter('src'): "
        f'{"yes" if fresh <= TARGET_FRESH_KEY_RATIO else "NO"}'
    )

    res = asyncio.run(contended(rounds, 1000))
    print('\n## 2. 1000 tasks through 10 slots (median ns per task; overhead over the floor task x plain)')
    for name, ns in res['median_ns_per_task'].items():
        extra = '' if name == FLOOR else f'   overhead {fmt(res["overhead_to_plain"][name])}'
        print(f'  {name:<36} {ns:7.0f} ns{extra}')

    res = asyncio.run(idle_keys(200_000 if args.quick else 1_000_000))
    print('\n## 3. idle keys')
    print(
        f'  {res["keys"]} distinct keys used once: {res["keys_left"]} left, RSS grew by '
        f'{res["rss_growth_bytes"] / 1e6:.2f} MB = {res["bytes_per_idle_key"]:.2f} bytes per idle key '
        f'(target 0: {"yes" if res["keys_left"] == 0 and res["bytes_per_idle_key"] < 1 else "NO"})'
    )


if __name__ == '__main__':
    main()
