"""The awaiting side of `RedisConcurrencyLimiter.acquire`, on asyncio or trio.

The native `acquire` starts the Redis work on ferrolimit's I/O runtime and returns this coroutine.
It waits for the first answer (admitted, or queued), opens the wait span only if queued, and
waits again for the slot. Any exception while waiting (a cancellation, a timeout around it)
gives the place up; a slot granted at that very instant is passed on.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import asyncio
import atexit
import os

from opentelemetry.trace import Span

from ._ferrolimit import _after_fork_in_child as after_fork_in_child
from ._ferrolimit import _before_exit as before_exit
from ._ferrolimit import _RedisAcquire as RedisAcquire
from ._ferrolimit import _resolve_future as resolve_future
from ._wait import close_span, open_span
from .exceptions import ConcurrencyBackendError

__all__ = ('acquire',)

# The Redis I/O threads wake Python callers; they must stop before the interpreter is finalized.
atexit.register(before_exit)
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=after_fork_in_child)


async def acquire(op: RedisAcquire) -> None:
    """Wait for a fleet-wide slot in FIFO order, inside the OpenTelemetry wait span if queued.

    Raises:
        ConcurrencyLimitExceeded: If the fleet-wide queue already holds `max_queued` waiters.
        ConcurrencyBackendError: If Redis cannot be used (and the limiter does not fail open).
    """
    try:
        admitted = await _next(op)
    except BaseException:
        op.cancel()
        raise
    if admitted:
        _record_fail_open(op, None)
        return
    tracer = op.tracer()
    span = None if tracer is None else open_span(tracer, *op.span())
    try:
        await _next(op)
    except BaseException as e:
        op.cancel()
        close_span(span, e)
        raise
    _record_fail_open(op, span)
    close_span(span, None)


async def _next(op: RedisAcquire) -> bool:
    """Wait for the operation's next event: `True` once admitted, `False` when queued."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _next_trio(op)
    future = loop.create_future()
    if op.wait(resolve_future, future, loop.call_soon_threadsafe):
        await future
    return op.take()


async def _next_trio(op: RedisAcquire) -> bool:
    from trio.lowlevel import Abort, current_task, current_trio_token, reschedule, wait_task_rescheduled

    if op.wait(reschedule, current_task(), current_trio_token().run_sync_soon):

        def abort(_raise_cancel: object) -> Abort:
            return Abort.SUCCEEDED if op.withdraw() else Abort.FAILED

        await wait_task_rescheduled(abort)
    return op.take()


def _record_fail_open(op: RedisAcquire, span: Span | None) -> None:
    """Record that the slot was granted without limiting because Redis was unreachable.

    It goes on the wait span; a caller that did not wait opens one for it, unless the span would
    certainly be dropped.
    """
    error = op.fail_open_error()
    if error is None:
        return
    if span is not None:
        target = span
    else:
        tracer = op.tracer()
        if tracer is None:
            return  # nobody would record it
        target = open_span(tracer, *op.span())
    if target.is_recording():
        target.set_attribute('fail_open', True)
        target.record_exception(ConcurrencyBackendError(error))
    if span is None:
        target.end()
