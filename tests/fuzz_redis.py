"""A seeded, randomized stress fuzzer for `ferrolimit.RedisConcurrencyLimiter` against a real Redis server.

Each run (one seed) builds two or three limiter objects on one fresh key, with the same small
`max_running` (3 to 6), sometimes a `max_queued` bound, and short leases (0.2 to 0.4 s). A seeded
RNG then drives a random mix of operations: acquires on asyncio tasks (`acquire()` with a random
`weight`, `priority` and optional short timeout, or `async with limiter(...)`), acquires on threads
(`acquire_blocking()` and `with limiter.blocking(...)`), cancellations of waiting tasks (also right
after a release, at the handoff instant), releases (whole or in parts), `try_acquire()`, fleet-wide
resizes (`max_running = n`, grow and shrink), `close()` of one object, `wait_idle()`, `stats()`,
and an extra `release()` where nothing is held. The driver's choices are a function of the seed;
what the tasks see depends on timing, so the invariants checked are the ones that hold for every
interleaving:

(a) admission: when a caller sees its slots, the weights held by every caller (tracked here, added
    once admitted, removed before each `release()`) never exceed the largest fleet limit in force
    at some instant between its call and now (after a shrink the holders from before may exceed
    the new limit, but nobody who arrived after it is admitted beyond it);
(b) order: a caller A that was queued (its wait span opened) before a caller B of the same or a
    lower priority called `acquire` is never admitted after B (both admitted, some slack for the
    wake-up latency). A deterministic order phase then checks it exactly: the limit is fully
    held, waiters of random weights and priorities queue one after another (asyncio tasks and
    threads, on every object), and the held slots are given back one at a time; after each, the
    waiters admitted must be exactly those the queue model (priority, then arrival, head-of-line
    blocking) admits;
(c) no leak: once every caller has finished, every object shows `running_count`, `waiting_count`
    and `held_count` at 0, `wait_idle()` is immediate, no lease was lost, and the server's keys
    hold no holder, waiter, weight or place;
(d) no hang: every run has a watchdog (`--run-timeout`, 30 s) that dumps the pending callers, the
    threads' stacks and the server's state;
(e) only documented errors: TimeoutError (with a timeout, not before it), ValueError (only if
    some limit in force during the wait was below the weight), LimiterClosedError (after
    `close()`), ConcurrencyLimitExceeded (with `max_queued`), CancelledError (when cancelled);
    anything else (RuntimeError, PanicException, SystemError, ConcurrencyBackendError while
    Redis is up, a warning) is a bug;
(f) expiry: once idle, every key `{key}:*` expires within the TTL the scripts announce (about
    three leases), and none is left without a TTL.

`--probes` runs direct probes instead (see `PROBES`): bad arguments, `acquire_blocking` on an
event loop's thread, a server that is stopped or restarted (its own `redis-server` on a free port,
with and without AOF), `os.fork()` while slots are held, Ctrl-C in `acquire_blocking`, `timeout=0`
with free slots, an `acquire()` coroutine never awaited, tracers that raise, a shrink below a
queued waiter's weight, the getter right after the setter, a resize while busy, cancellations at
the handoff instant (asyncio and trio) and lease renewal while Python code keeps the GIL busy.

Command line::

    python tests/fuzz_redis.py --url redis://127.0.0.1:6379/0 --seeds 0..49 --ops 300
    python tests/fuzz_redis.py --url redis://127.0.0.1:6379/0 --seeds 0..199 --skip getter,lost,totals,warnings
    python tests/fuzz_redis.py --url redis://127.0.0.1:6379/0 --probes all

`--skip` leaves out checks that a known bug fails, to get past it to the next one (see `CHECKS`).

Every failing run prints the line that replays it (the same driver choices; timing varies).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import faulthandler
import gc
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import warnings
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

from ferrolimit import (
    ConcurrencyBackendError,
    ConcurrencyLimitExceeded,
    LimiterClosedError,
    RedisConcurrencyLimiter,
    UserError,
)

RespValue: TypeAlias = 'int | str | list[RespValue] | None'

ORDER_SLACK = 0.15
"""Seconds by which a waiter's wake-up may lag one admitted with it (check (b) in the random mix)."""
MAX_LIVE = 14
"""At most this many callers alive at once (waiting or holding)."""
MAX_THREADS = 4
"""At most this many threads blocked in `acquire_blocking` or holding at once."""
CHECKS = {
    'getter': 'max_running reads the value just set',
    'lost': 'no lease lost (lost_count == 0)',
    'stats-limit': 'stats().max_running is a limit in force during the call',
    'totals': 'stats() totals count every admission, rejection and wait given up seen',
    'warnings': 'no warning (the objects agree on max_running)',
}
"""Checks that `--skip` can leave out, to get past a known bug to the next one."""
SUFFIXES = ('holders', 'queue', 'waiters', 'seq', 'epoch', 'recovering', 'limit', 'weights', 'places', 'used')


class FuzzFailure(Exception):
    """An invariant does not hold."""


# --- a tiny synchronous Redis client (RESP2), to look at the server's state directly -------------


class RespError(Exception):
    """Redis answered with an error."""


class Resp:
    """One connection to Redis, for the fuzzer's own look at the keys."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlparse(url)
        self._sock = socket.create_connection((parsed.hostname or '127.0.0.1', parsed.port or 6379), timeout=5)
        self._file = self._sock.makefile('rb')
        db = parsed.path.strip('/')
        if db:
            self.call('SELECT', db)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def call(self, *args: str | int) -> RespValue:
        out = [f'*{len(args)}\r\n'.encode()]
        for arg in args:
            data = str(arg).encode()
            out.append(b'$%d\r\n%s\r\n' % (len(data), data))
        self._sock.sendall(b''.join(out))
        return self._read()

    def _read(self) -> RespValue:
        line = self._file.readline()
        if not line:
            raise ConnectionError('Redis closed the connection')
        kind, rest = line[:1], line[1:-2]
        if kind == b'+':
            return rest.decode()
        if kind == b'-':
            raise RespError(rest.decode())
        if kind == b':':
            return int(rest)
        if kind == b'$':
            n = int(rest)
            if n < 0:
                return None
            data = self._file.read(n + 2)[:-2]
            return data.decode(errors='replace')
        if kind == b'*':
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f'unexpected reply {line!r}')

    def int_of(self, *args: str | int) -> int:
        value = self.call(*args)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.lstrip('-').isdigit():
            return int(value)
        return 0

    def strings(self, *args: str | int) -> list[str]:
        value = self.call(*args)
        if not isinstance(value, list):
            return []
        return [v for v in value if isinstance(v, str)]


def url_variant(url: str, i: int) -> str:
    """The same server and database under another URL string (with a query the client ignores)."""
    return f'{url}{"&" if "?" in url else "?"}fuzz_connection={i}'


def state_dump(resp: Resp, key: str) -> str:
    """The server's view of the key, for failure reports."""
    k = '{' + key + '}'
    lines: list[str] = []
    try:
        lines.append(f'  limit={resp.call("GET", k + ":limit")!r} used={resp.call("GET", k + ":used")!r}')
        lines.append(f'  holders={resp.call("ZRANGE", k + ":holders", 0, -1, "WITHSCORES")!r}')
        lines.append(f'  queue={resp.call("ZRANGE", k + ":queue", 0, -1, "WITHSCORES")!r}')
        lines.append(f'  waiters={resp.call("ZRANGE", k + ":waiters", 0, -1, "WITHSCORES")!r}')
        lines.append(f'  weights={resp.call("HGETALL", k + ":weights")!r}')
        lines.append(f'  places={resp.call("HGETALL", k + ":places")!r}')
        lines.append(f'  keys={resp.strings("KEYS", k + ":*")!r}')
    except (OSError, RespError) as e:
        lines.append(f'  (cannot read the server: {e})')
    return '\n'.join(lines)


# --- the hook that tells when a caller is queued: its wait span opens --------------------------


class _QueuedHook(SpanProcessor):
    """Calls `callback(source)` when a wait span starts (the caller was queued on the server)."""

    def __init__(self) -> None:
        self.callback: Callable[[str], None] | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes
        source = attributes.get('source') if attributes is not None else None
        callback = self.callback
        if callback is not None and isinstance(source, str):
            callback(source)


HOOK = _QueuedHook()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(HOOK)
TRACER = _PROVIDER.get_tracer('fuzz_redis')


# --- one run ------------------------------------------------------------------------------------


@dataclass
class Caller:
    """One acquire (or `try_acquire`) and what became of it."""

    cid: int
    obj: int
    weight: int
    priority: int
    timeout: float | None
    kind: str
    """'task' (acquire/release), 'ctx' (async with), 'task2' (acquire/release on a second event loop
    in another thread), 'thread' (acquire_blocking), 'bctx' (blocking()), 'try'."""
    hold: float | None
    """Seconds held before releasing; None: the driver releases it (raw)."""
    parts: list[int]
    """How the weight is given back: one release() per part."""
    t_call: float = 0.0
    t_queued: float | None = None
    t_admit: float | None = None
    t_end: float | None = None
    state: str = 'new'
    """new, waiting, holding, raw (held for the driver), released, failed, cancelled."""
    outcome: str = ''
    cancel_requested: bool = False
    task: asyncio.Task[None] | concurrent.futures.Future[None] | None = None
    """On the driver's loop, or (kind 'task2') on the second loop's thread."""
    thread: threading.Thread | None = None
    held: int = 0
    """Weight still held (as tracked here)."""

    @property
    def source(self) -> str:
        return f'c{self.cid}'

    def describe(self) -> str:
        return (
            f'{self.source} obj={self.obj} kind={self.kind} w={self.weight} p={self.priority} '
            f'timeout={self.timeout} state={self.state} held={self.held} outcome={self.outcome!r}'
        )


