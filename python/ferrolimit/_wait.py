"""The slow path: where a caller that found no free slot waits for one, on asyncio or trio.

The native `__aenter__`/`acquire` only come here when the fast path failed. The waiter queues
itself in the Rust core with a way to wake it on its own event loop, opens the wait span, and
parks. A release hands it the slot directly and wakes it: on the loop's thread at once, from any
other thread through the loop's thread-safe call.

asyncio: the waiter parks on a future. Any exception while parked (cancellation, a timeout)
gives the place up; if a slot was handed over at that very instant, it passes to the next waiter.

trio: the waiter parks in `wait_task_rescheduled`. A cancellation withdraws it from the queue,
unless a slot has already been handed over: then trio is told the abort failed, the waiter takes
the slot, and the cancellation is delivered at its next checkpoint. Either way nothing is lost.
"""

from __future__ import annotations as _annotations

import asyncio
import math

from ._ferrolimit import Waiter, resolve_future

__all__ = ('wait',)


async def wait(waiter: Waiter, timeout: float | None = None) -> None:
    """Wait for a slot in FIFO order, inside the OpenTelemetry wait span.

    Raises:
        TimeoutError: If no slot came within `timeout` seconds.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await _wait_trio(waiter, timeout)
        return
    future = loop.create_future()
    if not waiter.enqueue(resolve_future, future, loop.call_soon_threadsafe):
        return
    expiry = None if timeout is None else loop.call_later(timeout, _expire, future, waiter)
    name, attributes = waiter.span()
    with waiter.tracer().start_as_current_span(name, attributes=attributes):
        try:
            await future
        except BaseException:
            waiter.cancel()
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
    # Only once the span is closed: if closing it raised, dropping `waiter` passes the slot on.
    waiter.finish()


def _expire(future: asyncio.Future[None], waiter: Waiter) -> None:
    if not future.done():
        future.set_exception(TimeoutError(waiter.timeout_message()))


async def _wait_trio(waiter: Waiter, timeout: float | None) -> None:
    from trio import move_on_after
    from trio.lowlevel import Abort, current_task, current_trio_token, reschedule, wait_task_rescheduled

    if not waiter.enqueue(reschedule, current_task(), current_trio_token().run_sync_soon):
        return

    def abort(_raise_cancel: object) -> Abort:
        return Abort.SUCCEEDED if waiter.withdraw() else Abort.FAILED

    name, attributes = waiter.span()
    with waiter.tracer().start_as_current_span(name, attributes=attributes):
        try:
            with move_on_after(math.inf if timeout is None else timeout) as scope:
                await wait_task_rescheduled(abort)
            if scope.cancelled_caught:
                raise TimeoutError(waiter.timeout_message())
        except BaseException:
            waiter.cancel()
            raise
    waiter.finish()
