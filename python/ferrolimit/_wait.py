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
from typing import TYPE_CHECKING, Final

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ._ferrolimit import _Waiter as Waiter

if TYPE_CHECKING:
    from trio.lowlevel import Abort, Task

__all__ = ('SUPPORTS_TRIO', 'close_span', 'open_span', 'wait')

SUPPORTS_TRIO: Final = True
"""Limiters work under trio (and anyio on trio) with the same semantics as on asyncio."""


async def wait(waiter: Waiter, time_limit: float | None = None) -> None:
    """Wait for a slot at each level in FIFO order on trio, inside each level's OpenTelemetry wait span.

    (On asyncio the native wait does the same without a Python frame.)

    Raises:
        TimeoutError: If the slots did not all come within `time_limit` seconds.
    """
    from trio import current_time, move_on_at
    from trio.lowlevel import current_task, current_trio_token

    try:
        # Inside the `try`: outside trio this raises, and the waiter still gives its slots back.
        deadline = math.inf if time_limit is None else current_time() + time_limit
        task, schedule = current_task(), current_trio_token().run_sync_soon
        while True:
            park = _Park(waiter, task)
            if waiter.enqueue(park.wake, None, schedule):
                try:
                    tracer = waiter.tracer()
                    span = None if tracer is None else open_span(tracer, *waiter.span())
                    try:
                        with move_on_at(deadline) as scope:
                            await park.parked()
                        if scope.cancelled_caught:
                            raise TimeoutError(waiter.timeout_message())
                        # Raises if the waiter was refused (the limiter was closed, or shrunk below
                        # its weight): the span then records it, as it does a timeout.
                        waiter.finish()
                    except BaseException as e:
                        close_span(span, e)
                        raise
                    close_span(span, None)
                finally:
                    park.over()
            if waiter.climb():
                return
    except BaseException:
        waiter.cancel()
        raise


class _Park:
    """One level's wait on trio, and the wake-up the queue sends for it.

    The wake-up may come before the task parks (from code that ran between queueing and parking,
    such as a tracer that releases the slot), or after the wait ended without it (the span failed
    to open, the wait timed out or was cancelled while the slot was being handed over): it
    reschedules the task only while it is parked, and otherwise leaves a mark (before) or
    nothing (after). `trio.lowlevel.reschedule` of a task that is not parked would break trio.
    """

    __slots__ = ('_over', '_parked', '_task', '_waiter', '_woken')

    def __init__(self, waiter: Waiter, task: Task) -> None:
        self._waiter, self._task = waiter, task
        self._parked = self._woken = self._over = False

    def wake(self, _arg: object) -> None:
        """The queue's wake-up, always run on the task's trio thread."""
        if self._parked:
            from trio.lowlevel import reschedule

            self._parked = False
            reschedule(self._task)
        elif not self._over:
            self._woken = True

    async def parked(self) -> None:
        """Park until woken (at once if the wake-up already came).

        A cancellation withdraws the waiter from the queue, unless a slot was already handed over:
        then trio is told the abort failed, the wake-up comes, and the cancellation is delivered
        at the next checkpoint.
        """
        from trio.lowlevel import Abort, wait_task_rescheduled

        if self._woken:
            return
        self._parked = True

        def abort(_raise_cancel: object) -> Abort:
            if self._waiter.withdraw():
                self._parked = False
                return Abort.SUCCEEDED
            return Abort.FAILED

        await wait_task_rescheduled(abort)

    def over(self) -> None:
        """The wait at this level ended: a wake-up that comes later does nothing."""
        self._over, self._parked = True, False


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
