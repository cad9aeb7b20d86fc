"""The guard of the blocking API: no blocking wait on a thread that runs an event loop.

A blocking wait there would freeze the loop (every task on it stops until the wait ends), and
if a task on that loop holds the slot it waits for, it would never end. `acquire_blocking()` and
`blocking()` look only when they must queue: a free slot is taken at once wherever they run (any
`timeout`, even 0, is no reason to queue there: `try_acquire()` is the call that never waits).
"""

# `asyncio._get_running_loop` is the documented low-level query for the loop of this thread
# (None when none runs), without `get_running_loop`'s exception.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import sys
from asyncio import _get_running_loop

__all__ = ('refuse_blocking_wait_on_loop',)


def refuse_blocking_wait_on_loop(waiting_for: str) -> None:
    """Raise `RuntimeError` if this thread runs an asyncio (or uvloop) or trio event loop.

    Args:
        waiting_for: The wait, as its span names it (`'waiting for llm concurrency'`).

    Raises:
        RuntimeError: If an event loop runs on this thread.
    """
    if _get_running_loop() is None and not _in_trio():
        return
    raise RuntimeError(
        f'{waiting_for} on a thread that runs an event loop: a blocking wait would freeze the loop, '
        'and never end if a task on it holds the slot. On the loop, use `await limiter.acquire()` or '
        '`async with limiter`; the blocking API is for other threads (e.g. `asyncio.to_thread`).'
    )


def _in_trio() -> bool:
    trio = sys.modules.get('trio')
    return trio is not None and bool(trio.lowlevel.in_trio_run())
