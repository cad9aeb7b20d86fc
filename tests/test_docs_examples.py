"""Every fenced Python block of the documentation (`docs/**/*.md`) and of `README.md` runs as written.

Each block is one test, with the id `FILE:LINE` (the line of its opening fence). It runs on its own,
as a script `example.py` in an empty temporary directory, in a fresh interpreter (this one's
`sys.executable`, with `-W error`), and passes if it exits with status 0 and writes nothing to
stderr (so an exception that asyncio or the interpreter only logs, such as a task destroyed while
pending, fails it too).

A block is a fence whose info string starts with `python` (or `py`). Settings go after the language
in braces, in the attribute-list form that pymdownx.superfences (mkdocs-material) and GitHub both
accept and still highlight as Python (pydantic's docs use the same form):

- ```` ```python ````: runs everywhere (as does ```` ```python {test="run"} ````).
- ```` ```python {test="redis"} ````: needs a Redis server; runs only when `FERROLIMIT_REDIS_URL`
  is set (`make test` sets it), and is skipped otherwise. The block reads the server's URL from the
  `REDIS_URL` environment variable (`os.environ.get('REDIS_URL', 'redis://127.0.0.1:6379/0')`),
  which this test sets to `FERROLIMIT_REDIS_URL`. A block without a `test` setting that mentions
  `REDIS_URL` needs Redis too, so the README's Redis blocks need no marker.
- ```` ```python {test="redis-tls"} ````: the same with the TLS server (`FERROLIMIT_REDIS_TLS_URL`,
  as `REDIS_TLS_URL`); a block that mentions `REDIS_TLS_URL` is one.
- ```` ```python {test="skip"} ````: never runs. Only for what cannot run on its own (a fragment of a
  larger program); keep it rare.

Expected output, as in pydantic's docs: when a block has lines starting with `#>` (each right after
the `print` that writes it), its stdout must be exactly those lines, in order, without the `#> `.

Other settings in the braces (`title="..."`, `hl_lines="..."`) are for mkdocs and ignored here; an
unknown `test` value fails the test, so a typo cannot turn a block off. Indented fences (inside a
list item, an admonition or a content tab) are collected too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('**/*.md'))]

FENCE = re.compile(r'^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$')
SETTING = re.compile(r'(?P<name>[\w-]+)\s*=\s*"(?P<value>[^"]*)"')
TEST_VALUES = {'run', 'redis', 'redis-tls', 'skip'}
SERVERS = {'redis': ('FERROLIMIT_REDIS_URL', 'REDIS_URL'), 'redis-tls': ('FERROLIMIT_REDIS_TLS_URL', 'REDIS_TLS_URL')}
"""The variable `make test` sets for each kind of block, and the one the block reads."""


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a Markdown file."""

    path: Path
    line: int
    """The line of the opening fence, counted from 1."""
    code: str
    test: str
    """`run`, `redis`, `redis-tls` or `skip` (or an unknown value, which fails the test)."""

    @property
    def id(self) -> str:
        return f'{self.path.relative_to(ROOT).as_posix()}:{self.line}'

    @property
    def expected_output(self) -> list[str] | None:
        lines = [line.strip() for line in self.code.splitlines() if line.strip().startswith('#>')]
        return [line[3:] if line.startswith('#> ') else line[2:] for line in lines] or None


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of `path` whose language is Python, in order."""
    found: list[Block] = []
    lines = path.read_text(encoding='utf-8').splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening['indent'], opening['fence'], opening['info']
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = FENCE.match(lines[i])
            if closing and not closing['info'] and closing['fence'].startswith(fence):
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        language = info.split('{', 1)[0].strip().lower()
        if language not in {'python', 'py'}:
            continue
        settings = {m['name']: m['value'] for m in SETTING.finditer(info.partition('{')[2])}
        code = '\n'.join(body) + '\n'
        implied = 'redis-tls' if 'REDIS_TLS_URL' in code else 'redis' if 'REDIS_URL' in code else 'run'
        test = settings.get('test', implied)
        start = i - len(body) - 1  # the opening fence, counted from 1
        found.append(Block(path, start, code, test))
    return found


BLOCKS = [block for path in SOURCES for block in blocks_of(path)]


def test_the_docs_have_examples() -> None:
    assert len(BLOCKS) >= 20
    assert any(block.path.name == 'README.md' for block in BLOCKS)
    assert all(block.code.strip() for block in BLOCKS)


@pytest.mark.parametrize('block', BLOCKS, ids=[block.id for block in BLOCKS])
def test_docs_example_runs(block: Block, tmp_path: Path) -> None:
    assert block.test in TEST_VALUES, f'unknown test="{block.test}" (expected one of {sorted(TEST_VALUES)})'
    if block.test == 'skip':
        pytest.skip('marked test="skip"')
    env = dict(os.environ)
    if block.test in SERVERS:
        given, read = SERVERS[block.test]
        url = os.environ.get(given)
        if not url:
            pytest.skip(f'{given} is not set (make test starts the Redis servers)')
        env[read] = url
    script = tmp_path / 'example.py'
    script.write_text(block.code, encoding='utf-8')
    result = subprocess.run(
        [sys.executable, '-W', 'error', script.name],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f'{block.id} failed:\n{result.stderr}'
    assert result.stderr == '', f'{block.id} wrote to stderr:\n{result.stderr}'
    expected = block.expected_output
    if expected is not None:
        printed = [line.rstrip() for line in result.stdout.rstrip('\n').split('\n')]
        assert printed == expected, f'{block.id} printed:\n{result.stdout}'
