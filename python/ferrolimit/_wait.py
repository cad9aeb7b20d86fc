"""The slow path: where a caller that found no free slot waits for one, on asyncio or trio.

The native `__aenter__`/`acquire` only come here when the fast path failed. The waiter queues
itself in the Rust core with a way to wake it on its own event loop, opens the wait span, and
parks. A release hands it the slot directly and wakes it: on the loop's thread at once, from any
other thread through the loop's thread-safe call.

A limiter with a parent is waited for level by level: first its own slot, then, holding it, the
parent's (and so on up), each with its own wait span and within one time limit. Whatever goes
wrong at any level, `waiter.cancel()` gives back every slot held so far.

asyncio: the waiter parks on a future. Any exception while parked (cancellation, a timeout)
gives the place up; if a slot was handed over at that very instant, it passes to the next waiter.

trio: the waiter parks in `wait_task_rescheduled`. A cancellation withdraws it from the queue,
unless a slot has already been handed over: then trio is told the abort failed, the waiter takes
the slot, and the cancellation is delivered at its next checkpoint. Either way nothing is lost.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import asyncio
import math
from typing import Final

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ._ferrolimit import _resolve_future as resolve_future
from ._ferrolimit import _Waiter as Waiter

__all__ = ('SUPPORTS_TRIO', 'close_span', 'open_span', 'wait')

SUPPORTS_TRIO: Final = True
"""Limiters work under trio (and anyio on trio) with the same semantics as on asyncio."""


async def wait(waiter: Waiter, timeout: float | None = None) -> None:
    """Wait for a slot at each level in FIFO order, inside each level's OpenTelemetry wait span.

    Raises:
        TimeoutError: If the slots did not all come within `timeout` seconds.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await _wait_trio(waiter, timeout)
        return
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            future = loop.create_future()
            if waiter.enqueue(resolve_future, future, loop.call_soon_threadsafe):
                expiry = None if deadline is None else loop.call_at(deadline, _expire, future, waiter)
                span = open_span(waiter.tracer(), *waiter.span())
                try:
                    await future
                except BaseException as e:
                    close_span(span, e)
                    raise
                finally:
                    if expiry is not None:
                        expiry.cancel()
                close_span(span, None)
                # Only once the span is closed: if closing it raised, `cancel()` passes the slot on.
                waiter.finish()
            if waiter.climb():
                return
    except BaseException:
        waiter.cancel()
        raise


def _expire(future: asyncio.Future[None], waiter: Waiter) -> None:
    if not future.done():
        future.set_exception(TimeoutError(waiter.timeout_message()))


async def _wait_trio(waiter: Waiter, timeout: float | None) -> None:
    from trio import current_time, move_on_at
    from trio.lowlevel import Abort, current_task, current_trio_token, reschedule, wait_task_rescheduled

    def abort(_raise_cancel: object) -> Abort:
        return Abort.SUCCEEDED if waiter.withdraw() else Abort.FAILED

    deadline = math.inf if timeout is None else current_time() + timeout
    try:
        while True:
            if waiter.enqueue(reschedule, current_task(), current_trio_token().run_sync_soon):
                span = open_span(waiter.tracer(), *waiter.span())
                try:
                    with move_on_at(deadline) as scope:
                        await wait_task_rescheduled(abort)
                    if scope.cancelled_caught:
                        raise TimeoutError(waiter.timeout_message())
                except BaseException as e:
                    close_span(span, e)
                    raise
                close_span(span, None)
                waiter.finish()
            if waiter.climb():
                return
    except BaseException:
        waiter.cancel()
        raise


def open_span(tracer: Tracer, name: str, attributes: dict[str, str | int]) -> Span:
    """Start the wait span, as a child of the current span.

    The span is what pydantic-ai's `start_as_current_span` produces, without making it current:
    nothing runs in a parked waiter that could be its child, and skipping the context switch and
    the context manager's generator frames keeps a queued waiter small and quick.
    """
    return tracer.start_span(name, attributes=attributes)


def close_span(span: Span, error: BaseException | None) -> None:
    """End the wait span, recording an error as `start_as_current_span` does.

    Only an `Exception` (a timeout) is recorded and sets the status; a cancellation is not an error.
    """
    if isinstance(error, Exception) and span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f'{type(error).__name__}: {error}'))
    span.end()
