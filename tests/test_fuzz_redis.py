"""The Redis limiter's randomized stress fuzzer (`tests/fuzz_redis.py`) and its probes, as part of the test suite.

A few seeds of the fuzzer run against the test Redis server (`redis_url`, from `make test`); each
failure names its seed with the command line that replays it. The checks that known bugs fail
(`KNOWN_BUGS`, empty today) are left out of the campaign; every probe listed must pass. `FERROLIMIT_FUZZ_REDIS_SEEDS` sets the number of seeds (default 4).
"""

from __future__ import annotations

import os

import pytest
from fuzz_redis import Options, run_campaign, run_probes

KNOWN_BUGS: dict[str, str] = {}
"""Campaign checks left out, with the bug that fails them."""

PASSING_PROBES = [
    'inputs',
    'blocking-in-loop',
    'fork',
    'server-stopped',
    'timeout-zero',
    'unawaited',
    'failing-tracer',
    'shrink',
    'getter',
    'resize-warning',
    'handoff-totals',
    'trio-handoff',
    'gil',
]
"""Probes that pass: regressions if they fail."""


def _seeds() -> range:
    value = os.environ.get('FERROLIMIT_FUZZ_REDIS_SEEDS')
    return range(int(value) if value else 4)


def test_fuzz_redis_campaign(redis_url: str) -> None:
    lines: list[str] = []
    opts = Options(url=redis_url, ops=250, run_timeout=20.0, skip=frozenset(KNOWN_BUGS))
    failed = run_campaign(list(_seeds()), opts, out=lines.append)
    if failed:
        pytest.fail(f'{len(failed)} fuzz runs failed:\n' + '\n'.join(lines), pytrace=False)


@pytest.mark.parametrize('probe', PASSING_PROBES)
def test_fuzz_redis_probe(redis_url: str, probe: str) -> None:
    findings = run_probes(redis_url, [probe])
    assert not findings
