"""`await limiter.wait_idle(timeout=...)`: wait until no slot of a limiter is held.

The native `_IdleWait` registers a wake-up for the caller's event loop with the limiter; the last
release wakes it (on the loop's thread at once, from another thread through the loop's
thread-safe call). A wake-up may come early, so each one is followed by another look. Leaving in
any way (idle, timeout, cancellation) gives the registration up; a wake-up already on its way
then finds nobody waiting and does nothing.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._ferrolimit import _resolve_future

if TYPE_CHECKING:
    import trio

    from ._ferrolimit import _IdleWait as IdleWait

__all__ = ('wait_all_idle', 'wait_idle')


async def wait_idle(idle: IdleWait, time_limit: float | None) -> bool:
    """Wait on asyncio or trio until the limiter of `idle` holds no slot.

    Returns:
        True once the limiter is idle (at once if it is), False if `time_limit` seconds passed first.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await _wait_idle_trio(idle, time_limit)
    return await _wait_idle_asyncio(idle, time_limit)


async def wait_all_idle(waits: Callable[[], list[IdleWait]], time_limit: float | None) -> bool:
    """Wait until every key of a keyed limiter that holds a slot now has been idle once since.

    Each key is waited for as `wait_idle` waits for one limiter; `waits()` gives a wait for each
    key that holds a slot, and they are waited for in turn. Keys taken after the call are not
    waited for, so a busy keyed limiter cannot keep the caller waiting forever (after `close()`
    no key can be taken: it is then the end of the last slot).

    Returns:
        True once each of those keys has been idle, False if `time_limit` seconds passed first.
    """
    deadline = None if time_limit is None else _now() + time_limit
    for idle in waits():
        remaining = None if deadline is None else max(0.0, deadline - _now())
        if not await wait_idle(idle, remaining):
            return False
    return True


def _now() -> float:
    """The running event loop's clock."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        import trio

        return trio.current_time()


async def _wait_idle_asyncio(idle: IdleWait, time_limit: float | None) -> bool:
    loop = asyncio.get_running_loop()

    def registered() -> asyncio.Future[None] | None:
        """A future resolved at the next wake-up, or None if the limiter is idle."""
        future: asyncio.Future[None] = loop.create_future()
        return None if idle.poll(_resolve_future, future, loop.call_soon_threadsafe) else future

    async def until_idle(future: asyncio.Future[None] | None) -> None:
        while future is not None:
            await future
            future = registered()

    try:
        # Looked at before any timer, so that an idle limiter answers True even to timeout=0.
        future = registered()
        if future is None:
            return True
        if time_limit is None:
            await until_idle(future)
        else:
            await asyncio.wait_for(until_idle(future), time_limit)
    except asyncio.TimeoutError:
        return False
    finally:
        idle.cancel()
    return True


async def _wait_idle_trio(idle: IdleWait, time_limit: float | None) -> bool:
    from trio import Event, move_on_after
    from trio.lowlevel import current_trio_token

    token = current_trio_token()
    try:
        with move_on_after(math.inf if time_limit is None else time_limit):
            while True:
                event = Event()
                if idle.poll(_set_event, event, token.run_sync_soon):
                    return True
                await event.wait()
    finally:
        idle.cancel()
    return False


def _set_event(event: trio.Event) -> None:
    event.set()
