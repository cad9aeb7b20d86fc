"""The race at the instant of handoff, shared by the cancellation tests of one level and of two."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ferrolimit import ConcurrencyLimiter


async def cancel_at_handoff(
    first: ConcurrencyLimiter,
    second: ConcurrencyLimiter,
    release: Callable[[], None],
    order: str,
    queued: Callable[[], None],
) -> list[str]:
    """Queue 'cancelled' on `first`, then 'next' on `second`, behind a slot the caller holds; run
    `queued()` (its checks) once both wait; then, in one step so that no waiter runs in between,
    `release()` the held slot and cancel the first waiter's scope, in `order` ('releasefirst' or
    'cancelfirst'). Returns the names that entered, in order."""
    entered: list[str] = []

    async def waiter(limiter: ConcurrencyLimiter, name: str) -> None:
        async with limiter(name):
            entered.append(name)

    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def cancellable() -> None:
            with scope:
                await waiter(first, 'cancelled')

        tg.start_soon(cancellable)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, second, 'next')
        await anyio.wait_all_tasks_blocked()
        queued()
        if order == 'releasefirst':
            release()
            scope.cancel()
        else:
            scope.cancel()
            release()
    return entered
