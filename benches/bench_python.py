"""ferrolimit against pydantic-ai's own limiter and `asyncio.Semaphore`, in one run.

Run it with `make bench` (after a release build) or `python benches/bench_python.py [--quick]`.
Four measurements, each reported as medians and as ratios:

1. uncontended `async with`, as a ratio to a floor (a pure-Python class with `async def
   __aenter__` / `async def __aexit__`);
2. 1000 tasks through 10 slots, each doing `await asyncio.sleep(0)` inside, as the overhead above
   the same workload without a limiter;
3. cancelling 10k and 100k queued waiters (and the time to queue them);
4. bytes per queued waiter, from tracemalloc (Python heap only) and from the RSS delta (everything,
   including ferrolimit's Rust heap), each minus a task parked on a future of its own.

Timings are interleaved: every round runs each variant once, in a shuffled order, and a ratio is
the median of the per-round ratios. The machine's speed swings; compare ratios from one run, not
absolute times across runs. The garbage collector is off inside timed regions (as in `timeit`)
and runs between samples. The results also go to `benches/results/python.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import pydantic_ai.concurrency as pai

import ferrolimit

RESULTS = Path(__file__).parent / 'results' / 'python.json'
FERRO, PAI, SEM, FLOOR = 'ferrolimit', 'pydantic-ai', 'asyncio.Semaphore', 'floor'
FERRO_NULL = 'ferrolimit, do-nothing tracer'
TARGET_FLOOR_RATIO = 0.7
TARGET_SPEEDUP = 15.0
LINEARITY_BOUNDS = (7.5, 12.5)

Body = Callable[[], Coroutine[Any, Any, None]]
"""A task body."""


@dataclass
class Config:
    rounds_uncontended: int = 31
    sample_ms: float = 20.0
    rounds_burst: int = 31
    burst_tasks: int = 1000
    burst_slots: int = 10
    rounds_cancel: int = 5
    cancel_sizes: tuple[int, ...] = (10_000, 100_000)
    reverse_size: int = 10_000
    memory_tracemalloc_n: int = 20_000
    memory_rss_n: int = 50_000
    memory_rss_repeats: int = 3
    sections: tuple[int, ...] = (1, 2, 3, 4)
    uvloop: bool = False


QUICK = {
    'rounds_uncontended': 9,
    'sample_ms': 10.0,
    'rounds_burst': 9,
    'rounds_cancel': 1,
    'memory_tracemalloc_n': 10_000,
    'memory_rss_n': 20_000,
    'memory_rss_repeats': 1,
}


@dataclass
class Report:
    meta: dict[str, Any] = field(default_factory=dict[str, Any])
    sections: dict[str, Any] = field(default_factory=dict[str, Any])
    rows: list[list[str]] = field(default_factory=list[list[str]])


# --- helpers -------------------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Generator[None, None, None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def median(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def per_round(a: list[float], b: list[float], op: Callable[[float, float], float]) -> list[float]:
    return [op(x, y) for x, y in zip(a, b, strict=True)]


def summary(values: list[float]) -> dict[str, float]:
    lo, hi = quartiles(values)
    return {'median': median(values), 'p25': lo, 'p75': hi}


def yes_no(ok: bool) -> str:
    return 'yes' if ok else '**no**'


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f'{ns / 1e6:.1f} ms'
    if ns >= 1e4:
        return f'{ns / 1e3:.1f} µs'
    return f'{ns:.0f} ns'


T = TypeVar('T')


def shuffled(items: list[T], rng: random.Random) -> list[T]:
    order = items[:]
    rng.shuffle(order)
    return order


# --- 1. uncontended async with -------------------------------------------------------------------


class Floor:
    """The floor: the cheapest async context manager written in Python."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def cm_loop(cm: Any) -> Callable[[int], Awaitable[None]]:
    """`n` times `async with cm` (one object, entered again and again)."""

    async def run(n: int) -> None:
        for _ in range(n):
            async with cm:
                pass

    return run


