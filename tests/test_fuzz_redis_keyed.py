"""The keyed Redis limiter's randomized stress fuzzer (`tests/fuzz_redis_keyed.py`), as part of the test suite.

A few seeds of the fuzzer run against the test Redis server (`redis_url`, from `make test`); each
failure names its seed with the command line that replays it. The checks that known bugs fail
(`KNOWN_BUGS`) are left out of the campaign. `FERROLIMIT_FUZZ_REDIS_SEEDS` sets the number of
seeds (default 4); the campaign takes about 20 s.
"""

from __future__ import annotations

import os

import pytest
from fuzz_redis import Options
from fuzz_redis_keyed import CHECKS, run_campaign

KNOWN_BUGS: dict[str, str] = {}
"""Campaign checks left out, with the bug that fails them (empty: every check runs)."""


def _seeds() -> range:
    value = os.environ.get('FERROLIMIT_FUZZ_REDIS_SEEDS')
    return range(int(value) if value else 4)


def test_known_bugs_name_checks() -> None:
    assert set(KNOWN_BUGS) <= set(CHECKS)


def test_fuzz_redis_keyed_campaign(redis_url: str) -> None:
    lines: list[str] = []
    opts = Options(url=redis_url, ops=250, run_timeout=20.0, skip=frozenset(KNOWN_BUGS))
    failed = run_campaign(list(_seeds()), opts, out=lines.append)
    if failed:
        pytest.fail(f'{len(failed)} fuzz runs failed:\n' + '\n'.join(lines), pytrace=False)
