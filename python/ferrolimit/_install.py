"""`install()` / `uninstall()`: route pydantic-ai's own concurrency limiting through ferrolimit.

pydantic-ai's `ConcurrencyLimiter` class stays in place: `install()` makes constructing it return
a ferrolimit limiter instead (its `__new__`), and replaces pydantic-ai's `get_concurrency_context`
with ferrolimit's. Keeping the class matters because pydantic-ai checks `isinstance(limiter,
pydantic_ai.concurrency.ConcurrencyLimiter)` to refuse a nested agent run on a limiter the task
already holds (which would otherwise wait for itself forever): ferrolimit's limiters are
registered as virtual subclasses of that class (`_limit.py`), and a pydantic-ai limiter made
before `install()`, or through a name bound before it, still is one.
"""

from __future__ import annotations as _annotations

from types import ModuleType
from typing import Any

from ._ferrolimit import ConcurrencyLimiter, get_concurrency_context

__all__ = ('install', 'installed', 'uninstall')

_originals: dict[tuple[str, str], Any] = {}
"""The functions `install()` replaced, by (module, attribute)."""

_routing: list[bool] = [False]
"""Whether constructing pydantic-ai's `ConcurrencyLimiter` makes a ferrolimit limiter."""


def _pydantic_ai() -> tuple[ModuleType, ModuleType]:
    try:
        import pydantic_ai.concurrency
        import pydantic_ai.models.concurrency
    except ImportError as e:
        raise ImportError('ferrolimit.install() needs pydantic-ai: pip install pydantic-ai-slim') from e
    return pydantic_ai.concurrency, pydantic_ai.models.concurrency


def _route_construction(theirs: type[Any]) -> None:
    """Give pydantic-ai's limiter class a `__new__` that makes a ferrolimit limiter while routing.

    The `__new__` stays after `uninstall()` (then making pydantic-ai's own, as before): CPython
    cannot take a `__new__` off a class whose `__init__` takes arguments and still call it.
    """
    if '__new__' in vars(theirs):
        return

    def __new__(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        # A user's subclass of pydantic-ai's limiter stays what it is.
        if _routing[0] and cls is theirs:
            return ConcurrencyLimiter(*args, **kwargs)
        return object.__new__(cls)

    theirs.__new__ = staticmethod(__new__)


def _targets() -> list[tuple[ModuleType, str, Any]]:
    """(module, attribute, replacement) for the functions `install()` replaces."""
    concurrency, models_concurrency = _pydantic_ai()
    return [
        (concurrency, 'get_concurrency_context', get_concurrency_context),
        (models_concurrency, 'get_concurrency_context', get_concurrency_context),
    ]


def install() -> None:
    """Make pydantic-ai use ferrolimit's limiter everywhere it creates or enters one.

    After this, `Agent(max_concurrency=...)`, `ConcurrencyLimitedModel`, `limit_model_concurrency`
    and `pydantic_ai.ConcurrencyLimiter(...)` (through any name bound to it, before the call or
    after) all create ferrolimit limiters, and pydantic-ai enters every limiter through ferrolimit's
    native `get_concurrency_context`. `pydantic_ai.ConcurrencyLimiter` is still pydantic-ai's class,
    so its checks keep working: a nested agent run on the limiter its task holds raises
    `RuntimeError` instead of waiting for itself. Limiters created before the call keep working.
    Calling it again does nothing.

    Raises:
        ImportError: If pydantic-ai is not installed.
    """
    concurrency, _ = _pydantic_ai()
    _route_construction(concurrency.ConcurrencyLimiter)
    _routing[0] = True
    for module, attribute, replacement in _targets():
        key = (module.__name__, attribute)
        if key not in _originals:
            _originals[key] = getattr(module, attribute)
            setattr(module, attribute, replacement)


def uninstall() -> None:
    """Undo `install()`: pydantic-ai uses its own limiter again. Does nothing if not installed."""
    _routing[0] = False
    for module, attribute, _ in _targets():
        original = _originals.pop((module.__name__, attribute), None)
        if original is not None:
            setattr(module, attribute, original)


def installed() -> bool:
    """Whether `install()` is in effect."""
    return _routing[0]
