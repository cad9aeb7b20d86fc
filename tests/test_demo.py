"""examples/demo.py: it runs, ferrolimit passes its checks, and the checks would catch what they look for."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import subprocess
import sys
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import ferrolimit

EXAMPLES = Path(__file__).parent.parent / 'examples'
DEMO = EXAMPLES / 'demo.py'


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location('ferrolimit_demo', DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = load_demo()


class Fifo:
    """A minimal FIFO limiter with an unbounded queue and exact counts.

    With `leaky`, a waiter cancelled at the instant a slot is handed to it keeps that slot: the bug the demo's
    cancellation check is there to catch.
    """

    def __init__(self, max_running: int, *, leaky: bool = False):
        self.max_running = max_running
        self.running_count = 0
        self.leaky = leaky
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting_count(self) -> int:
        return len(self.waiters)

    @property
    def available_count(self) -> int:
        return self.max_running - self.running_count

    async def acquire(self, source: str = 'unnamed') -> None:
        if self.running_count < self.max_running and not self.waiters:
            self.running_count += 1
            return
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                if future in self.waiters:
                    self.waiters.remove(future)
            elif not self.leaky:
                self.release()
            raise

    def release(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():  # not cancelled: the slot goes to this waiter, still running
                future.set_result(None)
                return
        self.running_count -= 1


def run_demo(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=EXAMPLES.parent,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_demo_runs_and_ferrolimit_passes_every_check() -> None:
    status, out = run_demo(
        *('--max-running', '5', '--max-queued', '20', '--bursts', '2', '--burst', '60'),
        *('--interval', '0.2', '--latency', '0.05', '--rounds', '2'),
    )
    assert status == 0, out
    assert 'FAIL' not in out, out
    for section in ('== 1. Agent runs', '== 2. The cost', '== 3. A waiter cancelled', '== Summary'):
        assert section in out, out
    assert 'PASS ferrolimit: 5 model calls in flight at most, max_running=5' in out, out
    # 120 runs in bursts of 60 for 5 slots and 20 places: the bound is reached, so its check is not vacuous.
    assert 'PASS ferrolimit: 20 callers waited at once at most, max_queued=20 (the bound reached)' in out, out
    assert 'PASS ferrolimit: every slot came back, 0 running, 0 waiting, 5 available at the end' in out, out
    assert out.count('PASS ferrolimit: release, then cancel') == out.count('PASS ferrolimit: cancel, then release') == 1
    # The overhead verdict is not asserted: a debug build (`make build-dev`) may FLAG it, and must still exit 0.


def test_only_a_failed_ferrolimit_guarantee_fails_the_demo() -> None:
    def status(subject: str, *, guarantee: bool = True) -> int:
        report = demo.Report()
        report.check(demo.FERROLIMIT, True, 'held')
        report.check(subject, False, 'broken', guarantee=guarantee)
        return report.summary(0.0)

    assert status(demo.FERROLIMIT) == 1
    assert status(demo.FERROLIMIT, guarantee=False) == 0  # e.g. slower than pydantic-ai: FLAG
    assert status(demo.PYDANTIC_AI) == 0


async def burst(observed: Any, callers: int) -> int:
    """`callers` callers arrive at once, each holding its slot for one event-loop turn; returns the rejections."""

    async def caller() -> bool:
        try:
            await observed.acquire('test')
        except ferrolimit.ConcurrencyLimitExceeded:
            return False
        await asyncio.sleep(0)
        observed.release()
        return True

    return sum(not ok for ok in await asyncio.gather(*(caller() for _ in range(callers))))


def test_observed_counts_every_waiting_caller() -> None:
    observed = demo.Observed(Fifo(2))
    assert asyncio.run(burst(observed, 30)) == 0
    assert (observed.peak_waiting, observed.waiting_count_off) == (28, 0)


def test_observed_sees_ferrolimit_hold_max_queued_exactly() -> None:
    observed = demo.Observed(ferrolimit.ConcurrencyLimiter(2, max_queued=5))
    assert asyncio.run(burst(observed, 30)) == 23
    assert (observed.peak_waiting, observed.peak_waiting_count, observed.waiting_count_off) == (5, 5, 0)


def test_the_cancellation_check_catches_a_lost_slot() -> None:
    for release_first in (True, False):
        leaky = Fifo(1, leaky=True)
        waiting, entered = asyncio.run(demo.cancel_at_handoff(leaky, release_first))
        assert waiting == 2
        if release_first:  # handed to `a`, which was cancelled and kept it: `b` never gets it
            assert (entered, leaky.running_count) == ([], 1)
        else:  # cancelled before the handoff: nothing to lose
            assert (entered, leaky.running_count) == (['b'], 0)
        sound = Fifo(1)
        assert asyncio.run(demo.cancel_at_handoff(sound, release_first)) == (2, ['b'])
        assert sound.running_count == 0


def test_the_demo_imports_only_what_make_demo_installs() -> None:
    """`make demo` installs examples/demo_requirements.txt: the demo may import nothing else."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(DEMO.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split('.')[0])
    assert imported - sys.stdlib_module_names == {'ferrolimit', 'pydantic_ai'}
    requirements = (EXAMPLES / 'demo_requirements.txt').read_text().splitlines()
    names = {line.split('>')[0].split('=')[0].strip() for line in requirements if line and not line.startswith('#')}
    assert names == {'maturin', 'pydantic-ai-slim'}
