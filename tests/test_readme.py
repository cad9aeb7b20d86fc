"""Every Python block of the README runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize('code', BLOCKS, ids=[f'block{i}' for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str) -> None:
    env = dict(os.environ)
    if 'RedisConcurrencyLimiter' in code:  # the Redis block runs against the test server
        url = os.environ.get('FERROLIMIT_REDIS_URL')
        if not url:
            pytest.skip('FERROLIMIT_REDIS_URL is not set (make test starts a Redis server)')
        env['REDIS_URL'] = url
    result = subprocess.run(
        [sys.executable, '-c', code], check=False, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
