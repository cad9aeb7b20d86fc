"""A seeded, randomized stress fuzzer for `ferrolimit.RedisKeyedConcurrencyLimiter` against a real Redis server.

The keyed sibling of `tests/fuzz_redis.py`, and built on it: `KeyedRun` is its `Run` with a key
for every caller. From `Run` come the random mix of operations (`random_phase`, the same operations
at the same rates), the callers' bookkeeping (spawning, cancelling, releasing, the drain), the
documented-error rules (`check_error`) and the exact order phase's queue model; `KeyedRun` replaces
every step that names a limiter or a Redis key, and keeps the model per key.

Each run (one seed) builds two or three keyed limiter objects on one fresh `key_prefix` (as many
processes, as far as Redis can tell: some on another spelling of the URL, so with a connection and
a subscription of their own), with the same small `max_running` (2 to 5), sometimes a per-key
`max_queued`, short leases (0.2 to 0.4 s) and a pool of 2 to 4 keys (with a colon, a slash, a
space, non-ASCII letters or empty). A seeded RNG then drives the mix of `fuzz_redis` over the keys
(half the callers on the first, hot, key): acquires on asyncio tasks (`acquire(key, ...)` with a
random weight, priority and optional timeout, or `async with limiter(key, ...)`, also on a second
event loop), on threads (`acquire_blocking(key, ...)`, `with limiter.blocking(key, ...)`),
cancellations of waiters (also right after a release of the same key, at the handoff instant),
releases (whole or in parts), `try_acquire(key)`, resizes, `close()` of one object, `wait_idle()`,
`stats(key)` with the per-key counts, and a `release(key)` where the object holds nothing of the key;
in half the runs the driver sometimes naps for one to 3.5 leases, so that the keys left idle expire
and are made anew. Callers drawn without a hold time are raw holders: only the driver releases
them (a random release, a handoff, the drain), so their slots are known to be held. A resize sets the new `max_running` on every object, one after another (sometimes letting callers
run in between): that is how a keyed limit is resized fleet-wide, since each object resizes only
the keys it uses now and stores the value for those it uses later.

A key's limit lives in Redis (`{prefix:key}:limit`) and is per key: a key's first user stores its
object's value, a resize stores its value on the keys in use, a key left idle long enough expires
and is made anew. So the limits that may be in force for a key during a call are the one read for
it from Redis last before the call (`check_epoch` reads every key's epoch and limit in one MGET:
every ten operations, in every `stats` operation, after each resize and while draining), and every
value some object had (built or set) since that read.

The driver's choices are a function of the seed; what the tasks see depends on timing, so the
invariants checked (per key) are the ones that hold for every interleaving:

(a) admission: when a caller sees its slots, the weights held by the callers of its key (tracked
    here, added once admitted, removed before each `release()`) never exceed the largest limit
    that may have been in force for the key since its call;
(b) order: a caller A of a key queued (its wait span opened) before a caller B of the same key and
    the same or a lower priority called is never admitted after B (some slack for the wake-up
    latency); the exact order phase of `fuzz_redis` runs on one key, and while that key is full
    with its waiters queued, every other key admits at once (a full key never blocks another);
(c) no leak: once every caller has finished, every object shows, for every key, no slot running,
    waiting or held here, `len()` is 0, `wait_idle()` is immediate, and the server holds no holder,
    waiter, weight or place for any key of the prefix (and no key outside the pool); while running,
    `stats(key).running`, `held_count(key)` and `len()` cover the slots the driver's raw holders hold;
(d) no hang: every run has a watchdog (`--run-timeout`, 30 s) that dumps the pending callers, the
    threads' stacks and the server's state;
(e) only documented errors: TimeoutError (with a timeout, not before it), ValueError (only if
    some limit in force for the key was below the weight), LimiterClosedError (after `close()`),
    ConcurrencyLimitExceeded (with `max_queued`), CancelledError (when cancelled); anything else
    (ConcurrencyBackendError while Redis is up, a warning while the objects agree on max_running) is
    a bug;
(f) expiry: every Redis key of the prefix has a TTL whenever looked at (swept during the run), a
    key's state never vanishes or changes epoch while a caller holds one of its slots, and once idle
    every key expires within the TTL the scripts announce (about three leases);
(g) resizes: once every object is resized to n, a key held throughout has the limit n, and so has
    (`resize-reach`) every key used afterwards: the documented limit of each key is "the last one set".

`--skip` leaves out checks that a known bug fails, to get past it to the next one (see `CHECKS`).

Command line::

    python tests/fuzz_redis_keyed.py --url redis://127.0.0.1:6379/0 --seeds 0..39 --ops 300
    python tests/fuzz_redis_keyed.py --url redis://127.0.0.1:6379/0 --seeds 0..99 --skip resize-reach,stats-missing

Every failing run prints the line that replays it (the same driver choices; timing varies).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import random
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field

from fuzz_redis import (
    HOOK,
    ORDER_SLACK,
    TRACER,
    Caller,
    FuzzFailure,
    Options,
    Resize,
    Resp,
    RespError,
    Run,
    campaign_parser,
    run_from_args,
    state_dump,
    url_variant,
    wait_task,
)

from ferrolimit import ConcurrencyBackendError, LimiterStats, RedisKeyedConcurrencyLimiter

CHECKS = {
    'resize-reach': 'once every object is resized to n, a key used afterwards has the limit n',
    'stats-missing': 'stats(key) (and the counts) of a key with no state in Redis work after a resize',
    'stats-limit': 'stats(key).max_running is a limit in force for the key during the call',
    'warnings': 'no warning (before any resize, the objects agree on max_running)',
}
"""Checks that `--skip` can leave out, to get past a known bug to the next one."""
KEY_NAMES = ('alice', 'bob', 'user:42', 'tenant/7', 'é-ü', 'a b', '', 'k')
"""The keys a run's pool is drawn from (no glob characters: the prefix's keys are found by SCAN MATCH)."""
HOT = 0.5
"""The share of the callers on the pool's first key."""
LIVE = ('new', 'waiting', 'holding', 'raw')
"""The states of a caller that may still hold or wait for slots."""
MISSING_STATE_ERROR = 'unexpected reply from Redis'
"""What `stats(key)` raises for a key with no state in Redis, once the object was resized (`stats-missing`)."""


