"""`install()` / `uninstall()` and interoperability with pydantic-ai's own classes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pydantic_ai
import pydantic_ai.concurrency
import pydantic_ai.exceptions
import pydantic_ai.models.concurrency
import pytest
from pydantic_ai import Agent
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel, limit_model_concurrency
from pydantic_ai.models.test import TestModel

import ferrolimit

pytestmark = pytest.mark.anyio

ORIGINAL_LIMITER = pydantic_ai.concurrency.ConcurrencyLimiter
ORIGINAL_CONTEXT = pydantic_ai.concurrency.get_concurrency_context


@pytest.fixture
def installed() -> Iterator[None]:
    ferrolimit.install()
    yield
    ferrolimit.uninstall()


def test_install_and_uninstall_round_trip() -> None:
    assert not ferrolimit.installed()
    ferrolimit.install()
    try:
        assert ferrolimit.installed()
        # pydantic-ai's class stays (its isinstance checks need it) but makes ferrolimit limiters.
        for name in (pydantic_ai.ConcurrencyLimiter, pydantic_ai.models.concurrency.ConcurrencyLimiter):
            assert name is ORIGINAL_LIMITER
            assert type(name(2)) is ferrolimit.ConcurrencyLimiter
        assert type(ORIGINAL_LIMITER.from_limit(pydantic_ai.ConcurrencyLimit(3))) is ferrolimit.ConcurrencyLimiter
        assert pydantic_ai.concurrency.get_concurrency_context is ferrolimit.get_concurrency_context
        assert pydantic_ai.models.concurrency.get_concurrency_context is ferrolimit.get_concurrency_context
    finally:
        ferrolimit.uninstall()
    assert not ferrolimit.installed()
    assert pydantic_ai.ConcurrencyLimiter is ORIGINAL_LIMITER
    assert type(pydantic_ai.ConcurrencyLimiter(2)) is ORIGINAL_LIMITER
    assert pydantic_ai.concurrency.get_concurrency_context is ORIGINAL_CONTEXT
    assert pydantic_ai.models.concurrency.get_concurrency_context is ORIGINAL_CONTEXT


def test_install_and_uninstall_are_idempotent() -> None:
    ferrolimit.install()
    ferrolimit.install()
    assert type(ORIGINAL_LIMITER(1)) is ferrolimit.ConcurrencyLimiter
    ferrolimit.uninstall()
    assert type(ORIGINAL_LIMITER(1)) is ORIGINAL_LIMITER
    ferrolimit.uninstall()
    assert type(ORIGINAL_LIMITER(1)) is ORIGINAL_LIMITER


@pytest.mark.usefixtures('installed')
def test_a_subclass_of_pydantic_ais_limiter_stays_itself() -> None:
    class Counting(ORIGINAL_LIMITER):
        pass

    limiter = Counting(2, name='mine')
    assert type(limiter) is Counting
    assert (limiter.max_running, limiter.name) == (2, 'mine')


@pytest.mark.usefixtures('installed')
def test_pydantic_ai_creates_ferrolimit_limiters() -> None:
    agent = Agent(TestModel(), max_concurrency=3)
    assert type(agent._concurrency_limiter) is ferrolimit.ConcurrencyLimiter
    agent = Agent(TestModel(), max_concurrency=pydantic_ai.ConcurrencyLimit(max_running=2, max_queued=4))
    limiter = agent._concurrency_limiter
    assert type(limiter) is ferrolimit.ConcurrencyLimiter
    assert (limiter.max_running, limiter._max_queued) == (2, 4)
    model = ConcurrencyLimitedModel(TestModel(), limiter=5)
    assert type(model._limiter) is ferrolimit.ConcurrencyLimiter
    wrapped = limit_model_concurrency(TestModel(), 2)
    assert isinstance(wrapped, ConcurrencyLimitedModel)
    assert type(wrapped._limiter) is ferrolimit.ConcurrencyLimiter
    assert type(pydantic_ai.ConcurrencyLimiter(4)) is ferrolimit.ConcurrencyLimiter


@pytest.mark.usefixtures('installed')
@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_agent_runs_through_ferrolimit() -> None:
    agent = Agent(TestModel(), max_concurrency=2)
    limiter = agent._concurrency_limiter
    assert isinstance(limiter, ferrolimit.ConcurrencyLimiter)
    results: list[str] = []

    async def run() -> None:
        results.append((await agent.run('hi')).output)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(run)
    assert len(results) == 10
    assert limiter.stats().acquired_total == 10
    assert limiter.available_count == 2


def _made_before_install() -> object:
    """pydantic-ai's own limiter, made before `install()`."""
    limiter = ORIGINAL_LIMITER(1)
    ferrolimit.install()
    return limiter


