"""The slow path: where a caller that found no free slot waits for one.

The native `__aenter__`/`acquire` only come here when the fast path failed. The waiter queues
itself in the Rust core with a future of its own event loop, opens the wait span, and parks. A
release hands it the slot directly and resolves the future (on the loop's thread, or through
`call_soon_threadsafe` from another). Any exception while parked (cancellation, a timeout)
gives the place up; if a slot was handed over at that very instant, it passes to the next waiter.
"""

from __future__ import annotations as _annotations

import asyncio

from ._ferrolimit import Waiter

__all__ = ('wait',)


async def wait(waiter: Waiter) -> None:
    """Wait for a slot in FIFO order, inside the OpenTelemetry wait span."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    if not waiter.enqueue(future, loop):
        return
    name, attributes = waiter.span()
    with waiter.tracer().start_as_current_span(name, attributes=attributes):
        try:
            await future
        except BaseException:
            waiter.cancel()
            raise
        waiter.finish()