@dataclass
class KeyedCaller(Caller):
    """A `Caller` of one key."""

    key: str = ''

    def describe(self) -> str:
        return f'{super().describe()} key={self.key!r}'


def key_of(c: Caller) -> str:
    """The key of a caller (every caller of a `KeyedRun` is a `KeyedCaller`)."""
    assert isinstance(c, KeyedCaller), c
    return c.key


@dataclass(frozen=True)
class Sighting:
    """One read of a key's epoch and limit from Redis, and the callers that held its slots then."""

    t_start: float
    t_end: float
    epoch: str | None
    limit: int | None
    holding: frozenset[int]


@dataclass(frozen=True)
class ResizeOp:
    """A resize of every object to `value`, complete at `end`."""

    value: int
    end: float


def parse_limit(value: object) -> int | None:
    """The limit a `{...}:limit` key stores ('5', or '5 resized 2'), None if there is none."""
    if not isinstance(value, str):
        return None
    head = value.split(' ')[0]
    return int(head) if head.isdigit() else None


@dataclass
class KeyedRun(Run):
    """One seed's run: `Run` with keyed limiter objects and a pool of keys (see the module docstring).

    `Run.key` is the key whose server state a failure in `Run`'s order phase dumps: the order
    phase's key (`redis_name`). `Run.limiters` and `Run.resizes` stay empty: every step that used
    them is replaced.
    """

    prefix: str = field(init=False)
    pool: list[str] = field(init=False)
    keyed: list[RedisKeyedConcurrencyLimiter] = field(init=False)
    obj_resizes: list[list[Resize]] = field(init=False)
    """Per object, the values set on it (in force from the setter's call)."""
    sightings: dict[str, list[Sighting]] = field(init=False)
    resize_ops: list[ResizeOp] = field(default_factory=list[ResizeOp])
    releasing: dict[tuple[int, str], int] = field(default_factory=dict[tuple[int, str], int])
    """Per (object, key), the `release()` calls of the driver's callers under way."""
    reported: set[str] = field(default_factory=set[str])
    last_sweep: float = 0.0
    order_key: str | None = None
    """The key every new caller takes during the order phase (None: a random key of the pool)."""
    naps: bool = False
    """Whether `op_sleep` sometimes naps long enough for idle keys to expire."""

    def __post_init__(self) -> None:
        rng = self.rng = random.Random(self.seed)
        self.prefix = f'ferrolimit-fuzz-keyed:{self.seed}:{os.getpid()}:{time.time_ns()}'
        self.max_running = rng.randint(2, 5)
        n = rng.choice([2, 3, 3])
        self.leases = [rng.choice([0.2, 0.2, 0.3, 0.4]) for _ in range(n)]
        self.max_queued = [rng.choice([None, None, None, 0, 1, 3, 6]) for _ in range(n)]
        self.pool = rng.sample(KEY_NAMES, rng.randint(2, 4))
        self.naps = rng.random() < 0.5
        urls = [self.opts.url if rng.random() < 0.5 else url_variant(self.opts.url, i) for i in range(n)]
        self.keyed = [
            RedisKeyedConcurrencyLimiter(
                url, self.prefix, self.max_running, max_queued=q, lease_seconds=lease, tracer=TRACER
            )
            for url, q, lease in zip(urls, self.max_queued, self.leases, strict=True)
        ]
        self.limiters = []
        self.closed_at = [None] * n
        self.obj_resizes = [[] for _ in range(n)]
        self.sightings = {key: [] for key in self.pool}
        self.key = self.redis_name(self.pool[0])
        self.resp = Resp(self.opts.url)

    # -- the model of the limits in force, per key --

    def redis_name(self, key: str) -> str:
        """The name of the key's state in Redis: its keys are `{name}:holders`, `{name}:limit`, ..."""
        return f'{self.prefix}:{key}'

    def obj_limit(self, obj: int) -> int:
        """The value object `obj` gives the keys it uses from now on: built, or last set."""
        resizes = self.obj_resizes[obj]
        return resizes[-1].value if resizes else self.max_running

    def limit_now(self) -> int:
        return max(self.obj_limit(obj) for obj in range(len(self.keyed)))

    def obj_limits(self, obj: int, a: float, b: float) -> list[int]:
        """The values object `obj` may have had at some instant of [a, b]."""
        before = self.max_running
        inside: list[int] = []
        for r in self.obj_resizes[obj]:
            if r.end <= a:
                before = r.value
            elif r.start <= b:
                inside.append(r.value)
        return [before, *inside]

    def key_limits(self, key: str, a: float, b: float) -> list[int]:
        """The limits that may have been in force for `key` at some instant of [a, b] (no lock taken)."""
        start = self.t0
        limits: set[int] = set()
        for seen in reversed(self.sightings[key]):
            if seen.t_end <= a:
                start = seen.t_start
                if seen.limit is not None:
                    limits.add(seen.limit)
                break
        for obj in range(len(self.keyed)):
            limits.update(self.obj_limits(obj, start, b))
        return sorted(limits)

    def random_key(self) -> str:
        return self.pool[0] if self.rng.random() < HOT else self.rng.choice(self.pool)

    # -- callers --

    def new_caller(
        self, obj: int, weight: int, priority: int, timeout: float | None, kind: str, key: str | None = None
    ) -> KeyedCaller:
        """`Run.new_caller`, of `key` (by default the order phase's key, else a random key of the pool)."""
        if key is None:
            key = self.order_key if self.order_key is not None else self.random_key()
        c = KeyedCaller(**vars(super().new_caller(obj, weight, priority, timeout, kind)), key=key)
        with self.lock:
            self.callers[c.cid] = c
            self.by_source[c.source] = c
        return c

    def random_caller(self, kind: str, obj: int | None = None) -> Caller:
        return super().random_caller(kind, self.rng.randrange(len(self.keyed)) if obj is None else obj)

    def on_admitted(self, c: Caller, raw: bool) -> None:
        key, now = key_of(c), self.now()
        with self.lock:
            c.t_admit = now
            c.held = c.weight
            c.state = 'raw' if raw else 'holding'
            holders = [x.describe() for x in self.callers.values() if x.held and key_of(x) == key]
            total = sum(x.held for x in self.callers.values() if key_of(x) == key)
            limits = self.key_limits(key, c.t_call, now)
        self.note(f'admitted {c.describe()} total={total} limits={limits}')
        if c.weight > max(limits):
            self.fail(f'(a) {c.source} of weight {c.weight} admitted, above every limit in force for {key!r} {limits}')
        if total > max(limits):
            self.fail(
                f'(a) {c.source} admitted with {total} slots of {key!r} held, above every limit in force since its '
                f'call {limits}: holders {holders}'
            )

    def give_back(self, c: Caller, weight: int) -> None:
        """Release `weight` of the caller's slots: tracked first, then `release(key)`."""
        where = (c.obj, key_of(c))
        with self.lock:
            c.held -= weight
            if c.held == 0:
                c.state = 'released'
            self.releasing[where] = self.releasing.get(where, 0) + 1
        self.note(f'release {c.source} obj={c.obj} key={where[1]!r} weight={weight}')
        try:
            self.keyed[c.obj].release(where[1], weight=weight)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) release({where[1]!r}, weight={weight}) of {c.describe()} raised {type(e).__name__}: {e}')
        finally:
            with self.lock:
                self.releasing[where] -= 1

    def check_error(
        self, c: Caller, exc: BaseException, now: float, limits: list[int], closed: float | None
    ) -> str | None:
        """`Run.check_error`, against the limits in force for the caller's key."""
        return super().check_error(c, exc, now, self.key_limits(key_of(c), c.t_call, now), closed)

    def ended(self, c: Caller, outcome: str) -> None:
        with self.lock:
            c.t_end = self.now()
            c.outcome = c.outcome or outcome

    async def task_caller(self, c: Caller) -> None:
        lim, key = self.keyed[c.obj], key_of(c)
        c.t_call = self.now()
        if c.kind == 'ctx':
            await self.context_caller(c, lim(key, c.source, weight=c.weight, priority=c.priority))
            return
        try:
            await lim.acquire(key, c.source, timeout=c.timeout, weight=c.weight, priority=c.priority)
        except BaseException as e:
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
            self.ended(c, 'ok')

    async def context_caller(self, c: Caller, context: AbstractAsyncContextManager[None]) -> None:
        """`async with limiter(key, ...)`: held for `c.hold` seconds."""
        try:
            async with context:
                self.on_admitted(c, raw=False)
                try:
                    await asyncio.sleep(c.hold or 0)
                finally:
                    with self.lock:
                        c.held = 0
                        c.state = 'released'
        except BaseException as e:
            if c.state != 'released':
                self.on_error(c, e)
            elif not isinstance(e, asyncio.CancelledError):
                self.fail(f'(e) {c.describe()}: {type(e).__name__} from the context manager: {e}')
            self.ended(c, f'ended while holding: {type(e).__name__}')
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        self.ended(c, 'ok')

    def thread_caller(self, c: Caller) -> None:
        lim, key = self.keyed[c.obj], key_of(c)
        c.t_call = self.now()
        try:
            if c.kind == 'bctx':
                with lim.blocking(key, c.source, timeout=c.timeout, weight=c.weight, priority=c.priority):
                    self.on_admitted(c, raw=False)
                    time.sleep(c.hold or 0)
                    with self.lock:
                        c.held = 0
                        c.state = 'released'
                self.ended(c, 'ok')
                return
            lim.acquire_blocking(key, c.source, timeout=c.timeout, weight=c.weight, priority=c.priority)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            if c.state == 'released':
                self.fail(f'(e) {c.describe()}: {type(e).__name__} from blocking(): {e}')
            else:
                self.on_error(c, e)
            self.ended(c, f'{type(e).__name__}')
            return
        self.on_admitted(c, raw=c.hold is None)
        if c.hold is None:
            return
        time.sleep(c.hold)
        self.give_back_all(c)
        self.ended(c, 'ok')

    def busy(self, obj: int, key: str) -> bool:
        """Whether a caller of object `obj` may hold, wait for or be giving back slots of `key`."""
        with self.lock:
            if self.releasing.get((obj, key), 0):
                return True
            return any(
                c.obj == obj
                and key_of(c) == key
                and (c.state in LIVE or (c.kind in ('ctx', 'bctx') and c.t_end is None))
                for c in self.callers.values()
            )

    def raw_held(self, key: str, obj: int | None = None) -> int:
        """The slots of `key` that raw holders (released by the driver only) hold (of object `obj`)."""
        with self.lock:
            return sum(
                c.held
                for c in self.callers.values()
                if c.state == 'raw' and key_of(c) == key and (obj is None or c.obj == obj)
            )

    # -- driver operations --

    def handoff_waiter(self, holder: Caller, waiting: list[Caller]) -> Caller:
        """A waiter of the holder's key if there is one: the slot is handed to it."""
        return self.rng.choice([x for x in waiting if key_of(x) == key_of(holder)] or waiting)

    async def op_try_acquire(self) -> None:
        rng = self.rng
        obj = rng.randrange(len(self.keyed))
        limit = self.limit_now()
        weight = rng.randint(1, limit + 1) if rng.random() < 0.1 else rng.randint(1, limit)
        c = self.new_caller(obj, weight, 0, None, 'try')
        c.t_call = self.now()
        try:
            got = self.keyed[obj].try_acquire(c.key, weight=weight)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.on_error(c, e)
            return
        if got and self.closed_at[obj] is not None:
            self.fail(f'try_acquire({c.key!r}) returned True on closed obj {obj}')
        if got:
            self.on_admitted(c, raw=True)
        else:
            self.ended(c, 'not free')
            with self.lock:
                c.state = 'failed'

    async def op_resize(self) -> None:
        """Set `max_running` on every object, one after another (sometimes with callers running in between)."""
        rng = self.rng
        value = rng.randint(1, self.max_running + 2)
        order = rng.sample(range(len(self.keyed)), len(self.keyed))
        pause = rng.choice([None, None, None, 0.0, 0.001, 0.005])
        in_use = [key for key in self.pool if self.raw_held(key)]
        self.note(f'resize objects {order} -> {value} (pause {pause})')
        for i, obj in enumerate(order):
            if i and pause is not None:
                await asyncio.sleep(pause)
            self.resize_one(obj, value)
        self.resize_ops.append(ResizeOp(value, self.now()))
        self.check_epoch()
        for key in in_use:
            limit = self.sightings[key][-1].limit
            if limit != value:
                self.fail(f'(g) every object resized to {value}, but {key!r} (held throughout) has the limit {limit}')

    def resize_one(self, obj: int, value: int) -> None:
        resize = Resize(self.now(), float('inf'), value)
        with self.lock:
            self.obj_resizes[obj].append(resize)
        try:
            self.keyed[obj].max_running = value
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) obj {obj}: max_running = {value} raised {type(e).__name__}: {e}')
            return
        finally:
            with self.lock:
                resize.end = self.now()
        seen = self.keyed[obj].max_running
        if seen != value:
            self.fail(f'obj {obj}: max_running reads {seen} right after setting it to {value}')

    async def op_close(self) -> None:
        open_objs = [i for i, t in enumerate(self.closed_at) if t is None]
        if len(open_objs) < 2:
            return
        obj = self.rng.choice(open_objs)
        self.note(f'close obj={obj}')
        with self.lock:
            self.closed_at[obj] = self.now()
        self.keyed[obj].close()
        if not self.keyed[obj].closed:
            self.fail(f'obj {obj}: closed is False after close()')
        key = self.random_key()
        if self.keyed[obj].try_acquire(key):
            self.fail(f'obj {obj}: try_acquire({key!r}) returned True once closed')

    async def op_wait_idle(self) -> None:
        obj = self.rng.randrange(len(self.keyed))
        timeout = self.rng.choice([0, 0.001, 0.01])
        try:
            result = await self.keyed[obj].wait_idle(timeout=timeout)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) obj {obj}: wait_idle(timeout={timeout}) raised {type(e).__name__}: {e}')
            return
        self.note(f'wait_idle obj={obj} timeout={timeout} -> {result}')

    def stats_of(self, obj: int, key: str) -> LimiterStats | None:
        """`stats(key)` of object `obj`; None (a finding unless skipped) if it fails with `stats-missing`."""
        try:
            return self.keyed[obj].stats(key)
        except ConcurrencyBackendError as e:
            if MISSING_STATE_ERROR not in str(e):
                raise
            state = self.resp.call('GET', '{' + self.redis_name(key) + '}:epoch')
            self.note(f'stats-missing: obj {obj} stats({key!r}) raised {e} (epoch {state!r})')
            if 'stats-missing' not in self.opts.skip:
                self.fail(
                    f'(e) obj {obj} (max_running set to {self.obj_limit(obj)}): stats({key!r}) raised '
                    f'ConcurrencyBackendError: {e} (the epoch in Redis: {state!r})'
                )
            return None

    async def op_stats(self) -> None:
        obj, key = self.rng.randrange(len(self.keyed)), self.random_key()
        start = self.now()
        held = self.raw_held(key)  # before the read: only the driver releases them
        try:
            stats = self.stats_of(obj, key)
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) obj {obj}: stats({key!r}) raised {type(e).__name__}: {e}')
            return
        if stats is not None:
            self.check_stats(key, stats, start, held)
        self.check_counts(obj)
        self.check_epoch()

    def check_stats(self, key: str, stats: LimiterStats, start: float, held: int) -> None:
        """`stats(key)` read from `start` on, while raw holders held `held` slots of the key."""
        limits = self.key_limits(key, start, self.now())
        if stats.max_running not in limits and 'stats-limit' not in self.opts.skip:
            self.fail(f'stats({key!r}).max_running={stats.max_running} is none of the limits in force {limits}')
        if stats.running < 0 or stats.waiting < 0 or stats.available != max(0, stats.max_running - stats.running):
            self.fail(f'inconsistent stats({key!r}) {stats!r}')
        if stats.running < held:
            with self.lock:
                raws = [
                    f'{c.source}@{c.t_admit - self.t0:.4f}'
                    for c in self.callers.values()
                    if c.t_admit and c.state == 'raw' and key_of(c) == key
                ]
            self.fail(
                f'(c) stats({key!r}) from {start - self.t0:.4f}: running={stats.running}, below the {held} slots '
                f'its raw holders held then (raw holders now: {raws})'
            )

    def check_counts(self, obj: int) -> None:
        """`held_count(key)` and `len()` of object `obj` cover the slots its raw holders hold."""
        lim = self.keyed[obj]
        busy = 0
        for key in self.pool:
            held = self.raw_held(key, obj)
            count = lim.held_count(key)
            busy += held > 0
            if count < held:
                self.fail(f'(c) obj {obj}: held_count({key!r})={count}, below the {held} slots its raw holders hold')
        if len(lim) < busy:
            self.fail(f'(c) obj {obj}: len()={len(lim)}, but its raw holders hold slots of {busy} keys')

    async def op_extra_release(self) -> None:
        """A release(key) where the object holds nothing of the key (or a key nobody used): ValueError."""
        rng = self.rng
        obj = rng.randrange(len(self.keyed))
        key = self.random_key() if rng.random() < 0.8 else f'never-used-{rng.randrange(1000)}'
        if self.busy(obj, key):
            return
        lim = self.keyed[obj]
        before = lim.held_count(key)
        try:
            lim.release(key, weight=rng.randint(1, 3))
        except ValueError:
            pass
        except BaseException as e:  # noqa: BLE001 - any error is a finding
            self.fail(f'(e) extra release({key!r}) raised {type(e).__name__}: {e}')
        else:
            self.fail(f'release({key!r}) on obj {obj} holding {before} slots of it did not raise')

    async def op_sleep(self) -> None:
        """`Run.op_sleep`, or (rarely, in half the runs) a nap of one to 3.5 leases: the keys left
        idle meanwhile expire, and are made anew on their next use."""
        if self.naps and self.rng.random() < 0.06:
            nap = self.rng.choice([1.0, 3.5]) * max(self.leases)
            self.note(f'nap {nap:.2f}s')
            await asyncio.sleep(nap)
            return
        await super().op_sleep()

    # -- what Redis shows --

    def check_epoch(self) -> None:
        """Read every key's epoch and limit (one MGET): the model's sightings, and checks (f) and (g)."""
        names = [f'{{{self.redis_name(key)}}}:{suffix}' for key in self.pool for suffix in ('epoch', 'limit')]
        start = self.now()
        with self.lock:
            holding = {
                key: frozenset(
                    c.cid
                    for c in self.callers.values()
                    if key_of(c) == key and c.held > 0 and c.t_admit is not None and c.t_admit < start
                )
                for key in self.pool
            }
        try:
            values = self.resp.call('MGET', *names)
        except (OSError, RespError) as e:
            self.fail(f'cannot read the epochs: {e}')
            return
        assert isinstance(values, list) and len(values) == len(names), values
        end = self.now()
        for i, key in enumerate(self.pool):
            epoch = values[2 * i]
            seen = Sighting(
                start, end, epoch if isinstance(epoch, str) else None, parse_limit(values[2 * i + 1]), holding[key]
            )
            self.check_sighting(key, seen)
            with self.lock:
                self.sightings[key].append(seen)
        if end - self.last_sweep > 0.25:
            self.last_sweep = end
            self.sweep_ttls()

    def check_sighting(self, key: str, seen: Sighting) -> None:
        previous = self.sightings[key][-1] if self.sightings[key] else None
        if previous is not None and previous.epoch != seen.epoch:
            self.note(f'{key!r}: epoch {previous.epoch!r} -> {seen.epoch!r}, limit {seen.limit}')
        if seen.holding and seen.epoch is None:
            self.fail(f'(f) the state of {key!r} is gone from Redis while c{min(seen.holding)} holds slots of it')
        elif previous is not None and previous.epoch not in (None, seen.epoch) and previous.holding & seen.holding:
            held = min(previous.holding & seen.holding)
            self.fail(
                f'(f) the state of {key!r} was lost while c{held} held slots of it: epoch {previous.epoch!r} -> {seen.epoch!r}'
            )
        self.check_reach(key, seen)

    def check_reach(self, key: str, seen: Sighting) -> None:
        """(g) `resize-reach`: once every object was resized to n, a key used since has the limit n."""
        if 'resize-reach' in self.opts.skip or not self.resize_ops or seen.limit is None:
            return
        op = self.resize_ops[-1]
        label = f'{key}:{len(self.resize_ops)}'
        if op.value == seen.limit or op.end > seen.t_start or label in self.reported:
            return
        with self.lock:
            fresh = [
                c
                for c in self.callers.values()
                if key_of(c) == key and c.t_call > op.end and c.t_admit is not None and c.t_admit < seen.t_start
            ]
        if fresh:
            self.reported.add(label)
            self.fail(
                f'(g) every object was resized to {op.value} (at {op.end - self.t0:.4f}), {fresh[0].source} was '
                f'admitted to {key!r} since, and its limit in Redis is {seen.limit}, not the last one set'
            )

    def scan_keys(self) -> list[str]:
        """Every Redis key of the prefix (SCAN MATCH)."""
        found: list[str] = []
        cursor = '0'
        while True:
            reply = self.resp.call('SCAN', cursor, 'MATCH', '{' + self.prefix + ':*', 'COUNT', 1000)
            assert isinstance(reply, list) and len(reply) == 2, reply
            cursor, batch = reply
            assert isinstance(cursor, str) and isinstance(batch, list), reply
            found.extend(k for k in batch if isinstance(k, str))
            if cursor == '0':
                return sorted(set(found))

    def sweep_ttls(self) -> None:
        """(f) no key of the prefix is left without a TTL."""
        for name in self.scan_keys():
            if self.resp.int_of('PTTL', name) == -1 and name not in self.reported:
                self.reported.add(name)
                self.fail(f'(f) {name} has no TTL')

    def server_leftovers(self) -> list[str]:
        """What the server still holds or queues for any key of the prefix."""
        problems: list[str] = []
        head = '{' + self.prefix + ':'
        for key in sorted({name[len(head) : name.rindex('}:')] for name in self.scan_keys()}):
            if key not in self.pool:
                problems.append(f'server: a state for {key!r}, outside the pool {self.pool}')
            k = '{' + self.redis_name(key) + '}'
            server = {
                'holders': self.resp.int_of('ZCARD', k + ':holders'),
                'queue': self.resp.int_of('ZCARD', k + ':queue'),
                'waiters': self.resp.int_of('ZCARD', k + ':waiters'),
                'weights': self.resp.int_of('HLEN', k + ':weights'),
                'places': self.resp.int_of('HLEN', k + ':places'),
                'used': self.resp.int_of('GET', k + ':used'),
            }
            if any(server.values()):
                problems.append(f'server, {key!r}: {server}')
        return problems

    def leftovers(self) -> list[str]:
        """What the objects and the server still hold or queue, for any key."""
        problems: list[str] = []
        for i, lim in enumerate(self.keyed):
            try:
                if len(lim):
                    problems.append(f'obj {i}: len()={len(lim)} keys in use')
                for key in self.pool:
                    stats, held = self.stats_of(i, key), lim.held_count(key)
                    running, waiting = (stats.running, stats.waiting) if stats is not None else (0, 0)
                    if (running, waiting, held) != (0, 0, 0):
                        problems.append(f'obj {i}, {key!r}: running={running} waiting={waiting} held={held}')
            except Exception as e:  # noqa: BLE001 - any error is a finding
                problems.append(f'obj {i}: the counts raised {type(e).__name__}: {e}')
        return problems + self.server_leftovers()

    def forget_done_tasks(self) -> None:
        """Drop the finished tasks: a task cancelled while it waited keeps its traceback, so the frames
        of its acquire, and with them the key's state in this process (which `len()` counts)."""
        with self.lock:
            for c in self.callers.values():
                if c.task is not None and c.task.done():
                    c.task = None
        gc.collect()

    async def check_quiet(self, label: str) -> None:
        """(c) every object and the server show nothing held or queued, for every key."""
        self.forget_done_tasks()
        deadline = self.now() + 2.0
        while problems := self.leftovers():
            if self.now() > deadline:
                raise FuzzFailure(f'(c) {label}: slots or places left: {problems}\n{self.server_dump()}')
            await asyncio.sleep(0.02)
        for i, lim in enumerate(self.keyed):
            start = self.now()
            idle = await lim.wait_idle(timeout=1.0)
            took = self.now() - start
            if not idle or took > 0.5:
                self.fail(f'(c) {label}: wait_idle() of obj {i} returned {idle} after {took:.3f}s with nothing held')

    async def check_expiry(self) -> None:
        """(f) every key of the prefix expires once idle, within the TTL announced."""
        names = self.scan_keys()
        ttls = {name: self.resp.int_of('PTTL', name) for name in names}
        no_ttl = [name for name, t in ttls.items() if t == -1]
        if no_ttl:
            self.fail(f'(f) keys without a TTL: {no_ttl}')
        bound = 3000 * max(self.leases) + 200
        long = {name: t for name, t in ttls.items() if t > bound}
        if long:
            self.fail(f'(f) TTL longer than three leases ({bound:.0f} ms): {long}')
        deadline = self.now() + max([0, *ttls.values()]) / 1000 + 1.0
        while names:
            if self.now() > deadline:
                self.fail(f'(f) keys still there after their TTL: {names} (TTLs {ttls})')
                return
            await asyncio.sleep(0.05)
            names = self.scan_keys()

    async def wait_server_queue(self, n: int) -> None:
        """The order phase's key has `n` places queued on the server (within 2 s)."""
        deadline = self.now() + 2.0
        while self.resp.int_of('ZCARD', '{' + self.key + '}:queue') != n:
            if self.now() > deadline:
                raise FuzzFailure(
                    f'the server queue of {self.key} does not come to {n}:\n{state_dump(self.resp, self.key)}'
                )
            await asyncio.sleep(0.005)

    # -- order --

    def check_order(self) -> None:
        """(b) in the random mix, per key, with slack for the wake-up latency (`try_acquire` must not barge either)."""
        with self.lock:
            admitted = [c for c in self.callers.values() if c.t_admit is not None]
        for a in admitted:
            if a.t_queued is None:
                continue
            for b in admitted:
                if b is a or key_of(b) != key_of(a) or b.t_call <= a.t_queued or b.priority > a.priority:
                    continue
                assert a.t_admit is not None and b.t_admit is not None
                if b.t_admit + ORDER_SLACK < a.t_admit:
                    self.fail(
                        f'(b) {b.source} ({b.kind}, p={b.priority}, called {b.t_call - self.t0:.4f}) admitted to '
                        f'{key_of(b)!r} at {b.t_admit - self.t0:.4f}, before {a.source} (p={a.priority}, queued at '
                        f'{a.t_queued - self.t0:.4f}) admitted at {a.t_admit - self.t0:.4f}'
                    )

    async def order_phase(self) -> None:
        """(b) exactly, on one key: fill it, queue waiters one by one (every other key admits at once
        meanwhile), give the slots back one at a time (`Run`'s queue model)."""
        rng = self.rng
        open_objs = [i for i, t in enumerate(self.closed_at) if t is None]
        self.order_key = rng.choice(self.pool)
        self.key = self.redis_name(self.order_key)
        filler, limit = self.fill(rng.choice(open_objs), self.order_key)
        queue = await self.queue_one_by_one(open_objs, limit)
        await self.check_independent(open_objs, len(queue))
        if queue and rng.random() < 0.5:
            await self.cancel_one_queued(queue)
        await self.release_one_at_a_time(filler, queue)
        for c in queue:
            if c.thread is not None:
                c.thread.join(2.0)
        self.order_key = None

    def fill(self, obj: int, key: str) -> tuple[Caller, int]:
        """Take every slot of the idle `key` (`try_acquire`); the filler and the key's limit."""
        lim = self.keyed[obj]
        for _ in range(3):
            stats = self.stats_of(obj, key)
            limit = stats.max_running if stats is not None else self.obj_limit(obj)
            c = self.new_caller(obj, limit, 0, None, 'try', key=key)
            c.t_call = self.now()
            try:
                got = lim.try_acquire(key, weight=limit)
            except ValueError as e:  # the key's state expired in between, and was made anew with a lower limit
                self.ended(c, f'ValueError: {e}')
                with self.lock:
                    c.state = 'failed'
                continue
            if not got:
                raise FuzzFailure(f'order phase: try_acquire({key!r}, weight={limit}) refused on an idle key')
            self.on_admitted(c, raw=True)
            if lim.stats(key).max_running == limit:
                return c, limit
            self.give_back(c, limit)  # made anew with a higher limit
        raise FuzzFailure(f'order phase: the limit of {key!r} keeps changing:\n{state_dump(self.resp, self.key)}')

    async def check_independent(self, open_objs: list[int], queued: int) -> None:
        """(b) while the order phase's key is full with waiters queued, every other key admits at once."""
        for key in self.pool:
            if key == self.order_key:
                continue
            obj = self.rng.choice(open_objs)
            c = self.new_caller(obj, 1, 0, None, 'try', key=key)
            c.t_call = self.now()
            if not self.keyed[obj].try_acquire(key):
                raise FuzzFailure(f'(b) try_acquire({key!r}) refused while only {self.order_key!r} is busy')
            self.on_admitted(c, raw=True)
            self.give_back(c, 1)
            w = self.new_caller(obj, 1, 0, 2.0, 'task', key=key)  # the same object: its acquires wait for its release
            w.hold, w.parts = 0.0, [1]
            self.spawn(w)
            assert w.task is not None
            await wait_task(w.task, 3.0)
            if w.t_admit is None or w.t_queued is not None:
                raise FuzzFailure(
                    f'(b) {w.describe()} was queued or not admitted while only {self.order_key!r} is busy'
                )
        await self.wait_server_queue(queued)

    # -- the run --

    async def run(self) -> None:
        HOOK.callback = self.on_queued
        self.note(
            f'prefix={self.prefix} pool={self.pool} max_running={self.max_running} leases={self.leases} '
            f'max_queued={self.max_queued}'
        )
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

    def on_warning(self, message: Warning | str, category: type[Warning], filename: str, lineno: int) -> None:
        """(e) a warning is a bug, but for the one about another max_running once objects may disagree."""
        text = f'{category.__name__}: {message} ({filename}:{lineno})'
        disagree = category is RuntimeWarning and 'max_running for this key is' in str(message)
        self.note(f'warning {text}')
        if 'warnings' not in self.opts.skip and not (disagree and any(self.obj_resizes)):
            self.fail(f'(e) unexpected warning {text}')

    def server_dump(self) -> str:
        lines: list[str] = []
        for key in self.pool:
            lines.append(f'server, {key!r}:')
            lines.append(state_dump(self.resp, self.redis_name(key)))
        return '\n'.join(lines)

    def dump(self) -> str:
        lines = ['pending callers:', *(f'  {c.describe()}' for c in self.live()), self.server_dump(), 'last events:']
        with self.lock:
            lines += self.log[-60:]
        return '\n'.join(lines)


