"""A seeded, model-based fuzzer for `ferrolimit.ConcurrencyLimiter` (flat and nested) and
`ferrolimit.KeyedConcurrencyLimiter` on asyncio, uvloop and trio.

A run builds a hierarchy of limiters (one level, a child under a parent, two siblings under a
parent, or three levels G -> A -> P) with small limits and, depending on the configuration,
`max_queued` bounds (0 included); in the `-keyed` configurations every leaf level is one key of a
keyed limiter of its own (under the level above, as `parent=`), whose state is made and reclaimed
as the key comes in and out of use, and which must hold no key's state at the end of the run. A seeded RNG then drives simulated callers through it, one
*step* at a time. A step is one to three driver *actions*, sometimes with a few yields to the
event loop between them, followed by a full settle (every task blocked) and a comparison with the
model. Actions:

- spawn callers: `async with lim(source)` or `await lim.acquire(source, timeout=...)` (timeout
  `None`, 0, a few ticks of a virtual clock, or one that never expires), on any level, with a
  random `weight` (1 to 3: some above a level's `max_running`, a `ValueError`) and `priority`;
  some keep a reference to the awaitable, some catch `ConcurrencyLimitExceeded` in the very frame
  that awaits it (two ways in which the cleanup of a failed wait can go wrong); and
  `await lim.wait_idle(timeout=None or 0)` callers;
- let a holder leave (`__aexit__` or `release()`), or have an `acquire()` holder hand its slot to
  the driver, which `release()`s it later (slots are not owned by tasks);
- cancel a caller (`Task.cancel()` / its trio cancel scope) at any moment;
- `try_acquire(weight=...)` (a `ValueError` that changes nothing when too heavy for a level),
  and a later `release(weight=...)` of those raw slots;
- a handoff race: release a raw slot (handing it to the oldest waiter) and, before anything runs,
  cancel that waiter and/or `release()` once too often, in either order;
- an extra `release()` on a level where nothing is releasable (must raise `ValueError` and change
  nothing anywhere);
- resize `max_running` of a level (a shrink refuses queued waiters heavier than the new limit);
  in some runs `close()` a level (its queued waiters and later arrivals end with
  `LimiterClosedError`); advance the virtual clock; create an `acquire()` awaitable and close it
  without awaiting it (must change nothing).

The model
---------
The model is an executable specification of the *intended* semantics (the `.pyi` documentation),
independent of the implementation. Per level it keeps `max_running`, the holder count (callers
holding this level's slot: in the body, handed a slot but not resumed yet, or holding it while they
wait for an ancestor's), the FIFO of queued callers and the lifetime totals; per caller it keeps
where it stands (new, queued at level i of its chain, granted there, unwinding, in the body, done)
and what is pending for it (a cancellation, an expired deadline, a request to leave).

Everything the driver does is synchronous and modelled exactly: a release of `w` slots hands
them to the waiters at the head of each level's queue while their weights fit (head-of-line: the
head that does not fit stops everyone behind it; none while a shrink left the level over its
limit), a grow does the same at once, a rejection gives back the slots below; the queue is ordered
by priority, FIFO within one, and an arrival takes free slots at once only if they fit and nobody
is queued or it outranks everyone queued; `wait_idle()` callers wake when a release leaves a level
with no slot held. What the
tasks do in between is modelled as atomic *task steps* (from one suspension to the next, which is
exact on a single-threaded event loop): arrive (take free slots level by level up the chain, queue
at the first level without one, or be rejected by its `max_queued`), resume after a grant (climb
on), give up (cancelled or timed out: leave the queue, pass a slot handed over at that instant on,
give back the levels below), leave the body (release every level). Expired deadlines are pseudo
steps (the loop's timer). Where the backends differ, the model follows their documented behaviour:
on asyncio a cancellation is processed by the task's next step (a waiter handed a slot but not
resumed yet passes it on); on trio a queued waiter is withdrawn at once when cancelled, and one
that was already handed a slot takes it and is cancelled at its next checkpoint.

The order in which runnable tasks take their steps is the scheduler's business (trio even
randomises it), so the model does not guess it: it keeps the *set* of states reachable by any
interleaving of the runnable steps, and prunes it with every observation (each level's
`running_count`, `waiting_count`, `available_count`, `max_running` and `stats()`, checked after
every action; and what each caller reports about itself: not started, waiting, in the body,
finished with which outcome, whether it ever entered). A failure is an observation that no
interleaving explains. That keeps the checks exact (counts at every quiescent point, FIFO per
limiter, which caller gets each slot, `max_queued` rejections, cancelled/rejected totals) with no
false positive from scheduling. Only `acquired_total` is checked against bounds: transient takes
(a `try_acquire()` that takes a child's slot and gives it back when the parent has none) are the
implementation's business. No wall-clock time is involved: asyncio runs on a loop with a virtual
clock, trio on `trio.testing.MockClock`; uvloop's clock cannot be replaced, so it only uses
timeouts of 0 or ones that never expire.

At the end of a run every holder leaves and every raw slot is released; then every level must show
`running_count == waiting_count == 0` and `available_count == max_running`, with consistent
totals, and must stay so once the awaitables some callers kept are garbage-collected.

Runs are identified by (backend, configuration, seed) and replay exactly (trio's scheduler RNG is
seeded too). Command line (see `--help`)::

    python tests/fuzz_model.py --ops 1000 --seeds 0..99 --backend all --config all --isolate --jobs 2

`--isolate` runs the campaign in child processes (`--jobs` of them at once) and restarts one after a
crash or a hang, so that a segfault is reported with its run and the remaining runs still go. Every
failure prints the command line that replays it (add `--trace` to see each action and each settled
state); `--skip` leaves some actions out, to get past a known bug to the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ferrolimit import ConcurrencyLimiter, ConcurrencyLimitExceeded, KeyedConcurrencyLimiter, LimiterClosedError

BACKENDS = ('asyncio', 'uvloop', 'trio')
SHAPES = ('flat', 'child', 'siblings', 'three')
QUEUES = ('noq', 'q', 'keyed')
"""No `max_queued`; random bounds; random bounds with every leaf level a key of a keyed limiter."""
CONFIGS = tuple(f'{shape}-{queues}' for shape in SHAPES for queues in QUEUES)
KEYS = ('k', 'user-1', '', 'ключ', 'a\udc80b')
"""The keys a keyed level may use (empty, non-ASCII, a lone surrogate)."""
NEVER = 1e6
"""A timeout that never expires (it still takes the slow path with a time limit)."""
MAX_LIVE = 10
"""At most this many callers and raw slots alive at once (keeps the model's state sets small)."""
MAX_STATES = 20000


class FuzzFailure(Exception):
    """The limiter did something the model does not allow."""


class ModelLimit(Exception):
    """The model's state set grew too large (a limitation of the fuzzer, not a limiter failure)."""


# --------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True)
class LevelSpec:
    name: str
    parent: int | None
    max_running: int
    max_queued: int | None
    key: str | None = None
    """For a level that is one key of a `KeyedConcurrencyLimiter` of its own, that key."""


@dataclass(frozen=True)
class Config:
    name: str
    levels: tuple[LevelSpec, ...]

    def chain(self, level: int) -> tuple[int, ...]:
        """The level and its ancestors, bottom-up."""
        out = [level]
        while (parent := self.levels[out[-1]].parent) is not None:
            out.append(parent)
        return tuple(out)

    def describe(self) -> str:
        parts = []
        for spec in self.levels:
            parent = '' if spec.parent is None else f', parent={self.levels[spec.parent].name}'
            key = '' if spec.key is None else f', key={spec.key!r}'
            parts.append(f'{spec.name}({spec.max_running}, max_queued={spec.max_queued}{parent}{key})')
        return ' '.join(parts)


def make_config(name: str, seed: int) -> Config:
    """The limits of configuration `name` for `seed`: small `max_running`, and with `-q` or `-keyed`
    a random `max_queued` (often 0 or 1) at each level; with `-keyed` every leaf level (no other
    level's parent) is one key of a keyed limiter of its own."""
    shape, queues = name.split('-')
    rng = random.Random(f'config:{name}:{seed}')
    layout = {
        'flat': [('P', None)],
        'child': [('P', None), ('C', 0)],
        'siblings': [('P', None), ('A', 0), ('B', 0)],
        'three': [('P', None), ('A', 0), ('G', 1)],
    }[shape]
    parents = {parent for _, parent in layout}
    levels = []
    for index, (level_name, parent) in enumerate(layout):
        max_queued = rng.choice([None, 0, 0, 1, 1, 2, 3]) if queues != 'noq' else None
        max_running = rng.choice([1, 1, 2, 2, 3])
        key = rng.choice(KEYS) if queues == 'keyed' and index not in parents else None
        levels.append(LevelSpec(level_name, parent, max_running, max_queued, key))
    return Config(name, tuple(levels))


# --------------------------------------------------------------------------------------------
# The model

NEW, QUEUED, UNWIND, BODY, RAW, IDLE, DONE = 'new', 'queued', 'unwind', 'body', 'raw', 'idle', 'done'
OBSERVED_STATUS = {
    NEW: 'new',
    QUEUED: 'pending',
    UNWIND: 'pending',
    BODY: 'body',
    RAW: 'raw',
    IDLE: 'pending',
    DONE: 'done',
}


@dataclass(frozen=True)
class CallerSpec:
    """What does not change about a caller (or a raw slot)."""

    cid: int
    level: int
    chain: tuple[int, ...]
    mode: str  # 'ctx' (async with), 'acq' (await acquire + release()), 'raw' (try_acquire), 'idle' (wait_idle)
    timeout: float | None = None
    keep: bool = False
    source: str = 's'
    inline: bool = False  # the awaitable is a temporary and the rejection is caught in the same frame
    weight: int = 1
    priority: int = 0

    def describe(self, config: Config) -> str:
        name = config.levels[self.level].name
        request = (f', weight={self.weight}' if self.weight != 1 else '') + (
            f', priority={self.priority}' if self.priority else ''
        )
        if self.mode == 'raw':
            return f'raw slot r{self.cid} on {name}' + (f' (weight={self.weight})' if self.weight != 1 else '')
        if self.mode == 'idle':
            timeout = '' if self.timeout is None else f'timeout={self.timeout:g}'
            return f'c{self.cid}: await {name}.wait_idle({timeout})'
        how = (
            f'async with {name}({self.source!r}{request})'
            if self.mode == 'ctx'
            else f'await {name}.acquire({self.source!r}{request}'
        )
        if self.mode == 'acq':
            how += ')' if self.timeout is None else f', timeout={self.timeout:g})'
        return (
            f'c{self.cid}: {how}'
            + (' [keeps the awaitable]' if self.keep else '')
            + (' [inline]' if self.inline else '')
        )


class LevelState:
    """One level of one model state."""

    __slots__ = ('cancelled', 'closed', 'extra', 'max_running', 'queue', 'rejected', 'running', 'taken')

    def __init__(self, max_running: int) -> None:
        self.max_running = max_running
        self.running = 0  # slots held (weights count)
        self.queue: list[int] = []  # by priority (higher first), FIFO within one
        self.taken = 0  # slots handed out for sure (acquired_total's lower bound)
        self.extra = 0  # transient takes the implementation may count on top
        self.rejected = 0
        self.cancelled = 0
        self.closed = False

    def copy(self) -> LevelState:
        new = LevelState.__new__(LevelState)
        new.max_running, new.running, new.queue = self.max_running, self.running, self.queue.copy()
        new.taken, new.extra, new.rejected, new.cancelled = self.taken, self.extra, self.rejected, self.cancelled
        new.closed = self.closed
        return new

    def key(self) -> tuple[Any, ...]:
        return (
            self.max_running,
            self.running,
            tuple(self.queue),
            self.taken,
            self.extra,
            self.rejected,
            self.cancelled,
            self.closed,
        )

    @property
    def available(self) -> int:
        return max(0, self.max_running - self.running)


class CallerState:
    """One caller in one model state."""

    __slots__ = ('cancel', 'deadline', 'entered', 'first', 'granted', 'leave', 'outcome', 'phase', 'pos', 'refused')

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.pos = 0  # index into the chain of the level it is queued at (or unwinds from)
        self.granted = False  # handed the slot of chain[pos], not resumed yet (IDLE: woken)
        self.refused = ''  # queued at chain[pos] and refused there: 'closed' or 'weight' (a shrink)
        self.cancel = ''  # 'c' cancelled, 't' deadline expired (both possible)
        self.leave = ''  # 'r' leave and release, 'd' leave and hand the slot to the driver
        self.first = ''  # 'l' or 'c': which of leave / cancel was requested first
        self.entered = False
        self.outcome: frozenset[str] | None = None
        self.deadline: float | None = None

    def copy(self) -> CallerState:
        new = CallerState.__new__(CallerState)
        new.phase, new.pos, new.granted, new.cancel = self.phase, self.pos, self.granted, self.cancel
        new.leave, new.first, new.entered, new.refused = self.leave, self.first, self.entered, self.refused
        new.outcome, new.deadline = self.outcome, self.deadline
        return new

    def key(self) -> tuple[Any, ...]:
        return (
            self.phase,
            self.pos,
            self.granted,
            self.refused,
            self.cancel,
            self.leave,
            self.first,
            self.entered,
            self.outcome,
        )

    def holds(self, chain_len: int) -> int:
        """How many levels of its chain (from the bottom) it holds."""
        if self.phase in (BODY, RAW):
            return chain_len
        if self.phase in (QUEUED, UNWIND):
            return self.pos + (1 if self.granted else 0)
        return 0


class State:
    """One possible state of the whole hierarchy and its callers."""

    __slots__ = ('callers', 'levels')

    def __init__(self, levels: list[LevelState], callers: dict[int, CallerState]) -> None:
        self.levels = levels
        self.callers = callers

    def clone(self) -> State:
        return State([lv.copy() for lv in self.levels], {cid: c.copy() for cid, c in self.callers.items()})

    def key(self) -> tuple[Any, ...]:
        return (tuple(lv.key() for lv in self.levels), tuple((cid, c.key()) for cid, c in self.callers.items()))


@dataclass(frozen=True)
class LevelObs:
    running: int
    waiting: int
    available: int
    max_running: int
    stats: tuple[int, int, int, int, int | None, int, int, int]


@dataclass(frozen=True)
class CallerObs:
    status: str  # new, pending, body, raw, done
    entered: bool
    outcome: str | None


def outcome_kinds(cancel: str) -> frozenset[str]:
    kinds = set()
    if 'c' in cancel:
        kinds.add('cancelled')
    if 't' in cancel:
        kinds.add('timeout')
    return frozenset(kinds)


class Model:
    """The set of states the system may be in, given everything observed so far."""

    def __init__(self, config: Config, backend: str) -> None:
        self.config = config
        self.trio = backend == 'trio'
        self.specs: dict[int, CallerSpec] = {}
        self.now = 0.0
        levels = [LevelState(spec.max_running) for spec in config.levels]
        self.states: list[State] = [State(levels, {})]

    # -- the semantics of one state ------------------------------------------------------------

    def _weight(self, cid: int) -> int:
        return self.specs[cid].weight

    def _grant(self, st: State, level: int) -> None:
        """Hand free slots to the head of `level`'s queue while its weight fits (head-of-line:
        a waiter that does not fit stops everyone behind it)."""
        lv = st.levels[level]
        while lv.queue and lv.running + self._weight(lv.queue[0]) <= lv.max_running:
            cid = lv.queue.pop(0)
            st.callers[cid].granted = True
            lv.running += self._weight(cid)
            lv.taken += self._weight(cid)

    def _release_level(self, st: State, level: int, weight: int) -> None:
        """A release of `weight` slots of `level`: they go to the waiters that fit in order (none
        while a shrink left the level over its limit), else they are free; the limiter's idle
        waiters wake once no slot is held."""
        lv = st.levels[level]
        assert lv.running >= weight, 'model: release of more slots than are held'
        lv.running -= weight
        self._grant(st, level)
        if lv.running == 0:
            for cid, c in st.callers.items():
                if c.phase == IDLE and self.specs[cid].level == level:
                    c.granted = True

    def _release_below(self, st: State, chain: tuple[int, ...], pos: int, weight: int) -> None:
        for level in chain[:pos]:
            self._release_level(st, level, weight)

    def _enqueue(self, lv: LevelState, cid: int) -> None:
        """Queue `cid` behind everyone of its priority or a higher one."""
        priority = self.specs[cid].priority
        at = len(lv.queue)
        while at > 0 and self.specs[lv.queue[at - 1]].priority < priority:
            at -= 1
        lv.queue.insert(at, cid)

    def _can_take(self, lv: LevelState, spec: CallerSpec) -> bool:
        """Whether an arrival takes free slots at once: they fit, and nobody is queued or it
        outranks everyone queued (it would be the head)."""
        if lv.closed or lv.running + spec.weight > lv.max_running:
            return False
        return not lv.queue or spec.priority > self.specs[lv.queue[0]].priority

    def _closed_below(self, st: State, spec: CallerSpec, pos: int) -> bool:
        """Whether a level of the chain below `pos` (whose slots the caller holds) is closed."""
        return any(st.levels[level].closed for level in spec.chain[:pos])

    def _finish(self, c: CallerState, kinds: Iterable[str]) -> None:
        c.phase = DONE
        c.outcome = frozenset(kinds)
        c.granted = False

    def _expired(self, c: CallerState) -> bool:
        return c.deadline is not None and self.now >= c.deadline

    def _climb(self, st: State, cid: int, start: int) -> None:
        """Take free slots up the chain from `start`; queue at the first level without one, or be
        refused (closed, weight above its `max_running`) or rejected by its `max_queued`; in the
        body once every level is held."""
        c, spec = st.callers[cid], self.specs[cid]
        for pos in range(start, len(spec.chain)):
            level = spec.chain[pos]
            lv = st.levels[level]
            if self._can_take(lv, spec):
                lv.running += spec.weight
                lv.taken += spec.weight
                continue
            # A level below was closed since this caller took its slot there: it may not queue.
            # ... nor wait for a weight some level from here up can never serve.
            below = self._closed_below(st, spec, pos)
            too_heavy = any(spec.weight > st.levels[up].max_running for up in spec.chain[pos:])
            refusal = 'closed' if below else 'weight' if too_heavy else 'closed' if lv.closed else ''
            if refusal:
                self._release_below(st, spec.chain, pos, spec.weight)
                self._finish(c, [refusal])
                return
            max_queued = self.config.levels[level].max_queued
            if max_queued is not None and len(lv.queue) >= max_queued:
                lv.rejected += 1
                self._release_below(st, spec.chain, pos, spec.weight)
                self._finish(c, ['rejected'])
                return
            c.pos, c.granted = pos, False
            if self.trio and (c.cancel or self._expired(c)):
                # trio delivers a pending cancellation (or an expired deadline) as the waiter parks:
                # it withdraws from the queue before any other task runs.
                if self._expired(c):
                    c.cancel += '' if 't' in c.cancel else 't'
                lv.cancelled += 1
                c.phase = UNWIND
                return
            self._enqueue(lv, cid)
            c.phase = QUEUED
            return
        c.phase = BODY
        c.entered = True

    def _runnable(self, c: CallerState) -> bool:
        if c.phase in (NEW, UNWIND):
            return True
        if c.phase == QUEUED:
            return c.granted or bool(c.refused) or (bool(c.cancel) and not self.trio)
        if c.phase == BODY:
            return bool(c.leave or c.cancel)
        if c.phase == IDLE:
            return c.granted or bool(c.cancel)
        return False

    def _can_expire(self, c: CallerState) -> bool:
        if c.phase != QUEUED or c.granted or c.refused or not self._expired(c):
            return False
        return 't' not in c.cancel if self.trio else not c.cancel

    def _step(self, st: State, cid: int) -> None:
        """One task step of caller `cid` (it must be runnable)."""
        c, spec = st.callers[cid], self.specs[cid]
        if c.phase == NEW and spec.mode == 'idle':
            self._step_idle_arrival(st, cid)
        elif c.phase == NEW:
            if c.cancel and not self.trio:
                self._finish(c, ['cancelled'])  # cancelled before it started: the coroutine never runs
                return
            if spec.timeout is not None:
                c.deadline = self.now + spec.timeout
            self._climb(st, cid, 0)
        elif c.phase == QUEUED:
            self._step_queued(st, cid)
        elif c.phase == UNWIND:
            self._release_below(st, spec.chain, c.pos, spec.weight)
            self._finish(c, outcome_kinds(c.cancel))
        elif c.phase == IDLE:
            # Woken (the limiter was idle at some instant), cancelled, or timed out (`t`); woken and
            # cancelled or timed out at once, the backends differ in which one wins.
            if c.granted:
                also = ['cancelled'] * ('c' in c.cancel) + ['notidle'] * ('t' in c.cancel)
                self._finish(c, ['idle', *also])
            else:
                self._finish(c, ['cancelled'] if 'c' in c.cancel else ['notidle'])
        elif c.phase == BODY:
            self._step_body(st, cid)
        else:  # pragma: no cover
            raise AssertionError(f'model: caller {cid} is not runnable')

    def _step_body(self, st: State, cid: int) -> None:
        """A holder leaves its body: asked to, or cancelled (on trio a leave asked first wins)."""
        c, spec = st.callers[cid], self.specs[cid]
        cancelled = bool(c.cancel) and (not self.trio or c.first == 'c' or not c.leave)
        if cancelled:
            self._release_below(st, spec.chain, len(spec.chain), spec.weight)
            self._finish(c, ['cancelled'])
        elif c.leave == 'd':
            c.phase = RAW
        else:
            self._release_below(st, spec.chain, len(spec.chain), spec.weight)
            self._finish(c, ['left'])

    def _step_idle_arrival(self, st: State, cid: int) -> None:
        """The first step of `wait_idle()`: idle at once, or registered until the last holder
        leaves (with timeout=0: until its next step, which times out)."""
        c, spec = st.callers[cid], self.specs[cid]
        idle = st.levels[spec.level].running == 0
        if c.cancel and not self.trio:
            self._finish(c, ['cancelled'])  # never started
        elif idle:
            self._finish(c, ['idle'])  # at once, without a checkpoint (where trio would cancel)
        elif c.cancel:
            c.phase = UNWIND  # trio: cancelled at its first checkpoint, finished at its next step
        else:
            c.phase = IDLE
            if spec.timeout == 0:
                c.cancel = 't'

    def _step_queued(self, st: State, cid: int) -> None:
        """A queued caller's step: it resumes with the slots handed over or with its refusal, or
        (asyncio) processes its cancellation, passing slots handed over at that instant on."""
        c, spec = st.callers[cid], self.specs[cid]
        if c.cancel and not self.trio:
            self._give_up(st, cid, outcome_kinds(c.cancel))
        elif self._closed_below(st, spec, c.pos):
            self._give_up(st, cid, ['closed'])  # a level it holds was closed meanwhile
        elif c.refused:
            self._release_below(st, spec.chain, c.pos, spec.weight)
            self._finish(c, [c.refused])
        else:
            c.granted = False
            self._climb(st, cid, c.pos + 1)

    def _give_up(self, st: State, cid: int, kinds: Iterable[str]) -> None:
        """A queued caller gives up where it stands (its acquisition's cancel): slots handed over
        there pass on, its place in the queue goes (a refused one has none), the levels below are
        given back."""
        c, spec = st.callers[cid], self.specs[cid]
        level = spec.chain[c.pos]
        lv = st.levels[level]
        if c.granted:
            c.granted = False
            lv.cancelled += 1
            self._release_level(st, level, spec.weight)
        elif not c.refused:
            lv.queue.remove(cid)
            lv.cancelled += 1
            self._grant(st, level)  # the head may have changed: whoever is there now may fit
        self._release_below(st, spec.chain, c.pos, spec.weight)
        self._finish(c, kinds)

    def _withdraw(self, st: State, cid: int) -> None:
        """trio's abort of a queued waiter (cancelled, or its deadline passed): it leaves the queue
        at once, and unwinds at its next step."""
        c = st.callers[cid]
        level = self.specs[cid].chain[c.pos]
        lv = st.levels[level]
        lv.queue.remove(cid)
        lv.cancelled += 1
        self._grant(st, level)
        c.phase = UNWIND

    def _expire(self, st: State, cid: int) -> None:
        """The pseudo step of an expired deadline (the loop's timer, or trio's deadline check)."""
        c = st.callers[cid]
        c.cancel += 't'
        if self.trio:
            self._withdraw(st, cid)

    def _successors(self, st: State) -> Iterator[State]:
        for cid, c in st.callers.items():
            if self._runnable(c):
                nxt = st.clone()
                self._step(nxt, cid)
                yield nxt
            if self._can_expire(c):
                nxt = st.clone()
                self._expire(nxt, cid)
                yield nxt

    def explore(self, quiescent: bool) -> None:
        """Replace the state set by the states reachable through task steps: only those where no
        task can run (`quiescent`), or all of them (after a partial yield)."""
        seen: dict[tuple[Any, ...], State] = {}
        result: dict[tuple[Any, ...], State] = {}
        stack = list(reversed(self.states))
        while stack:
            st = stack.pop()
            key = st.key()
            if key in seen:
                continue
            seen[key] = st
            if len(seen) > MAX_STATES:
                raise ModelLimit(f'more than {MAX_STATES} reachable states')
            successors = list(self._successors(st))
            if not successors or not quiescent:
                result[key] = st
            stack.extend(reversed(successors))
        self.states = list(result.values())

    def apply(self, action: Callable[[State], None]) -> None:
        """Apply a driver action to every state."""
        for st in self.states:
            action(st)
        self._dedup()

    def _dedup(self) -> None:
        self.states = list({st.key(): st for st in self.states}.values())

    # -- driver actions ------------------------------------------------------------------------

    def spawn(self, spec: CallerSpec) -> None:
        self.specs[spec.cid] = spec
        self.apply(lambda st: st.callers.__setitem__(spec.cid, CallerState(NEW)))

    def try_acquire(self, spec: CallerSpec, result: bool) -> None:
        """Keep the states where `try_acquire(weight=...)` on `spec.level` gives `result`; on
        success the raw slots are caller `spec.cid`. (A weight above some level's `max_running`
        is a `ValueError` that changes nothing: the runner checks that itself.)"""
        self.specs[spec.cid] = spec
        kept = []
        for st in self.states:
            free = 0
            for level in spec.chain:
                lv = st.levels[level]
                if lv.closed or lv.queue or lv.running + spec.weight > lv.max_running:
                    break
                free += 1
            if (free == len(spec.chain)) != result:
                continue
            if result:
                for level in spec.chain:
                    st.levels[level].running += spec.weight
                    st.levels[level].taken += spec.weight
                c = CallerState(RAW)
                c.entered = True
                st.callers[spec.cid] = c
            else:
                for level in spec.chain[:free]:
                    st.levels[level].extra += spec.weight
            kept.append(st)
        if not kept:
            name = self.config.levels[spec.level].name
            raise FuzzFailure(
                f'{name}.try_acquire(weight={spec.weight}) returned {result}, which no model state allows\n'
                f'{self.describe(self.states[0])}'
            )
        self.states = kept

    def release_raw(self, cid: int) -> None:
        spec = self.specs[cid]

        def action(st: State) -> None:
            assert st.callers[cid].phase == RAW, 'model: release of a slot that is not raw'
            self._release_below(st, spec.chain, len(spec.chain), spec.weight)
            del st.callers[cid]

        self.apply(action)

    def cancel(self, cid: int) -> None:
        def action(st: State) -> None:
            c = st.callers[cid]
            if c.phase in (DONE, RAW):
                return
            if self.trio and c.phase == QUEUED and not c.granted and not c.refused:
                self._withdraw(st, cid)
            if self.trio and c.phase == IDLE and not c.granted:
                c.phase = UNWIND  # withdrawn at once; it finishes cancelled at its next step
            if 'c' not in c.cancel:
                c.cancel += 'c'
            c.first = c.first or 'c'

        self.apply(action)

    def leave(self, cid: int, hand: bool) -> None:
        def action(st: State) -> None:
            c = st.callers[cid]
            assert c.phase == BODY, 'model: leave of a caller not in the body'
            c.leave = 'd' if hand else 'r'
            c.first = c.first or 'l'

        self.apply(action)

    def resize(self, level: int, value: int) -> None:
        """A shrink refuses the queued waiters heavier than the new limit; either way the
        waiters that fit now are served."""

        def action(st: State) -> None:
            lv = st.levels[level]
            lv.max_running = value
            for cid in [cid for cid in lv.queue if self._weight(cid) > value]:
                lv.queue.remove(cid)
                st.callers[cid].refused = 'weight'
            self._grant(st, level)

        self.apply(action)

    def close(self, level: int) -> None:
        """`close()`: every waiter queued at `level` is refused; holders and waiters already
        handed their slots keep them; arrivals are refused from now on."""

        def action(st: State) -> None:
            lv = st.levels[level]
            lv.closed = True
            for cid in lv.queue:
                st.callers[cid].refused = 'closed'
            lv.queue.clear()

        self.apply(action)

    def abandon(self, level: int) -> None:
        """An `acquire()` awaitable created and closed without being awaited: nothing is taken,
        though the implementation may take free slots and give them back at once."""
        chain = self.config.chain(level)

        def action(st: State) -> None:
            for lv_index in chain:
                lv = st.levels[lv_index]
                if lv.closed or lv.queue or lv.running >= lv.max_running:
                    break
                lv.extra += 1

        self.apply(action)

    def retire(self, done: Iterable[int]) -> None:
        """Forget callers that finished (already checked)."""
        done = list(done)

        def action(st: State) -> None:
            for cid in done:
                del st.callers[cid]

        self.apply(action)

    # -- queries -------------------------------------------------------------------------------

    def releasable(self, st: State, level: int) -> int:
        """Slots of `level` a stray `release()` may legitimately release: those of callers that
        hold every level of their chain (in the body, or a raw slot) with `level` in it."""
        return sum(1 for cid, c in st.callers.items() if c.phase in (BODY, RAW) and level in self.specs[cid].chain)

    def runnable_count(self) -> int:
        """The most task steps (and expiries) that could run next, in any state."""
        return max(
            sum(1 for c in st.callers.values() if self._runnable(c) or self._can_expire(c)) for st in self.states
        )

    def nothing_releasable(self, level: int) -> bool:
        return all(self.releasable(st, level) == 0 for st in self.states)

    # -- observations --------------------------------------------------------------------------

    def level_mismatches(self, st: State, observed: list[LevelObs]) -> list[str]:
        out = []
        for index, (lv, obs) in enumerate(zip(st.levels, observed, strict=True)):
            name = self.config.levels[index].name
            expect = (lv.running, len(lv.queue), lv.available, lv.max_running)
            got = (obs.running, obs.waiting, obs.available, obs.max_running)
            if got != expect:
                out.append(
                    f'{name}: (running_count, waiting_count, available_count, max_running) = {got}, expected {expect}'
                )
            s_running, s_waiting, s_available, s_max, _q, acquired, rejected, cancelled = obs.stats
            if (s_running, s_waiting, s_available, s_max) != got:
                out.append(f'{name}: stats() {obs.stats} disagrees with the properties {got}')
            if self.config.levels[index].key is not None:
                out += self._key_total_mismatches(name, lv, obs)
                continue
            if not lv.taken <= acquired <= lv.taken + lv.extra:
                bound = f'{lv.taken}' if not lv.extra else f'{lv.taken}..{lv.taken + lv.extra}'
                out.append(f'{name}: stats().acquired_total = {acquired}, expected {bound}')
            if (rejected, cancelled) != (lv.rejected, lv.cancelled):
                out.append(
                    f'{name}: stats() (rejected_total, cancelled_total) = {(rejected, cancelled)}, '
                    f'expected {(lv.rejected, lv.cancelled)}'
                )
        return out

    @staticmethod
    def _key_total_mismatches(name: str, lv: LevelState, obs: LevelObs) -> list[str]:
        """A key's totals count from when its state was last made (the model does not know when a
        key's unused state is reclaimed): at most the lifetime's, and all 0 while the key is idle."""
        acquired, rejected, cancelled = obs.stats[5:]
        if obs.running == obs.waiting == 0:
            if (acquired, rejected, cancelled) != (0, 0, 0):
                return [f'{name}: an idle key has totals {(acquired, rejected, cancelled)}, expected zeros']
            return []
        if acquired > lv.taken + lv.extra or rejected > lv.rejected or cancelled > lv.cancelled:
            lifetime = (lv.taken + lv.extra, lv.rejected, lv.cancelled)
            return [f'{name}: key totals {(acquired, rejected, cancelled)} above the lifetime bounds {lifetime}']
        return []

    def caller_mismatches(self, st: State, observed: dict[int, CallerObs]) -> list[str]:
        out = []
        for cid, obs in observed.items():
            c = st.callers.get(cid)
            if c is None:
                continue
            status = OBSERVED_STATUS[c.phase]
            what = f'c{cid}'
            if obs.status != status:
                seen = obs.status if obs.status != 'done' else f'finished {obs.outcome!r} (entered={obs.entered})'
                out.append(f'{what}: observed {seen}, expected {status}')
            elif status == 'done':
                assert c.outcome is not None
                if obs.outcome not in c.outcome or obs.entered != c.entered:
                    expected = '/'.join(sorted(c.outcome))
                    out.append(
                        f'{what}: finished {obs.outcome!r} (entered={obs.entered}), '
                        f'expected {expected} (entered={c.entered})'
                    )
        return out

    def check(self, levels: list[LevelObs], callers: dict[int, CallerObs] | None) -> None:
        """Keep the states that explain the observation; `FuzzFailure` if none does."""
        kept, best = [], None
        for st in self.states:
            problems = self.level_mismatches(st, levels)
            if callers is not None:
                problems += self.caller_mismatches(st, callers)
            if not problems:
                kept.append(st)
            elif best is None or len(problems) < len(best[1]):
                best = (st, problems)
        if kept:
            self.states = kept
            return
        assert best is not None
        raise FuzzFailure('\n'.join(['no interleaving explains the observation:', *best[1], self.describe(best[0])]))

    def describe(self, st: State) -> str:
        lines = ['closest model state:']
        for index, lv in enumerate(st.levels):
            queue = ' '.join(f'c{cid}' for cid in lv.queue) or '-'
            lines.append(
                f'  {self.config.levels[index].name}: max_running={lv.max_running} running={lv.running} '
                + ('closed ' if lv.closed else '')
                + f'queue=[{queue}] acquired={lv.taken}(+{lv.extra}) rejected={lv.rejected} cancelled={lv.cancelled}'
            )
        for cid, c in st.callers.items():
            spec = self.specs[cid]
            where = ''
            if c.phase in (QUEUED, UNWIND):
                where = f' at {self.config.levels[spec.chain[c.pos]].name}' + (' (granted)' if c.granted else '')
            if c.phase == IDLE and c.granted:
                where = ' (woken)'
            extra = ''.join(
                f' {k}={v}'
                for k, v in (('refused', c.refused), ('cancel', c.cancel), ('leave', c.leave), ('outcome', c.outcome))
                if v
            )
            lines.append(f'  {spec.describe(self.config)}: {c.phase}{where}{extra}')
        return '\n'.join(lines)


# --------------------------------------------------------------------------------------------
# Backends


class KeyLevel:
    """One key of a `KeyedConcurrencyLimiter` (of its own) with the surface of a `ConcurrencyLimiter`,
    so that the model checks a key as it checks a limiter. Its state comes and goes with its use.

    Before some of its calls it makes a context of another key, never used before, and drops it:
    that key's state is then unused in the map, where the next creation of a key (this level's
    key among them) may take it over as new, as an unused state of this level's key may serve a
    later one of those. The model must not see any of it."""

    def __init__(self, keyed: KeyedConcurrencyLimiter, key: str, rng: random.Random) -> None:
        self.keyed = keyed
        self.key = key
        self.rng = rng
        self.others = 0

    def _other_key(self) -> None:
        if self.rng.random() < 0.4:
            self.others += 1
            self.keyed(f'other-{self.others}', 'unused')

    def __call__(self, source: str, *, weight: int = 1, priority: int = 0) -> Any:
        self._other_key()
        return self.keyed(self.key, source, weight=weight, priority=priority)

    def acquire(self, source: str, **kwargs: Any) -> Any:
        self._other_key()
        return self.keyed.acquire(self.key, source, **kwargs)

    def release(self, **kwargs: Any) -> None:
        self.keyed.release(self.key, **kwargs)

    def try_acquire(self, **kwargs: Any) -> bool:
        self._other_key()
        return self.keyed.try_acquire(self.key, **kwargs)

    def wait_idle(self, **kwargs: Any) -> Any:
        return self.keyed.wait_idle(**kwargs)

    def stats(self) -> Any:
        return self.keyed.stats(self.key)

    def close(self) -> None:
        self.keyed.close()

    @property
    def closed(self) -> bool:
        return self.keyed.closed

    @property
    def running_count(self) -> int:
        return self.keyed.running_count(self.key)

    @property
    def waiting_count(self) -> int:
        return self.keyed.waiting_count(self.key)

    @property
    def available_count(self) -> int:
        return self.keyed.available_count(self.key)

    @property
    def max_running(self) -> int:
        return self.keyed.max_running

    @max_running.setter
    def max_running(self, value: int) -> None:
        self.keyed.max_running = value


class Handle:
    """The real side of one caller task."""

    def __init__(self, spec: CallerSpec, event: Any) -> None:
        self.spec = spec
        self.leave_event = event
        self.hand = False
        self.status = 'new'
        self.entered = False
        self.outcome: str | None = None
        self.kept: list[Any] = []
        self.task: Any = None
        self.scope: Any = None
        self.finished = False

    def finish(self, outcome: str) -> None:
        self.status = 'done'
        if self.outcome is None:
            self.outcome = outcome


class AsyncioHarness:
    """Tasks on an asyncio (or uvloop) loop; the loop's clock is virtual unless it is uvloop."""

    def __init__(self, virtual: bool) -> None:
        self.virtual = virtual
        self.cancelled_exc: type[BaseException] = asyncio.CancelledError
        self.handles: list[Handle] = []

    def event(self) -> asyncio.Event:
        return asyncio.Event()

    def start(self, handle: Handle, body: Callable[[Handle], Awaitable[None]]) -> None:
        self.handles.append(handle)
        handle.task = asyncio.get_running_loop().create_task(self._wrap(handle, body))

    async def _wrap(self, handle: Handle, body: Callable[[Handle], Awaitable[None]]) -> None:
        try:
            await body(handle)
        except asyncio.CancelledError:
            handle.finish('cancelled')
        finally:
            handle.finished = True

    def cancel(self, handle: Handle) -> None:
        handle.task.cancel()

    def done(self, handle: Handle) -> bool:
        return handle.task.done()

    def _blocked(self) -> bool:
        for handle in self.handles:
            task = handle.task
            if task.done():
                continue
            waiter = task._fut_waiter  # the only way to see that a task is parked
            if waiter is None or waiter.done():
                return False
        return True

    async def settle(self) -> None:
        quiet = 0
        for _ in range(100000):
            await asyncio.sleep(0)
            self.handles = [h for h in self.handles if not h.task.done()]
            quiet = quiet + 1 if self._blocked() else 0
            if quiet >= 3:  # a timer that is due fires within two loop iterations
                return
        raise FuzzFailure('the event loop never settles (a task keeps running)')

    async def yield_(self, n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    def advance(self) -> bool:
        if not self.virtual:
            return False
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        loop.virtual_now += 1.0
        return True


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock only moves when the fuzzer says so."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now


class TrioHarness:
    """Tasks in a trio nursery, each in a cancel scope of its own, on a `MockClock`."""

    def __init__(self, nursery: Any, clock: Any) -> None:
        import trio

        self.trio = trio
        self.nursery = nursery
        self.clock = clock
        self.cancelled_exc: type[BaseException] = trio.Cancelled

    def event(self) -> Any:
        return self.trio.Event()

    def start(self, handle: Handle, body: Callable[[Handle], Awaitable[None]]) -> None:
        handle.scope = self.trio.CancelScope()
        self.nursery.start_soon(self._wrap, handle, body)

    async def _wrap(self, handle: Handle, body: Callable[[Handle], Awaitable[None]]) -> None:
        try:
            with handle.scope:
                await body(handle)
            if handle.scope.cancelled_caught:
                handle.finish('cancelled')
        finally:
            handle.finished = True

    def cancel(self, handle: Handle) -> None:
        handle.scope.cancel()

    def done(self, handle: Handle) -> bool:
        return handle.finished

    async def settle(self) -> None:
        import trio.testing

        await trio.testing.wait_all_tasks_blocked()

    async def yield_(self, n: int) -> None:
        for _ in range(n):
            await self.trio.sleep(0)

    def advance(self) -> bool:
        self.clock.jump(1.0)
        return True


# --------------------------------------------------------------------------------------------
# The runner


@dataclass
class RunResult:
    backend: str
    config: str
    seed: int
    ops: int
    steps: int
    failure: str | None = None
    model_limit: str | None = None
    log: list[str] = field(default_factory=list)


class Runner:
    """One run: one backend, one configuration, one seed, `ops` driver actions."""

    def __init__(
        self,
        backend: str,
        config_name: str,
        seed: int,
        ops: int,
        trace: bool = False,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.backend = backend
        self.skip = skip
        self.config = make_config(config_name, seed)
        self.seed = seed
        self.ops = ops
        self.trace = trace
        self.rng = random.Random(f'ops:{backend}:{config_name}:{seed}')
        self.model = Model(self.config, backend)
        self.log: list[str] = []
        self.handles: dict[int, Handle] = {}
        self.raw: set[int] = set()  # raw slots the driver holds (try_acquire, or handed over)
        self.kept: list[Any] = []  # awaitables finished callers kept, alive until the end of the run
        self.next_id = 1
        self.done_ops = 0
        self.steps = 0
        self.limiters: list[Any] = []  # ConcurrencyLimiter or KeyLevel
        self.h: Any = None
        self.closing = self.rng.random() < 0.3 and 'close' not in skip
        """Whether this run closes limiters (a closed level admits nobody for the rest of the run)."""

    # -- entry points --------------------------------------------------------------------------

    def run(self) -> RunResult:
        result = RunResult(self.backend, self.config.name, self.seed, self.ops, 0)
        try:
            if self.backend == 'trio':
                import trio
                import trio.testing

                with contextlib.suppress(AttributeError):
                    trio._core._run._r.seed(f'trio:{self.config.name}:{self.seed}')
                trio.run(self._trio_main, clock=trio.testing.MockClock())
            else:
                if self.backend == 'uvloop':
                    import uvloop

                    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
                else:
                    loop = VirtualTimeLoop()
                try:
                    loop.run_until_complete(self._asyncio_main())
                finally:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()
        except FuzzFailure as e:
            result.failure = str(e)
        except ModelLimit as e:
            result.model_limit = str(e)
        result.steps = self.steps
        result.log = self.log
        return result

    async def _asyncio_main(self) -> None:
        self.h = AsyncioHarness(virtual=self.backend == 'asyncio')
        try:
            await self._main()
        finally:
            for handle in self.handles.values():
                if handle.task is not None and not handle.task.done():
                    handle.task.cancel()
            await asyncio.sleep(0)

    async def _trio_main(self) -> None:
        import trio

        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            self.h = TrioHarness(nursery, trio.lowlevel.current_clock())
            try:
                await self._main()
            except (FuzzFailure, ModelLimit) as e:
                failure = e  # raised out of the nursery it would come wrapped in an exception group
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    def _note(self, text: str) -> None:
        entry = f'[{self.steps}] {text}'
        self.log.append(entry)
        if self.trace:
            print(entry, flush=True)

    # -- the run -------------------------------------------------------------------------------

    async def _main(self) -> None:
        self.limiters = []
        for spec in self.config.levels:
            parent = None if spec.parent is None else self.limiters[spec.parent]
            if spec.key is None:
                level = ConcurrencyLimiter(spec.max_running, max_queued=spec.max_queued, name=spec.name, parent=parent)
            else:
                keyed = KeyedConcurrencyLimiter(
                    spec.max_running, max_queued=spec.max_queued, name=spec.name, parent=parent
                )
                level = KeyLevel(keyed, spec.key, random.Random(f'keys:{self.config.name}:{self.seed}:{spec.name}'))
            self.limiters.append(level)
        self._note(f'config {self.config.describe()}')
        try:
            while self.done_ops < self.ops:
                self.steps += 1
                for i in range(self.rng.choice([1, 1, 2, 3])):
                    # A partial yield makes the model consider every prefix of every interleaving:
                    # only with a few runnable tasks.
                    if i and self.rng.random() < 0.35 and self.model.runnable_count() <= 4:
                        n = self.rng.randint(1, 3)
                        self._note(f'yield {n}')
                        await self.h.yield_(n)
                        self.model.explore(quiescent=False)
                        self._check(callers=True)
                    await self._random_action()
                    self.done_ops += 1
                await self._settle()
            await self._drain()
        except FuzzFailure as e:
            raise FuzzFailure(f'{e}\nlast actions:\n' + '\n'.join(self.log[-40:])) from None

    async def _settle(self) -> None:
        await self.h.settle()
        if self.trace:
            counts = ' '.join(
                f'{self._name(i)}={o.running}/{o.waiting}/{o.available}' for i, o in enumerate(self._observe_levels())
            )
            self._note(f'settled: running/waiting/available {counts}, {len(self.model.states)} model state(s)')
        self.model.explore(quiescent=True)
        self._check(callers=True)
        done = [cid for cid, h in self.handles.items() if self._caller_obs(h).status == 'done']
        for cid in done:
            handle = self.handles.pop(cid)
            self.kept += handle.kept
            obs = self._caller_obs(handle)
            self._note(f'c{cid} finished: {obs.outcome}' + (' (had entered)' if obs.entered else ''))
        self.model.retire(done)

    def _observe_levels(self) -> list[LevelObs]:
        out = []
        for lim in self.limiters:
            s = lim.stats()
            out.append(
                LevelObs(
                    lim.running_count,
                    lim.waiting_count,
                    lim.available_count,
                    lim.max_running,
                    (
                        s.running,
                        s.waiting,
                        s.available,
                        s.max_running,
                        s.max_queued,
                        s.acquired_total,
                        s.rejected_total,
                        s.cancelled_total,
                    ),
                )
            )
        return out

    def _caller_obs(self, handle: Handle) -> CallerObs:
        if handle.status == 'new' and self.h.done(handle):
            return CallerObs('done', False, 'cancelled')  # cancelled before its first step
        return CallerObs(handle.status, handle.entered, handle.outcome)

    def _check(self, callers: bool) -> None:
        observed = {cid: self._caller_obs(h) for cid, h in self.handles.items()} if callers else None
        self.model.check(self._observe_levels(), observed)

    # -- the caller task -----------------------------------------------------------------------

    async def _caller(self, handle: Handle) -> None:
        handle.status = 'pending'
        try:
            if handle.spec.mode == 'ctx':
                await self._caller_ctx(handle)
            elif handle.spec.mode == 'idle':
                idle = await self.limiters[handle.spec.level].wait_idle(timeout=handle.spec.timeout)
                handle.finish('idle' if idle else 'notidle')
            else:
                await self._caller_acquire(handle)
        except ConcurrencyLimitExceeded:
            handle.finish('rejected')
        except LimiterClosedError:
            handle.finish('closed')
        except ValueError as e:
            handle.finish('weight' if 'exceeds max_running' in str(e) else f'error ValueError: {e}')
        except TimeoutError:
            handle.finish('timeout')
        except self.h.cancelled_exc:
            handle.finish('cancelled')
            if self.backend == 'trio':
                raise
        except BaseException as e:  # noqa: BLE001 - any other error is a finding
            handle.finish(f'error {type(e).__name__}: {e}')

    async def _caller_ctx(self, handle: Handle) -> None:
        """`async with lim(source)`; with `keep`, the same by hand, keeping `__aenter__()`'s awaitable."""
        spec = handle.spec
        lim = self.limiters[spec.level]
        if spec.inline:
            try:
                async with lim(spec.source, weight=spec.weight, priority=spec.priority):
                    await self._hold(handle)
            except ConcurrencyLimitExceeded:
                handle.finish('rejected')
                return
            handle.finish('left')
            return
        cm = lim(spec.source, weight=spec.weight, priority=spec.priority)
        if spec.keep:
            awaitable = cm.__aenter__()
            handle.kept.append(awaitable)
            await awaitable
            try:
                await self._hold(handle)
            finally:
                await cm.__aexit__(None, None, None)
        else:
            async with cm:
                await self._hold(handle)
        handle.finish('left')

    async def _caller_acquire(self, handle: Handle) -> None:
        """`await lim.acquire(source, timeout=...)`, then `lim.release()` (or the slot goes to the driver)."""
        spec = handle.spec
        lim = self.limiters[spec.level]
        if spec.inline:
            try:
                await lim.acquire(spec.source, timeout=spec.timeout, weight=spec.weight, priority=spec.priority)
            except ConcurrencyLimitExceeded:
                handle.finish('rejected')
                return
        else:
            awaitable = lim.acquire(spec.source, timeout=spec.timeout, weight=spec.weight, priority=spec.priority)
            if spec.keep:
                handle.kept.append(awaitable)
            await awaitable
            del awaitable
        try:
            await self._hold(handle)
        except BaseException:
            self._release(handle, lim)
            raise
        if handle.hand:
            handle.status = 'raw'
            return
        self._release(handle, lim)
        handle.finish('left')

    async def _hold(self, handle: Handle) -> None:
        handle.status = 'body'
        handle.entered = True
        await handle.leave_event.wait()

    def _release(self, handle: Handle, lim: ConcurrencyLimiter) -> None:
        try:
            lim.release(weight=handle.spec.weight)
        except ValueError as e:
            handle.outcome = f'error release() raised ValueError: {e}'

    # -- driver actions ------------------------------------------------------------------------

    def _live_handles(self, *statuses: str) -> list[Handle]:
        return [h for cid, h in sorted(self.handles.items()) if self._caller_obs(h).status in statuses]

    async def _random_action(self) -> None:
        actions: list[tuple[float, Callable[[], None]]] = [
            (weight, action)
            for name, weight, action in [
                ('spawn', 5, self._spawn),
                ('leave', 4, self._leave),
                ('cancel', 2, self._cancel),
                ('try_acquire', 2, self._try_acquire),
                ('release', 2, self._release_raw),
                ('handoff', 2.5, self._handoff),
                ('extra', 1, self._extra_release_action),
                ('resize', 1.2, self._resize),
                ('clock', 1, self._advance),
                ('abandon', 0.4, self._abandon),
                ('close', 0.15 if self.closing else 0.0, self._close),
            ]
            if name not in self.skip
        ]
        total = sum(w for w, _ in actions)
        pick = self.rng.random() * total
        for weight, action in actions:
            pick -= weight
            if pick < 0:
                action()
                return
        actions[-1][1]()

    def _level(self) -> int:
        return self.rng.randrange(len(self.config.levels))

    def _name(self, level: int) -> str:
        return self.config.levels[level].name

    def _new_id(self) -> int:
        cid = self.next_id
        self.next_id += 1
        return cid

    def _live_count(self) -> int:
        return len(self.handles) + len(self.raw)

    def _spawn(self) -> None:
        for _ in range(self.rng.choice([1, 1, 2])):
            if self._live_count() >= MAX_LIVE:
                return
            level = self._level()
            modes = ['ctx', 'acq'] + ([] if 'idle' in self.skip else ['idle'] * (self.rng.random() < 0.3))
            mode = self.rng.choice(modes)
            timeout: float | None = None
            if mode == 'acq':
                small = [1.0, 2.0, 3.0] if self.backend != 'uvloop' else [0.0]
                timeout = self.rng.choice([None, None, None, 0.0, self.rng.choice(small), NEVER])
            elif mode == 'idle':
                timeout = self.rng.choice([None, None, 0.0])
            cid = self._new_id()
            keep = self.rng.random() < 0.15 and 'keep' not in self.skip and mode != 'idle'
            spec = CallerSpec(
                cid,
                level,
                self.config.chain(level),
                mode,
                timeout,
                keep=keep,
                source=self.rng.choice(['s', 's', 't', f'c{cid}']),
                inline=not keep and self.rng.random() < 0.5,
                weight=self._random_weight(),
                priority=0 if 'priorities' in self.skip else self.rng.choice([0, 0, 0, 0, 1, -1, 2]),
            )
            handle = Handle(spec, self.h.event())
            self.handles[cid] = handle
            self._note(f'spawn {spec.describe(self.config)}')
            self.model.spawn(spec)
            self.h.start(handle, self._caller)

    def _random_weight(self) -> int:
        return 1 if 'weights' in self.skip else self.rng.choice([1, 1, 1, 1, 2, 3])

    def _leave(self) -> None:
        candidates = [h for h in self._live_handles('body') if not h.leave_event.is_set()]
        if not candidates:
            return self._spawn()
        handle = self.rng.choice(candidates)
        handle.hand = handle.spec.mode == 'acq' and self.rng.random() < 0.4
        self._note(f'c{handle.spec.cid} leaves' + (' (hands its slot to the driver)' if handle.hand else ''))
        handle.leave_event.set()
        self.model.leave(handle.spec.cid, handle.hand)
        self._check(callers=False)

    def _cancel(self, handle: Handle | None = None) -> None:
        if handle is None:
            pending = self._live_handles('new', 'pending')
            candidates = (
                pending if pending and self.rng.random() < 0.7 else self._live_handles('new', 'pending', 'body')
            )
            if not candidates:
                return
            handle = self.rng.choice(candidates)
        self._note(f'cancel c{handle.spec.cid}')
        self.h.cancel(handle)
        self.model.cancel(handle.spec.cid)
        self._check(callers=False)

    def _try_acquire(self) -> None:
        if self._live_count() >= MAX_LIVE:
            return
        level = self._level()
        cid = self._new_id()
        weight = self._random_weight()
        chain = self.config.chain(level)
        if any(weight > self.limiters[i].max_running for i in chain):
            self._try_acquire_too_heavy(level, weight)
            return
        result = self.limiters[level].try_acquire(weight=weight)
        self._note(
            f'{self._name(level)}.try_acquire(weight={weight}) -> {result}' + (f' (raw slot r{cid})' if result else '')
        )
        spec = CallerSpec(cid, level, chain, 'raw', weight=weight)
        self.model.try_acquire(spec, result)
        if result:
            self.raw.add(cid)
        self._check(callers=False)

    def _try_acquire_too_heavy(self, level: int, weight: int) -> None:
        """`try_acquire(weight=...)` above some level's `max_running`: `ValueError`, nothing changes."""
        before = self._observe_levels()
        self._note(f'{self._name(level)}.try_acquire(weight={weight}) (too heavy)')
        try:
            self.limiters[level].try_acquire(weight=weight)
        except ValueError:
            pass
        else:
            raise FuzzFailure(f'{self._name(level)}.try_acquire(weight={weight}) did not raise ValueError')
        if self._observe_levels() != before:
            raise FuzzFailure(f'{self._name(level)}.try_acquire(weight={weight}) raised but changed counts')
        self._check(callers=False)

    def _close(self) -> None:
        level = self._level()
        self._note(f'{self._name(level)}.close()')
        self.limiters[level].close()
        if not self.limiters[level].closed:
            raise FuzzFailure(f'{self._name(level)}.closed is False after close()')
        self.model.close(level)
        self._check(callers=False)

    def _collect_handed(self) -> None:
        for handle in self._live_handles('raw'):
            cid = handle.spec.cid
            self.kept += self.handles.pop(cid).kept
            self.raw.add(cid)

    def _release_raw(self, cid: int | None = None) -> None:
        self._collect_handed()
        if cid is None:
            if not self.raw:
                return self._try_acquire()
            cid = self.rng.choice(sorted(self.raw))
        spec = self.model.specs[cid]
        self._note(f'{self._name(spec.level)}.release(weight={spec.weight}) of raw slot r{cid}')
        try:
            self.limiters[spec.level].release(weight=spec.weight)
        except ValueError as e:
            raise FuzzFailure(f'{self._name(spec.level)}.release() of a held slot raised ValueError: {e}') from None
        self.raw.discard(cid)
        self.model.release_raw(cid)
        self._check(callers=False)

    def _extra_release(self, level: int) -> None:
        before = self._observe_levels()
        self._note(f'extra {self._name(level)}.release() (nothing releasable)')
        try:
            self.limiters[level].release()
        except ValueError:
            pass
        else:
            raise FuzzFailure(f'{self._name(level)}.release() with nothing releasable did not raise ValueError')
        after = self._observe_levels()
        if after != before:
            changes = [
                f'{self._name(i)}: {b} -> {a}' for i, (b, a) in enumerate(zip(before, after, strict=True)) if a != b
            ]
            raise FuzzFailure(
                f'{self._name(level)}.release() raised ValueError but changed counts:\n' + '\n'.join(changes)
            )
        self._check(callers=False)

    def _extra_release_action(self) -> None:
        levels = [i for i in range(len(self.config.levels)) if self.model.nothing_releasable(i)]
        if levels:
            self._extra_release(self.rng.choice(levels))

    def _front_waiters(self, levels: Iterable[int]) -> list[Handle]:
        """Callers at the front of the queues of `levels` in the first model state: those a release
        of these levels hands a slot to."""
        st = self.model.states[0]
        out = []
        for level in levels:
            queue = st.levels[level].queue
            if queue and queue[0] in self.handles:
                out.append(self.handles[queue[0]])
        return out

    def _handoff(self) -> None:
        self._collect_handed()
        if not self.raw:
            return self._try_acquire()
        cid = self.rng.choice(sorted(self.raw))
        chain = self.model.specs[cid].chain
        targets = self._front_waiters(chain) or self._live_handles('pending')
        target = self.rng.choice(targets) if targets else None
        order = self.rng.choice(['releasefirst', 'cancelfirst'])
        variant = self.rng.choice(['cancel', 'cancel', 'extra', 'both'])
        self._note(f'handoff: {order}, {variant}')
        if variant in ('cancel', 'both') and target is not None and order == 'cancelfirst':
            self._cancel(target)
        self._release_raw(cid)
        if variant in ('cancel', 'both') and target is not None and order == 'releasefirst':
            self._cancel(target)
        if variant in ('extra', 'both') and 'extra' not in self.skip:
            levels = [level for level in chain if self.model.nothing_releasable(level)]
            if levels:
                self._extra_release(self.rng.choice(levels))

    def _resize(self) -> None:
        level = self._level()
        value = self.rng.choice([1, 1, 2, 2, 3, 4])
        self._note(f'{self._name(level)}.max_running = {value} (was {self.limiters[level].max_running})')
        self.limiters[level].max_running = value
        self.model.resize(level, value)
        self._check(callers=False)

    def _advance(self) -> None:
        if self.h.advance():
            self.model.now += 1.0
            self._note(f'clock -> {self.model.now:g}')

    def _abandon(self) -> None:
        level = self._level()
        timeout = self.rng.choice([None, 0.0, NEVER])
        self._note(f'{self._name(level)}.acquire(timeout={timeout}) created and closed, never awaited')
        awaitable: Any = self.limiters[level].acquire('abandoned', timeout=timeout)
        close = getattr(awaitable, 'close', None)
        if close is not None:
            close()
        del awaitable, close
        self.model.abandon(level)
        self._check(callers=False)

    # -- the end of a run ----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Every holder leaves and every raw slot goes back; then every level must be idle."""
        self._note('drain')
        for _ in range(4 * MAX_LIVE + 10):
            self._collect_handed()
            if not self.handles and not self.raw:
                break
            for cid in sorted(self.raw):
                self._release_raw(cid)
            for handle in self._live_handles('body'):
                if not handle.leave_event.is_set():
                    handle.hand = False
                    self._note(f'c{handle.spec.cid} leaves')
                    handle.leave_event.set()
                    self.model.leave(handle.spec.cid, False)
            await self._settle()
        else:
            stuck = ', '.join(f'c{cid} ({h.status})' for cid, h in sorted(self.handles.items()))
            raise FuzzFailure(f'callers never finish: {stuck}')
        self._check_idle('after the drain')
        kept = len(self.kept)
        self.kept.clear()
        gc.collect()
        await self.h.settle()
        self._check_idle(f'after garbage-collecting {kept} kept awaitables' if kept else 'after gc.collect()')

    def _check_idle(self, when: str) -> None:
        problems = []
        for index, (lim, obs) in enumerate(zip(self.limiters, self._observe_levels(), strict=True)):
            name = self._name(index)
            if (obs.running, obs.waiting, obs.available) != (0, 0, lim.max_running):
                problems.append(
                    f'{name}: (running_count, waiting_count, available_count) = '
                    f'{(obs.running, obs.waiting, obs.available)}, expected (0, 0, {lim.max_running})'
                )
        if not self.kept:  # the awaitables kept hold their keys' states
            for index, lim in enumerate(self.limiters):
                if isinstance(lim, KeyLevel) and (keys := len(lim.keyed)) != 0:
                    problems.append(f'{self._name(index)}: len(keyed) = {keys}, expected 0')
        if problems:
            raise FuzzFailure(f'not idle {when}:\n' + '\n'.join(problems))
        self._check(callers=False)


# --------------------------------------------------------------------------------------------
# Campaigns and the command line


def campaign(backends: Iterable[str], configs: Iterable[str], seeds: Iterable[int]) -> list[tuple[str, str, int]]:
    """The runs of a campaign, in a fixed order."""
    return [(b, c, s) for b in backends for c in configs for s in seeds]


@dataclass(frozen=True)
class Options:
    """What every run of a campaign shares."""

    ops: int = 400
    trace: bool = False
    skip: frozenset[str] = frozenset()

    def args(self) -> list[str]:
        """The same options on the command line."""
        return ['--ops', str(self.ops)] + (['--skip', ','.join(sorted(self.skip))] if self.skip else [])


def replay_command(backend: str, config: str, seed: int, opts: Options) -> str:
    extra = ' '.join(opts.args())
    return f'python tests/fuzz_model.py --backend {backend} --config {config} --seeds {seed} {extra} --trace'


def format_failure(result: RunResult, opts: Options) -> str:
    head = f'FAIL backend={result.backend} config={result.config} seed={result.seed} (step {result.steps})'
    return f'{head}\n{result.failure}\nreplay: {replay_command(result.backend, result.config, result.seed, opts)}'


def run_in_process(runs: list[tuple[str, str, int]], opts: Options, start: int = 0, markers: bool = False) -> int:
    """Run `runs[start:]` here (with `markers`, printing `@@` lines for a supervisor). Returns the
    number of failing runs."""
    gc.collect()
    gc.freeze()  # the end-of-run collections then only walk what the runs allocated
    failures = 0
    for index in range(start, len(runs)):
        backend, config, seed = runs[index]
        if markers:
            print(f'@@run {index} {backend} {config} {seed}', flush=True)
        t0 = time.perf_counter()
        result = Runner(backend, config, seed, opts.ops, trace=opts.trace, skip=opts.skip).run()
        took = time.perf_counter() - t0
        if result.failure is not None:
            failures += 1
            print(format_failure(result, opts), flush=True)
        elif result.model_limit is not None:
            print(f'note: run {backend} {config} {seed} stopped early: {result.model_limit}', flush=True)
        if markers:
            print(f'@@{"fail" if result.failure is not None else "ok"} {index} {took:.2f}s', flush=True)
    if markers:
        print('@@end', flush=True)
    return failures


@dataclass
class Finding:
    backend: str
    config: str
    seed: int
    kind: str  # 'fail', 'crash', 'hang'
    text: str


class _Worker:
    """One child process of `supervise`, running `runs[start:]`, and what it reported."""

    def __init__(self, runs: list[tuple[str, str, int]], opts: Options, start: int) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), '--worker', *opts.args(), '--start', str(start)]
        cmd += ['--runs', ';'.join(f'{b},{c},{s}' for b, c, s in runs)]
        self.runs = runs
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.current = -1
        self.tail: list[str] = []
        self.block: list[str] = []
        self.ended = False
        self.hung = False
        self.completed = 0
        self.findings: list[Finding] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line.rstrip('\n'))
        self.lines.put(None)

    def collect(self, hang_timeout: float, echo: Callable[[str], None] | None) -> None:
        """Read the child's output until it exits (or is killed after `hang_timeout` of silence)."""
        while True:
            try:
                line = self.lines.get(timeout=hang_timeout)
            except queue.Empty:
                self.hung = True
                self.proc.kill()
                break
            if line is None:
                break
            if echo is not None and not line.startswith('@@'):
                echo(line)
            self._take(line)
        self.proc.wait()

    def _take(self, line: str) -> None:
        if line.startswith('@@run '):
            self.current, self.tail, self.block = int(line.split()[1]), [], []
        elif line.startswith('@@ok '):
            self.completed += 1
        elif line.startswith('@@fail '):
            self.completed += 1
            b, c, s = self.runs[self.current]
            self.findings.append(Finding(b, c, s, 'fail', '\n'.join(self.block)))
        elif line == '@@end':
            self.ended = True
        else:
            self.block.append(line)
            self.tail = [*self.tail, line][-60:]


