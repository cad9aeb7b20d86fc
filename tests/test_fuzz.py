"""The model-based fuzzer (`tests/fuzz_model.py`) as part of the test suite.

Each backend's campaign (every configuration, a few thousand driver actions each, fixed seeds) runs
in child processes, all backends at once: a limiter that crashes the interpreter fails its backend's
test with the run that crashed, and the campaign goes on with the next run. Every failure names its
backend, configuration and seed, with the command line that replays it.

`FERROLIMIT_FUZZ_OPS` sets the number of driver actions per configuration and backend (default
3000); `make fuzz` runs a longer campaign.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from fuzz_model import BACKENDS, CONFIGS, Finding, Options, campaign, supervise

DEFAULT_OPS = 3000
"""Driver actions per configuration and backend."""
OPS_PER_RUN = 500
"""Driver actions per run (one seed); a configuration gets as many seeds as it takes."""
FUZZ_MODEL = Path(__file__).with_name('fuzz_model.py')

Campaign = tuple[list[Finding], int]


def _ops_per_config() -> int:
    value = os.environ.get('FERROLIMIT_FUZZ_OPS')
    return DEFAULT_OPS if not value else max(1, int(value))


def _available(backend: str) -> bool:
    return backend == 'asyncio' or importlib.util.find_spec(backend) is not None


@pytest.fixture(scope='module')
def campaigns(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Campaign]]]:
    """Starts the campaign of every backend this session tests, in parallel."""
    wanted = sorted(
        {
            item.callspec.params['backend']
            for item in request.session.items
            if item.module is request.module
            and getattr(item, 'originalname', None) == 'test_fuzz_campaign'
            and _available(item.callspec.params['backend'])
        }
    )
    total = _ops_per_config()
    ops = min(total, OPS_PER_RUN)
    seeds = range(math.ceil(total / ops))
    opts = Options(ops=ops)
    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        yield {b: pool.submit(supervise, campaign([b], CONFIGS, seeds), opts, 60.0) for b in wanted}


@pytest.mark.parametrize('backend', BACKENDS)
def test_fuzz_campaign(backend: str, campaigns: dict[str, Future[Campaign]]) -> None:
    if backend not in campaigns:
        pytest.skip(f'{backend} is not installed')
    findings, completed = campaigns[backend].result()
    if findings:
        summary = '\n'.join(f'  {f.kind} config={f.config} seed={f.seed}' for f in findings)
        details = '\n\n'.join(f.text for f in findings[:3])
        pytest.fail(
            f'{len(findings)} of {completed} {backend} runs failed:\n{summary}\n\n{details}',
            pytrace=False,
        )


@pytest.mark.parametrize('backend', ['asyncio', 'trio'])
def test_fuzz_run_replays_exactly(backend: str) -> None:
    """A run is a function of its backend, configuration and seed (whatever `PYTHONHASHSEED`)."""
    cmd = [sys.executable, str(FUZZ_MODEL), '--backend', backend, '--config', 'three-q', '--seeds', '7']
    cmd += ['--ops', '200', '--trace']
    traces = []
    for hash_seed in ('1', '2'):
        env = {**os.environ, 'PYTHONHASHSEED': hash_seed}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False).stdout
        # Only the summary line differs: it has the run's duration.
        traces.append([line for line in out.splitlines() if ' runs of ' not in line])
    assert traces[0] == traces[1]
    assert len(traces[0]) > 20
