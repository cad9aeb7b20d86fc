"""The shapes of `SessionLimiter.limits()` and `SessionLimiter.status()`, for type checkers.

They are plain dicts at run time, with the keys of the seed's `limits` and `status` maps.
"""

from __future__ import annotations as _annotations

from typing import TypedDict

__all__ = ('SessionLimits', 'SessionStatus')


class SessionLimits(TypedDict):
    """The configured limits of a `SessionLimiter`; `None` is unlimited."""

    max_parallel_sessions: int | None
    """Maximum sessions holding a slot at once."""
    max_parallel_runs: int | None
    """Maximum runs holding a slot at once, across all sessions."""


class SessionStatus(TypedDict):
    """A `SessionLimiter`'s counts and free slots at one instant; `None` is unlimited."""

    active_sessions: int
    """Sessions holding a slot."""
    active_runs: int
    """Runs holding a slot, across all sessions."""
    max_parallel_sessions: int | None
    """The limit on sessions."""
    max_parallel_runs: int | None
    """The limit on runs."""
    available_session_slots: int | None
    """Session slots free; `None` when sessions are unlimited."""
    available_run_slots: int | None
    """Run slots free; `None` when runs are unlimited."""