def context_loop(get_context: Callable[[Any, str], Any], limiter: Any) -> Callable[[int], Awaitable[None]]:
    """`n` times `async with get_context(limiter, 'src')`, as pydantic-ai enters its limiters."""

    async def run(n: int) -> None:
        for _ in range(n):
            async with get_context(limiter, 'src'):
                pass

    return run


def uncontended_variants() -> dict[str, Callable[[int], Awaitable[None]]]:
    """Loops of `n` uncontended `async with` blocks (to be built inside the running loop)."""
    ferro_ctx, pai_ctx = ferrolimit.get_concurrency_context, pai.get_concurrency_context
    return {
        FLOOR: cm_loop(Floor()),
        'ferrolimit get_concurrency_context': context_loop(ferro_ctx, ferrolimit.ConcurrencyLimiter(10)),
        'ferrolimit async with limiter': cm_loop(ferrolimit.ConcurrencyLimiter(10)),
        'pydantic-ai get_concurrency_context': context_loop(pai_ctx, pai.ConcurrencyLimiter(10)),
        "pydantic-ai's get_concurrency_context over a ferrolimit limiter": context_loop(
            pai_ctx, ferrolimit.ConcurrencyLimiter(10)
        ),
        'asyncio.Semaphore async with': cm_loop(asyncio.Semaphore(10)),
    }


async def time_loop(run: Callable[[int], Awaitable[None]], n: int) -> float:
    """ns per `async with` over a loop of `n`."""
    with gc_paused():
        start = time.perf_counter_ns()
        await run(n)
        return (time.perf_counter_ns() - start) / n


async def uncontended(cfg: Config) -> dict[str, Any]:
    variants = uncontended_variants()
    sizes: dict[str, int] = {}
    for name, run in variants.items():
        per_op = await time_loop(run, 2000)  # warm-up and calibration
        sizes[name] = max(1000, int(cfg.sample_ms * 1e6 / per_op))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(1)
    for _ in range(cfg.rounds_uncontended):
        for name in shuffled(list(variants), rng):
            samples[name].append(await time_loop(variants[name], sizes[name]))
    floor = samples[FLOOR]
    result: dict[str, Any] = {'ops_per_sample': sizes, 'ns_per_op': samples, 'median_ns': {}, 'ratio_to_floor': {}}
    for name, values in samples.items():
        result['median_ns'][name] = median(values)
        result['ratio_to_floor'][name] = summary(per_round(values, floor, lambda a, b: a / b))
    pai_name, ferro_name = 'pydantic-ai get_concurrency_context', 'ferrolimit get_concurrency_context'
    result['speedup_vs_pydantic_ai'] = summary(per_round(samples[pai_name], samples[ferro_name], lambda a, b: a / b))
    return result


def print_uncontended(res: dict[str, Any]) -> None:
    print('\n## 1. uncontended `async with` (median ns/op; ratio to floor, median of per-round ratios [p25-p75])')
    for name, ns in res['median_ns'].items():
        r = res['ratio_to_floor'][name]
        print(f'  {name:<66} {ns:8.0f} ns   x{r["median"]:.2f} [{r["p25"]:.2f}-{r["p75"]:.2f}]')
    s = res['speedup_vs_pydantic_ai']
    print(f'  ferrolimit speedup over pydantic-ai: {s["median"]:.1f}x [{s["p25"]:.1f}-{s["p75"]:.1f}]')


