"""The exceptions ferrolimit raises.

When pydantic-ai is installed they are subclasses of pydantic-ai's own
(`pydantic_ai.exceptions.UserError` and `pydantic_ai.exceptions.ConcurrencyLimitExceeded`), whatever
the import order: `except` clauses written for pydantic-ai's limiter catch ferrolimit's errors too.
"""

from __future__ import annotations as _annotations

__all__ = ('UserError', 'ConcurrencyLimitExceeded')


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
    """Raised by `acquire` when the queue already holds `max_queued` waiters."""