def _bound_before_install() -> object:
    """A limiter made after `install()` through a name bound before it (a ferrolimit limiter)."""
    from pydantic_ai import ConcurrencyLimiter

    ferrolimit.install()
    limiter = ConcurrencyLimiter(1)
    assert type(limiter) is ferrolimit.ConcurrencyLimiter
    return limiter


NESTED_RUN_LIMITERS: dict[str, Callable[[], object]] = {
    'ferrolimit': lambda: ferrolimit.ConcurrencyLimiter(1),
    'ferrolimit-installed': lambda: (ferrolimit.install(), ferrolimit.ConcurrencyLimiter(1))[1],
    'int-installed': lambda: (ferrolimit.install(), 1)[1],
    'made-before-install': _made_before_install,
    'bound-before-install': _bound_before_install,
}


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
@pytest.mark.parametrize('make', NESTED_RUN_LIMITERS.values(), ids=list(NESTED_RUN_LIMITERS))
async def test_a_nested_run_on_the_limiter_its_task_holds_raises(make: Callable[[], Any]) -> None:
    """pydantic-ai's deadlock guard checks `isinstance(limiter, ConcurrencyLimiter)`: it must see ours,
    with and without `install()`, whatever name the limiter was made through (else: a hang)."""
    try:
        agent = Agent(TestModel(), max_concurrency=make())
        with anyio.fail_after(10):
            async with agent.iter('outer'):
                with pytest.raises(RuntimeError, match='already holds a slot for this agent concurrency limiter'):
                    await agent.run('inner')
        assert agent._concurrency_limiter.available_count == 1  # type: ignore[union-attr]
        assert (await agent.run('after')).output
    finally:
        ferrolimit.uninstall()


@pytest.mark.parametrize('anyio_backend', ['asyncio'])
async def test_a_nested_run_on_another_limiter_is_not_refused() -> None:
    outer = Agent(TestModel(), max_concurrency=ferrolimit.ConcurrencyLimiter(1))
    inner = Agent(TestModel(), max_concurrency=ferrolimit.ConcurrencyLimiter(1))
    with anyio.fail_after(10):
        async with outer.iter('outer'):
            assert (await inner.run('inner')).output


async def test_pydantic_ai_limiter_works_with_ferrolimit_helpers() -> None:
    theirs = ORIGINAL_LIMITER(max_running=1)
    assert ferrolimit.normalize_to_limiter(theirs) is theirs
    async with ferrolimit.get_concurrency_context(theirs, 'x'):
        assert theirs.running_count == 1
    assert theirs.running_count == 0


def test_ferrolimit_limiters_are_pydantic_ai_limiters() -> None:
    limiter = ferrolimit.ConcurrencyLimiter(1)
    assert isinstance(limiter, pydantic_ai.concurrency.AbstractConcurrencyLimiter)
    assert pydantic_ai.concurrency.normalize_to_limiter(limiter) is limiter

    class Custom(ferrolimit.AbstractConcurrencyLimiter):
        async def acquire(self, source: str) -> None:
            pass

        def release(self) -> None:
            pass

    assert isinstance(Custom(), pydantic_ai.concurrency.AbstractConcurrencyLimiter)