def rows_uncontended(res: dict[str, Any]) -> list[list[str]]:
    ratio = res['ratio_to_floor']
    ns = res['median_ns']
    ferro = ratio['ferrolimit get_concurrency_context']['median']
    ferro_self = ratio['ferrolimit async with limiter']['median']
    theirs = ratio['pydantic-ai get_concurrency_context']['median']
    sem = ratio['asyncio.Semaphore async with']['median']
    speedup = res['speedup_vs_pydantic_ai']['median']
    floor_ns = ns[FLOOR]
    return [
        [
            f'uncontended `async with get_concurrency_context(...)`, × floor ({floor_ns:.0f} ns)',
            f'{ferro:.2f}',
            f'{theirs:.2f}',
            f'{sem:.2f} (`async with sem`)',
            '—',
            f'≤ {TARGET_FLOOR_RATIO}: {yes_no(ferro <= TARGET_FLOOR_RATIO)}',
        ],
        [
            'uncontended, ns per `async with`',
            fmt_ns(ns['ferrolimit get_concurrency_context']),
            fmt_ns(ns['pydantic-ai get_concurrency_context']),
            fmt_ns(ns['asyncio.Semaphore async with']),
            f'pydantic-ai ÷ ferrolimit: {speedup:.1f}×',
            f'≥ {TARGET_SPEEDUP:.0f}×: {yes_no(speedup >= TARGET_SPEEDUP)}',
        ],
        [
            'uncontended `async with limiter`, × floor',
            f'{ferro_self:.2f}',
            '—',
            f'{sem:.2f}',
            '—',
            f'≤ {TARGET_FLOOR_RATIO}: {yes_no(ferro_self <= TARGET_FLOOR_RATIO)}',
        ],
    ]


# --- 2. 1000 tasks through 10 slots --------------------------------------------------------------


class NullSpan:
    """A span that records nothing and costs next to nothing."""

    def is_recording(self) -> bool:
        return False

    def end(self) -> None:
        pass


NULL_SPAN = NullSpan()


class NullTracer:
    """A tracer whose wait span costs nothing: separates the OpenTelemetry share of a wait."""

    def start_span(self, name: str, attributes: object = None) -> NullSpan:
        return NULL_SPAN

    def start_as_current_span(self, name: str, attributes: object = None) -> nullcontext[None]:
        return nullcontext()


def burst_variants(slots: int) -> tuple[dict[str, Body], Callable[[], None]]:
    """Task bodies for the contended burst, and a check that every limiter is idle afterwards."""
    ferro = ferrolimit.ConcurrencyLimiter(slots)
    ferro_self = ferrolimit.ConcurrencyLimiter(slots)
    ferro_null = ferrolimit.ConcurrencyLimiter(slots, tracer=NullTracer())  # pyright: ignore[reportArgumentType]
    theirs = pai.ConcurrencyLimiter(slots)
    sem = asyncio.Semaphore(slots)
    ferro_ctx, pai_ctx = ferrolimit.get_concurrency_context, pai.get_concurrency_context

    async def floor() -> None:
        await asyncio.sleep(0)

    async def with_ferro_ctx() -> None:
        async with ferro_ctx(ferro, 'src'):
            await asyncio.sleep(0)

    async def with_ferro_self() -> None:
        async with ferro_self:
            await asyncio.sleep(0)

    async def with_ferro_null() -> None:
        async with ferro_ctx(ferro_null, 'src'):
            await asyncio.sleep(0)

    async def with_pai() -> None:
        async with pai_ctx(theirs, 'src'):
            await asyncio.sleep(0)

    async def with_sem() -> None:
        async with sem:
            await asyncio.sleep(0)

    def check_idle() -> None:
        for limiter in (ferro, ferro_self, ferro_null):
            assert limiter.running_count == 0 and limiter.waiting_count == 0, limiter
        assert theirs.running_count == 0 and theirs.waiting_count == 0
        assert not sem.locked() and not sem._waiters

    variants: dict[str, Body] = {
        FLOOR: floor,
        FERRO: with_ferro_ctx,
        'ferrolimit async with limiter': with_ferro_self,
        FERRO_NULL: with_ferro_null,
        PAI: with_pai,
        SEM: with_sem,
    }
    return variants, check_idle