def supervise(
    runs: list[tuple[str, str, int]],
    opts: Options,
    hang_timeout: float = 120.0,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[Finding], int]:
    """Run the campaign in child processes: a crash or a hang is recorded against its run and the
    campaign resumes with the next run. Returns the findings and the number of runs completed."""
    findings: list[Finding] = []
    start, completed = 0, 0
    while start < len(runs):
        worker = _Worker(runs, opts, start)
        worker.collect(hang_timeout, echo)
        findings += worker.findings
        completed += worker.completed
        if worker.ended and worker.proc.returncode in (0, 1):
            break
        if worker.current < 0:
            raise RuntimeError(
                f'the fuzz worker failed to start (exit code {worker.proc.returncode}):\n' + '\n'.join(worker.tail)
            )
        b, c, s = runs[worker.current]
        kind = 'hang' if worker.hung else 'crash'
        what = f'no output for {hang_timeout:g}s' if worker.hung else f'exit code {worker.proc.returncode}'
        text = f'{kind.upper()} backend={b} config={c} seed={s}: {what}\n' + '\n'.join(worker.tail[-40:])
        findings.append(Finding(b, c, s, kind, f'{text}\nreplay: {replay_command(b, c, s, opts)}'))
        completed += 1
        start = worker.current + 1
    return findings, completed


