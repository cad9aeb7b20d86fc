"""The waiting side of `RedisConcurrencyLimiter`'s operations, on asyncio, trio or a plain thread.

The native limiter starts each operation (an acquire, a wait for idleness) on ferrolimit's I/O
runtime and hands it to a function here. An acquire waits for the first answer (admitted, or
queued), opens the wait span only if queued, and waits again for the slot. Any exception while
waiting (a cancellation, a timeout around it, a KeyboardInterrupt) gives the place up; a slot
granted at that very instant is passed on.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Callable
from types import TracebackType

from opentelemetry.trace import Span

from ._blocking import refuse_blocking_wait_on_loop
from ._ferrolimit import RedisConcurrencyLimiter, RedisKeyedConcurrencyLimiter
from ._ferrolimit import _after_fork_in_child as after_fork_in_child
from ._ferrolimit import _before_exit as before_exit
from ._ferrolimit import _RedisOp as RedisOp
from ._ferrolimit import _RedisStart as RedisStart
from ._ferrolimit import _resolve_future as resolve_future
from ._wait import close_span, open_span
from .exceptions import ConcurrencyBackendError

__all__ = ('Blocking', 'OneKey', 'acquire', 'acquire_blocking', 'wait_idle')

# The Redis I/O threads wake Python callers; they must stop before the interpreter is finalized.
atexit.register(before_exit)
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=after_fork_in_child)


async def acquire(start: RedisStart) -> None:
    """Wait for fleet-wide slots in order, inside the OpenTelemetry wait span if queued.

    Nothing is taken before the coroutine first runs. Whatever goes wrong until the caller has
    the slots (a cancellation, a timeout around it, a tracer that raises) gives them back, or
    gives the place up.

    Raises:
        ConcurrencyLimitExceeded: If the fleet-wide queue already holds `max_queued` waiters.
        ConcurrencyBackendError: If Redis cannot be used (and the limiter does not fail open).
        LimiterClosedError: If the limiter object was closed.
        TimeoutError: If no slot came within the operation's timeout.
        ValueError: If the weight exceeds the fleet's `max_running`.
    """
    op = start.start()
    try:
        if await _next(op):
            _record_fail_open(op, None)
        else:
            span = _queued_span(op)
            try:
                await _next(op)
            except BaseException as e:
                close_span(span, e)
                raise
            _admitted(op, span)
    except BaseException:
        op.cancel()
        raise
    op.done()


def acquire_blocking(start: RedisStart) -> None:
    """`acquire` on a plain thread: the same steps, waiting with the GIL released."""
    op = start.start()
    try:
        if _next_blocking(op):
            _record_fail_open(op, None)
        else:
            refuse_blocking_wait_on_loop(op.span()[0])
            span = _queued_span(op)
            try:
                _next_blocking(op)
            except BaseException as e:
                close_span(span, e)
                raise
            _admitted(op, span)
    except BaseException:
        op.cancel()
        raise
    op.done()


async def wait_idle(op: RedisOp) -> bool:
    """Wait until the limiter object's callers hold no slot.

    Returns:
        True once idle, False if the operation's timeout passed first.
    """
    try:
        return await _next(op)
    except BaseException:
        op.cancel()
        raise


class Blocking:
    """`with limiter.blocking(source, ...):`, holding the slots for the block on a plain thread.

    For a keyed limiter, `key` is the key the slots are of (else `None`).
    """

    def __init__(
        self,
        limiter: RedisConcurrencyLimiter | RedisKeyedConcurrencyLimiter,
        key: str | None,
        source: str,
        timeout: float | None,
        weight: int,
        priority: int,
    ) -> None:
        self._limiter = limiter
        self._key = key
        self._source = source
        self._timeout = timeout
        self._weight = weight
        self._priority = priority

    def __enter__(self) -> None:
        limiter, key, timeout, weight, priority = self._limiter, self._key, self._timeout, self._weight, self._priority
        if isinstance(limiter, RedisKeyedConcurrencyLimiter):
            assert key is not None
            limiter.acquire_blocking(key, self._source, timeout=timeout, weight=weight, priority=priority)
        else:
            limiter.acquire_blocking(self._source, timeout=timeout, weight=weight, priority=priority)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(self._limiter, RedisKeyedConcurrencyLimiter):
            assert self._key is not None
            self._limiter.release(self._key, weight=self._weight)
        else:
            self._limiter.release(weight=self._weight)


class OneKey:
    """One key of a keyed limiter, with the methods `async with keyed(key, ...)` calls."""

    def __init__(self, keyed: RedisKeyedConcurrencyLimiter, key: str) -> None:
        self._keyed = keyed
        self._key = key

    async def acquire(self, source: str = 'unnamed', *, weight: int = 1, priority: int = 0) -> None:
        """Acquire `weight` slots of the key."""
        await self._keyed.acquire(self._key, source, weight=weight, priority=priority)

    def release(self, *, weight: int = 1) -> None:
        """Release `weight` slots of the key."""
        self._keyed.release(self._key, weight=weight)


def _queued_span(op: RedisOp) -> Span | None:
    """The wait span of a queued caller, unless it would certainly be dropped."""
    tracer = op.tracer()
    return None if tracer is None else open_span(tracer, *op.span())


def _admitted(op: RedisOp, span: Span | None) -> None:
    """End the wait span of a caller that was queued and got its slots."""
    _record_fail_open(op, span)
    close_span(span, None)


async def _next(op: RedisOp) -> bool:
    """Wait for the operation's next event: `True` once admitted (or idle), `False` when queued."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _next_trio(op)
    future = loop.create_future()
    if op.wait(resolve_future, future, loop.call_soon_threadsafe):
        await future
    return op.take()


async def _next_trio(op: RedisOp) -> bool:
    from trio.lowlevel import Abort, current_task, current_trio_token, reschedule, wait_task_rescheduled

    if op.wait(reschedule, current_task(), current_trio_token().run_sync_soon):

        def abort(_raise_cancel: object) -> Abort:
            return Abort.SUCCEEDED if op.withdraw() else Abort.FAILED

        await wait_task_rescheduled(abort)
    return op.take()


def _next_blocking(op: RedisOp) -> bool:
    """`_next` on a plain thread: an interrupt (Ctrl-C) reaches it while it waits."""
    event = threading.Event()
    if op.wait(_set_event, event, _call):
        event.wait()
    return op.take()


def _set_event(event: threading.Event) -> None:
    event.set()


def _call(callback: Callable[[threading.Event], object], arg: threading.Event) -> None:
    """Run a wake-up at once, on whichever thread delivers it (`threading.Event` is thread-safe)."""
    callback(arg)


def _record_fail_open(op: RedisOp, span: Span | None) -> None:
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