async def time_burst(body: Body, n: int) -> float:
    """ns per task for `n` tasks started at once and awaited."""
    loop = asyncio.get_running_loop()
    with gc_paused():
        start = time.perf_counter_ns()
        await asyncio.gather(*[loop.create_task(body()) for _ in range(n)])
        return (time.perf_counter_ns() - start) / n


async def burst(cfg: Config) -> dict[str, Any]:
    variants, check_idle = burst_variants(cfg.burst_slots)
    for body in variants.values():
        await time_burst(body, cfg.burst_tasks)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(2)
    for _ in range(cfg.rounds_burst):
        for name in shuffled(list(variants), rng):
            samples[name].append(await time_burst(variants[name], cfg.burst_tasks))
            check_idle()
    floor = samples[FLOOR]
    overhead = {name: per_round(values, floor, lambda a, b: a - b) for name, values in samples.items() if name != FLOOR}
    return {
        'tasks': cfg.burst_tasks,
        'slots': cfg.burst_slots,
        'ns_per_task': samples,
        'median_ns_per_task': {name: median(values) for name, values in samples.items()},
        'overhead_ns_per_task': {name: summary(values) for name, values in overhead.items()},
        'overhead_ratio_to_semaphore': {
            name: summary(per_round(values, overhead[SEM], lambda a, b: a / b))
            for name, values in overhead.items()
            if name != SEM
        },
    }


def print_burst(res: dict[str, Any]) -> None:
    print(
        f'\n## 2. {res["tasks"]} tasks through {res["slots"]} slots, `await asyncio.sleep(0)` inside'
        ' (median ns per task; overhead above the no-limiter floor, median of per-round differences)'
    )
    for name, ns in res['median_ns_per_task'].items():
        line = f'  {name:<32} {ns:8.0f} ns/task'
        if name in res['overhead_ns_per_task']:
            o = res['overhead_ns_per_task'][name]
            line += f'   overhead {o["median"]:7.0f} ns [{o["p25"]:.0f}-{o["p75"]:.0f}]'
        if name in res['overhead_ratio_to_semaphore']:
            r = res['overhead_ratio_to_semaphore'][name]
            line += f'   x{r["median"]:.2f} of Semaphore overhead [{r["p25"]:.2f}-{r["p75"]:.2f}]'
        print(line)


def rows_burst(res: dict[str, Any]) -> list[list[str]]:
    o = res['overhead_ns_per_task']
    ratio = res['overhead_ratio_to_semaphore'][FERRO]['median']
    return [
        [
            (
                f'{res["tasks"]} tasks / {res["slots"]} slots: overhead per task above no limiter'
                f' ({res["median_ns_per_task"][FLOOR]:.0f} ns)'
            ),
            fmt_ns(o[FERRO]['median']),
            fmt_ns(o[PAI]['median']),
            fmt_ns(o[SEM]['median']),
            f'ferrolimit ÷ Semaphore: {ratio:.2f}×',
            f'≤ 1: {yes_no(ratio <= 1.0)}',
        ],
        [
            'the same, ferrolimit with a do-nothing tracer (without the OpenTelemetry wait span)',
            fmt_ns(o[FERRO_NULL]['median']),
            '—',
            fmt_ns(o[SEM]['median']),
            f'ferrolimit ÷ Semaphore: {res["overhead_ratio_to_semaphore"][FERRO_NULL]["median"]:.2f}×',
            '—',
        ],
    ]


# --- 3 and 4. queued waiters: cancellation and memory --------------------------------------------


@dataclass
class Contender:
    """One limiter whose only slot is held, and task bodies that queue on it."""

    hold: Callable[[], Awaitable[Any]]
    body: Body
    waiting: Callable[[], int]
    release: Callable[[], None]
    check_idle: Callable[[], bool]


