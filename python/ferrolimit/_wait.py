"""The slow path on trio: where a caller that found no free slot waits for one.

The native `__aenter__`/`acquire` only come here when the fast path failed and the caller runs on
trio (on asyncio a native awaitable does the same, without a Python frame). The waiter queues
itself in the Rust core with a way to wake it on its own event loop, opens the wait span, and
parks. A release hands it the slot directly and wakes it: on the loop's thread at once, from any
other thread through the loop's thread-safe call.

A limiter with a parent is waited for level by level: first its own slot, then, holding it, the
parent's (and so on up), each with its own wait span and within one time limit. Whatever goes
wrong at any level, `waiter.cancel()` gives back every slot held so far.

The waiter parks in `wait_task_rescheduled`. A cancellation withdraws it from the queue,
unless a slot has already been handed over: then trio is told the abort failed, the waiter takes
the slot, and the cancellation is delivered at its next checkpoint. Either way nothing is lost.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import math
from typing import Final

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ._ferrolimit import _Waiter as Waiter

__all__ = ('SUPPORTS_TRIO', 'close_span', 'open_span', 'wait')

SUPPORTS_TRIO: Final = True
"""Limiters work under trio (and anyio on trio) with the same semantics as on asyncio."""


async def wait(waiter: Waiter, timeout: float | None = None) -> None:
    """Wait for a slot at each level in FIFO order on trio, inside each level's OpenTelemetry wait span.

    (On asyncio the native wait does the same without a Python frame.)

    Raises:
        TimeoutError: If the slots did not all come within `timeout` seconds.
    """
    from trio import current_time, move_on_at
    from trio.lowlevel import Abort, current_task, current_trio_token, reschedule, wait_task_rescheduled

    def abort(_raise_cancel: object) -> Abort:
        return Abort.SUCCEEDED if waiter.withdraw() else Abort.FAILED

    try:
        # Inside the `try`: outside trio this raises, and the waiter still gives its slots back.
        deadline = math.inf if timeout is None else current_time() + timeout
        while True:
            if waiter.enqueue(reschedule, current_task(), current_trio_token().run_sync_soon):
                tracer = waiter.tracer()
                span = None if tracer is None else open_span(tracer, *waiter.span())
                try:
                    with move_on_at(deadline) as scope:
                        await wait_task_rescheduled(abort)
                    if scope.cancelled_caught:
                        raise TimeoutError(waiter.timeout_message())
                    # Raises if the waiter was refused (the limiter was closed, or shrunk below
                    # its weight): the span then records it, as it does a timeout.
                    waiter.finish()
                except BaseException as e:
                    close_span(span, e)
                    raise
                close_span(span, None)
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


def close_span(span: Span | None, error: BaseException | None) -> None:
    """End the wait span (if one was opened), recording an error as `start_as_current_span` does.

    Only an `Exception` (a timeout) is recorded and sets the status; a cancellation is not an error.
    """
    if span is None:
        return
    if isinstance(error, Exception) and span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f'{type(error).__name__}: {error}'))
    span.end()
