"""Many pydantic-ai agent runs sharing one ferrolimit limiter, next to the same workload on pydantic-ai's own limiter.

What it shows:

- Four agents share ONE limiter (`max_running` slots, at most `max_queued` callers waiting): two through
  `Agent(max_concurrency=limiter)` (a slot for the whole run), two through
  `ConcurrencyLimitedModel(model, limiter=limiter)` (a slot for each model request).
- The models are pydantic-ai's `TestModel` behind a wrapper that sleeps for a simulated latency (jittered,
  with the same seeded sequence for both limiters) and counts the model calls in flight, so the peak
  concurrency is measured independently of the limiter's own counters.
- The runs arrive in bursts faster than the slots drain them, so the queue fills up and some runs are
  rejected with `ConcurrencyLimitExceeded`; they are caught with pydantic-ai's own exception class, which
  catches ferrolimit's too (it is a subclass).
- A progress bar with the live running/waiting/rejected counts (plain status lines when stdout is not a
  terminal, nothing with `--quiet`), then a table comparing wall time, completed and rejected runs, the peak
  concurrency and the peak number of callers waiting for ferrolimit and for
  `pydantic_ai.concurrency.ConcurrencyLimiter`, and checks that the peak never exceeded `max_running`, that
  ferrolimit never had more than `max_queued` callers waiting, and that its `stats()` agree with what the runs saw.
- pydantic-ai's limiter checks `max_queued` under an internal lock, and the callers queued for that lock are
  neither counted nor bounded: under a burst more than `max_queued` callers wait at once, and those queued for
  the lock are only checked (and maybe rejected) once they get it. The table shows both its own
  `waiting_count` and every caller actually waiting.
- The drop-in path: after `ferrolimit.install()`, a plain `Agent(model, max_concurrency=ConcurrencyLimit(...))`
  gets a ferrolimit limiter; after `ferrolimit.uninstall()`, pydantic-ai's own again.

Be aware when reading the numbers: each agent run costs pydantic-ai roughly 3-4 ms of CPU on top of the
simulated latency, so most of the wall time is pydantic-ai and the latency, not the limiter. How many runs
are rejected depends on timing, so it varies a little from one run of the demo to the next.

Run it with `make demo` (builds the release extension first) or `python examples/demo.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pydantic_ai
from pydantic_ai import Agent
from pydantic_ai.concurrency import ConcurrencyLimit
from pydantic_ai.concurrency import ConcurrencyLimiter as PydanticAIConcurrencyLimiter
from pydantic_ai.exceptions import ConcurrencyLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

import ferrolimit

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is optional
    tqdm = None


class Limiter(Protocol):
    """What the demo reads from a limiter: both ferrolimit's and pydantic-ai's have these."""

    @property
    def running_count(self) -> int: ...

    @property
    def waiting_count(self) -> int: ...


def callers_waiting(limiter: Limiter) -> int:
    """Every caller parked in `acquire()`, whether or not the limiter counts it in `waiting_count`.

    pydantic-ai's limiter checks `max_queued` under an internal `anyio.Lock`; callers still queued for that
    lock are in neither `waiting_count` nor the check, so a burst can park far more than `max_queued` callers.
    Its lock is private: it is read here only to measure that.
    """
    lock = getattr(limiter, '_queue_lock', None)
    return limiter.waiting_count + (lock.statistics().tasks_waiting if lock is not None else 0)


# --- the simulated model ---------------------------------------------------------------------------------


@dataclass
class Gauge:
    """Counts the model calls in flight and remembers the most there ever were at once."""

    current: int = 0
    peak: int = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            yield
        finally:
            self.current -= 1


class SimulatedLatency(WrapperModel):
    """Wraps a model: every request sleeps for a jittered latency first, and is counted by the gauge."""

    def __init__(self, wrapped: TestModel, latency: float, gauge: Gauge, rng: random.Random):
        super().__init__(wrapped)
        self.latency = latency
        self.gauge = gauge
        self.rng = rng

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        with self.gauge.measure():
            await asyncio.sleep(self.latency * self.rng.uniform(0.5, 1.5))
            return await super().request(messages, model_settings, model_request_parameters)


def build_agents(limiter: Any, latency: float, gauge: Gauge, rng: random.Random) -> list[Agent[None, str]]:
    """Four agents sharing one limiter: two limit whole runs, two limit model requests."""

    def model(name: str) -> SimulatedLatency:
        return SimulatedLatency(TestModel(model_name=name, custom_output_text=f'{name}: done'), latency, gauge, rng)

    return [
        Agent(model('support'), name='support', max_concurrency=limiter),
        Agent(model('billing'), name='billing', max_concurrency=limiter),
        Agent(ConcurrencyLimitedModel(model('search'), limiter=limiter), name='search'),
        Agent(ConcurrencyLimitedModel(model('summarize'), limiter=limiter), name='summarize'),
    ]


# --- progress display ------------------------------------------------------------------------------------


class Progress:
    """Shows nothing (`--quiet`); the base of the two displays below."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def status(self, done: int, running: int, waiting: int, rejected: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress(Progress):
    """A tqdm bar, with the live counts as its postfix (when stdout is a terminal)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, label: str, total: int) -> None:
        assert tqdm is not None
        self.bar = tqdm(total=total, desc=f'{label:>12}', unit='run', file=sys.stdout, dynamic_ncols=True, leave=True)

    def advance(self) -> None:
        self.bar.update()

    def status(self, done: int, running: int, waiting: int, rejected: int) -> None:
        self.bar.set_postfix_str(f'running {running:3d}, waiting {waiting:4d}, rejected {rejected:4d}', refresh=False)

    def close(self) -> None:
        self.bar.close()


class LineProgress(Progress):
    """A plain status line every couple of seconds (when stdout is not a terminal, or without tqdm)."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self.label = ''
        self.total = 0
        self.done = 0
        self.started = self.last = 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.last = time.perf_counter()
        print(f'  {label}: {total} runs...', flush=True)

    def advance(self) -> None:
        self.done += 1

    def status(self, done: int, running: int, waiting: int, rejected: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            print(
                f'  {self.label}: {done}/{self.total} runs done, running {running}, waiting {waiting}, '
                f'rejected {rejected}',
                flush=True,
            )

    def close(self) -> None:
        print(
            f'  {self.label}: {self.done}/{self.total} runs done in {time.perf_counter() - self.started:.1f} s',
            flush=True,
        )


def make_progress(quiet: bool) -> Progress:
    if quiet:
        return Progress()
    if tqdm is not None and sys.stdout.isatty():
        return BarProgress()
    return LineProgress()


# --- the workload ----------------------------------------------------------------------------------------


@dataclass
class Config:
    runs: int
    max_running: int
    max_queued: int
    latency: float
    bursts: int
    seed: int

    @property
    def burst_size(self) -> int:
        return -(-self.runs // self.bursts)

    @property
    def burst_interval(self) -> float:
        """Half the time the slots need to drain one burst: the backlog grows until the queue overflows."""
        return 0.5 * self.burst_size / self.max_running * self.latency


@dataclass
class Result:
    label: str
    runs: int = 0
    completed: int = 0
    rejected: int = 0
    peak: int = 0
    peak_waiting: int = 0
    peak_callers_waiting: int = 0
    wall: float = 0.0


async def run_workload(label: str, limiter: Limiter, config: Config, progress: Progress) -> Result:
    """Launch `config.runs` agent runs in bursts, all sharing `limiter`, and wait for every one to finish."""
    gauge = Gauge()
    agents = build_agents(limiter, config.latency, gauge, random.Random(config.seed))
    result = Result(label, runs=config.runs)

    async def one_run(i: int) -> None:
        agent = agents[i % len(agents)]
        try:
            await agent.run(f'request #{i}')
        except ConcurrencyLimitExceeded:  # pydantic-ai's class: catches ferrolimit's subclass too
            result.rejected += 1
        else:
            result.completed += 1
        progress.advance()

    async def monitor() -> None:
        while True:
            waiting = limiter.waiting_count
            result.peak_waiting = max(result.peak_waiting, waiting)
            result.peak_callers_waiting = max(result.peak_callers_waiting, callers_waiting(limiter))
            done = result.completed + result.rejected
            progress.status(done, limiter.running_count, waiting, result.rejected)
            await asyncio.sleep(0.02)

    progress.start(label, config.runs)
    monitor_task = asyncio.create_task(monitor())
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for burst in range(config.bursts):
        await asyncio.sleep(max(0.0, start + burst * config.burst_interval - time.perf_counter()))
        first = burst * config.burst_size
        tasks += [asyncio.create_task(one_run(i)) for i in range(first, min(first + config.burst_size, config.runs))]
    try:
        await asyncio.gather(*tasks)
    finally:
        result.wall = time.perf_counter() - start
        monitor_task.cancel()
        progress.status(
            result.completed + result.rejected, limiter.running_count, limiter.waiting_count, result.rejected
        )
        progress.close()
    result.peak = gauge.peak
    return result


async def warm_up() -> None:
    """One run of each kind of agent on each limiter, so that neither measured workload pays for first calls."""
    for limiter in (ferrolimit.ConcurrencyLimiter(1), PydanticAIConcurrencyLimiter(1)):
        for agent in build_agents(limiter, 0.0, Gauge(), random.Random(0)):
            await agent.run('warm-up')


# --- the drop-in path ------------------------------------------------------------------------------------


async def drop_in(config: Config, progress: Progress) -> tuple[list[str], bool]:
    """`install()`, an agent built the plain pydantic-ai way, `uninstall()`.

    Returns the lines to print, and whether the agent got ferrolimit's limiter, then pydantic-ai's again.
    """
    limit = ConcurrencyLimit(max_running=config.max_running, max_queued=config.max_queued)
    gauge = Gauge()

    def agent() -> Agent[None, str]:
        model = SimulatedLatency(TestModel(), config.latency, gauge, random.Random(config.seed))
        return Agent(model, name='drop-in', max_concurrency=limit)

    def limiter_of(agent: Agent[None, str]) -> Any:
        # A private attribute, read only to show which limiter pydantic-ai created.
        return agent._concurrency_limiter  # pyright: ignore[reportPrivateUsage]

    rejected = 0

    async def one_run(agent: Agent[None, str], i: int) -> None:
        nonlocal rejected
        try:
            await agent.run(f'request #{i}')
        except ConcurrencyLimitExceeded:
            rejected += 1
        progress.advance()

    runs = min(config.runs, 4 * config.max_running)
    ferrolimit.install()
    try:
        installed_agent = agent()
        limiter = limiter_of(installed_agent)
        progress.start('install()', runs)
        start = time.perf_counter()
        try:
            await asyncio.gather(*(one_run(installed_agent, i) for i in range(runs)))
        finally:
            wall = time.perf_counter() - start
            progress.close()
    finally:
        ferrolimit.uninstall()
    after = limiter_of(agent())
    stats = limiter.stats() if isinstance(limiter, ferrolimit.ConcurrencyLimiter) else None
    return [
        (
            'ferrolimit.install(), then Agent(model, max_concurrency=ConcurrencyLimit('
            f'{config.max_running}, max_queued={config.max_queued})):'
        ),
        f'  the agent got a {qualname(limiter)}',
        (
            f'  {runs} runs at once: {runs - rejected} completed, {rejected} rejected, in {wall:.2f} s, '
            f'peak {gauge.peak} concurrent model calls'
        ),
        f'  limiter.stats(): {stats}',
        f'ferrolimit.uninstall(): the same Agent(...) gets a {qualname(after)} again',
    ], (
        isinstance(limiter, ferrolimit.ConcurrencyLimiter)
        and isinstance(after, PydanticAIConcurrencyLimiter)
        and gauge.peak <= config.max_running
    )


def qualname(obj: object) -> str:
    cls = type(obj)
    return f'{cls.__module__}.{cls.__qualname__}'.replace('ferrolimit._ferrolimit.', 'ferrolimit.')


# --- report ----------------------------------------------------------------------------------------------


def table(config: Config, results: list[Result]) -> list[str]:
    rows: list[tuple[str, list[str]]] = [
        ('agent runs launched', [f'{r.runs}' for r in results]),
        ('completed', [f'{r.completed}' for r in results]),
        ('rejected (ConcurrencyLimitExceeded)', [f'{r.rejected}' for r in results]),
        (f'peak concurrent model calls (max_running {config.max_running})', [f'{r.peak}' for r in results]),
        (f'peak waiting_count, sampled (max_queued {config.max_queued})', [f'{r.peak_waiting}' for r in results]),
        ('peak callers waiting for a slot, sampled (*)', [f'{r.peak_callers_waiting}' for r in results]),
        ('wall time', [f'{r.wall:.2f} s' for r in results]),
        ('completed runs per second', [f'{r.completed / r.wall:.0f}' for r in results]),
    ]
    width = max(len(name) for name, _ in rows)
    columns = [max(len(r.label), *(len(values[i]) for _, values in rows)) for i, r in enumerate(results)]
    header = ' ' * width + ''.join(f'   {r.label:>{w}}' for r, w in zip(results, columns, strict=True))
    lines = [header, '-' * len(header)]
    lines += [
        f'{name:<{width}}' + ''.join(f'   {v:>{w}}' for v, w in zip(values, columns, strict=True))
        for name, values in rows
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Many pydantic-ai agent runs sharing one ferrolimit limiter, vs the same on pydantic-ai's own.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument('--runs', type=int, default=1000, help='agent runs per limiter')
    parser.add_argument('--max-running', type=int, default=50, help='slots of the shared limiter')
    parser.add_argument('--max-queued', type=int, default=500, help='queue bound of the shared limiter')
    parser.add_argument('--latency', type=float, default=0.3, help='mean simulated model latency, seconds')
    parser.add_argument('--bursts', type=int, default=3, help='the runs arrive in this many bursts')
    parser.add_argument('--seed', type=int, default=0, help='seed of the latency jitter')
    parser.add_argument('--quiet', action='store_true', help='no progress display, only the results')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.max_running < 1 or args.max_queued < 0 or args.latency < 0 or args.bursts < 1:
        parser.error('need --runs >= 1, --max-running >= 1, --max-queued >= 0, --latency >= 0, --bursts >= 1')
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(args.runs, args.max_running, args.max_queued, args.latency, args.bursts, args.seed)
    progress = make_progress(args.quiet)
    # pydantic-ai shows a banner on the first agent run in a terminal; this program owns its output.
    pydantic_ai.BANNER_ENABLED = False
    print(
        f'{config.runs} agent runs per limiter, over 4 agents sharing it: max_running={config.max_running}, '
        f'max_queued={config.max_queued},\nmodel latency ~{config.latency * 1000:.0f} ms, arriving in '
        f'{config.bursts} bursts of {config.burst_size}, one every {config.burst_interval:.2f} s',
        flush=True,
    )

    await warm_up()
    shared = ferrolimit.ConcurrencyLimiter(config.max_running, max_queued=config.max_queued, name='shared')
    ours = await run_workload('ferrolimit', shared, config, progress)
    stats = shared.stats()
    theirs_limiter = PydanticAIConcurrencyLimiter(config.max_running, max_queued=config.max_queued, name='shared')
    theirs = await run_workload('pydantic-ai', theirs_limiter, config, progress)
    drop_in_lines, drop_in_ok = await drop_in(config, progress)

    print()
    for line in table(config, [ours, theirs]):
        print(line)
    print(
        '(*) ferrolimit: its waiting_count, which counts every parked caller. pydantic-ai: its waiting_count plus the\n'
        '    callers still queued for the internal lock its max_queued check runs under, which that check never sees.'
    )
    print()
    for line in drop_in_lines:
        print(line)
    print()

    checks = [
        (
            f'{r.label}: peak {r.peak} concurrent model calls <= max_running {config.max_running}',
            r.peak <= config.max_running,
        )
        for r in (ours, theirs)
    ]
    checks += [
        (
            f'ferrolimit: peak {ours.peak_callers_waiting} callers waiting <= max_queued {config.max_queued}',
            ours.peak_callers_waiting <= config.max_queued,
        ),
        (
            (
                f'ferrolimit stats(): acquired_total {stats.acquired_total} == completed {ours.completed}, '
                f'rejected_total {stats.rejected_total} == rejected {ours.rejected}, '
                f'cancelled_total {stats.cancelled_total} == 0, nothing held or queued at the end'
            ),
            stats.acquired_total == ours.completed
            and stats.rejected_total == ours.rejected
            and stats.cancelled_total == 0
            and stats.running == stats.waiting == 0,
        ),
    ]
    checks.append(("install() gave the agent a ferrolimit limiter, uninstall() pydantic-ai's again", drop_in_ok))
    for text, ok in checks:
        print(f'{"ok  " if ok else "FAIL"} {text}')
    print()
    print(
        'Each agent run costs pydantic-ai ~3-4 ms of CPU besides the simulated latency, so the wall times are mostly\n'
        'pydantic-ai and the latency, not the limiters. Rejection counts depend on timing and vary between runs.'
    )
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
