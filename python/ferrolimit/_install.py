"""`install()` / `uninstall()`: route pydantic-ai's own concurrency limiting through ferrolimit."""

from __future__ import annotations as _annotations

from types import ModuleType
from typing import Any

from ._ferrolimit import ConcurrencyLimiter, get_concurrency_context

__all__ = ('install', 'uninstall')

_originals: dict[tuple[str, str], Any] = {}


def _targets() -> list[tuple[ModuleType, str, Any]]:
    try:
        import pydantic_ai
        import pydantic_ai.concurrency
        import pydantic_ai.models.concurrency
    except ImportError as e:
        raise ImportError('ferrolimit.install() needs pydantic-ai: pip install pydantic-ai-slim') from e
    return [
        (pydantic_ai, 'ConcurrencyLimiter', ConcurrencyLimiter),
        (pydantic_ai.concurrency, 'ConcurrencyLimiter', ConcurrencyLimiter),
        (pydantic_ai.concurrency, 'get_concurrency_context', get_concurrency_context),
        (pydantic_ai.models.concurrency, 'ConcurrencyLimiter', ConcurrencyLimiter),
        (pydantic_ai.models.concurrency, 'get_concurrency_context', get_concurrency_context),
    ]


def install() -> None:
    """Make pydantic-ai use ferrolimit's limiter everywhere it creates or enters one.

    After this, `Agent(max_concurrency=...)`, `ConcurrencyLimitedModel`, `limit_model_concurrency`
    and `pydantic_ai.ConcurrencyLimiter` all create ferrolimit limiters, and pydantic-ai enters every
    limiter through ferrolimit's native `get_concurrency_context`. Limiters created before the call
    keep working. Calling it again does nothing.

    Raises:
        ImportError: If pydantic-ai is not installed.
    """
    for module, attribute, replacement in _targets():
        key = (module.__name__, attribute)
        if key not in _originals:
            _originals[key] = getattr(module, attribute)
            setattr(module, attribute, replacement)


def uninstall() -> None:
    """Undo `install()`: pydantic-ai uses its own limiter again. Does nothing if not installed."""
    for module, attribute, _ in _targets():
        original = _originals.pop((module.__name__, attribute), None)
        if original is not None:
            setattr(module, attribute, original)


def installed() -> bool:
    """Whether `install()` is in effect."""
    return bool(_originals)