@contextmanager
def warnings_to(run: KeyedRun) -> Generator[None]:
    """Every warning shown meanwhile goes to `run.on_warning`."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: object = None,
        line: str | None = None,
    ) -> None:
        run.on_warning(message, category, filename, lineno)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def conclude(run: KeyedRun, task: asyncio.Task[None], done: bool) -> None:
    """Turn the way the run ended (watchdog, failure, crash) into findings, with the dump."""
    if not done:
        run.fail(f'(d) the run did not finish within {run.opts.run_timeout} s\n{run.dump()}')
        faulthandler.dump_traceback(all_threads=True)
        return
    exc = task.exception()
    if isinstance(exc, FuzzFailure):
        run.fail(f'{exc}\n{run.dump()}')
    elif exc is not None:
        tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        run.fail(f'the fuzzer itself raised:\n{tb}\n{run.dump()}')
    elif run.findings:
        run.findings[-1] += '\n' + run.dump()


async def run_seed(seed: int, opts: Options) -> list[str]:
    """One run; its findings (empty if every invariant held)."""
    run = KeyedRun(seed, opts)
    faulthandler.dump_traceback_later(opts.run_timeout + 30, exit=True)
    try:
        with warnings_to(run):
            task = asyncio.ensure_future(run.run())
            done, _ = await asyncio.wait({task}, timeout=opts.run_timeout)
            conclude(run, task, bool(done))
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=5)
    finally:
        faulthandler.cancel_dump_traceback_later()
        for c in run.live():
            if c.task is not None:
                c.task.cancel()
        run.resp.close()
        run.stop_loop2()
    return run.findings


def replay_line(opts: Options, seed: int) -> str:
    """The command line that replays one seed."""
    extra = '' if opts.order_phase else ' --no-order-phase'
    extra += '' if opts.threads else ' --no-threads'
    extra += f' --skip {",".join(sorted(opts.skip))}' if opts.skip else ''
    return f'python tests/fuzz_redis_keyed.py --url {opts.url} --seeds {seed} --ops {opts.ops}{extra} --trace'


def run_campaign(seeds: list[int], opts: Options, out: Callable[[str], None] = print) -> list[tuple[int, list[str]]]:
    """Every seed in turn; the failing ones with their findings."""
    failed: list[tuple[int, list[str]]] = []
    warnings.simplefilter('always')
    for seed in seeds:
        start = time.monotonic()
        findings = asyncio.run(run_seed(seed, opts))
        took = time.monotonic() - start
        if not findings:
            out(f'seed {seed}: ok ({took:.1f}s)')
            continue
        failed.append((seed, findings))
        out(f'seed {seed}: FAILED ({took:.1f}s), {len(findings)} finding(s)')
        for finding in findings:
            out('  ' + finding.replace('\n', '\n  '))
        out(f'replay: {replay_line(opts, seed)}')
    return failed


def main() -> int:
    """The command line (see the module docstring)."""
    parser = campaign_parser(__doc__ or '', CHECKS)
    return run_from_args(parser, parser.parse_args(), CHECKS, run_campaign)


if __name__ == '__main__':
    sys.exit(main())