async def test_ferrolimit_errors_are_pydantic_ai_errors() -> None:
    limiter = ferrolimit.ConcurrencyLimiter(1, max_queued=0)
    await limiter.acquire('a')
    with pytest.raises(pydantic_ai.exceptions.ConcurrencyLimitExceeded):
        await limiter.acquire('b')
    with pytest.raises(pydantic_ai.exceptions.UserError):
        ferrolimit.ConcurrencyLimiter(0)
    with pytest.raises(pydantic_ai.exceptions.UserError):
        ferrolimit.ConcurrencyLimit(0)
    limiter.release()


IMPORT_ORDER_CHECK = """
import asyncio
{imports}
import ferrolimit, pydantic_ai.concurrency, pydantic_ai.exceptions as pe

assert issubclass(ferrolimit.ConcurrencyLimitExceeded, pe.ConcurrencyLimitExceeded)
assert issubclass(ferrolimit.UserError, pe.UserError)
assert isinstance(ferrolimit.ConcurrencyLimiter(1), pydantic_ai.concurrency.AbstractConcurrencyLimiter)

async def main():
    limiter = ferrolimit.ConcurrencyLimiter(1, max_queued=0, name='n')
    await limiter.acquire('a')
    try:
        await limiter.acquire('b')
    except pe.ConcurrencyLimitExceeded as e:
        assert str(e) == 'Concurrency queue depth (1) exceeds max_queued (0) for n', e
    else:
        raise AssertionError('not rejected')
    try:
        ferrolimit.ConcurrencyLimiter(0)
    except pe.UserError as e:
        assert e.message.startswith('max_running must be >= 1'), e
asyncio.run(main())
print('ok')
"""


@pytest.mark.parametrize(
    'imports',
    [
        'import ferrolimit\nimport pydantic_ai',
        'import pydantic_ai\nimport ferrolimit',
        'import pydantic_ai.exceptions\nimport ferrolimit\nimport pydantic_ai.concurrency',
        'import ferrolimit\nfrom pydantic_ai.exceptions import UserError',
    ],
    ids=['ferrolimit-first', 'pydantic-ai-first', 'interleaved', 'from-import'],
)
def test_interop_holds_whatever_the_import_order(imports: str) -> None:
    code = textwrap.dedent(IMPORT_ORDER_CHECK).format(imports=imports)
    result = subprocess.run([sys.executable, '-c', code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


def test_ferrolimit_does_not_import_pydantic_ai() -> None:
    code = 'import sys, ferrolimit; assert not any(m.startswith("pydantic_ai") for m in sys.modules); print("ok")'
    result = subprocess.run([sys.executable, '-c', code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


WITHOUT_PYDANTIC_AI = """
import asyncio, sys
sys.modules['pydantic_ai'] = None  # as if it were not installed: any import of it fails
import ferrolimit

async def main():
    limiter = ferrolimit.ConcurrencyLimiter(1, max_queued=0, name='solo')
    async with ferrolimit.get_concurrency_context(limiter, 'x'):
        try:
            await limiter.acquire('y')
        except ferrolimit.ConcurrencyLimitExceeded as e:
            assert str(e) == 'Concurrency queue depth (1) exceeds max_queued (0) for solo', e
    try:
        ferrolimit.ConcurrencyLimit(0)
    except ferrolimit.UserError as e:
        assert e.message.startswith('max_running must be >= 1'), e
    try:
        ferrolimit.install()
    except ImportError as e:
        assert 'pydantic-ai' in str(e), e
    else:
        raise AssertionError('install() worked without pydantic-ai')
asyncio.run(main())
print('ok')
"""


def test_ferrolimit_works_without_pydantic_ai() -> None:
    code = textwrap.dedent(WITHOUT_PYDANTIC_AI)
    result = subprocess.run([sys.executable, '-c', code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
