"""One model quota for a fleet: several worker processes, each running pydantic-ai agents, share a
single concurrency limit through `RedisConcurrencyLimiter`.

Each worker is a separate process (as API workers behind a load balancer would be) with its own
limiter object on the same Redis key. The agents' model is pydantic-ai's `TestModel` behind a
wrapper that sleeps for a simulated latency and counts the calls in flight across all processes
(a shared-memory gauge, outside the limiter). The same fleet runs twice: first with a local
`ConcurrencyLimiter` in each process (each process keeps its own limit, so the fleet runs up to
`workers x max_running` calls at once), then with the Redis limiter. The example checks that with
Redis the fleet never had more than `max_running` calls in flight, and that every run finished or
was rejected by the fleet-wide `max_queued`.

Run it with `make demo-fleet` (starts a throwaway Redis server on loopback and stops it after),
or against your own server:

    python examples/redis_fleet.py --redis-url redis://127.0.0.1:6379/0 --workers 4 --runs 40

It uses a fresh key per run (`ferrolimit-example:<random>`), so it never meets an earlier run's
state.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ferrolimit import (
    AbstractConcurrencyLimiter,
    ConcurrencyBackendError,
    ConcurrencyLimiter,
    ConcurrencyLimitExceeded,
    RedisConcurrencyLimiter,
)


@dataclass(frozen=True)
class Settings:
    """What every worker is told."""

    redis_url: str
    key: str
    max_running: int
    max_queued: int | None
    runs: int
    latency: float
    local: bool
    """Each process limits itself with a `ConcurrencyLimiter` instead (the contrast)."""


class FleetGauge(WrapperModel):
    """Wraps a model: each request sleeps for `latency` and is counted in a gauge that all worker
    processes share, so the peak is the fleet's, measured independently of the limiter."""

    def __init__(self, latency: float, in_flight: Synchronized[int], peak: Synchronized[int]) -> None:
        super().__init__(TestModel(custom_output_text='done'))
        self.latency = latency
        self.in_flight = in_flight
        self.peak = peak

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        with self.in_flight.get_lock():
            self.in_flight.value += 1
            self.peak.value = max(self.peak.value, self.in_flight.value)
        try:
            await asyncio.sleep(self.latency)
            return await super().request(messages, model_settings, model_request_parameters)
        finally:
            with self.in_flight.get_lock():
                self.in_flight.value -= 1


def worker(
    number: int,
    settings: Settings,
    in_flight: Synchronized[int],
    peak: Synchronized[int],
    start: Barrier,
    results: multiprocessing.SimpleQueue[tuple[int, int, int]],
) -> None:
    """One worker process: `settings.runs` concurrent agent runs through the fleet-wide limit."""

    async def main() -> tuple[int, int]:
        limiter: AbstractConcurrencyLimiter
        if settings.local:
            limiter = ConcurrencyLimiter(settings.max_running, max_queued=settings.max_queued, name='llm-quota')
        else:
            limiter = RedisConcurrencyLimiter(
                settings.redis_url,
                settings.key,
                settings.max_running,
                max_queued=settings.max_queued,
                name='llm-quota',
            )
        agent = Agent(FleetGauge(settings.latency, in_flight, peak), max_concurrency=limiter)

        async def one(i: int) -> bool:
            try:
                await agent.run(f'worker {number}, request {i}')
            except ConcurrencyLimitExceeded:
                return False
            return True

        outcomes = await asyncio.gather(*(one(i) for i in range(settings.runs)))
        return sum(outcomes), len(outcomes) - sum(outcomes)

    start.wait()  # every process starts its burst at the same moment
    done, rejected = asyncio.run(main())
    results.put((number, done, rejected))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    parser.add_argument(
        '--redis-url',
        default=os.environ.get('FERROLIMIT_REDIS_URL', 'redis://127.0.0.1:6379/0'),
        help='the Redis server (default: $FERROLIMIT_REDIS_URL, else redis://127.0.0.1:6379/0)',
    )
    parser.add_argument('--workers', type=int, default=4, help='worker processes (default 4)')
    parser.add_argument('--runs', type=int, default=40, help='agent runs per worker (default 40)')
    parser.add_argument('--max-running', type=int, default=5, help='the fleet-wide limit (default 5)')
    parser.add_argument('--max-queued', type=int, default=None, help='the fleet-wide queue bound (default: unbounded)')
    parser.add_argument('--latency', type=float, default=0.02, help='simulated model latency, seconds')
    return parser.parse_args(argv)


def run_fleet(settings: Settings, workers: int) -> tuple[list[tuple[int, int, int]], int, float, bool]:
    """Runs the workers: per-worker outcomes, the fleet's peak of calls in flight, the wall time,
    and whether every worker exited cleanly."""
    # `spawn`: each worker is a fresh interpreter, as separate API workers would be.
    context = multiprocessing.get_context('spawn')
    in_flight, peak = context.Value('i', 0), context.Value('i', 0)
    start = context.Barrier(workers + 1)
    results: multiprocessing.SimpleQueue[tuple[int, int, int]] = context.SimpleQueue()
    processes = [
        context.Process(target=worker, args=(n, settings, in_flight, peak, start, results)) for n in range(workers)
    ]
    for process in processes:
        process.start()
    start.wait(timeout=60)
    began = time.perf_counter()
    for process in processes:
        process.join(timeout=300)
    elapsed = time.perf_counter() - began
    clean = all(p.exitcode == 0 for p in processes)
    outcomes = sorted(results.get() for _ in range(sum(p.exitcode == 0 for p in processes)))
    return outcomes, peak.value, elapsed, clean


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        redis_url=args.redis_url,
        key=f'ferrolimit-example:{uuid.uuid4().hex}',
        max_running=args.max_running,
        max_queued=args.max_queued,
        runs=args.runs,
        latency=args.latency,
        local=True,
    )
    try:  # one round trip first, so that an unreachable server is one clear line, not a traceback per worker
        RedisConcurrencyLimiter(args.redis_url, settings.key, args.max_running).running_count  # noqa: B018
    except ConcurrencyBackendError as e:
        print(f'cannot use Redis at {args.redis_url}: {e}', file=sys.stderr)
        return 2
    print(f'{args.workers} workers x {args.runs} agent runs, limit {args.max_running}, Redis at {args.redis_url}')
    _, local_peak, local_elapsed, _ = run_fleet(settings, args.workers)
    print(
        f'a ConcurrencyLimiter per process: up to {local_peak} model calls in flight at once across the fleet '
        f'({local_elapsed:.2f} s)'
    )
    outcomes, peak, elapsed, clean = run_fleet(replace(settings, local=False), args.workers)
    print('one RedisConcurrencyLimiter key for the fleet:')
    print(f'{"worker":>8} {"completed":>10} {"rejected":>9}')
    for number, done, rejected in outcomes:
        print(f'{number:>8} {done:>10} {rejected:>9}')
    completed = sum(done for _, done, _ in outcomes)
    rejected = sum(r for _, _, r in outcomes)
    print(f'  fleet: {completed} completed, {rejected} rejected, in {elapsed:.2f} s')
    print(f'  most model calls in flight at once, across all workers: {peak} (limit {args.max_running})')

    checks = {
        'every worker exited cleanly': clean,
        'the fleet never exceeded max_running': peak <= args.max_running,
        'every run completed or was rejected': completed + rejected == args.workers * args.runs,
        'nothing rejected without a queue bound': args.max_queued is not None or rejected == 0,
    }
    for name, ok in checks.items():
        print(f'{"ok  " if ok else "FAIL"} {name}')
    return 0 if all(checks.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
