"""The C entry points of the fast path (`get_concurrency_context`, `LimiterContext`, `Ready`):
every way of calling them behaves as the documented signatures say, they hold and drop their
references exactly, and the paths they hand over to (waiting, parents, errors) keep the counts."""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import anyio
import pytest

from ferrolimit import ConcurrencyLimiter, get_concurrency_context

pytestmark = pytest.mark.anyio


def fresh(text: str) -> str:
    """An equal string that is a different object from `text` (and from any interned one)."""
    return ''.join(list(text))


async def holds_one_slot(context: Any, limiter: ConcurrencyLimiter) -> None:
    async with context:
        assert limiter.running_count == 1
    assert limiter.running_count == 0


@pytest.mark.parametrize(
    ('args', 'kwargs'),
    [
        ((), {'limiter': None}),
        ((), {'limiter': 'L'}),
        (('L',), {}),
        (('L', 'src'), {}),
        (('L',), {'source': 'src'}),
        ((), {'limiter': 'L', 'source': 'src'}),
        ((), {'source': 'src', 'limiter': 'L'}),
    ],
)
async def test_every_calling_convention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    limiter = ConcurrencyLimiter(1)
    args = tuple(limiter if a == 'L' else a for a in args)
    kwargs = {k: limiter if v == 'L' else v for k, v in kwargs.items()}
    context = get_concurrency_context(*args, **kwargs)
    if kwargs.get('limiter', limiter) is None:
        async with context:
            assert limiter.running_count == 0
    else:
        await holds_one_slot(context, limiter)
        # The second call takes the cached path when the arguments allow it: same behaviour.
        await holds_one_slot(get_concurrency_context(*args, **kwargs), limiter)


