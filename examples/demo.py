"""ferrolimit next to pydantic-ai's own concurrency limiter, in the three places where they differ, or might.

1. Agent runs sharing one limiter. Bursts of pydantic-ai agent runs (a `FunctionModel` that sleeps for a
   simulated latency) share one limiter with `max_running` and `max_queued`: a `ferrolimit.ConcurrencyLimiter`,
   then `pydantic_ai.concurrency.ConcurrencyLimiter`. The model counts the calls in flight, and a thin wrapper
   (`Observed`) counts from outside the limiter how many callers are waiting for a slot at once.
   pydantic-ai's limiter checks `max_queued` under an `anyio.Lock`: the callers queued for that lock are not in
   its `waiting_count` and are checked one per event-loop turn, so a burst parks far more than `max_queued`
   callers, and those beyond the bound wait before they are rejected.
2. The cost of one uncontended `async with`, for ferrolimit, pydantic-ai's limiter and `asyncio.Semaphore`.
3. A waiter cancelled at the instant a slot is handed to it: the slot must go on to the next waiter.

Every check prints a verdict computed from what was measured: PASS, the guarantee held; FLAG, pydantic-ai's
limiter (or a slow ferrolimit build) fell short, worth knowing but not an error; FAIL, ferrolimit broke one of
its guarantees, and the exit status is 1.

Run it with `make demo` (builds the release extension first) or `python examples/demo.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pydantic_ai
import pydantic_ai.concurrency as pai
from pydantic_ai import Agent
from pydantic_ai.exceptions import ConcurrencyLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import ferrolimit

say = partial(print, flush=True)
FERROLIMIT, PYDANTIC_AI = 'ferrolimit', 'pydantic-ai'
Limiter = pai.ConcurrencyLimiter | ferrolimit.ConcurrencyLimiter


# --- verdicts ------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    status: str  # PASS, FLAG or FAIL
    subject: str
    text: str


@dataclass
class Report:
    """Prints the sections and verdicts, and remembers the verdicts for the summary."""

    verdicts: list[Verdict] = field(default_factory=list)

    def section(self, title: str, *lines: str) -> None:
        say(f'\n== {title} ==')
        for line in lines:
            say(f'  {line}')

    def check(self, subject: str, ok: bool, text: str, *, guarantee: bool = True, why: str = '') -> None:
        """PASS if `ok`; otherwise FAIL for a broken ferrolimit guarantee, FLAG for anything else."""
        status = 'PASS' if ok else 'FAIL' if guarantee and subject == FERROLIMIT else 'FLAG'
        self.verdicts.append(Verdict(status, subject, f'{subject}: {text}'))
        say(f'  {status} {subject}: {text}')
        if why and not ok:
            say(textwrap.fill(why, 118, initial_indent='       why: ', subsequent_indent=' ' * 12))

    def summary(self, seconds: float) -> int:
        """Print the summary and return the exit status: 1 if ferrolimit failed a check."""
        self.section(f'Summary ({seconds:.1f} s)')
        for subject in (FERROLIMIT, PYDANTIC_AI):
            statuses = [v.status for v in self.verdicts if v.subject == subject]
            counts = ', '.join(f'{statuses.count(s)} {s}' for s in ('PASS', 'FLAG', 'FAIL') if s in statuses)
            say(f'  {subject:<12} {counts}')
        for v in self.verdicts:
            if v.status != 'PASS':
                say(f'  {v.status} {v.text}')
        return 1 if any(v.status == 'FAIL' for v in self.verdicts) else 0


# --- 1. agent runs sharing one limiter -----------------------------------------------------------------------


class Observed(pai.AbstractConcurrencyLimiter):
    """Passes `acquire`/`release` through to a limiter and counts, from outside, the callers waiting in it.

    A caller inside `acquire()` waits unless it was just handed a slot and has not resumed yet: such a slot is in
    the limiter's `running_count` but not yet in `holding`. So `inside - (running_count - holding)` callers wait,
    whatever the limiter's own `waiting_count` says. The count is taken whenever a caller arrives or releases,
    when every other task is suspended.
    """

    def __init__(self, limiter: Limiter):
        self.limiter = limiter
        self.inside = 0  # callers in acquire()
        self.holding = 0  # callers that got a slot and have not released it
        self.peak_waiting = 0
        self.peak_waiting_count = 0  # the limiter's own count
        self.waiting_count_off = 0  # the largest difference between the two
        self.longest_rejection = 0.0  # seconds from calling acquire() to ConcurrencyLimitExceeded

    def sample(self) -> None:
        waiting = self.inside - (self.limiter.running_count - self.holding)
        own = self.limiter.waiting_count
        self.peak_waiting = max(self.peak_waiting, waiting)
        self.peak_waiting_count = max(self.peak_waiting_count, own)
        self.waiting_count_off = max(self.waiting_count_off, abs(waiting - own))

    async def acquire(self, source: str) -> None:
        self.sample()
        self.inside += 1
        start = time.perf_counter()
        try:
            await self.limiter.acquire(source)
        except ConcurrencyLimitExceeded:
            self.longest_rejection = max(self.longest_rejection, time.perf_counter() - start)
            raise
        finally:
            self.inside -= 1
        self.holding += 1

    def release(self) -> None:
        self.sample()
        self.holding -= 1
        self.limiter.release()


@dataclass
class Workload:
    max_running: int
    max_queued: int
    bursts: int
    burst: int
    interval: float
    latency: float


@dataclass
class Outcome:
    completed: int = 0
    rejected: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    seconds: float = 0.0


async def agent_runs(limiter: Observed, work: Workload) -> Outcome:
    """`work.bursts` bursts of agent runs on two agents sharing `limiter`; returns once every run is over."""
    outcome = Outcome()
    rng = random.Random(0)  # the same latencies for both limiters

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        outcome.in_flight += 1
        outcome.peak_in_flight = max(outcome.peak_in_flight, outcome.in_flight)
        try:
            await asyncio.sleep(work.latency * rng.uniform(0.5, 1.5))
        finally:
            outcome.in_flight -= 1
        return ModelResponse(parts=[TextPart('done')])

    agents = [Agent(FunctionModel(respond), name=name, max_concurrency=limiter) for name in ('support', 'billing')]

    async def run(i: int) -> None:
        try:
            await agents[i % len(agents)].run(f'request #{i}')
        except ConcurrencyLimitExceeded:  # pydantic-ai's class: ferrolimit's is a subclass
            outcome.rejected += 1
        else:
            outcome.completed += 1

    start = time.perf_counter()
    runs: list[asyncio.Task[None]] = []
    for burst in range(work.bursts):
        await asyncio.sleep(max(0.0, start + burst * work.interval - time.perf_counter()))
        runs += [asyncio.create_task(run(burst * work.burst + i)) for i in range(work.burst)]
    await asyncio.gather(*runs)
    outcome.seconds = time.perf_counter() - start
    return outcome


@dataclass
class Measured:
    limiter: Limiter
    observed: Observed
    outcome: Outcome


async def section_agent_runs(report: Report, work: Workload) -> None:
    report.section(
        '1. Agent runs sharing one limiter',
        f'two agents share one limiter with max_running={work.max_running}, max_queued={work.max_queued}; '
        f'{work.bursts} bursts of {work.burst} runs arrive',
        f'{work.interval} s apart, and each run makes one model call of ~{work.latency * 1000:.0f} ms',
    )
    # The first agent run of a process pays for pydantic-ai's lazy set-up: not in the measurements.
    await agent_runs(
        Observed(pai.ConcurrencyLimiter(1)),
        Workload(max_running=1, max_queued=0, bursts=1, burst=1, interval=0, latency=0),
    )
    measured: dict[str, Measured] = {}
    for subject, limiter in (
        (FERROLIMIT, ferrolimit.ConcurrencyLimiter(work.max_running, max_queued=work.max_queued)),
        (PYDANTIC_AI, pai.ConcurrencyLimiter(work.max_running, max_queued=work.max_queued)),
    ):
        say(f'  {subject}: {work.bursts * work.burst} agent runs...', end=' ')
        observed = Observed(limiter)
        measured[subject] = Measured(limiter, observed, await agent_runs(observed, work))
        say(f'done in {measured[subject].outcome.seconds:.1f} s')

    print_table(
        list(measured),
        {
            'completed / rejected': [f'{m.outcome.completed} / {m.outcome.rejected}' for m in measured.values()],
            f'completed runs per second (the slots allow {work.max_running / work.latency:.0f})': [
                f'{m.outcome.completed / m.outcome.seconds:.0f}' for m in measured.values()
            ],
            f'most model calls in flight (max_running {work.max_running})': [
                f'{m.outcome.peak_in_flight}' for m in measured.values()
            ],
            f'most callers waiting at once (max_queued {work.max_queued})': [
                f'{m.observed.peak_waiting}' for m in measured.values()
            ],
            "  what the limiter's waiting_count showed, at most": [
                f'{m.observed.peak_waiting_count}' for m in measured.values()
            ],
            'longest wait before a ConcurrencyLimitExceeded': [
                f'{m.observed.longest_rejection * 1000:.1f} ms' for m in measured.values()
            ],
        },
    )
    for subject, m in measured.items():
        peak = m.outcome.peak_in_flight
        report.check(
            subject, peak <= work.max_running, f'{peak} model calls in flight at most, max_running={work.max_running}'
        )
    for subject, m in measured.items():
        check_waiting(report, subject, m.observed, work.max_queued)
    for subject, m in measured.items():
        check_slots_returned(report, subject, m.limiter, m.outcome)


def check_waiting(report: Report, subject: str, observed: Observed, max_queued: int) -> None:
    peak = observed.peak_waiting
    if peak > max_queued:
        report.check(
            subject,
            False,
            f'{peak} callers waited at once, {peak - max_queued} more than max_queued={max_queued} '
            f'(its waiting_count showed {observed.peak_waiting_count} at most)',
            why='it checks max_queued under an anyio.Lock, and the callers queued for that lock are neither in '
            'waiting_count nor checked until they get it, one per event-loop turn. Those beyond the bound wait (up '
            f'to {observed.longest_rejection * 1000:.0f} ms here) for a place or a ConcurrencyLimitExceeded: it acts as '
            'a longer queue than max_queued, so more callers wait and more of them may end up running',
        )
        return
    reached = 'the bound reached' if peak == max_queued else 'not reached: make the bursts larger'
    exact = observed.waiting_count_off == 0
    report.check(
        subject,
        exact,
        f'{peak} callers waited at once at most, max_queued={max_queued} ({reached}); '
        + (
            'waiting_count counted each of them'
            if exact
            else f'waiting_count was off by up to {observed.waiting_count_off}'
        ),
    )


def check_slots_returned(report: Report, subject: str, limiter: Limiter, outcome: Outcome) -> None:
    counts = (limiter.running_count, limiter.waiting_count, limiter.available_count)
    ok = counts == (0, 0, limiter.max_running)
    text = f'every slot came back, {counts[0]} running, {counts[1]} waiting, {counts[2]} available at the end'
    if isinstance(limiter, ferrolimit.ConcurrencyLimiter):
        stats = limiter.stats()
        totals = (stats.acquired_total, stats.rejected_total, stats.cancelled_total)
        ok = ok and totals == (outcome.completed, outcome.rejected, 0)
        text += f'; stats() agree: {totals[0]} acquired, {totals[1]} rejected, {totals[2]} cancelled'
    report.check(subject, ok, text)


def print_table(columns: list[str], rows: dict[str, list[str]]) -> None:
    width = max(map(len, rows))
    widths = [max(len(c), *(len(values[i]) for values in rows.values())) for i, c in enumerate(columns)]
    say()
    say('  ' + ' ' * width + ''.join(f'   {c:>{w}}' for c, w in zip(columns, widths, strict=True)))
    for name, values in rows.items():
        say(f'  {name:<{width}}' + ''.join(f'   {v:>{w}}' for v, w in zip(values, widths, strict=True)))
    say()


# --- 2. the cost of one async with ---------------------------------------------------------------------------


async def seconds_per_async_with(context: Callable[[], AbstractAsyncContextManager[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with context():
            pass
    return (time.perf_counter() - start) / n


async def section_overhead(report: Report, rounds: int, n: int = 20_000) -> None:
    report.section(
        '2. The cost of one uncontended `async with`',
        '`async with get_concurrency_context(limiter, source)`, as pydantic-ai enters a limiter (`async with semaphore`',
        f'for asyncio.Semaphore), one task and a free slot every time: the median of {rounds} rounds of {n} blocks',
    )
    ours, theirs, semaphore = ferrolimit.ConcurrencyLimiter(10), pai.ConcurrencyLimiter(10), asyncio.Semaphore(10)
    contexts: dict[str, Callable[[], AbstractAsyncContextManager[Any]]] = {
        FERROLIMIT: lambda: ferrolimit.get_concurrency_context(ours, 'demo'),
        PYDANTIC_AI: lambda: pai.get_concurrency_context(theirs, 'demo'),
        'asyncio.Semaphore': lambda: semaphore,
    }
    samples: dict[str, list[float]] = {name: [] for name in contexts}
    for _ in range(rounds):  # interleaved, so that a slow moment of the machine hits all of them
        for name, context in contexts.items():
            samples[name].append(await seconds_per_async_with(context, n))
    medians = {name: statistics.median(s) for name, s in samples.items()}
    say()
    for name, median in medians.items():
        say(f'  {name:<18} {median * 1e9:6.0f} ns   {median / medians[FERROLIMIT]:5.1f}x ferrolimit')
    say()
    speedup = medians[PYDANTIC_AI] / medians[FERROLIMIT]
    report.check(
        FERROLIMIT,
        speedup > 1,
        f"{speedup:.1f}x cheaper than pydantic-ai's limiter per `async with`"
        if speedup > 1
        else f"not cheaper than pydantic-ai's limiter per `async with` ({speedup:.2f}x)",
        guarantee=False,
        why='a debug build of ferrolimit? `make demo` builds a release one',
    )


# --- 3. cancellation at the instant of handoff ---------------------------------------------------------------


async def cancel_at_handoff(limiter: Limiter, release_first: bool) -> tuple[int, list[str]]:
    """A holder and two waiters, `a` and `b`, on a one-slot limiter; in one step, with no task running in between,
    the holder releases and `a` is cancelled. Returns how many waited before that step, and who got the slot."""
    entered: list[str] = []

    async def waiter(name: str) -> None:
        await limiter.acquire(name)
        entered.append(name)

    await limiter.acquire('holder')
    a = asyncio.create_task(waiter('a'))
    await settle()
    b = asyncio.create_task(waiter('b'))
    await settle()
    waiting = limiter.waiting_count
    if release_first:
        limiter.release()
        a.cancel()
    else:
        a.cancel()
        limiter.release()
    await asyncio.wait({a, b}, timeout=1.0)
    b.cancel()  # if the slot was lost, `b` is still waiting
    for _ in entered:
        limiter.release()
    await asyncio.gather(a, b, return_exceptions=True)
    return waiting, entered


async def settle() -> None:
    """Let the tasks just started run until they wait (pydantic-ai's limiter takes a few event-loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def section_cancellation(report: Report) -> None:
    report.section(
        '3. A waiter cancelled at the instant the slot is handed to it',
        'one slot, a holder and two waiters, a then b; in one step (no task runs in between) the holder releases',
        'and a is cancelled: b must get the slot, and nothing may be left held or waiting',
    )
    for release_first in (True, False):
        for subject, limiter in (
            (FERROLIMIT, ferrolimit.ConcurrencyLimiter(1)),
            (PYDANTIC_AI, pai.ConcurrencyLimiter(1)),
        ):
            waiting, entered = await cancel_at_handoff(limiter, release_first)
            counts = (limiter.running_count, limiter.waiting_count, limiter.available_count)
            report.check(
                subject,
                waiting == 2 and entered == ['b'] and counts == (0, 0, 1),
                f'{"release, then cancel" if release_first else "cancel, then release"}: {waiting} waiting before, '
                f'the slot went to {" and ".join(entered) or "nobody"}, then {counts[0]} running, {counts[1]} waiting, '
                f'{counts[2]} available',
            )


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ferrolimit next to pydantic-ai's own concurrency limiter.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument('--max-running', type=int, default=10, help='slots of the shared limiter')
    parser.add_argument('--max-queued', type=int, default=50, help='queue bound of the shared limiter')
    parser.add_argument('--bursts', type=int, default=3, help='bursts of agent runs')
    parser.add_argument('--burst', type=int, default=150, help='agent runs per burst')
    parser.add_argument('--interval', type=float, default=0.6, help='seconds between bursts')
    parser.add_argument('--latency', type=float, default=0.2, help='mean simulated model latency, seconds')
    parser.add_argument('--rounds', type=int, default=7, help='rounds of the `async with` timing')
    args = parser.parse_args(argv)
    if min(args.max_running, args.bursts, args.burst, args.rounds) < 1 or args.max_queued < 0 or args.interval < 0:
        parser.error('need --max-running, --bursts, --burst, --rounds >= 1 and --max-queued, --interval >= 0')
    if args.latency <= 0:
        parser.error('need --latency > 0')
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pydantic_ai.BANNER_ENABLED = False  # this program owns its output
    start = time.perf_counter()
    say(
        f'ferrolimit {ferrolimit.__version__} vs pydantic-ai {pydantic_ai.__version__}, '
        f'Python {platform.python_version()}'
    )
    report = Report()
    work = Workload(args.max_running, args.max_queued, args.bursts, args.burst, args.interval, args.latency)
    await section_agent_runs(report, work)
    await section_overhead(report, args.rounds)
    await section_cancellation(report)
    return report.summary(time.perf_counter() - start)


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
