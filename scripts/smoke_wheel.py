"""Smoke test for an installed ferrolimit wheel: `python -I scripts/smoke_wheel.py [--expect-version V]`.

`scripts/dist.sh` runs it in a fresh virtualenv of each CPython it finds, with only the wheel (and
its dependencies) installed; the release workflow runs it on the wheels it builds. It checks:

- `ferrolimit` comes from the environment's site-packages, not from a source tree (run it with
  `-I`, so that neither the script's directory nor PYTHONPATH is on `sys.path`), its version is
  the installed distribution's (and `--expect-version`'s), and the wheel is tagged `cp310-abi3`;
- a `ConcurrencyLimiter(2)` shared by eight asyncio tasks and a plain thread using `blocking()`
  never has more than two holders at once, reaches two, counts its queue, and ends with nothing
  held or queued;
- `max_queued` refuses a caller beyond the queue (`ConcurrencyLimitExceeded`).

Any failed check exits non-zero with an AssertionError saying which.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
import sysconfig
import threading
import time

import ferrolimit
from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded


def main() -> None:
    """Run every check; an AssertionError (exit status 1) names the first that fails."""
    parser = argparse.ArgumentParser(description='Smoke-test the installed ferrolimit wheel.')
    parser.add_argument('--expect-version', help='the version the wheel must report')
    args = parser.parse_args()

    ext_file = getattr(sys.modules['ferrolimit._ferrolimit'], '__file__', None)
    check_installed(ferrolimit.__file__, ext_file, args.expect_version, ferrolimit.__version__)
    peak, queued = asyncio.run(shared_limiter())
    asyncio.run(bounded_queue())
    print(
        f'smoke OK: ferrolimit {ferrolimit.__version__} on Python {sys.version.split()[0]} '
        f'({sysconfig.get_platform()}): peak {peak} of 2 held, {queued} queued at most; {ext_file}'
    )


def check_installed(package_file: str | None, ext_file: str | None, expected: str | None, version: str) -> None:
    """The package and its extension come from this environment, tagged abi3, at the right version."""
    assert package_file is not None and ext_file is not None, 'ferrolimit has no __file__'
    site_dirs = {os.path.realpath(sysconfig.get_paths()[k]) for k in ('purelib', 'platlib')}
    package_dir = os.path.dirname(os.path.dirname(os.path.realpath(package_file)))
    assert package_dir in site_dirs, f'ferrolimit imported from {package_file}, not from {sorted(site_dirs)}'
    assert os.path.dirname(os.path.realpath(ext_file)) == os.path.dirname(os.path.realpath(package_file)), (
        f'the extension {ext_file} is not in the package directory'
    )
    if sys.platform != 'win32':
        assert os.path.basename(ext_file) == '_ferrolimit.abi3.so', f'not an abi3 extension: {ext_file}'
    dist = importlib.metadata.distribution('ferrolimit')
    assert dist.version == version, f'ferrolimit.__version__ {version} != installed distribution {dist.version}'
    if expected is not None:
        assert version == expected, f'ferrolimit.__version__ is {version}, expected {expected}'
    wheel = dist.read_text('WHEEL') or ''
    tags = [line.split(':', 1)[1].strip() for line in wheel.splitlines() if line.startswith('Tag:')]
    assert tags and all(t.startswith('cp310-abi3-') for t in tags), f'the wheel is not tagged cp310-abi3: {tags}'


async def shared_limiter() -> tuple[int, int]:
    """Eight tasks and a thread through one limiter of two slots: never more than two holders."""
    limiter = ConcurrencyLimiter(2, name='smoke')
    lock = threading.Lock()
    holders = 0
    peak = 0
    most_queued = 0
    thread_rounds = 0

    def enter() -> None:
        nonlocal holders, peak
        with lock:
            holders += 1
            peak = max(peak, holders)
            assert holders <= 2, f'{holders} holders of a limiter of 2'

    def leave() -> None:
        nonlocal holders
        with lock:
            holders -= 1

    async def task() -> None:
        nonlocal most_queued
        async with limiter:
            enter()
            most_queued = max(most_queued, limiter.waiting_count)
            await asyncio.sleep(0.01)
            leave()

    def thread_worker() -> None:
        nonlocal thread_rounds
        for _ in range(3):
            with limiter.blocking('smoke-thread', timeout=30):
                enter()
                time.sleep(0.01)
                leave()
            thread_rounds += 1

    thread = threading.Thread(target=thread_worker)
    started = time.monotonic()
    thread.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(task() for _ in range(8))), timeout=30)
    finally:
        await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive(), 'the blocking() thread did not finish'
    assert thread_rounds == 3, f'the blocking() thread held the limiter {thread_rounds} times, not 3'
    assert peak == 2, f'at most {peak} holders at once; expected 2'
    assert most_queued >= 1, 'no caller was ever counted as queued'
    assert (limiter.running_count, limiter.waiting_count) == (0, 0), (
        f'left running={limiter.running_count} waiting={limiter.waiting_count}'
    )
    assert time.monotonic() - started < 20, 'the limiter was far too slow'
    return peak, most_queued


async def bounded_queue() -> None:
    """A full limiter with `max_queued=1` queues one caller and refuses the next."""
    limiter = ConcurrencyLimiter(1, max_queued=1, name='smoke-queue')
    await limiter.acquire('holder')
    waiter = asyncio.ensure_future(limiter.acquire('waiter'))
    for _ in range(100):
        if limiter.waiting_count == 1:
            break
        await asyncio.sleep(0.001)
    assert limiter.waiting_count == 1, f'waiting_count is {limiter.waiting_count}, expected 1'
    try:
        await limiter.acquire('refused')
    except ConcurrencyLimitExceeded:
        pass
    else:
        raise AssertionError('a caller beyond max_queued=1 was admitted')
    limiter.release()
    await asyncio.wait_for(waiter, timeout=10)
    limiter.release()
    assert (limiter.running_count, limiter.waiting_count) == (0, 0)


if __name__ == '__main__':
    main()
