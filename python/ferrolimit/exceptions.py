"""The exceptions ferrolimit raises.

When pydantic-ai is installed they are subclasses of pydantic-ai's own
(`pydantic_ai.exceptions.UserError` and `pydantic_ai.exceptions.ConcurrencyLimitExceeded`;
`ConcurrencyBackendError` of `pydantic_ai.exceptions.AgentRunError`), whatever the import order: `except` clauses written for pydantic-ai's limiter catch ferrolimit's errors too.
"""

from __future__ import annotations as _annotations

from types import ModuleType
from typing import ClassVar

from ._interop import after_import

__all__ = (
    'ConcurrencyBackendError',
    'ConcurrencyLimitExceeded',
    'LimiterClosedError',
    'MaxRunsExceeded',
    'MaxSessionsExceeded',
    'UserError',
)


class _UserErrorBase(RuntimeError):
    """Stands in for `pydantic_ai.exceptions.UserError` until pydantic-ai is imported."""

    message: str
    """Description of the mistake."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class _AgentRunErrorBase(RuntimeError):
    """Stands in for `pydantic_ai.exceptions.AgentRunError` until pydantic-ai is imported."""

    message: str
    """The error message."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class UserError(_UserErrorBase):
    """Error caused by a usage mistake, such as an invalid limit (`max_running=0`)."""


class ConcurrencyLimitExceeded(_AgentRunErrorBase):
    """Raised by `acquire` when the queue already holds `max_queued` waiters.

    Its subclasses `MaxSessionsExceeded` and `MaxRunsExceeded` are raised when a `SessionLimiter`
    limit is reached.
    """


class ConcurrencyBackendError(_AgentRunErrorBase):
    """Raised by a `RedisConcurrencyLimiter` when its backend cannot be used.

    Redis is unreachable or did not answer in time (unless the limiter fails open), one of the
    limiter's keys holds a value of another type, or Redis answered with an unexpected error. A
    sibling of `ConcurrencyLimitExceeded`: both are pydantic-ai `AgentRunError`s when pydantic-ai
    is installed.
    """


class MaxSessionsExceeded(ConcurrencyLimitExceeded):
    """Raised by `SessionLimiter.acquire_session` when `max_parallel_sessions` sessions hold a slot.

    The message names the limit: `Maximum parallel sessions (10) reached`.
    """

    code: ClassVar[str] = 'max_sessions_exceeded'
    """The seed's error code."""


class MaxRunsExceeded(ConcurrencyLimitExceeded):
    """Raised by `SessionLimiter.acquire_run` when `max_parallel_runs` runs hold a slot.

    The message names the limit: `Maximum parallel runs (20) reached`.
    """

    code: ClassVar[str] = 'max_runs_exceeded'
    """The seed's error code."""


def _adopt_pydantic_ai(module: ModuleType) -> None:
    # Swap the stand-in bases for pydantic-ai's classes: the layouts are the same, so the classes
    # (and anything already raised from them) now are pydantic-ai's errors too.
    names = vars(module)
    UserError.__bases__ = (names['UserError'],)
    ConcurrencyLimitExceeded.__bases__ = (names['ConcurrencyLimitExceeded'],)
    ConcurrencyBackendError.__bases__ = (names['AgentRunError'],)


after_import('pydantic_ai.exceptions', _adopt_pydantic_ai)


class LimiterClosedError(RuntimeError):
    """Raised by an acquire on a closed limiter, and by every waiter queued when it was closed.

    The limiter admits nobody any more; its holders finish and release as usual.
    """
