"""The pure-Python part of the pydantic-ai contract, as in `pydantic_ai.concurrency`.

The abstract limiter, the limit dataclass and `normalize_to_limiter`.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias, cast

from ._ferrolimit import ConcurrencyLimiter, RedisConcurrencyLimiter
from ._ferrolimit import _check_limits as check_limits
from ._interop import after_import, loaded_module

__all__ = ('AbstractConcurrencyLimiter', 'AnyConcurrencyLimit', 'ConcurrencyLimit', 'normalize_to_limiter')

if TYPE_CHECKING:
    # A type checker sees ferrolimit's abstract limiter and limit as subclasses of pydantic-ai's
    # (where pydantic-ai is installed; elsewhere the base is unknown and changes nothing), so
    # ferrolimit's limiters and limits pass wherever pydantic-ai's annotations ask for its types.
    # At run time pydantic-ai is optional: the classes are registered with its ABC instead
    # (`_adopt_pydantic_ai`), and its code reads a limit's two fields, whatever its class.
    from pydantic_ai.concurrency import AbstractConcurrencyLimiter as _PydanticAbstractLimiter
    from pydantic_ai.concurrency import ConcurrencyLimit as _PydanticLimit
else:
    _PydanticAbstractLimiter = ABC
    _PydanticLimit = object


class AbstractConcurrencyLimiter(_PydanticAbstractLimiter):
    """Abstract base class for concurrency limiters.

    Subclass this to create custom concurrency limiters (e.g. Redis-backed distributed limiters).
    `ferrolimit.ConcurrencyLimiter` is registered as a virtual subclass, and when pydantic-ai is
    installed this class is registered with `pydantic_ai.concurrency.AbstractConcurrencyLimiter`,
    so pydantic-ai accepts any subclass of it (and ferrolimit's `ConcurrencyLimiter` and
    `RedisConcurrencyLimiter` with `pydantic_ai.concurrency.ConcurrencyLimiter`, whose instances
    pydantic-ai keeps from entering twice in one task's nested agent runs).
    """

    @abstractmethod
    async def acquire(self, source: str) -> None:
        """Acquire a slot, waiting if necessary.

        Args:
            source: Identifier for observability (e.g., 'model:gpt-4o').
        """

    @abstractmethod
    def release(self) -> None:
        """Release a slot.

        This can run on a different task than the matching `acquire()`: a streamed model response
        is iterated and closed on whichever task consumes it.
        """


AbstractConcurrencyLimiter.register(ConcurrencyLimiter)
AbstractConcurrencyLimiter.register(RedisConcurrencyLimiter)


def _adopt_pydantic_ai(module: ModuleType) -> None:
    vars(module)['AbstractConcurrencyLimiter'].register(AbstractConcurrencyLimiter)
    # pydantic-ai refuses a nested agent run on a limiter the task holds (which would wait for
    # itself) only for an instance of its `ConcurrencyLimiter`: ferrolimit's limiters are too.
    for limiter in (ConcurrencyLimiter, RedisConcurrencyLimiter):
        vars(module)['ConcurrencyLimiter'].register(limiter)


after_import('pydantic_ai.concurrency', _adopt_pydantic_ai)


@dataclass
class ConcurrencyLimit(_PydanticLimit):
    """Configuration for concurrency limiting with optional backpressure.

    Args:
        max_running: Maximum number of concurrent operations allowed. Must be >= 1.
        max_queued: Maximum number of operations waiting in the queue. Must be >= 0.
            If None, the queue is unlimited. If exceeded, raises `ConcurrencyLimitExceeded`.

    Raises:
        UserError: If `max_running` is less than 1, or `max_queued` is less than 0.
    """

    max_running: int
    """Maximum number of concurrent operations allowed."""
    max_queued: int | None = None
    """Maximum number of operations waiting in the queue; `None` for unlimited."""

    def __post_init__(self) -> None:
        check_limits(self.max_running, self.max_queued)


AnyConcurrencyLimit: TypeAlias = 'int | ConcurrencyLimit | AbstractConcurrencyLimiter | None'
"""Type alias for concurrency limit configuration.

Can be:
- An `int`: Simple limit on concurrent operations (unlimited queue).
- A `ConcurrencyLimit`: Full configuration with optional backpressure.
- An `AbstractConcurrencyLimiter`: A pre-created limiter instance for sharing across multiple models/agents.
- `None`: No concurrency limiting (default).
"""


def normalize_to_limiter(limit: AnyConcurrencyLimit, *, name: str | None = None) -> AbstractConcurrencyLimiter | None:
    """Normalize a concurrency limit configuration to an `AbstractConcurrencyLimiter`.

    Args:
        limit: The concurrency limit configuration. A limiter instance (ferrolimit's or
            pydantic-ai's) is returned unchanged.
        name: Optional name for the limiter if one is created.

    Returns:
        An `AbstractConcurrencyLimiter` if limit is not None, otherwise None.
    """
    if limit is None:
        return None
    if isinstance(limit, AbstractConcurrencyLimiter) or _is_pydantic_ai_limiter(limit):
        return cast(AbstractConcurrencyLimiter, limit)
    return ConcurrencyLimiter.from_limit(limit, name=name)


def _is_pydantic_ai_limiter(value: object) -> bool:
    module = loaded_module('pydantic_ai.concurrency')
    return module is not None and isinstance(value, vars(module)['AbstractConcurrencyLimiter'])
