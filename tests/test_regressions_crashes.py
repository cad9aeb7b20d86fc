"""Regression tests for the crash repros of `../shared/repros`: no Python code runs from a destructor
with an error set.

Each scenario segfaulted on the build of 807758a, so each runs in a child interpreter (with
`faulthandler`, under a time limit): a crash fails one test, not the whole run. The child prints one
JSON line, what every caller saw and the counts at the end, and the test checks it: the expected
exception reaches its caller intact, the other waiters get their slots, and every count is back to
zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

REJECTED_BY_A = 'ConcurrencyLimitExceeded: Concurrency queue depth (4) exceeds max_queued (3) for A'
REJECTED_BY_PARENT = 'ConcurrencyLimitExceeded: Concurrency queue depth (1) exceeds max_queued (0) for parent'


def run_isolated(code: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter and return the JSON object it prints last."""
    result = subprocess.run(
        [sys.executable, '-X', 'faulthandler', '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = f'exit code {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}'
    assert result.returncode == 0, report
    assert 'Exception ignored' not in result.stderr, report
    assert 'SystemError' not in result.stderr, report
    return json.loads(result.stdout.splitlines()[-1])


def test_rejection_through_async_with_in_three_level_nesting() -> None:
    """repro_segfault.py: G -> A -> P, callers rejected by A's `max_queued` as they climb from G.

    The release that passed a rejected caller's G slot on woke the next G waiter from a destructor
    while the `ConcurrencyLimitExceeded` was pending (a segfault)."""
    outcome = run_isolated(
        """
        import asyncio, json
        from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

        async def main():
            P = ConcurrencyLimiter(1, name='P')
            A = ConcurrencyLimiter(1, max_queued=3, name='A', parent=P)
            G = ConcurrencyLimiter(1, max_queued=2, name='G', parent=A)
            events, seen = {}, {}

            async def caller(name, lim):
                ev = events[name] = asyncio.Event()
                try:
                    async with lim('s'):
                        seen[name] = 'entered'
                        await ev.wait()
                except ConcurrencyLimitExceeded as e:
                    seen[name] = f'{type(e).__name__}: {e}'

            tasks = [asyncio.create_task(caller(n, l)) for n, l in
                     [('g1', G), ('a8', A), ('a9', A), ('a12', A), ('g13', G)]]
            for _ in range(3):
                await asyncio.sleep(0)
            events['g1'].set()
            tasks += [asyncio.create_task(caller('a18', A)), asyncio.create_task(caller('g19', G))]
            for _ in range(20):
                await asyncio.sleep(0)
            for ev in events.values():
                ev.set()
            for _ in range(20):
                await asyncio.sleep(0)
            await asyncio.gather(*tasks)
            limiters = {'P': P, 'A': A, 'G': G}
            counts = {n: [l.running_count, l.waiting_count, l.available_count] for n, l in limiters.items()}
            print(json.dumps({'seen': seen, 'counts': counts}))

        asyncio.run(main())
        """
    )
    assert outcome['seen'] == {
        'g1': 'entered',
        'a8': 'entered',
        'a9': 'entered',
        'a12': 'entered',
        # g13 and then g19 (which g13's G slot passed to) climb to A while its queue is full.
        'g13': REJECTED_BY_A,
        'a18': 'entered',
        'g19': REJECTED_BY_A,
    }
    assert outcome['counts'] == {'P': [0, 0, 1], 'A': [0, 0, 1], 'G': [0, 0, 1]}


@pytest.mark.parametrize('mode', ['ctx', 'acquire'])
def test_child_slot_of_a_caller_rejected_by_the_parent_passes_on(mode: str) -> None:
    """repro_segfault2.py (`ctx` and `acquire`): the child slot of a caller rejected at the parent was
    given back in the awaitable's destructor, waking the next child waiter with the error pending."""
    outcome = run_isolated(
        f"""
        import asyncio, json
        from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded

        async def main():
            parent = ConcurrencyLimiter(1, max_queued=0, name='parent')
            child = ConcurrencyLimiter(1, parent=parent, name='child')
            assert child.try_acquire()
            seen = {{}}

            async def caller(name):
                try:
                    if {mode!r} == 'ctx':
                        async with child(name):
                            seen[name] = 'entered'
                    else:
                        await child.acquire(name)
                        seen[name] = 'entered'
                except ConcurrencyLimitExceeded as e:
                    seen[name] = f'{{type(e).__name__}}: {{e}}'

            tasks = [asyncio.create_task(caller('w1')), asyncio.create_task(caller('w2'))]
            await asyncio.sleep(0)
            queued = child.waiting_count
            child.max_running = 2  # w1 gets a child slot; the parent is still full and queues nobody
            await asyncio.gather(*tasks)
            child.release()
            counts = {{n: [l.running_count, l.waiting_count] for n, l in [('parent', parent), ('child', child)]}}
            print(json.dumps({{'queued': queued, 'seen': seen, 'counts': counts}}))

        asyncio.run(main())
        """
    )
    assert outcome == {
        'queued': 2,
        'seen': {'w1': REJECTED_BY_PARENT, 'w2': REJECTED_BY_PARENT},
        'counts': {'parent': [0, 0], 'child': [0, 0]},
    }


PERMIT_DROP_COMMON = """
    import json
    from ferrolimit import ConcurrencyGovernor

    gov = ConcurrencyGovernor(max_streams=1, max_tools=1, max_global=4)
    seen = []

    def use(permit, value):
        return value

    def fails():
        raise KeyError('the real error')

    async def queued_tool():
        async with gov.tool('t'):
            seen.append('queued task got its slot')

    box = [gov.try_tool()]  # the only tool slot; queued_tool() will wait for it

    def drop_the_permit_while_an_error_is_pending():
        seen.append(gov.tool_limiter.waiting_count)
        try:
            use(box.pop(), fails())  # the permit's last reference is a temporary on the value stack
        except KeyError as e:
            seen.append(repr(e))

    def report():
        counts = [gov.tool_limiter.running_count, gov.tool_limiter.waiting_count, gov.global_limiter.running_count]
        print(json.dumps({'seen': seen, 'counts': counts}))
"""


def test_permit_dropped_while_an_exception_is_pending_on_asyncio() -> None:
    """repro_permit_drop.py: a held `ConcurrencyPermit` freed while an exception is pending woke the
    queued asyncio waiter from its destructor, which consumed the pending exception (a segfault)."""
    outcome = run_isolated(
        PERMIT_DROP_COMMON
        + """
    import asyncio

    async def main():
        t = asyncio.create_task(queued_tool())
        await asyncio.sleep(0)
        drop_the_permit_while_an_error_is_pending()
        await t

    asyncio.run(main())
    report()
    """
    )
    assert outcome == {'seen': [1, "KeyError('the real error')", 'queued task got its slot'], 'counts': [0, 0, 0]}


def test_permit_dropped_while_an_exception_is_pending_on_trio() -> None:
    """repro_permit_drop_trio.py: the same, with the waiter a trio task (`trio.lowlevel.reschedule()`
    called from the permit's destructor)."""
    outcome = run_isolated(
        PERMIT_DROP_COMMON
        + """
    import trio, trio.testing

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(queued_tool)
            await trio.testing.wait_all_tasks_blocked()
            drop_the_permit_while_an_error_is_pending()

    trio.run(main)
    report()
    """
    )
    assert outcome == {'seen': [1, "KeyError('the real error')", 'queued task got its slot'], 'counts': [0, 0, 0]}


def test_span_end_raising_passes_the_slot_on() -> None:
    """repro_span_end_raises.py: a waiter whose `span.end()` raises as it resumes with its slot.

    The awaitable returned that error still holding the slot, and its destructor passed the slot on
    (waking the next waiter) with the error pending (a segfault)."""
    outcome = run_isolated(
        """
        import asyncio, json
        from ferrolimit import ConcurrencyLimiter

        class Span:
            def end(self):
                raise RuntimeError('exporter down')

            def is_recording(self):
                return False

        class Tracer:
            def start_span(self, name, attributes=None, **kw):
                return Span()

        async def main():
            lim = ConcurrencyLimiter(1, tracer=Tracer(), name='L')
            assert lim.try_acquire()
            seen = {}

            async def caller(n):
                try:
                    async with lim(n):
                        seen[n] = 'entered'
                except RuntimeError as e:
                    seen[n] = repr(e)

            ts = [asyncio.create_task(caller(f'w{i}')) for i in range(2)]
            await asyncio.sleep(0)
            lim.release()  # hands the slot to w0, whose span.end() raises
            await asyncio.gather(*ts)
            print(json.dumps({'seen': seen, 'counts': [lim.running_count, lim.waiting_count, lim.available_count]}))

        asyncio.run(main())
        """
    )
    assert outcome == {
        'seen': {'w0': "RuntimeError('exporter down')", 'w1': "RuntimeError('exporter down')"},
        'counts': [0, 0, 1],
    }


@pytest.mark.parametrize('release_in_del', [False, True], ids=['inspect', 'release'])
@pytest.mark.parametrize('parked', ['queued', 'queued-with-timeout', 'at-parent'])
def test_dropping_a_parked_wait_whose_waker_reenters_the_limiter(parked: str, release_in_del: bool) -> None:
    """Found by an adversarial run on 3c4f87d (a hang holding the GIL): a hand-driven `acquire()`
    parked in the queue, then dropped, released the last reference to its future (and to an object
    reachable from the future's callbacks) while the queue's lock was held. That object's `__del__`
    called back into the limiter (`stats()`, `repr()`, `release()`) and waited for the lock forever.
    Wakers replaced or removed under the lock are now dropped after it."""
    outcome = run_isolated(
        f"""
        import asyncio, gc, json
        from ferrolimit import ConcurrencyLimiter

        parked, release_in_del = {parked!r}, {release_in_del!r}
        P = ConcurrencyLimiter(1, name='P')
        L = ConcurrencyLimiter(1, name='L', parent=P if parked == 'at-parent' else None)
        holder = P if parked == 'at-parent' else L
        seen = []

        class Reenter:
            def __del__(self):
                seen.append([L.stats().waiting, repr(L).startswith('ConcurrencyLimiter'), holder.running_count])
                if release_in_del:
                    holder.release()

        async def main():
            await holder.acquire()
            coro = L.acquire(**({{'timeout': 30}} if parked.endswith('timeout') else {{}}))
            future = coro.send(None)
            witness = Reenter()
            future.add_done_callback(lambda _, witness=witness: None)
            del witness, future
            coro.close()
            del coro
            gc.collect()
            if not release_in_del:
                holder.release()
            async with L:
                pass
            counts = [[lim.running_count, lim.waiting_count, lim.available_count] for lim in (L, P)]
            print(json.dumps({{'seen': seen, 'counts': counts}}))

        asyncio.run(main())
        """
    )
    assert outcome == {'seen': [[0, True, 1]], 'counts': [[0, 0, 1], [0, 0, 1]]}