def contender(name: str) -> Contender:
    """Build inside the running loop. `floor` is no limiter: each task parks on a future of its own."""
    builders: dict[str, Callable[[], Contender]] = {
        FERRO: ferro_contender,
        FERRO_NULL: lambda: ferro_contender(NullTracer()),
        PAI: pai_contender,
        SEM: sem_contender,
        FLOOR: floor_contender,
    }
    return builders[name]()


def limiter_contender(limiter: Any, get_context: Callable[[Any, str], Any]) -> Contender:
    """A limiter of one slot that pydantic-ai's API drives (ferrolimit's or pydantic-ai's own)."""

    async def body() -> None:
        async with get_context(limiter, 'src'):
            pass

    return Contender(
        lambda: limiter.acquire('hold'),
        body,
        lambda: limiter.waiting_count,
        limiter.release,
        lambda: limiter.available_count == 1 and limiter.waiting_count == 0,
    )


def ferro_contender(tracer: Any = None) -> Contender:
    return limiter_contender(ferrolimit.ConcurrencyLimiter(1, tracer=tracer), ferrolimit.get_concurrency_context)


def pai_contender() -> Contender:
    return limiter_contender(pai.ConcurrencyLimiter(1), pai.get_concurrency_context)


def sem_contender() -> Contender:
    sem = asyncio.Semaphore(1)

    async def sem_body() -> None:
        async with sem:
            pass

    return Contender(
        sem.acquire,
        sem_body,
        lambda: len(sem._waiters or ()),
        sem.release,
        lambda: not sem.locked() and not sem._waiters,
    )


def floor_contender() -> Contender:
    loop = asyncio.get_running_loop()
    parked = [0]

    async def hold() -> None:
        return None

    async def floor_body() -> None:
        # Its own future: a shared one would be cancelled with the first task that awaits it.
        parked[0] += 1
        try:
            await loop.create_future()
        finally:
            parked[0] -= 1

    return Contender(hold, floor_body, lambda: parked[0], lambda: None, lambda: parked[0] == 0)


