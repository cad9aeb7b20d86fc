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

from __future__ import annotations as _annotations

import asyncio
import math

from ._ferrolimit import Waiter, resolve_future

__all__ = ('wait',)


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
                name, attributes = waiter.span()
                try:
                    with waiter.tracer().start_as_current_span(name, attributes=attributes):
                        await future
                finally:
                    if expiry is not None:
                        expiry.cancel()
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
                name, attributes = waiter.span()
                with waiter.tracer().start_as_current_span(name, attributes=attributes):
                    with move_on_at(deadline) as scope:
                        await wait_task_rescheduled(abort)
                    if scope.cancelled_caught:
                        raise TimeoutError(waiter.timeout_message())
                waiter.finish()
            if waiter.climb():
                return
    except BaseException:
        waiter.cancel()
        raise