@dataclass
class Options:
    url: str
    ops: int = 300
    run_timeout: float = 30.0
    order_phase: bool = True
    trace: bool = False
    threads: bool = True
    skip: frozenset[str] = frozenset()
    """Checks not made (to get past a known bug): see `CHECKS`."""


@dataclass
class Resize:
    start: float
    end: float
    value: int


@dataclass
class Run:
    """The state of one seed's run."""

    seed: int
    opts: Options
    rng: random.Random = field(init=False)
    key: str = field(init=False)
    max_running: int = field(init=False)
    leases: list[float] = field(init=False)
    max_queued: list[int | None] = field(init=False)
    limiters: list[RedisConcurrencyLimiter] = field(init=False)
    closed_at: list[float | None] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    callers: dict[int, Caller] = field(default_factory=dict[int, Caller])
    by_source: dict[str, Caller] = field(default_factory=dict[str, Caller])
    resizes: list[Resize] = field(default_factory=list[Resize])
    findings: list[str] = field(default_factory=list[str])
    log: list[str] = field(default_factory=list[str])
    next_cid: int = 0
    resp: Resp = field(init=False)
    epoch: str | None = None
    epoch_seen_at: float = 0.0
    second_loop: asyncio.AbstractEventLoop | None = None
    second_thread: threading.Thread | None = None
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        rng = self.rng
        self.key = f'ferrolimit-fuzz:{self.seed}:{os.getpid()}:{time.time_ns()}'
        self.max_running = rng.randint(3, 6)
        n = rng.choice([2, 3, 3])
        self.leases = [rng.choice([0.2, 0.2, 0.3, 0.4]) for _ in range(n)]
        self.max_queued = [rng.choice([None, None, None, 0, 1, 3, 6]) for _ in range(n)]
        # Another spelling of the URL gets its own connection and subscription, as another
        # process would.
        urls = [self.opts.url if rng.random() < 0.5 else url_variant(self.opts.url, i) for i in range(n)]
        self.limiters = [
            RedisConcurrencyLimiter(
                url,
                self.key,
                self.max_running,
                max_queued=q,
                lease_seconds=lease,
                tracer=TRACER,
            )
            for url, q, lease in zip(urls, self.max_queued, self.leases, strict=True)
        ]
        self.closed_at = [None] * n
        self.resp = Resp(self.opts.url)

    def loop2(self) -> asyncio.AbstractEventLoop:
        """The second event loop (started on first use), on a thread of its own."""
        if self.second_loop is None:
            loop = asyncio.new_event_loop()
            self.second_loop = loop
            self.second_thread = threading.Thread(target=loop.run_forever, name='loop2', daemon=True)
            self.second_thread.start()
        return self.second_loop

    def stop_loop2(self) -> None:
        loop, thread = self.second_loop, self.second_thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    # -- bookkeeping (any thread) --

    def now(self) -> float:
        return time.monotonic()

    def note(self, text: str) -> None:
        line = f'{self.now() - self.t0:8.4f} {text}'
        with self.lock:
            self.log.append(line)
            if len(self.log) > 400:
                del self.log[:100]
        if self.opts.trace:
            print(line, flush=True)

    def fail(self, text: str) -> None:
        with self.lock:
            self.findings.append(text)
        self.note(f'FINDING: {text}')

    def limit_now(self) -> int:
        return self.resizes[-1].value if self.resizes else self.max_running

    def limits_in_window(self, a: float, b: float) -> list[int]:
        """The fleet limits that may have been in force at some instant of [a, b]."""
        before = self.max_running
        inside: list[int] = []
        for r in self.resizes:
            if r.end <= a:
                before = r.value
            elif r.start <= b:
                inside.append(r.value)
        return [before, *inside]

    def new_caller(self, obj: int, weight: int, priority: int, timeout: float | None, kind: str) -> Caller:
        rng = self.rng
        hold: float | None = None if rng.random() < 0.35 else rng.choice([0.0, 0.001, 0.003, 0.01, 0.03, 0.03])
        if hold is not None and rng.random() < 0.05:
            hold = rng.choice([0.1, 0.3, 0.6])  # across lease renewals
        if kind == 'bctx' and hold is None:
            hold = 0.002
        parts = [weight]
        if weight > 1 and rng.random() < 0.3 and kind in ('task', 'thread', 'try'):
            first = rng.randint(1, weight - 1)
            parts = [first, weight - first]
        with self.lock:
            cid = self.next_cid
            self.next_cid += 1
            caller = Caller(cid, obj, weight, priority, timeout, kind, hold, parts)
            self.callers[cid] = caller
            self.by_source[caller.source] = caller
        return caller

    def on_queued(self, source: str) -> None:
        with self.lock:
            caller = self.by_source.get(source)
            if caller is None:
                return
            if caller.t_queued is None:
                caller.t_queued = self.now()
            if caller.state == 'new':
                caller.state = 'waiting'

    def on_admitted(self, c: Caller, raw: bool) -> None:
        now = self.now()
        with self.lock:
            c.t_admit = now
            c.held = c.weight
            c.state = 'raw' if raw else 'holding'
            total = sum(x.held for x in self.callers.values())
            limits = self.limits_in_window(c.t_call, now)
        self.note(f'admitted {c.describe()} total={total} limits={limits}')
        if c.weight > max(limits):
            self.fail(f'(a) {c.source} of weight {c.weight} admitted, above every limit in force {limits}')
        if total > max(limits):
            held = [x.describe() for x in self.callers.values() if x.held]
            self.fail(
                f'(a) {c.source} admitted with {total} slots held, above every limit in force since its '
                f'call {limits}: holders {held}'
            )

    def give_back(self, c: Caller, weight: int) -> None:
        """Release `weight` of the caller's slots: tracked first, then `release()`."""
        with self.lock:
            c.held -= weight
            if c.held == 0:
                c.state = 'released'
        self.note(f'release {c.source} obj={c.obj} weight={weight}')
        try:
            self.limiters[c.obj].release(weight=weight)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) release(weight={weight}) of {c.describe()} raised {type(e).__name__}: {e}')

    def give_back_all(self, c: Caller) -> None:
        parts = list(c.parts)
        left = c.held
        for part in parts:
            if left <= 0:
                break
            part = min(part, left)
            self.give_back(c, part)
            left -= part

    def on_error(self, c: Caller, exc: BaseException) -> None:
        now = self.now()
        with self.lock:
            c.t_end = now
            c.outcome = f'{type(exc).__name__}: {exc}'
            c.state = 'cancelled' if isinstance(exc, asyncio.CancelledError) else 'failed'
            limits = self.limits_in_window(c.t_call, now)
            closed = self.closed_at[c.obj]
        self.note(f'error {c.describe()}')
        problem = self.check_error(c, exc, now, limits, closed)
        if problem:
            tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            self.fail(f'(e) {c.describe()}: {problem}\n{tb}')

    def check_error(
        self, c: Caller, exc: BaseException, now: float, limits: list[int], closed: float | None
    ) -> str | None:
        if isinstance(exc, asyncio.CancelledError):
            return None if c.cancel_requested else 'cancelled without a cancel'
        if isinstance(exc, LimiterClosedError):
            return None if closed is not None and closed <= now else 'LimiterClosedError on an open object'
        if isinstance(exc, ConcurrencyLimitExceeded):
            return None if self.max_queued[c.obj] is not None else 'ConcurrencyLimitExceeded without max_queued'
        if isinstance(exc, TimeoutError):
            if c.timeout is None:
                return 'TimeoutError without a timeout'
            if now - c.t_call < c.timeout - 0.002:
                return f'TimeoutError after {now - c.t_call:.4f}s, before the timeout {c.timeout}'
            return None
        if isinstance(exc, ValueError):
            if any(limit < c.weight for limit in limits):
                return None
            return f'ValueError though no limit in force during the wait was below the weight: {limits}'
        return f'undocumented {type(exc).__module__}.{type(exc).__name__}'

    def check_epoch(self) -> None:
        """The state's epoch must not change while the key is in use (it would mean it expired)."""
        try:
            epoch = self.resp.call('GET', '{' + self.key + '}:epoch')
        except (OSError, RespError) as e:
            self.fail(f'cannot read the epoch: {e}')
            return
        now = self.now()
        if not isinstance(epoch, str):
            epoch = None
        if self.epoch is not None and epoch != self.epoch:
            gap = now - self.epoch_seen_at
            self.note(f'epoch {self.epoch!r} -> {epoch!r} after {gap:.3f}s')
            if gap < 2.5 * min(self.leases):
                self.fail(f'(f) the state was lost/expired while in use: epoch {self.epoch!r} -> {epoch!r}')
            elif epoch is not None:
                # Expired idle and created anew: the limit is whatever its creator stored.
                limit = self.resp.call('GET', '{' + self.key + '}:limit')
                if isinstance(limit, str) and limit.split(' ')[0].isdigit():
                    with self.lock:
                        self.resizes.append(Resize(self.epoch_seen_at, now, int(limit.split(' ')[0])))
        if epoch is not None:
            self.epoch, self.epoch_seen_at = epoch, now

    # -- callers --

    async def task_caller(self, c: Caller) -> None:
        lim = self.limiters[c.obj]
        c.t_call = self.now()
        try:
            if c.kind == 'ctx':
                async with lim(c.source, weight=c.weight, priority=c.priority):
                    self.on_admitted(c, raw=False)
                    try:
                        await asyncio.sleep(c.hold or 0)
                    finally:
                        with self.lock:
                            c.held = 0
                            c.state = 'released'
                with self.lock:
                    c.t_end = self.now()
                    c.outcome = 'ok'
                return
            await lim.acquire(c.source, timeout=c.timeout, weight=c.weight, priority=c.priority)
        except BaseException as e:
            if c.state in ('holding', 'released'):
                with self.lock:
                    c.t_end = self.now()
                    c.outcome = f'ended while holding: {type(e).__name__}'
                if not isinstance(e, asyncio.CancelledError):
                    self.fail(f'(e) {c.describe()}: {type(e).__name__} from the context manager: {e}')
            else:
                self.on_error(c, e)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        self.on_admitted(c, raw=c.hold is None)
        if c.hold is None:
            return
        try:
            await asyncio.sleep(c.hold)
        finally:
            self.give_back_all(c)
            with self.lock:
                c.t_end = self.now()
                c.outcome = c.outcome or 'ok'

    def thread_caller(self, c: Caller) -> None:
        lim = self.limiters[c.obj]
        c.t_call = self.now()
        try:
            if c.kind == 'bctx':
                with lim.blocking(c.source, timeout=c.timeout, weight=c.weight, priority=c.priority):
                    self.on_admitted(c, raw=False)
                    time.sleep(c.hold or 0)
                    with self.lock:
                        c.held = 0
                        c.state = 'released'
                with self.lock:
                    c.t_end = self.now()
                    c.outcome = 'ok'
                return
            lim.acquire_blocking(c.source, timeout=c.timeout, weight=c.weight, priority=c.priority)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            if c.state in ('holding', 'released'):
                self.fail(f'(e) {c.describe()}: {type(e).__name__} from blocking(): {e}')
            else:
                self.on_error(c, e)
            return
        self.on_admitted(c, raw=c.hold is None)
        if c.hold is None:
            return
        time.sleep(c.hold)
        self.give_back_all(c)
        with self.lock:
            c.t_end = self.now()
            c.outcome = 'ok'

    def live(self) -> list[Caller]:
        with self.lock:
            return [c for c in self.callers.values() if c.state in ('new', 'waiting', 'holding', 'raw')]

    def live_threads(self) -> int:
        return sum(1 for c in self.live() if c.thread is not None and c.thread.is_alive())

    def spawn(self, c: Caller) -> None:
        self.note(f'spawn {c.describe()} hold={c.hold} parts={c.parts}')
        if c.kind in ('thread', 'bctx'):
            c.thread = threading.Thread(target=self.thread_caller, args=(c,), name=c.source, daemon=True)
            c.thread.start()
        elif c.kind == 'task2':
            future = asyncio.run_coroutine_threadsafe(self.task_caller(c), self.loop2())
            c.task = future
            future.add_done_callback(lambda _: self.task_done(c))
        else:
            task = asyncio.ensure_future(self.task_caller(c))
            c.task = task
            task.add_done_callback(lambda _: self.task_done(c))

    def task_done(self, c: Caller) -> None:
        """A task cancelled before it ran its first step never saw its CancelledError."""
        with self.lock:
            if c.state != 'new':
                return
        self.on_error(c, asyncio.CancelledError())

    def random_caller(self, kind: str, obj: int | None = None) -> Caller:
        rng = self.rng
        limit = self.limit_now()
        obj = rng.randrange(len(self.limiters)) if obj is None else obj
        weight = rng.randint(1, limit + 1) if rng.random() < 0.08 else rng.randint(1, limit)
        if rng.random() < 0.6:
            weight = 1
        priority = rng.choice([0, 0, 0, -1, 1, -2, 2])
        if rng.random() < 0.01:
            priority = rng.choice([-(2**31), 2**31 - 1])
        timeout: float | None = None
        roll = rng.random()
        if roll < 0.2:
            timeout = rng.choice([0.001, 0.005, 0.02, 0.05])
        elif roll < 0.3:
            timeout = rng.choice([0.2, 0.5, 1.0])
        elif roll < 0.32:
            timeout = math.inf
        if kind in ('thread', 'bctx') and timeout is None:
            timeout = rng.choice([None, 3.0, 5.0])
        return self.new_caller(obj, weight, priority, timeout, kind)

    # -- driver operations --

    async def op_spawn(self) -> None:
        if len(self.live()) >= MAX_LIVE:
            await asyncio.sleep(0.002)
            return
        self.spawn(self.random_caller(self.rng.choice(['task', 'task', 'task', 'ctx', 'task2'])))

    async def op_spawn_thread(self) -> None:
        if not self.opts.threads or self.live_threads() >= MAX_THREADS or len(self.live()) >= MAX_LIVE:
            return
        self.spawn(self.random_caller(self.rng.choice(['thread', 'thread', 'bctx'])))

    async def op_burst(self) -> None:
        for _ in range(self.rng.randint(2, 5)):
            if len(self.live()) >= MAX_LIVE:
                break
            self.spawn(self.random_caller('task'))

    def waiting_tasks(self) -> list[Caller]:
        with self.lock:
            return [
                c
                for c in self.callers.values()
                if c.task is not None and c.state in ('new', 'waiting') and not c.cancel_requested
            ]

    def cancel(self, c: Caller) -> None:
        if c.task is None or c.task.done():
            return
        self.note(f'cancel {c.describe()}')
        with self.lock:
            c.cancel_requested = True
        c.task.cancel()

    async def op_cancel(self) -> None:
        candidates = self.waiting_tasks()
        if self.rng.random() < 0.15:
            with self.lock:
                candidates = [c for c in self.callers.values() if c.task is not None and c.state == 'holding']
        if candidates:
            self.cancel(self.rng.choice(candidates))

    def raw_holders(self) -> list[Caller]:
        with self.lock:
            return [c for c in self.callers.values() if c.state == 'raw' and c.held > 0]

    async def op_release(self) -> None:
        raws = self.raw_holders()
        if not raws:
            return
        c = self.rng.choice(raws)
        if self.rng.random() < 0.3 and c.held > 1:
            self.give_back(c, self.rng.randint(1, c.held - 1))
        else:
            self.give_back(c, c.held)

    def handoff_waiter(self, holder: Caller, waiting: list[Caller]) -> Caller:
        """The waiter `op_handoff` cancels when `holder` releases."""
        return self.rng.choice(waiting)

    async def op_handoff(self) -> None:
        """Release, then cancel a waiter at (or around) the instant the slot is handed over."""
        raws = self.raw_holders()
        waiting = self.waiting_tasks()
        if not raws or not waiting:
            return
        c = self.rng.choice(raws)
        w = self.handoff_waiter(c, waiting)
        delay = self.rng.choice([None, 0.0, 0.0002, 0.0005, 0.001, 0.002, 0.004])
        self.give_back(c, c.held)
        if delay is not None:
            await asyncio.sleep(delay)
        self.cancel(w)

    async def op_try_acquire(self) -> None:
        rng = self.rng
        obj = rng.randrange(len(self.limiters))
        limit = self.limit_now()
        weight = rng.randint(1, limit + 1) if rng.random() < 0.1 else rng.randint(1, limit)
        c = self.new_caller(obj, weight, 0, None, 'try')
        c.t_call = self.now()
        try:
            got = self.limiters[obj].try_acquire(weight=weight)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.on_error(c, e)
            return
        if got:
            self.on_admitted(c, raw=True)
        else:
            with self.lock:
                c.state, c.outcome, c.t_end = 'failed', 'not free', self.now()

    async def op_resize(self) -> None:
        rng = self.rng
        value = rng.randint(1, self.max_running + 2)
        obj = rng.randrange(len(self.limiters))
        self.note(f'resize obj={obj} -> {value}')
        # In force from before the call (threads see admissions while it runs) until it returns.
        resize = Resize(self.now(), math.inf, value)
        with self.lock:
            self.resizes.append(resize)
        try:
            self.limiters[obj].max_running = value
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) max_running = {value} raised {type(e).__name__}: {e}')
            return
        finally:
            with self.lock:
                resize.end = self.now()
        seen = self.limiters[obj].max_running
        if seen != value and 'getter' not in self.opts.skip:
            self.fail(f'max_running reads {seen} right after setting it to {value}')

    async def op_close(self) -> None:
        open_objs = [i for i, t in enumerate(self.closed_at) if t is None]
        if len(open_objs) < 2:
            return
        obj = self.rng.choice(open_objs)
        self.note(f'close obj={obj}')
        with self.lock:
            self.closed_at[obj] = self.now()
        self.limiters[obj].close()
        if not self.limiters[obj].closed:
            self.fail('closed is False after close()')
        if self.limiters[obj].try_acquire():
            self.fail('try_acquire() returned True on a closed object')

    async def op_wait_idle(self) -> None:
        obj = self.rng.randrange(len(self.limiters))
        timeout = self.rng.choice([0, 0.001, 0.01])
        try:
            result = await self.limiters[obj].wait_idle(timeout=timeout)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) wait_idle(timeout={timeout}) raised {type(e).__name__}: {e}')
            return
        self.note(f'wait_idle obj={obj} timeout={timeout} -> {result}')

    async def op_stats(self) -> None:
        obj = self.rng.randrange(len(self.limiters))
        start = self.now()
        try:
            stats = self.limiters[obj].stats()
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) stats() raised {type(e).__name__}: {e}')
            return
        limits = self.limits_in_window(start, self.now())
        if stats.max_running not in limits and 'stats-limit' not in self.opts.skip:
            self.fail(f'stats().max_running={stats.max_running} is none of the limits in force {limits}')
        if stats.running < 0 or stats.waiting < 0 or stats.available != max(0, stats.max_running - stats.running):
            self.fail(f'inconsistent stats {stats!r}')
        self.check_epoch()

    async def op_extra_release(self) -> None:
        """A release() where this object holds nothing: ValueError, nothing changes."""
        obj = self.rng.randrange(len(self.limiters))
        with self.lock:
            busy = any(c.obj == obj and c.state in ('new', 'waiting', 'holding', 'raw') for c in self.callers.values())
        if busy:
            return
        lim = self.limiters[obj]
        before = lim.held_count
        try:
            lim.release(weight=self.rng.randint(1, 3))
        except ValueError:
            pass
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) extra release() raised {type(e).__name__}: {e}')
        else:
            self.fail(f'release() on obj {obj} holding {before} slots did not raise')

    async def op_sleep(self) -> None:
        await asyncio.sleep(self.rng.choice([0, 0.0005, 0.001, 0.003, 0.01]))

    def check_order(self) -> None:
        """(b) in the random mix, with slack for the wake-up latency."""
        with self.lock:
            admitted = [c for c in self.callers.values() if c.t_admit is not None and c.kind != 'try']
        for a in admitted:
            if a.t_queued is None:
                continue
            for b in admitted:
                if b is a or b.t_call <= a.t_queued or b.priority > a.priority:
                    continue
                assert a.t_admit is not None and b.t_admit is not None
                if b.t_admit + ORDER_SLACK < a.t_admit:
                    self.fail(
                        f'(b) {b.source} (p={b.priority}, called {b.t_call - self.t0:.4f}) admitted at '
                        f'{b.t_admit - self.t0:.4f}, before {a.source} (p={a.priority}, queued at '
                        f'{a.t_queued - self.t0:.4f}) admitted at {a.t_admit - self.t0:.4f}'
                    )

    # -- phases --

    async def random_phase(self) -> None:
        ops: list[tuple[Callable[[], Coroutine[Any, Any, None]], int]] = [
            (self.op_spawn, 24),
            (self.op_spawn_thread, 5),
            (self.op_burst, 3),
            (self.op_cancel, 10),
            (self.op_release, 12),
            (self.op_handoff, 8),
            (self.op_try_acquire, 8),
            (self.op_resize, 4),
            (self.op_close, 1 if self.rng.random() < 0.4 else 0),
            (self.op_wait_idle, 3),
            (self.op_stats, 4),
            (self.op_extra_release, 2),
            (self.op_sleep, 10),
        ]
        funcs = [f for f, _ in ops]
        weights = [w for _, w in ops]
        for i in range(self.opts.ops):
            op = self.rng.choices(funcs, weights)[0]
            await op()
            if i % 10 == 0:
                self.check_epoch()
            if self.rng.random() < 0.5:
                await asyncio.sleep(0)

    async def drain(self, deadline: float) -> None:
        """Every caller finishes: raw slots are released, waiters are admitted as holders leave."""
        while True:
            for c in self.raw_holders():
                self.give_back(c, c.held)
            live = self.live()
            self.check_epoch()
            if not live:
                break
            if self.now() > deadline:
                raise FuzzFailure('(d) callers still pending:\n  ' + '\n  '.join(c.describe() for c in live))
            await asyncio.sleep(0.005)
        for c in list(self.callers.values()):
            if c.thread is not None:
                c.thread.join(max(0.0, deadline - self.now()))
                if c.thread.is_alive():
                    raise FuzzFailure(f'(d) thread of {c.describe()} never returned')
            if c.task is not None and not c.task.done():
                await wait_task(c.task, max(0.0, deadline - self.now()))
                if not c.task.done():
                    raise FuzzFailure(f'(d) task of {c.describe()} never finished')

    def leftovers(self) -> list[str]:
        """What the objects and the server still hold or queue."""
        problems: list[str] = []
        for i, lim in enumerate(self.limiters):
            try:
                running, waiting, held = lim.running_count, lim.waiting_count, lim.held_count
            except Exception as e:  # noqa: BLE001 - any error is a finding
                problems.append(f'obj {i} counts raised {type(e).__name__}: {e}')
                continue
            if (running, waiting, held) != (0, 0, 0):
                problems.append(f'obj {i}: running={running} waiting={waiting} held={held}')
        k = '{' + self.key + '}'
        server = {
            'holders': self.resp.int_of('ZCARD', k + ':holders'),
            'queue': self.resp.int_of('ZCARD', k + ':queue'),
            'waiters': self.resp.int_of('ZCARD', k + ':waiters'),
            'weights': self.resp.int_of('HLEN', k + ':weights'),
            'places': self.resp.int_of('HLEN', k + ':places'),
            'used': self.resp.int_of('GET', k + ':used'),
        }
        if any(server.values()):
            problems.append(f'server: {server}')
        return problems

    async def check_quiet(self, label: str) -> None:
        """(c) every object and the server show nothing held or queued."""
        deadline = self.now() + 2.0
        while problems := self.leftovers():
            if self.now() > deadline:
                raise FuzzFailure(f'(c) {label}: slots or places left: {problems}\n{state_dump(self.resp, self.key)}')
            await asyncio.sleep(0.02)
        if 'totals' not in self.opts.skip:
            self.check_totals(label)
        for i, lim in enumerate(self.limiters):
            if not await lim.wait_idle(timeout=1.0):
                self.fail(f'(c) {label}: wait_idle() of obj {i} timed out with nothing held')
            if lim.lost_count and 'lost' not in self.opts.skip:
                self.fail(f'(c) {label}: obj {i} reports lost_count={lim.lost_count} (lease {self.leases[i]})')

    def check_totals(self, label: str) -> None:
        """`stats()` totals against what the callers saw (lower bounds: a caller cancelled at the
        instant it was admitted or refused is counted by the limiter, not seen here)."""
        for i, lim in enumerate(self.limiters):
            stats = lim.stats()
            with self.lock:
                mine = [c for c in self.callers.values() if c.obj == i]
            admitted = sum(1 for c in mine if c.t_admit is not None)
            rejected = sum(1 for c in mine if c.outcome.startswith('ConcurrencyLimitExceeded'))
            given_up = sum(
                1
                for c in mine
                if c.t_queued is not None
                and c.t_admit is None
                # As the local limiter counts them: refusals (closed, a shrink) are no waits given up.
                and c.outcome.split(':')[0] in ('TimeoutError', 'CancelledError')
            )
            if stats.acquired_total < admitted:
                self.fail(f'(c) {label}: obj {i} acquired_total={stats.acquired_total} < {admitted} admissions seen')
            if stats.rejected_total < rejected:
                self.fail(f'(c) {label}: obj {i} rejected_total={stats.rejected_total} < {rejected} rejections seen')
            if stats.cancelled_total < given_up:
                self.fail(f'(c) {label}: obj {i} cancelled_total={stats.cancelled_total} < {given_up} waits given up')

    async def order_phase(self) -> None:
        """(b) exactly: fill the limit, queue waiters one by one, give the slots back one at a time."""
        rng = self.rng
        open_objs = [i for i, t in enumerate(self.closed_at) if t is None]
        limit = self.limit_now()
        filler_obj = rng.choice(open_objs)
        filler = self.new_caller(filler_obj, limit, 0, None, 'try')
        filler.t_call = self.now()
        if not self.limiters[filler_obj].try_acquire(weight=limit):
            raise FuzzFailure(f'order phase: try_acquire(weight={limit}) failed on an idle key')
        self.on_admitted(filler, raw=True)
        queue = await self.queue_one_by_one(open_objs, limit)
        if queue and rng.random() < 0.5:
            await self.cancel_one_queued(queue)
        await self.release_one_at_a_time(filler, queue)
        for c in queue:
            if c.thread is not None:
                c.thread.join(2.0)

    async def queue_one_by_one(self, open_objs: list[int], limit: int) -> list[Caller]:
        """Waiters of random weights and priorities, each queued before the next arrives."""
        rng = self.rng
        queue: list[Caller] = []
        for _ in range(rng.randint(3, 7)):
            depth = len(queue)
            objs = [i for i in open_objs if self.max_queued[i] is None or (self.max_queued[i] or 0) > depth]
            if not objs:
                break
            obj = rng.choice(objs)
            kind = 'thread' if self.opts.threads and rng.random() < 0.25 else 'task'
            c = self.new_caller(obj, rng.randint(1, limit), rng.choice([-1, 0, 0, 1]), 10.0, kind)
            c.hold, c.parts = None, [c.weight]
            self.spawn(c)
            await wait_until(lambda c=c: c.t_queued is not None or c.state != 'new', 3.0)
            if c.t_queued is None:
                raise FuzzFailure(f'order phase: {c.describe()} was not queued while the limit is fully held')
            queue.append(c)
        return queue

    async def cancel_one_queued(self, queue: list[Caller]) -> None:
        tasks = [c for c in queue if c.task is not None]
        if not tasks:
            return
        victim = self.rng.choice(tasks)
        self.cancel(victim)
        assert victim.task is not None
        await wait_task(victim.task, 2.0)
        if victim.state != 'cancelled':
            raise FuzzFailure(f'order phase: cancelled waiter {victim.describe()} did not end cancelled')
        queue.remove(victim)
        await self.wait_server_queue(len(queue))

    async def release_one_at_a_time(self, filler: Caller, queue: list[Caller]) -> None:
        """Give the held slots back one by one; after each, exactly the waiters the model admits."""
        # The model: priority first, then arrival; head-of-line blocking.
        pending = sorted(queue, key=lambda c: (-c.priority, queue.index(c)))
        holders: list[Caller] = [filler]
        free = 0
        expected: set[int] = set()
        while pending or holders:
            holder = holders[0]
            self.give_back(holder, 1)
            if holder.held == 0:
                holders.pop(0)
            free += 1
            newly: list[Caller] = []
            while pending and pending[0].weight <= free:
                head = pending.pop(0)
                free -= head.weight
                newly.append(head)
                expected.add(head.cid)
            await wait_until(lambda newly=newly: all(c.t_admit is not None for c in newly), 3.0)
            late = [c.describe() for c in newly if c.t_admit is None]
            if late:
                raise FuzzFailure(
                    f'(b) order phase: expected admitted after a release, not admitted: {late}; queue '
                    f'left {[c.describe() for c in pending]}\n{state_dump(self.resp, self.key)}'
                )
            await asyncio.sleep(0.02)
            early = [c.describe() for c in queue if c.t_admit is not None and c.cid not in expected]
            if early:
                raise FuzzFailure(
                    f'(b) order phase: admitted out of order: {early}; the model admits next '
                    f'{[c.describe() for c in pending]} with {free} free'
                )
            holders.extend(newly)

    async def wait_server_queue(self, n: int) -> None:
        deadline = self.now() + 2.0
        while self.resp.int_of('ZCARD', '{' + self.key + '}:queue') != n:
            if self.now() > deadline:
                raise FuzzFailure(f'the server queue does not come to {n}:\n{state_dump(self.resp, self.key)}')
            await asyncio.sleep(0.005)

    async def check_expiry(self) -> None:
        """(f) every key expires once idle, within the TTL announced."""
        pattern = '{' + self.key + '}:*'
        keys = self.resp.strings('KEYS', pattern)
        ttls = {k: self.resp.int_of('PTTL', k) for k in keys}
        no_ttl = [k for k, t in ttls.items() if t < 0]
        if no_ttl:
            self.fail(f'(f) keys without a TTL: {no_ttl}')
        bound = 3000 * max(self.leases) + 200
        long = {k: t for k, t in ttls.items() if t > bound}
        if long:
            self.fail(f'(f) TTL longer than three leases ({bound:.0f} ms): {long}')
        deadline = self.now() + max([0, *ttls.values()]) / 1000 + 1.0
        while keys:
            if self.now() > deadline:
                self.fail(f'(f) keys still there after their TTL: {keys} (TTLs {ttls})')
                return
            await asyncio.sleep(0.05)
            keys = self.resp.strings('KEYS', pattern)

    async def run(self) -> None:
        HOOK.callback = self.on_queued
        self.note(f'key={self.key} max_running={self.max_running} leases={self.leases} max_queued={self.max_queued}')
        try:
            await self.random_phase()
            await self.drain(self.now() + self.opts.run_timeout / 2)
            self.check_order()
            await self.check_quiet('after the random phase')
            if self.opts.order_phase and self.rng.random() < 0.7:
                self.check_epoch()
                await self.order_phase()
                await self.drain(self.now() + 5.0)
                await self.check_quiet('after the order phase')
            await self.check_expiry()
        finally:
            HOOK.callback = None

    def dump(self) -> str:
        lines = ['pending callers:']
        lines += [f'  {c.describe()}' for c in self.live()]
        lines.append('server:')
        lines.append(state_dump(self.resp, self.key))
        lines.append('last events:')
        with self.lock:
            lines += self.log[-60:]
        return '\n'.join(lines)


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` (set by other threads too, hence no event) until true or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.001)
    return True


async def wait_task(task: asyncio.Task[None] | concurrent.futures.Future[None], timeout: float) -> None:
    """Wait (at most `timeout` seconds) for a caller's task, on this loop or the second one."""
    if isinstance(task, concurrent.futures.Future):
        await asyncio.wait({asyncio.wrap_future(task)}, timeout=timeout)
    else:
        await asyncio.wait({task}, timeout=timeout)


def replay_line(opts: Options, seed: int) -> str:
    extra = '' if opts.order_phase else ' --no-order-phase'
    extra += '' if opts.threads else ' --no-threads'
    extra += f' --skip {",".join(sorted(opts.skip))}' if opts.skip else ''
    return f'python tests/fuzz_redis.py --url {opts.url} --seeds {seed} --ops {opts.ops}{extra} --trace'


async def run_seed(seed: int, opts: Options) -> list[str]:
    """One run; its findings (empty if every invariant held)."""
    run = Run(seed, opts)

    def on_warning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        if 'warnings' not in opts.skip:
            run.fail(f'(e) unexpected warning {category.__name__}: {message} ({filename}:{lineno})')

    previous = warnings.showwarning
    warnings.showwarning = on_warning
    faulthandler.dump_traceback_later(opts.run_timeout + 30, exit=True)
    task = asyncio.ensure_future(run.run())
    try:
        done, _ = await asyncio.wait({task}, timeout=opts.run_timeout)
        if not done:
            run.fail(f'(d) the run did not finish within {opts.run_timeout} s\n{run.dump()}')
            faulthandler.dump_traceback(all_threads=True)
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        elif task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            if isinstance(exc, FuzzFailure):
                run.fail(f'{exc}\n{run.dump()}')
            else:
                tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                run.fail(f'the fuzzer itself raised:\n{tb}\n{run.dump()}')
        elif run.findings:
            run.findings[-1] += '\n' + run.dump()
    finally:
        faulthandler.cancel_dump_traceback_later()
        warnings.showwarning = previous
        for c in run.live():
            if c.task is not None:
                c.task.cancel()
        run.resp.close()
        run.stop_loop2()
    return run.findings


def run_campaign(seeds: list[int], opts: Options, out: Callable[[str], None] = print) -> list[tuple[int, list[str]]]:
    """Every seed in turn; the failing ones with their findings."""
    failed: list[tuple[int, list[str]]] = []
    warnings.simplefilter('always')
    for seed in seeds:
        start = time.monotonic()
        findings = asyncio.run(run_seed(seed, opts))
        took = time.monotonic() - start
        if findings:
            failed.append((seed, findings))
            out(f'seed {seed}: FAILED ({took:.1f}s), {len(findings)} finding(s)')
            for f in findings:
                out('  ' + f.replace('\n', '\n  '))
            out(f'replay: {replay_line(opts, seed)}')
        else:
            out(f'seed {seed}: ok ({took:.1f}s)')
    return failed


# --- probes (part 2: direct attacks) ------------------------------------------------------------


@dataclass
class Probe:
    findings: list[str] = field(default_factory=list[str])

    def check(self, label: str, ok: bool, detail: str = '') -> None:
        print(f'{"ok  " if ok else "BUG "} {label}{": " + detail if detail else ""}', flush=True)
        if not ok:
            self.findings.append(f'{label}: {detail}')

    def expect(self, label: str, call: Callable[[], object], errors: tuple[type[BaseException], ...]) -> None:
        try:
            result = call()
        except errors as e:
            self.check(label, True, f'{type(e).__name__}: {e}')
            return
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.check(label, False, f'expected {[x.__name__ for x in errors]}, got {type(e).__name__}: {e}')
            return
        self.check(label, not errors, f'returned {result!r}' + (f', expected {errors}' if errors else ''))


def new_key(label: str) -> str:
    return f'ferrolimit-fuzz-probe:{label}:{os.getpid()}:{time.time_ns()}'


BAD_ACQUIRES: list[tuple[str, dict[str, Any], tuple[type[BaseException], ...]]] = [
    ('weight=True', {'weight': True}, (TypeError,)),
    ('weight=2**40', {'weight': 2**40}, (ValueError,)),
    ('weight=0', {'weight': 0}, (ValueError,)),
    ('weight=4 > max_running', {'weight': 4}, (ValueError,)),
    ('weight=1.0', {'weight': 1.0}, (TypeError,)),
    ('priority=2**40', {'priority': 2**40}, (ValueError,)),
    ('priority=-2**31-1', {'priority': -(2**31) - 1}, (ValueError,)),
    ('priority=True', {'priority': True}, (TypeError,)),
    ('timeout=-1', {'timeout': -1}, (ValueError,)),
    ('timeout=nan', {'timeout': math.nan}, (ValueError,)),
    ('timeout=-inf', {'timeout': -math.inf}, (ValueError,)),
    ('timeout=True', {'timeout': True}, (TypeError,)),
    ('timeout="1"', {'timeout': '1'}, (TypeError,)),
]
"""Bad arguments to `acquire` (a limiter of 3) and the errors they must raise."""


async def _expect_async(
    p: Probe, label: str, make: Callable[[], Coroutine[Any, Any, None]], errors: tuple[type[BaseException], ...]
) -> bool:
    """Await `make()` (at most 5 s): it must raise one of `errors`. True if it returned."""
    try:
        await asyncio.wait_for(make(), 5)
    except errors as e:
        p.check(label, True, f'{type(e).__name__}: {e}')
        return False
    except BaseException as e:  # noqa: BLE001 - any other error is a finding
        p.check(label, False, f'{type(e).__name__}: {e}')
        return False
    p.check(label, not errors, 'returned' + (f', expected {[x.__name__ for x in errors]}' if errors else ''))
    return True


async def probe_inputs(url: str, p: Probe) -> None:
    lim = RedisConcurrencyLimiter(url, new_key('inputs'), 3, lease_seconds=0.2)
    for label, kwargs, errors in BAD_ACQUIRES:
        if await _expect_async(p, f'acquire({label})', lambda kw=kwargs: lim.acquire('probe', **kw), errors):
            lim.release(weight=kwargs.get('weight', 1))
    for label, kwargs, errors in BAD_ACQUIRES:
        p.expect(f'acquire_blocking({label})', lambda kw=kwargs: lim.acquire_blocking('probe', **kw), errors)
    for label, kwargs, errors in BAD_ACQUIRES:
        if 'weight' in kwargs:
            p.expect(f'try_acquire({label})', lambda kw=kwargs: lim.try_acquire(weight=kw['weight']), errors)
    p.check('nothing held after the bad arguments', lim.running_count == 0 and lim.held_count == 0)
    for label, timeout in [('huge', 1e300), ('2**2000', 2**2000), ('inf', math.inf), ('2**32', 2.0**32)]:
        make = lambda t=timeout: lim.acquire('probe', timeout=t, weight=3)
        if await _expect_async(p, f'acquire(timeout={label}) with free slots', make, ()):
            lim.release(weight=3)
    for timeout in (-1, math.nan):
        await _expect_async(p, f'wait_idle(timeout={timeout})', lambda t=timeout: _idle(lim, t), (ValueError,))
    p.expect('release(weight=0)', lambda: lim.release(weight=0), (ValueError,))
    p.expect('release(weight=True)', lambda: lim.release(weight=True), (TypeError,))
    p.expect('release() holding nothing', lambda: lim.release(), (ValueError,))
    probe_setter(lim, p)


async def _idle(lim: RedisConcurrencyLimiter, timeout: float) -> None:
    await lim.wait_idle(timeout=timeout)


def probe_setter(lim: RedisConcurrencyLimiter, p: Probe) -> None:
    """Bad values for the `max_running` setter (of a limiter of 3), then the largest one."""

    def setter(value: object) -> Callable[[], None]:
        def set_it() -> None:
            lim.max_running = value  # pyright: ignore[reportAttributeAccessIssue]

        return set_it

    for value, errors in [
        (0, (UserError,)),
        (-1, (UserError,)),
        (2**31, (ValueError,)),
        (True, (TypeError,)),
        ('x', (TypeError,)),
        (None, (TypeError,)),
        (3.0, (TypeError,)),
    ]:
        p.expect(f'max_running = {value!r}', setter(value), errors)
    p.check('max_running unchanged by the refused sets', lim.max_running == 3, f'{lim.max_running}')
    lim.max_running = 2**31 - 1
    ok = lim.try_acquire(weight=2**31 - 1)
    p.check('max_running = 2**31-1, try_acquire(weight=2**31-1)', ok, f'running={lim.running_count}')
    if ok:
        lim.release(weight=2**31 - 1)
    lim.max_running = 3
    p.check('running_count back to 0', lim.running_count == 0, f'{lim.running_count}')


async def probe_timeout_zero(url: str, p: Probe) -> None:
    """`timeout=0` with free slots: `ConcurrencyLimiter` admits at once; the Redis limiter should too."""
    lim = RedisConcurrencyLimiter(url, new_key('timeout0'), 3, lease_seconds=0.2)
    timeouts = 0
    for _ in range(100):
        try:
            await lim.acquire('probe', timeout=0)
            lim.release()
        except TimeoutError:
            timeouts += 1
    p.check('acquire(timeout=0) with free slots is admitted', timeouts == 0, f'{timeouts}/100 TimeoutError')


async def probe_unawaited(url: str, p: Probe) -> None:
    """An `acquire()` coroutine that is never awaited should take nothing (as `ConcurrencyLimiter`'s)."""
    lim = RedisConcurrencyLimiter(url, new_key('unawaited'), 1, lease_seconds=0.2)
    coro = lim.acquire('never-awaited')
    await asyncio.sleep(0.05)
    running = lim.running_count
    free = lim.try_acquire()
    if free:
        lim.release()
    p.check('an acquire() coroutine not awaited takes no slot', running == 0 and free, f'running_count={running}')
    coro.close()
    await asyncio.sleep(0.05)
    p.check('closing it gives everything back', lim.running_count == 0 and lim.held_count == 0)


async def probe_blocking_in_loop(url: str, p: Probe) -> None:
    lim = RedisConcurrencyLimiter(url, new_key('blocking-in-loop'), 1, lease_seconds=0.2)
    try:
        lim.acquire_blocking('probe', timeout=2)
        lim.release()
        p.check('acquire_blocking on the loop thread, free slot', True, 'admitted (nothing to wait for)')
    except BaseException as e:  # noqa: BLE001 - any error is a finding
        p.check('acquire_blocking on the loop thread, free slot', False, f'{type(e).__name__}: {e}')
    await lim.acquire('holder')
    start = time.monotonic()
    try:
        lim.acquire_blocking('probe', timeout=0.5)
        p.check('acquire_blocking on the loop thread, full', False, 'admitted beyond the limit')
        lim.release()
    except RuntimeError:
        took = time.monotonic() - start
        p.check('acquire_blocking on the loop thread, full: refused at once, no hang', took < 0.4, f'{took:.2f}s')
    except BaseException as e:  # noqa: BLE001 - any error is a finding
        p.check('acquire_blocking on the loop thread, full', False, f'{type(e).__name__}: {e}')
    lim.release()
    p.check('nothing left', lim.running_count == 0 and lim.held_count == 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


async def probe_server_stopped(p: Probe) -> None:
    """Redis stopped under a holder, a waiter and later calls: ConcurrencyBackendError, no hang."""
    port = free_port()
    volatile = ('--save', '', '--appendonly', 'no')
    proc = start_server(port, *volatile)
    if proc is None:
        p.check('server stopped', True, 'skipped: no redis-server')
        return
    url = f'redis://127.0.0.1:{port}/0'
    try:
        lim = RedisConcurrencyLimiter(url, new_key('stopped'), 1, lease_seconds=0.3)
        await lim.acquire('holder')
        waiter = asyncio.ensure_future(lim.acquire('waiter'))
        blocked: list[BaseException | None] = []
        thread = threading.Thread(target=lambda: blocked.append(_blocking_outcome(lim)), daemon=True)
        thread.start()
        await asyncio.sleep(0.2)
        proc.kill()
        proc.wait()
        done, _ = await asyncio.wait({waiter}, timeout=10)
        outcome = waiter.exception() if done else None
        p.check(
            'queued waiter when Redis dies: ConcurrencyBackendError',
            isinstance(outcome, ConcurrencyBackendError),
            f'{type(outcome).__name__}: {outcome}' if done else 'still waiting after 10 s',
        )
        thread.join(10)
        p.check(
            'blocked thread when Redis dies: ConcurrencyBackendError',
            bool(blocked) and isinstance(blocked[0], ConcurrencyBackendError),
            f'{blocked!r}' if blocked else 'still blocked after 10 s',
        )
        for label, call in [
            ('try_acquire()', lambda: lim.try_acquire()),
            ('running_count', lambda: lim.running_count),
            ('stats()', lambda: lim.stats()),
            ('max_running = 2', lambda: setattr(lim, 'max_running', 2)),
            ('acquire_blocking()', lambda: lim.acquire_blocking('x', timeout=3)),
        ]:
            start = time.monotonic()
            p.expect(f'Redis down: {label}', call, (ConcurrencyBackendError,))
            took = time.monotonic() - start
            p.check(f'Redis down: {label} answers quickly', took < 8, f'{took:.2f}s')
        start = time.monotonic()
        try:
            await asyncio.wait_for(lim.acquire('x'), 10)
            p.check('Redis down: acquire()', False, 'admitted')
        except ConcurrencyBackendError:
            p.check('Redis down: acquire() raises ConcurrencyBackendError', True, f'{time.monotonic() - start:.2f}s')
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            p.check('Redis down: acquire()', False, f'{type(e).__name__}: {e}')
        p.expect('Redis down: release() of the held slot returns at once', lambda: lim.release(), ())
        p.check('held_count 0', lim.held_count == 0, f'{lim.held_count}')
        idle = await lim.wait_idle(timeout=2)
        p.check('Redis down: wait_idle() with nothing held', idle)
        proc = start_server(port, *volatile)
        await asyncio.sleep(1.5)
        try:
            await asyncio.wait_for(lim.acquire('after'), 5)
            lim.release()
            p.check('Redis back: acquire() works again', True)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            p.check('Redis back: acquire() works again', False, f'{type(e).__name__}: {e}')
        p.check('Redis back: running_count 0', lim.running_count == 0)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def _blocking_outcome(lim: RedisConcurrencyLimiter) -> BaseException | None:
    try:
        lim.acquire_blocking('blocked-thread')
        lim.release()
    except BaseException as e:  # noqa: BLE001 - any error is a finding
        return e
    return None


def probe_fork(url: str, p: Probe) -> None:
    """`os.fork()` while slots are held and a waiter is queued: the child starts with nothing."""
    if not hasattr(os, 'fork'):
        return
    lim = RedisConcurrencyLimiter(url, new_key('fork'), 3, lease_seconds=0.3)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(lim.acquire('parent', weight=2))
    waiter = loop.create_task(lim.acquire('parent-waiter', weight=2))
    loop.run_until_complete(asyncio.sleep(0.05))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        lines: list[str] = []
        try:
            lines.append(f'held={lim.held_count} running={lim.running_count} waiting={lim.waiting_count}')
            if lim.held_count != 0 or lim.running_count != 2 or lim.waiting_count != 1:
                code = 1
            got = lim.try_acquire()
            lines.append(f'try_acquire={got}')
            code |= 2 if got else 0
            try:
                lim.acquire_blocking('child', timeout=0.3)
                code |= 4
            except TimeoutError:
                pass
            try:
                lim.release()
                code |= 8
            except ValueError:
                pass
            _ = lim.running_count  # waits for the child's own releases (the timed-out place) to reach Redis
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            lines.append(f'{type(e).__name__}: {e}')
            code |= 16
        os.write(write, ('; '.join(lines)).encode())
        os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    p.check('fork: the child sees the fleet and holds nothing', os.waitstatus_to_exitcode(status) == 0, child)
    lim.release(weight=2)
    try:
        loop.run_until_complete(asyncio.wait_for(waiter, 3))
        p.check('fork: the parent waiter is admitted after the fork', True)
        lim.release(weight=2)
    except BaseException as e:  # noqa: BLE001 - any error is a finding
        p.check('fork: the parent waiter is admitted after the fork', False, f'{type(e).__name__}: {e}')
    loop.close()
    p.check(
        'fork: nothing left',
        lim.running_count == 0 and lim.waiting_count == 0 and lim.held_count == 0,
        f'running={lim.running_count} waiting={lim.waiting_count} held={lim.held_count}',
    )


class _FailingSpan:
    """A span whose `end()` raises."""

    def end(self) -> None:
        raise RuntimeError('exporter down')

    def is_recording(self) -> bool:
        return False


class _FailingTracer:
    """A tracer whose `start_span` raises (`start`), or whose spans raise in `end()` (`end`)."""

    def __init__(self, fails_in: str) -> None:
        self.fails_in = fails_in

    def start_span(self, name: str, attributes: object = None, **kwargs: object) -> _FailingSpan:
        if self.fails_in == 'start':
            raise RuntimeError('exporter misconfigured')
        return _FailingSpan()


async def probe_failing_tracer(url: str, p: Probe) -> None:
    """A wait whose span fails to open or to end must not keep its place or its slot (as
    `ConcurrencyLimiter` does not: tests/test_regressions_waits.py) while the failed task lives."""
    for fails_in in ('start', 'end'):
        tracer = _FailingTracer(fails_in)
        lim = RedisConcurrencyLimiter(
            url,
            new_key(f'tracer-{fails_in}'),
            1,
            lease_seconds=5,
            tracer=tracer,  # pyright: ignore[reportArgumentType]
        )
        assert lim.try_acquire()
        task = asyncio.ensure_future(lim.acquire('first'))
        await asyncio.sleep(0.1)
        if fails_in == 'end':
            lim.release()  # handed to the waiter, whose span.end() raises
        await asyncio.wait({task})
        error = task.exception()
        await asyncio.sleep(0.1)
        if fails_in == 'start':
            lim.release()
            await asyncio.sleep(0.1)
        counts = (lim.running_count, lim.waiting_count, lim.held_count)
        p.check(
            f'a wait whose span {fails_in} raises gives everything back while the task is kept',
            counts == (0, 0, 0),
            f'caller got {type(error).__name__}: {error}; (running, waiting, held)={counts}',
        )
        del task, error
        gc.collect()
        await asyncio.sleep(0.1)
        if lim.held_count:
            lim.release(weight=lim.held_count)


async def probe_shrink_refuses_at_once(url: str, p: Probe) -> None:
    """A shrink refuses every queued waiter heavier than the new limit at once, not only the head."""
    lim = RedisConcurrencyLimiter(url, new_key('shrink'), 3, lease_seconds=3)
    assert lim.try_acquire(weight=3)
    light = asyncio.ensure_future(lim.acquire('light'))
    await asyncio.sleep(0.05)
    heavy = asyncio.ensure_future(lim.acquire('heavy', weight=3))
    await asyncio.sleep(0.05)
    start = time.monotonic()
    lim.max_running = 2
    await asyncio.wait({heavy}, timeout=5)
    took = time.monotonic() - start
    error = heavy.exception() if heavy.done() else None
    p.check(
        'shrink: a queued waiter behind the head, heavier than the new limit, is refused at once',
        isinstance(error, ValueError) and took < 0.2,
        f'{type(error).__name__} after {took:.3f}s (lease 3 s: heartbeat 1 s)',
    )
    light.cancel()
    await asyncio.wait({light})
    lim.release(weight=3)


def probe_getter_after_set(url: str, p: Probe) -> None:
    """`max_running` reads back the value just set, while the object's background replies flow."""
    lim = RedisConcurrencyLimiter(url, new_key('getter'), 2, lease_seconds=1)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            try:
                lim.acquire_blocking(timeout=1)
            except (TimeoutError, ValueError):
                continue
            lim.release()

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    stale: list[tuple[int, int]] = []
    for i in range(2000):
        value = 2 + i % 2
        lim.max_running = value
        seen = lim.max_running
        if seen != value:
            stale.append((value, seen))
    stop.set()
    for t in threads:
        t.join()
    p.check(
        'max_running reads back the value just set',
        not stale,
        f'{len(stale)}/2000 stale reads, e.g. (set, read) {stale[:3]}',
    )


def _spin(microseconds: float) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


async def probe_handoff_cancel_totals(url: str, p: Probe) -> None:
    """A wait cancelled at the instant its slot is handed over: counted as given up, no lease lost."""
    lim = RedisConcurrencyLimiter(url, new_key('handoff'), 1, lease_seconds=30)
    cancelled = 0
    for i in range(800):
        await lim.acquire('holder')
        waiter = asyncio.ensure_future(lim.acquire('waiter'))
        await asyncio.sleep(0.001)
        lim.release()
        _spin((i * 7) % 600)
        waiter.cancel()
        try:
            await waiter
            lim.release()
        except asyncio.CancelledError:
            cancelled += 1
    await asyncio.sleep(0.1)
    stats = lim.stats()
    p.check(
        'handoff cancel: nothing left',
        (stats.running, stats.waiting, lim.held_count) == (0, 0, 0),
        f'running={stats.running} waiting={stats.waiting} held={lim.held_count}',
    )
    p.check(
        'handoff cancel: cancelled_total counts every wait cancelled',
        stats.cancelled_total == cancelled,
        f'{cancelled} cancelled, cancelled_total={stats.cancelled_total}',
    )
    p.check(
        'handoff cancel: no lease lost (lease 30 s)',
        lim.lost_count == 0,
        f'lost_count={lim.lost_count}',
    )


def probe_gil_starves_renewals(url: str, p: Probe) -> None:
    """Leases are renewed on time while Python code keeps the GIL busy and waiters are being woken."""
    holder = RedisConcurrencyLimiter(url, new_key('gil-holder'), 1, lease_seconds=0.2)
    busy = RedisConcurrencyLimiter(url, new_key('gil-busy'), 50, lease_seconds=5)
    stop = threading.Event()

    def churn() -> None:
        async def one() -> None:
            while not stop.is_set():
                await busy.acquire()
                busy.release()

        async def many() -> None:
            await asyncio.gather(*(one() for _ in range(200)))

        asyncio.run(many())

    assert holder.try_acquire()
    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    end = time.monotonic() + 3
    while time.monotonic() < end:
        sum(i * i for i in range(1000))  # ordinary CPU-bound Python code on the main thread
    stop.set()
    thread.join()
    p.check(
        'lease 0.2 s renewed while the GIL is busy',
        holder.lost_count == 0,
        f'lost_count={holder.lost_count}, running_count={holder.running_count} (the slot is still held here)',
    )
    holder.release()


def probe_keyboard_interrupt(url: str, p: Probe) -> None:
    """Ctrl-C in `acquire_blocking` (queued, or at the handoff instant) loses nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    lim = RedisConcurrencyLimiter(url, new_key('sigint'), 1, lease_seconds=5)
    main_id = threading.main_thread().ident
    assert main_id is not None
    for handoff in (False, True):
        assert lim.try_acquire()

        def interrupt(handoff: bool = handoff) -> None:
            time.sleep(0.2)
            if handoff:
                lim.release()
            signal.pthread_kill(main_id, signal.SIGINT)

        thread = threading.Thread(target=interrupt)
        thread.start()
        outcome = 'admitted'
        try:
            lim.acquire_blocking('interrupted', timeout=5)
            lim.release()
        except KeyboardInterrupt:
            outcome = 'KeyboardInterrupt'
        thread.join()
        if not handoff:
            lim.release()
        time.sleep(0.1)
        counts = (lim.running_count, lim.waiting_count, lim.held_count)
        p.check(f'Ctrl-C in acquire_blocking (handoff={handoff}): {outcome}', counts == (0, 0, 0), f'{counts}')


def probe_trio_handoff(url: str, p: Probe) -> None:
    """trio: cancelled at the handoff instant, nothing leaks."""
    try:
        import trio
    except ImportError:
        return

    async def main() -> tuple[int, int, int, int]:
        lim = RedisConcurrencyLimiter(url, new_key('trio'), 1, lease_seconds=30)
        for i in range(300):
            await lim.acquire('holder')
            scope = trio.CancelScope()

            async def waiter(scope: trio.CancelScope = scope) -> None:
                with scope:
                    await lim.acquire('waiter')
                    lim.release()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.001)
                lim.release()
                _spin((i * 7) % 600)
                scope.cancel()
        await trio.sleep(0.1)
        return lim.running_count, lim.waiting_count, lim.held_count, lim.lost_count

    counts = trio.run(main)
    p.check(
        'trio handoff cancel: nothing left, no lease lost',
        counts == (0, 0, 0, 0),
        f'(running, waiting, held, lost)={counts}',
    )


def start_server(port: int, *extra: str) -> subprocess.Popen[bytes] | None:
    server = shutil.which('redis-server')
    if server is None:
        return None
    proc = subprocess.Popen(
        [server, '--port', str(port), '--bind', '127.0.0.1', *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            Resp(f'redis://127.0.0.1:{port}/0').close()
            return proc
        except OSError:
            time.sleep(0.05)
    return proc


async def probe_restart(p: Probe) -> None:
    """Redis restarts: with AOF, a release sent while it was down is retried once it is back; without
    persistence, a holder from before re-registers its slots and nobody is admitted beyond the limit."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        aof = ('--dir', tmp, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always')
        proc = start_server(port, *aof)
        if proc is None:
            return
        url = f'redis://127.0.0.1:{port}/0'
        try:
            lim = RedisConcurrencyLimiter(url, new_key('aof'), 2, lease_seconds=30)
            assert lim.try_acquire(weight=2)
            proc.kill()
            proc.wait()
            lim.release(weight=2)  # fails while Redis is down: retried once it is back
            proc = start_server(port, *aof)
            await asyncio.sleep(2.0)
            running = lim.running_count
            p.check('AOF restart: a release made while Redis was down is retried', running == 0, f'running={running}')
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
        port = free_port()
        volatile = ('--save', '', '--appendonly', 'no')
        proc = start_server(port, *volatile)
        url = f'redis://127.0.0.1:{port}/0'
        try:
            key = new_key('loss')
            old = RedisConcurrencyLimiter(url, key, 3, lease_seconds=1)
            assert old.try_acquire(weight=2)
            if proc is not None:
                proc.kill()
                proc.wait()
            proc = start_server(port, *volatile)
            await asyncio.sleep(1.5)  # the old holder renews (every 1/3 s): it finds the loss first
            new = RedisConcurrencyLimiter(url, key, 3, lease_seconds=1)
            took_two = new.try_acquire(weight=2)
            p.check('data loss: a newcomer cannot take the slots a holder from before still holds', not took_two)
            if took_two:
                new.release(weight=2)
            start = time.monotonic()
            try:
                await asyncio.wait_for(new.acquire('after', weight=1), 5)
                new.release()
                p.check(
                    'data loss: the free slot comes back after the recovery', True, f'{time.monotonic() - start:.2f}s'
                )
            except BaseException as e:  # noqa: BLE001 - any error is a finding
                p.check('data loss: the free slot comes back after the recovery', False, f'{type(e).__name__}: {e}')
            running = new.running_count
            p.check('data loss: the old holder re-registered its slots', running == 2, f'running={running}')
            old.release(weight=2)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()


def probe_resize_warning(url: str, p: Probe) -> None:
    """The only process on a key resizes it while its callers are busy: no warning about another
    process storing a different max_running."""
    caught: list[str] = []
    previous = warnings.showwarning

    def record(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        caught.append(str(message))

    warned = 0
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = record
        try:
            for _ in range(20):
                lim = RedisConcurrencyLimiter(url, new_key('resize-warning'), 6, lease_seconds=1)
                stop = threading.Event()

                def churn(lim: RedisConcurrencyLimiter = lim, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        lim.acquire_blocking('churn')
                        lim.release()

                threads = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
                for t in threads:
                    t.start()
                time.sleep(0.005)
                before = len(caught)
                lim.max_running = 5
                time.sleep(0.005)
                stop.set()
                for t in threads:
                    t.join()
                warned += len(caught) > before
        finally:
            warnings.showwarning = previous
    p.check(
        'resize by the only process on the key: no warning', not warned, f'{warned}/20 resizes warned: {caught[:1]}'
    )


Probes = dict[str, Callable[[str, Probe], None]]

PROBES: Probes = {
    'inputs': lambda url, p: asyncio.run(probe_inputs(url, p)),
    'blocking-in-loop': lambda url, p: asyncio.run(probe_blocking_in_loop(url, p)),
    'fork': probe_fork,
    'server-stopped': lambda url, p: asyncio.run(probe_server_stopped(p)),
    'restart': lambda url, p: asyncio.run(probe_restart(p)),
    'keyboard-interrupt': probe_keyboard_interrupt,
    'timeout-zero': lambda url, p: asyncio.run(probe_timeout_zero(url, p)),
    'unawaited': lambda url, p: asyncio.run(probe_unawaited(url, p)),
    'failing-tracer': lambda url, p: asyncio.run(probe_failing_tracer(url, p)),
    'shrink': lambda url, p: asyncio.run(probe_shrink_refuses_at_once(url, p)),
    'getter': probe_getter_after_set,
    'resize-warning': probe_resize_warning,
    'handoff-totals': lambda url, p: asyncio.run(probe_handoff_cancel_totals(url, p)),
    'trio-handoff': probe_trio_handoff,
    'gil': probe_gil_starves_renewals,
}
"""The direct probes by name (`--probes NAME,...`; `all` for every one)."""


def run_probes(url: str, names: list[str] | None = None) -> list[str]:
    """The probes named (all by default); the failures found."""
    p = Probe()
    for name in names or list(PROBES):
        PROBES[name](url, p)
    return p.findings


# --- command line -------------------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """`A..B` (inclusive) ranges and single seeds, comma-separated."""
    seeds: list[int] = []
    for part in text.split(','):
        if '..' in part:
            a, b = part.split('..')
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def campaign_parser(doc: str, checks: Collection[str]) -> argparse.ArgumentParser:
    """The command line of a campaign (this fuzzer's, and the keyed one's)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--url', default=os.environ.get('FERROLIMIT_REDIS_URL', 'redis://127.0.0.1:6379/0'))
    parser.add_argument('--seeds', default='0..9', help='seeds: A..B (inclusive), or a comma-separated list')
    parser.add_argument('--ops', type=int, default=300, help='driver operations per run')
    parser.add_argument('--run-timeout', type=float, default=30.0, help='watchdog per run, in seconds')
    parser.add_argument('--no-order-phase', action='store_true', help='skip the exact order phase')
    parser.add_argument('--no-threads', action='store_true', help='no acquire_blocking threads')
    parser.add_argument('--trace', action='store_true', help='print every event')
    parser.add_argument('--skip', default='', help=f'checks to leave out, comma-separated: {", ".join(checks)}')
    return parser


def run_from_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    checks: Collection[str],
    campaign: Callable[[list[int], Options], list[tuple[int, list[str]]]],
) -> int:
    """Run the campaign the command line asks for; the exit status."""
    opts = Options(
        url=args.url,
        ops=args.ops,
        run_timeout=args.run_timeout,
        order_phase=not args.no_order_phase,
        trace=args.trace,
        threads=not args.no_threads,
        skip=frozenset(filter(None, args.skip.split(','))),
    )
    unknown = opts.skip - set(checks)
    if unknown:
        parser.error(f'unknown checks {sorted(unknown)}: choose among {", ".join(checks)}')
    seeds = parse_seeds(args.seeds)
    start = time.monotonic()
    failed = campaign(seeds, opts)
    print(f'{len(seeds) - len(failed)} of {len(seeds)} runs passed in {time.monotonic() - start:.1f}s')
    return 1 if failed else 0


def main() -> int:
    """The command line (see the module docstring)."""
    parser = campaign_parser(__doc__ or '', CHECKS)
    parser.add_argument(
        '--probes', metavar='NAMES', help=f'run direct probes instead: all, or some of {", ".join(PROBES)}'
    )
    args = parser.parse_args()
    if args.probes:
        names = None if args.probes == 'all' else args.probes.split(',')
        unknown = set(names or []) - set(PROBES)
        if unknown:
            parser.error(f'unknown probes {sorted(unknown)}: choose among {", ".join(PROBES)}')
        findings = run_probes(args.url, names)
        print(f'{len(findings)} probe(s) failed')
        return 1 if findings else 0
    return run_from_args(parser, args, CHECKS, run_campaign)


if __name__ == '__main__':
    sys.exit(main())