def parse_seeds(text: str) -> list[int]:
    """`A..B` (inclusive) ranges and single seeds, comma-separated."""
    out: list[int] = []
    for part in text.split(','):
        if '..' in part:
            a, b = part.split('..')
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def parse_configs(text: str) -> tuple[str, ...]:
    """Configuration names, shapes (both queue variants) or `all`, comma-separated."""
    out: list[str] = []
    for name in text.split(','):
        if name == 'all':
            out += CONFIGS
        elif name in SHAPES:
            out += [f'{name}-{queues}' for queues in QUEUES]
        elif name in CONFIGS:
            out.append(name)
        else:
            raise ValueError(f'unknown configuration {name!r} (one of {", ".join(CONFIGS)}, a shape, or all)')
    return tuple(out)


ACTIONS = ('spawn', 'leave', 'cancel', 'try_acquire', 'release', 'handoff', 'extra', 'resize', 'clock', 'abandon')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='fuzz_model',
        description='Model-based fuzzing of ferrolimit.ConcurrencyLimiter (see the module docstring).',
    )
    parser.add_argument('--ops', type=int, default=400, help='driver actions per run (default 400)')
    parser.add_argument('--seeds', default='0..9', help='seeds: A..B (inclusive), or a comma-separated list')
    parser.add_argument('--backend', default='all', help=f'{", ".join(BACKENDS)} or all (comma-separated)')
    parser.add_argument('--config', default='all', help=f'{", ".join(CONFIGS)}, a shape, or all (comma-separated)')
    parser.add_argument('--skip', default='', help=f'actions not to use: {", ".join(ACTIONS)}, keep (comma-separated)')
    parser.add_argument('--isolate', action='store_true', help='run in child processes; survive crashes and hangs')
    parser.add_argument('--jobs', type=int, default=1, help='with --isolate: child processes at once (default 1)')
    parser.add_argument('--trace', action='store_true', help='print every action as it happens')
    parser.add_argument('--hang-timeout', type=float, default=120.0, help='with --isolate: seconds without output')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--runs', help=argparse.SUPPRESS)
    parser.add_argument('--start', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    faulthandler.enable()
    skip = frozenset(filter(None, args.skip.split(',')))
    if unknown := skip - {*ACTIONS, 'keep'}:
        parser.error(f'unknown actions to skip: {", ".join(sorted(unknown))}')
    opts = Options(args.ops, args.trace, skip)

    if args.worker:
        runs = [(b, c, int(s)) for b, c, s in (r.split(',') for r in args.runs.split(';'))]
        return 1 if run_in_process(runs, opts, args.start, markers=True) else 0

    backends = BACKENDS if args.backend == 'all' else tuple(args.backend.split(','))
    if unknown_backends := [b for b in backends if b not in BACKENDS]:
        parser.error(f'unknown backend {unknown_backends[0]!r}')
    try:
        configs = parse_configs(args.config)
    except ValueError as e:
        parser.error(str(e))
    runs = campaign(backends, configs, parse_seeds(args.seeds))
    import ferrolimit

    print(f'fuzzing {ferrolimit.__file__} ({len(runs)} runs)', flush=True)
    t0 = time.perf_counter()
    if args.isolate:
        jobs = max(1, min(args.jobs, len(runs)))
        with ThreadPoolExecutor(jobs) as pool:
            shards = [pool.submit(supervise, runs[i::jobs], opts, args.hang_timeout, print) for i in range(jobs)]
            results = [shard.result() for shard in shards]
        findings = [f for shard_findings, _ in results for f in shard_findings]
        failed, completed = len(findings), sum(n for _, n in results)
        for finding in findings:
            if finding.kind != 'fail':  # a failure's report was already echoed from the child
                print(finding.text, flush=True)
        if findings:
            print('findings:', flush=True)
            for f in sorted(findings, key=lambda f: (f.backend, f.config, f.seed)):
                print(f'  {f.kind:5} backend={f.backend} config={f.config} seed={f.seed}', flush=True)
    else:
        failed, completed = run_in_process(runs, opts), len(runs)
    print(f'{completed} runs of {args.ops} actions, {failed} failing, in {time.perf_counter() - t0:.1f}s', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
