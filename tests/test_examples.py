"""The examples run and their own checks pass (with small sizes, to stay quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / 'examples'


def run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, check=False, cwd=EXAMPLES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_session_slots() -> None:
    out = run(str(EXAMPLES / 'session_slots.py'))
    assert 'retrying' in out  # four conversations for three session slots: one had to wait
    assert out.rstrip().endswith('[sessions 0/3, runs 0/2] all conversations done')


def test_redis_fleet(redis_url: str) -> None:
    out = run(
        str(EXAMPLES / 'redis_fleet.py'),
        '--redis-url',
        redis_url,
        '--workers',
        '3',
        '--runs',
        '12',
        '--max-running',
        '3',
    )
    assert 'FAIL' not in out
    assert 'ok   the fleet never exceeded max_running' in out
    # With 36 runs and 3 slots the limit is reached: the gauge saw it, so the check is not vacuous.
    assert 'most model calls in flight at once, across all workers: 3 (limit 3)' in out


def test_redis_fleet_with_a_queue_bound(redis_url: str) -> None:
    out = run(
        str(EXAMPLES / 'redis_fleet.py'),
        *('--redis-url', redis_url, '--workers', '2', '--runs', '20', '--max-running', '2', '--max-queued', '4'),
    )
    assert 'FAIL' not in out
    assert ', 0 rejected' not in out  # 40 simultaneous runs through 2 slots and 4 places