async def queue_up(c: Contender, n: int) -> list[asyncio.Task[None]]:
    """Start `n` tasks and return once every one of them is queued."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c.body()) for _ in range(n)]
    for _ in range(100 * n + 100):
        if c.waiting() >= n:
            break
        await asyncio.sleep(0)
    assert c.waiting() == n, (c.waiting(), n)
    return tasks


async def cancel_all(tasks: list[asyncio.Task[None]], reverse: bool = False) -> None:
    for task in reversed(tasks) if reverse else tasks:
        task.cancel()
    await asyncio.wait(tasks)


async def cancel_sample(name: str, n: int, reverse: bool = False) -> tuple[float, float]:
    """(ns to queue `n` waiters, ns to cancel them all and wait until they are done)."""
    c = contender(name)
    await c.hold()
    with gc_paused():
        start = time.perf_counter_ns()
        tasks = await queue_up(c, n)
        queued = time.perf_counter_ns()
        await cancel_all(tasks, reverse)
        done = time.perf_counter_ns()
    assert all(t.cancelled() for t in tasks)
    assert c.waiting() == 0
    c.release()
    assert c.check_idle(), name
    del tasks
    gc.collect()
    return queued - start, done - queued


CANCEL_VARIANTS = [FERRO, PAI, SEM, FLOOR]


async def cancellation(cfg: Config) -> dict[str, Any]:
    for name in [*CANCEL_VARIANTS, FERRO_NULL]:
        await cancel_sample(name, 1000)  # warm-up
    keys = [(name, n, False) for name in CANCEL_VARIANTS for n in cfg.cancel_sizes]
    keys += [(name, cfg.reverse_size, True) for name in CANCEL_VARIANTS]
    keys += [(FERRO_NULL, min(cfg.cancel_sizes), False)]
    queue_ns: dict[str, list[float]] = {}
    cancel_ns: dict[str, list[float]] = {}
    rng = random.Random(3)
    for _ in range(cfg.rounds_cancel):
        for name, n, reverse in shuffled(keys, rng):
            q, c = await cancel_sample(name, n, reverse)
            key = cancel_key(name, n, reverse)
            queue_ns.setdefault(key, []).append(q)
            cancel_ns.setdefault(key, []).append(c)
    small, large = min(cfg.cancel_sizes), max(cfg.cancel_sizes)
    linearity = {
        name: summary(per_round(cancel_ns[cancel_key(name, large)], cancel_ns[cancel_key(name, small)], div))
        for name in CANCEL_VARIANTS
    }
    return {
        'sizes': list(cfg.cancel_sizes),
        'reverse_size': cfg.reverse_size,
        'queue_ns': queue_ns,
        'cancel_ns': cancel_ns,
        'median_queue_ns': {k: median(v) for k, v in queue_ns.items()},
        'median_cancel_ns': {k: median(v) for k, v in cancel_ns.items()},
        'linearity': {'sizes': [small, large], **linearity},
    }


def div(a: float, b: float) -> float:
    return a / b


def cancel_key(name: str, n: int, reverse: bool = False) -> str:
    return f'{name} {n}{" reverse" if reverse else ""}'


def print_cancellation(res: dict[str, Any]) -> None:
    print('\n## 3. queued waiters on a held limiter of 1: time to queue them, time to cancel them all (medians)')
    for key in res['median_cancel_ns']:
        q, c = res['median_queue_ns'][key], res['median_cancel_ns'][key]
        print(f'  {key:<36} queue {fmt_ns(q):>10}   cancel {fmt_ns(c):>10}')
    small, large = res['linearity']['sizes']
    for name in CANCEL_VARIANTS:
        s = res['linearity'][name]
        print(f'  linearity {name:<26} cancel {large} / {small} = {s["median"]:.1f} [{s["p25"]:.1f}-{s["p75"]:.1f}]')


def timing_row(label: str, times: dict[str, float], keys: list[str]) -> list[str]:
    """A table row of three timings (ferrolimit or a variant of it, pydantic-ai, Semaphore); '' = none."""
    ferro, sem = times[keys[0]], times[keys[2]]
    return (
        [label] + [fmt_ns(times[k]) if k else '—' for k in keys] + [f'ferrolimit ÷ Semaphore: {ferro / sem:.2f}×', '—']
    )


def rows_cancellation(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    cancel, queue = res['median_cancel_ns'], res['median_queue_ns']
    for n in res['sizes']:
        keys = [cancel_key(name, n) for name in (FERRO, PAI, SEM)]
        floor = cancel_key(FLOOR, n)
        rows.append(timing_row(f'cancel {n:,} queued waiters (no limiter: {fmt_ns(cancel[floor])})', cancel, keys))
        rows.append(timing_row(f'queue {n:,} waiters (no limiter: {fmt_ns(queue[floor])})', queue, keys))
    n = res['reverse_size']
    keys = [cancel_key(name, n, True) for name in (FERRO, PAI, SEM)]
    floor = cancel_key(FLOOR, n, True)
    rows.append(
        timing_row(f'cancel {n:,} queued waiters, newest first (no limiter: {fmt_ns(cancel[floor])})', cancel, keys)
    )
    small, large = res['linearity']['sizes']
    keys = [cancel_key(FERRO_NULL, small), '', cancel_key(SEM, small)]
    rows.append(timing_row(f'cancel {small:,} queued waiters, ferrolimit with a do-nothing tracer', cancel, keys))
    rows.append(timing_row(f'queue {small:,} waiters, ferrolimit with a do-nothing tracer', queue, keys))
    lin = {name: res['linearity'][name]['median'] for name in (FERRO, PAI, SEM)}
    lo, hi = LINEARITY_BOUNDS
    rows.append(
        [f'cancel time {large:,} ÷ {small:,} (linear = {large / small:.0f})']
        + [f'{lin[name]:.1f}' for name in (FERRO, PAI, SEM)]
        + ['—', f'{lo}-{hi}: {yes_no(lo <= lin[FERRO] <= hi)}']
    )
    return rows


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


async def queued_memory(kind: str, name: str, n: int) -> dict[str, float]:
    """Memory for `n` tasks queued on `name`, in this (fresh) process."""
    c = contender(name)
    await c.hold()
    await cancel_all(await queue_up(c, 200))  # first-use allocations (imports, tracer, buffers) happen here
    gc.collect()
    if kind == 'tracemalloc':
        tracemalloc.start()
        measure: Callable[[], int] = lambda: tracemalloc.get_traced_memory()[0]
    else:
        measure = rss_bytes
    before = measure()
    tasks = await queue_up(c, n)
    gc.collect()
    after = measure()
    if kind == 'tracemalloc':
        tracemalloc.stop()
    await cancel_all(tasks)
    return {'bytes': after - before, 'per_waiter': (after - before) / n}


def memory_child(cfg: Config, kind: str, name: str, n: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, '--memory-child', kind, name, str(n)]
    if cfg.uvloop:
        cmd.append('--uvloop')
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


MEMORY_VARIANTS = [FLOOR, FERRO, FERRO_NULL, PAI, SEM]


def memory(cfg: Config) -> dict[str, Any]:
    """Each measurement in a fresh process, so no variant reuses memory another one freed."""
    runs: dict[str, dict[str, list[float]]] = {'tracemalloc': {}, 'rss': {}}
    for name in MEMORY_VARIANTS:
        runs['tracemalloc'][name] = [memory_child(cfg, 'tracemalloc', name, cfg.memory_tracemalloc_n)['per_waiter']]
    for _ in range(cfg.memory_rss_repeats):
        for name in MEMORY_VARIANTS:
            runs['rss'].setdefault(name, []).append(memory_child(cfg, 'rss', name, cfg.memory_rss_n)['per_waiter'])
    result: dict[str, Any] = {
        'n': {'tracemalloc': cfg.memory_tracemalloc_n, 'rss': cfg.memory_rss_n},
        'per_waiter_runs': runs,
    }
    for kind, by_name in runs.items():
        task = median(by_name[FLOOR])
        result[kind] = {
            'task_bytes': task,
            'limiter_bytes_per_waiter': {name: median(v) - task for name, v in by_name.items() if name != FLOOR},
        }
    return result


def print_memory(res: dict[str, Any]) -> None:
    print('\n## 4. bytes per queued waiter, minus a task parked on a future of its own (fresh process per figure)')
    for kind, what in (('tracemalloc', 'Python heap only'), ('rss', 'whole process, incl. Rust heap')):
        r = res[kind]
        print(f'  {kind} ({what}), N={res["n"][kind]:,}: a parked task alone = {r["task_bytes"]:.0f} B')
        for name, b in r['limiter_bytes_per_waiter'].items():
            print(f'    {name:<30} +{b:7.0f} B per waiter')


def rows_memory(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for kind, what in (('tracemalloc', 'tracemalloc, Python heap only'), ('rss', 'RSS, incl. Rust heap')):
        r, n = res[kind], res['n'][kind]
        b = r['limiter_bytes_per_waiter']
        rows.append(
            [
                f'bytes per queued waiter beyond a parked task ({r["task_bytes"]:.0f} B), {what}, N={n:,}',
                f'{b[FERRO]:.0f} B (do-nothing tracer: {b[FERRO_NULL]:.0f} B)',
                f'{b[PAI]:.0f} B',
                f'{b[SEM]:.0f} B',
                f'ferrolimit ÷ Semaphore: {b[FERRO] / b[SEM]:.2f}×',
                '—',
            ]
        )
    return rows


# --- driver --------------------------------------------------------------------------------------


def machine(cfg: Config) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'nproc': os.cpu_count(),
        'cpu': cpu,
        'python': platform.python_version(),
        'implementation': platform.python_implementation(),
        'ferrolimit': ferrolimit.__version__,
        'ferrolimit_path': str(Path(ferrolimit.__file__).parent),
        'pydantic_ai': version('pydantic-ai-slim'),
        'event_loop': f'uvloop {version("uvloop")}' if cfg.uvloop else 'asyncio',
    }


def markdown(report: Report) -> str:
    m = report.meta
    machine_line = (
        f'{m["date"]}, {m["nproc"]} cores ({m["cpu"]}), {m["implementation"]} {m["python"]}, {m["event_loop"]},'
        f' ferrolimit {m["ferrolimit"]}, pydantic-ai-slim {m["pydantic_ai"]}.'
    )
    lines = [
        machine_line,
        '',
        '| what | ferrolimit | pydantic-ai | asyncio.Semaphore | ratio | target met |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    lines += ['| ' + ' | '.join(row) + ' |' for row in report.rows]
    return '\n'.join(lines)


def run_async(coro: Coroutine[Any, Any, Any], cfg: Config) -> Any:
    if cfg.uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main(cfg: Config) -> Report:
    assert not ferrolimit.installed(), 'pydantic-ai must keep its own limiter here'
    assert pai.ConcurrencyLimiter.__module__ == 'pydantic_ai.concurrency'
    report = Report(meta={**machine(cfg), 'config': asdict(cfg)})
    print(f'# ferrolimit Python benchmarks\n{report.meta}')
    steps: list[tuple[int, str, Callable[[], Any], Callable[[Any], None], Callable[[Any], list[list[str]]]]] = [
        (1, 'uncontended', lambda: run_async(uncontended(cfg), cfg), print_uncontended, rows_uncontended),
        (2, 'burst', lambda: run_async(burst(cfg), cfg), print_burst, rows_burst),
        (3, 'cancellation', lambda: run_async(cancellation(cfg), cfg), print_cancellation, rows_cancellation),
        (4, 'memory', lambda: memory(cfg), print_memory, rows_memory),
    ]
    for number, key, run, show, rows in steps:
        if number not in cfg.sections:
            continue
        start = time.perf_counter()
        res = run()
        res['seconds'] = time.perf_counter() - start
        report.sections[key] = res
        show(res)
        report.rows += rows(res)
        print(f'  ({res["seconds"]:.1f} s)')
    table = markdown(report)
    report.meta['markdown'] = table
    print('\n## Summary\n')
    print(table)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='a short run: fewer rounds, smaller memory runs')
    parser.add_argument('--rounds', type=int, help='rounds for sections 1 and 2 (default 31, 9 with --quick)')
    parser.add_argument('--sections', default='1,2,3,4', help='comma-separated sections to run (default: all)')
    parser.add_argument('--uvloop', action='store_true', help='run every event loop on uvloop')
    parser.add_argument('--json', type=Path, default=RESULTS, help=f'where to write the results (default {RESULTS})')
    parser.add_argument('--memory-child', nargs=3, metavar=('KIND', 'VARIANT', 'N'), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def config(args: argparse.Namespace) -> Config:
    cfg = Config(**QUICK) if args.quick else Config()  # pyright: ignore[reportArgumentType]
    if args.rounds:
        cfg.rounds_uncontended = cfg.rounds_burst = args.rounds
    cfg.sections = tuple(int(s) for s in args.sections.split(','))
    cfg.uvloop = args.uvloop
    return cfg


if __name__ == '__main__':
    arguments = parse_args()
    configuration = config(arguments)
    if arguments.memory_child:
        kind, name, n = arguments.memory_child
        print(json.dumps(run_async(queued_memory(kind, name, int(n)), configuration)))
        sys.exit(0)
    result = main(configuration)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps(asdict(result), indent=2) + '\n')
    print(f'\nresults written to {arguments.json}')