@pytest.mark.parametrize(
    ('args', 'kwargs', 'message'),
    [
        ((), {}, r"^get_concurrency_context\(\) missing 1 required positional argument: 'limiter'$"),
        (('L', 'a', 'b'), {}, r'^get_concurrency_context\(\) takes from 1 to 2 positional arguments but 3 were given$'),
        (('L',), {'sauce': 'a'}, r"^get_concurrency_context\(\) got an unexpected keyword argument 'sauce'$"),
        (('L', 'a'), {'source': 'a'}, r"^get_concurrency_context\(\) got multiple values for argument 'source'$"),
        (
            (None, 'a', 'b'),
            {},
            r'^get_concurrency_context\(\) takes from 1 to 2 positional arguments but 3 were given$',
        ),
    ],
)
def test_bad_calls_raise_type_error(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    limiter = ConcurrencyLimiter(1)
    get_concurrency_context(limiter, 'a')  # the cached context exists
    args = tuple(limiter if a == 'L' else a for a in args)
    with pytest.raises(TypeError, match=message):
        get_concurrency_context(*args, **kwargs)
    assert limiter.running_count == 0


def test_cached_context_serves_the_first_source_only() -> None:
    limiter = ConcurrencyLimiter(1)
    first = get_concurrency_context(limiter, 'a')
    assert get_concurrency_context(limiter, 'a') is first
    assert get_concurrency_context(limiter, fresh('a')) is first  # an equal string
    other = get_concurrency_context(limiter, 'b')
    assert other is not first
    assert get_concurrency_context(limiter, 'a') is first  # the cache keeps the first
    assert limiter('a') is first


def test_signature_and_type_are_documented() -> None:
    assert str(get_concurrency_context.__text_signature__) == "(limiter, source='unnamed')"
    assert str(inspect.signature(get_concurrency_context)) == "(limiter, source='unnamed')"
    assert get_concurrency_context.__module__ == 'ferrolimit._ferrolimit'
    assert get_concurrency_context.__self__ is sys.modules['ferrolimit._ferrolimit']
    ready = type(get_concurrency_context(None))
    assert str(inspect.signature(ready.__aenter__)) == '(self, /)'
    assert str(inspect.signature(ready.__aexit__)) == '(self, exc_type, exc, tb, /)'
    assert get_concurrency_context.__doc__
    context = get_concurrency_context(ConcurrencyLimiter(1), 'a')
    assert type(context).__name__ == 'LimiterContext'
    assert type(context).__module__ == 'ferrolimit._ferrolimit'


def test_types_cannot_be_created_or_subclassed_from_python() -> None:
    for obj in (get_concurrency_context(ConcurrencyLimiter(1), 'a'), get_concurrency_context(None)):
        with pytest.raises(TypeError):
            type(obj)()
        with pytest.raises(TypeError):
            type('Sub', (type(obj),), {})


def test_types_are_immutable() -> None:
    for obj in (get_concurrency_context(ConcurrencyLimiter(1), 'a'), get_concurrency_context(None)):
        with pytest.raises(TypeError):
            type(obj).__aenter__ = lambda self: None  # type: ignore[method-assign]
        with pytest.raises(AttributeError):
            obj.extra = 1  # type: ignore[attr-defined]


def test_references_go_at_interpreter_exit() -> None:
    # A context that lives until the interpreter finalizes still lets go of its limiter then.
    code = textwrap.dedent(
        """
        import os
        import sys
        from ferrolimit import get_concurrency_context

        class Limiter:
            async def acquire(self, source): pass
            def release(self): pass
            def __del__(self, write=os.write): write(1, b'limiter collected')

        sys.kept = get_concurrency_context(Limiter(), 'x')
        """
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == 'limiter collected'


async def test_aexit_takes_exactly_three_arguments() -> None:
    limiter = ConcurrencyLimiter(1)
    for obj in (limiter('a'), get_concurrency_context(None)):
        with pytest.raises(TypeError, match=r'__aexit__\(\) takes exactly 3 arguments'):
            obj.__aexit__(None, None)
        with pytest.raises(TypeError, match=r'__aexit__\(\) takes exactly 3 arguments'):
            obj.__aexit__(None, None, None, None)
    assert (limiter.running_count, limiter.available_count) == (0, 1)


async def test_aexit_without_a_slot_raises_and_changes_nothing() -> None:
    limiter = ConcurrencyLimiter(2)
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter('a').__aexit__(None, None, None)
    async with limiter('a'):
        pass
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        limiter('a').__aexit__(None, None, None)
    assert (limiter.running_count, limiter.available_count, limiter.stats().acquired_total) == (0, 2, 1)


async def test_ready_awaits_to_none_and_is_a_null_context() -> None:
    ready = get_concurrency_context(None)
    assert await ready is None
    assert await ready.__aenter__() is None
    assert ready.__aenter__() is ready
    assert await ready.__aexit__(None, None, None) is None


class PythonLimiter:
    """Any object with `acquire(source)` and `release()`."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.released = 0

    async def acquire(self, source: str) -> None:
        self.sources.append(source)

    def release(self) -> None:
        self.released += 1


async def test_contexts_drop_their_references() -> None:
    python_limiter = PythonLimiter()
    native = ConcurrencyLimiter(1)
    source = fresh('not interned')
    before = sys.getrefcount(python_limiter), sys.getrefcount(source)
    get_concurrency_context(native, 'first')  # cached: `source` below is not
    for _ in range(1000):
        async with get_concurrency_context(python_limiter, source):
            pass
        async with get_concurrency_context(native, source):
            pass
        async with native(source):
            pass
    assert (python_limiter.sources, python_limiter.released) == ([source] * 1000, 1000)
    python_limiter.sources.clear()
    assert (sys.getrefcount(python_limiter), sys.getrefcount(source)) == before
    assert native.stats().acquired_total == 2000


def test_a_cycle_through_a_context_is_collected() -> None:
    limiter = PythonLimiter()
    limiter.context = get_concurrency_context(limiter, 'x')  # type: ignore[attr-defined]
    gone = weakref.ref(limiter)
    del limiter
    gc.collect()
    assert gone() is None


async def test_python_limiter_errors_propagate() -> None:
    class Failing(PythonLimiter):
        async def acquire(self, source: str) -> None:
            raise RuntimeError(f'no slot for {source}')

        def release(self) -> None:
            raise RuntimeError('release failed')

    context = get_concurrency_context(Failing(), 'x')
    with pytest.raises(RuntimeError, match='^no slot for x$'):
        async with context:
            pass
    with pytest.raises(RuntimeError, match='^release failed$'):
        await context.__aexit__(None, None, None)


async def test_waiting_entry_through_the_context() -> None:
    limiter = ConcurrencyLimiter(1)
    entered: list[str] = []

    async def enter(source: str) -> None:
        async with get_concurrency_context(limiter, source):
            entered.append(source)

    await limiter.acquire('holder')
    async with anyio.create_task_group() as tg:
        for source in ('a', 'b', 'c'):
            tg.start_soon(enter, source)
            await anyio.wait_all_tasks_blocked()  # queued before the next one starts
        assert limiter.waiting_count == 3
        limiter.release()
    assert entered == ['a', 'b', 'c']
    assert (limiter.running_count, limiter.waiting_count, limiter.available_count) == (0, 0, 1)


async def test_parent_levels_through_the_context() -> None:
    parent = ConcurrencyLimiter(1, name='parent')
    child = ConcurrencyLimiter(2, name='child', parent=parent)
    async with get_concurrency_context(child, 'a'):
        assert (child.running_count, parent.running_count) == (1, 1)
    assert (child.running_count, parent.running_count) == (0, 0)


async def test_a_source_that_is_not_valid_utf8_can_wait() -> None:
    # A lone surrogate cannot be encoded; the wait must not fail (or leak a slot) over its name.
    parent = ConcurrencyLimiter(1, name='parent')
    child = ConcurrencyLimiter(2, name='child', parent=parent)
    await parent.acquire('holder')

    async def enter(limiter: ConcurrencyLimiter) -> None:
        async with get_concurrency_context(limiter, '\ud800'):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(enter, child)  # takes the child's slot, waits for the parent's
        tg.start_soon(enter, parent)  # waits in the parent's queue
        await anyio.wait_all_tasks_blocked()
        assert (child.running_count, parent.waiting_count) == (1, 2)
        parent.release()
    assert (child.running_count, child.available_count) == (0, 2)
    assert (parent.running_count, parent.available_count, parent.waiting_count) == (0, 1, 0)
