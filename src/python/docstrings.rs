//! The Python docstrings of the native module's classes, methods, properties and functions,
//! generated from `python/ferrolimit/_ferrolimit.pyi` by `scripts/docstrings.py`: edit the stubs
//! and run `python scripts/docstrings.py` (a test fails while this file is out of date).
//!
//! `docstring!(Class)`, `docstring!(Class.member)` or `docstring!(function)` is the text, for
//! `#[doc = ...]` on the item.

macro_rules! docstring {
    (BlockingContext) => {
        "Context manager holding one slot for its block, on a plain thread (see `blocking()`)."
    };
    (ConcurrencyGovernor) => {
        "Bounds concurrent LLM streams, concurrent tool executions, and both together.

Three limiters: `stream_limiter` (`max_streams` slots, named `stream`) and `tool_limiter`
(`max_tools` slots, named `tool`), both nested under `global_limiter` (`max_global` slots,
named `global`). Each `stream()` or `tool()` holds a slot of its category and a global slot.

Guarantees:

- never more than `max_streams` streams, `max_tools` tool executions and `max_global` of both
  together at once;
- a caller never holds a global slot while it waits for its category's slot: a burst of tool
  calls beyond `max_tools`, however long its queue, never keeps a stream from starting while a
  global slot is free (and the other way round);
- slots go to waiters in FIFO order, within a category and at the global level across both;
- a caller that is cancelled or times out at either level neither takes nor loses a slot.

Any `max_global` of at least 1 is accepted: below `max_streams + max_tools` the categories
share the global slots, and below either category's limit it is that category's effective
limit too.

Example:
```python
from ferrolimit import ConcurrencyGovernor

governor = ConcurrencyGovernor(max_streams=4, max_tools=8, max_global=16)

async def stream_response() -> None:
    async with governor.stream():
        ...

async def run_tool() -> None:
    async with governor.tool('tool:search'):
        ...

def maybe_run_tool_now() -> bool:
    permit = governor.try_tool()
    if permit is None:
        return False
    with permit:
        ...
    return True
```

Create the governor.

Args:
    max_streams: Maximum concurrent streams. Must be >= 1 (and at most 2147483647).
    max_tools: Maximum concurrent tool executions. Must be >= 1.
    max_global: Maximum streams and tool executions together. Must be >= 1.
    tracer: OpenTelemetry tracer for the wait spans of all three limiters.
    meter: OpenTelemetry meter for the metrics of all three limiters (attributed with
        `limiter_name` `stream`, `tool` and `global`).

Raises:
    UserError: If a limit is less than 1 (`max_tools must be >= 1, got 0`).
    TypeError: If a limit is not an int.
    ValueError: If a limit is larger than 2147483647."
    };
    (ConcurrencyGovernor . global_limiter) => {
        "The global limiter."
    };
    (ConcurrencyGovernor . stats) => {
        "The free and total slots of each layer."
    };
    (ConcurrencyGovernor . stream) => {
        "`async with governor.stream():` holds a stream slot and a global slot for the block.

A caller that waits opens `waiting for stream concurrency` while it waits for the stream
slot and `waiting for global concurrency` while it waits for the global one.

Args:
    source: Identifier for observability (the spans' `source` attribute)."
    };
    (ConcurrencyGovernor . stream_limiter) => {
        "The stream limiter (its `parent` is `global_limiter`); usable wherever a limiter is."
    };
    (ConcurrencyGovernor . tool) => {
        "`async with governor.tool():` holds a tool slot and a global slot for the block.

Args:
    source: Identifier for observability (the spans' `source` attribute)."
    };
    (ConcurrencyGovernor . tool_limiter) => {
        "The tool limiter (its `parent` is `global_limiter`); usable wherever a limiter is."
    };
    (ConcurrencyGovernor . try_stream) => {
        "Take a stream slot and a global slot if both are free (and nobody is queued); never waits.

Returns:
    A permit holding both, or `None` (holding nothing)."
    };
    (ConcurrencyGovernor . try_tool) => {
        "Take a tool slot and a global slot if both are free (and nobody is queued); never waits.

Returns:
    A permit holding both, or `None` (holding nothing)."
    };
    (ConcurrencyLimiter) => {
        "A concurrency limiter with a bounded FIFO queue, backed by Rust.

A drop-in for `pydantic_ai.concurrency.ConcurrencyLimiter`: the same constructor, properties,
errors, messages and OpenTelemetry span. It also guarantees what pydantic-ai's does not:

- never more than `max_running` slots are held;
- a released slot goes to the oldest waiter (FIFO), and a newcomer never overtakes a waiter;
  waiters on one event loop resume in the order their slots were handed over, wherever the
  releases came from;
- `max_queued` is exact: N simultaneous arrivals admit exactly the free queue places, and
  `waiting_count` counts every queued caller at once;
- a waiter that is cancelled or times out neither takes nor loses a slot, even if a slot was
  handed to it at that instant;
- slots are not owned by tasks: `release()` may run on any task or thread, and one limiter can
  be shared by any number of tasks, threads and event loops.

A limiter created with `parent=` nests under another: each of its slots is also a slot of the
parent, taken only once its own is held (a caller queued for it holds nothing of the parent,
so it never keeps a sibling from the parent's free slots) and released with it.

Taking a free slot touches neither the event loop nor a lock. Only a caller that has to wait
opens a span, `waiting for {name or source} concurrency`, with the attributes `source`,
`waiting_count`, `max_running`, `limiter_name` (if named) and `max_queued` (if set).

A limiter is one process's: after `os.fork()` the child has a copy with the counts of the
moment of the fork. A caller that was waiting on one of the parent's event loops then is
copied into the child's queue too, where no loop resumes it, and the slot handed to it is
never given back. Fork only while nobody waits on a limiter, or create limiters after the
fork (as multiprocessing's spawn start method does); `RedisConcurrencyLimiter` is fork-safe.

Example:
```python
from ferrolimit import ConcurrencyLimiter, get_concurrency_context

limiter = ConcurrencyLimiter(max_running=10, max_queued=100, name='openai')

async def call_model() -> None:
    async with get_concurrency_context(limiter, 'model:gpt-4o'):
        ...
```

Create the limiter.

Args:
    max_running: Maximum number of concurrent operations. Must be >= 1 (and at most
        2147483647).
    max_queued: Maximum queue depth before `acquire` raises `ConcurrencyLimitExceeded`.
        Must be >= 0; `None` for an unbounded queue.
    name: Optional name, used in spans and errors when the limiter is shared.
    tracer: OpenTelemetry tracer for the wait span; the global tracer by default.
    meter: OpenTelemetry meter for the limiter's metrics (`ferrolimit.running` and
        `ferrolimit.waiting` gauges, `ferrolimit.wait_time` histogram, `ferrolimit.rejected`
        counter, attributed with `limiter_name`); none are recorded without one.
    parent: Another ferrolimit limiter to nest this one under. Every acquire then takes a
        slot of this limiter and, once it holds it, one of `parent` (waiting in the
        parent's own FIFO queue, in the parent's own span, with the same source); every
        release gives back both. The parent keeps its own limits, name, tracer and meter,
        and several limiters may share one parent. `running_count` counts callers holding
        this limiter's slot, including those still waiting for the parent's.

Raises:
    UserError: If `max_running` is less than 1, or `max_queued` is less than 0.
    TypeError: If a limit is not an int (a `bool` is not taken for one), `parent` is not a
        ferrolimit `ConcurrencyLimiter`, or `tracer` has no `start_span`.
    ValueError: If a limit is larger than ferrolimit can count."
    };
    (ConcurrencyLimiter . _get_tracer) => {
        "The tracer, falling back to the global `ferrolimit` tracer if none was given."
    };
    (ConcurrencyLimiter . _max_queued) => {
        "The queue bound (`None` when unbounded), read by pydantic-ai's tests."
    };
    (ConcurrencyLimiter . acquire) => {
        "Acquire a slot, waiting in FIFO order if none is free (`await limiter.acquire(...)`).

As with an `async def`, calling `acquire()` takes nothing: it returns a coroutine that
takes the slot when it is first awaited (a free slot at once, on that first step). So it
can be given to `asyncio.create_task`, `asyncio.wait_for`, `asyncio.gather` or trio's
`start_soon`, and one that is dropped, closed or cancelled before it runs takes nothing.
Works on asyncio (uvloop too) and trio.

Args:
    source: Identifier for observability (e.g. 'model:gpt-4o').
    timeout: Give up after this many seconds; `None`, infinity or any timeout of 2**32
        seconds (about 136 years) or more waits as long as it takes.
    weight: How many slots to take at once (tokio's `acquire_many`), for a budget counted
        in units: with `max_running=200_000` as a token budget, `weight` is a request's
        tokens. The queue stays FIFO with head-of-line blocking: a heavy waiter at the
        head is never overtaken by a lighter, later one. Pair it with
        `release(weight=weight)`.
    priority: Higher is served first, FIFO within one priority. It only orders the queue
        and holders are never pre-empted: a newcomer never overtakes a queued caller of
        its own or a higher priority (it takes free slots at once only if it outranks
        everyone queued and they fit, e.g. beside a heavy head waiting for more). Strict
        priorities starve the lower ones for as long as higher ones keep coming.

Raises:
    ConcurrencyLimitExceeded: If `max_queued` callers are already waiting (here or, with a
        parent, at the parent: then this limiter's slot is given back).
    LimiterClosedError: If the limiter is closed (`close()`), or is closed while waiting.
    TimeoutError: If no slot came within `timeout` (with a parent: no slot of both);
        nothing is taken or lost.
    TypeError: If `source` is not a str (`None` included: leave it out for 'unnamed'), or
        `timeout` not a number (a `bool` is not one), or `weight` or `priority` not an int.
    ValueError: If `timeout` is negative or NaN, `weight` is less than 1 or more than
        `max_running` (this limiter's or a parent's; also when a resize shrinks it below
        the weight of a queued waiter), or `priority` does not fit 32 bits."
    };
    (ConcurrencyLimiter . acquire_blocking) => {
        "Acquire a slot from a plain thread, blocking it until one is free (FIFO with all waiters).

The GIL is released while waiting, and Ctrl-C (`KeyboardInterrupt`) interrupts the wait
promptly without losing anything. Pair it with one `release(weight=weight)`. On a thread
that runs an event loop it takes a free slot but refuses to wait (the wait would freeze
the loop): there, use `await acquire()`.

Args:
    source: Identifier for observability.
    timeout: Give up after this many seconds; `None`, infinity or 2**32 seconds or more
        waits as long as it takes.
    weight: How many slots to take at once, as for `acquire`.
    priority: Higher is served first, as for `acquire`.

Raises:
    ConcurrencyLimitExceeded: If `max_queued` callers are already waiting.
    LimiterClosedError: If the limiter is closed, or is closed while waiting.
    RuntimeError: If it would have to wait on a thread that runs an event loop (asyncio,
        uvloop or trio); nothing is taken.
    TimeoutError: If no slot came within `timeout`.
    TypeError: If `source` is not a str, `timeout` not a number, or `weight` or
        `priority` not an int.
    ValueError: If `timeout` is negative or NaN, or `weight` or `priority` is out of
        range (as for `acquire`)."
    };
    (ConcurrencyLimiter . available_count) => {
        "Number of free slots right now."
    };
    (ConcurrencyLimiter . blocking) => {
        "`with limiter.blocking(source):` holds one slot (or `weight` slots) for the block, from a plain thread.

The arguments and errors are those of `acquire_blocking`; leaving the block releases
`weight` slots.

Example:
```python
with limiter.blocking('worker'):
    call_the_api()
```"
    };
    (ConcurrencyLimiter . close) => {
        "Stop admitting: a graceful shutdown, with `wait_idle()`.

From now on every queued waiter and every new acquire raises `LimiterClosedError`, and
`try_acquire()` returns False. Holders keep their slots and release them as usual (a
waiter handed its slots just before the close may keep them). Idempotent; a parent is
not closed with its child, but a child's callers are refused by a closed parent.

Example:
```python
limiter.close()
if not await limiter.wait_idle(timeout=30):
    print('some calls are still running')
```"
    };
    (ConcurrencyLimiter . closed) => {
        "Whether `close()` was called."
    };
    (ConcurrencyLimiter . from_limit) => {
        "Create a limiter from an int or a `ConcurrencyLimit` (ferrolimit's or pydantic-ai's).

Args:
    limit: Either an int for simple limiting or a `ConcurrencyLimit` for full config.
    name: Optional name for this limiter, used for observability.
    tracer: OpenTelemetry tracer for span creation.
    meter: OpenTelemetry meter for the limiter's metrics.

Returns:
    A configured limiter.

Raises:
    TypeError: If `limit` is neither an int nor a `ConcurrencyLimit`."
    };
    (ConcurrencyLimiter . max_running) => {
        "Maximum concurrent operations allowed."
    };
    (ConcurrencyLimiter . name) => {
        "Name of the limiter for observability."
    };
    (ConcurrencyLimiter . parent) => {
        "The limiter this one is nested under (`parent=`), if any."
    };
    (ConcurrencyLimiter . release) => {
        "Release `weight` slots, handing them to the oldest waiters that fit.

May be called from any task or thread, not only the one that acquired. With a parent,
releases the parent's slots too.

Raises:
    TypeError: If `weight` is not an int.
    ValueError: If fewer than `weight` slots are held (`semaphore released too many
        times for <name>`, without the name if the limiter has none; with a parent, a
        caller still waiting for the parent's slot holds none, and slots just handed to a
        waiter that has not resumed yet are that waiter's);
        nothing changes, at this level or any other. Also if `weight` is less than 1."
    };
    (ConcurrencyLimiter . running_count) => {
        "Number of slots held right now (with a parent: including callers waiting for the parent's)."
    };
    (ConcurrencyLimiter . stats) => {
        "A consistent snapshot of all counts and lifetime totals."
    };
    (ConcurrencyLimiter . try_acquire) => {
        "Take `weight` slots only if they are free and nobody is queued; never waits.

With a parent, takes the slots of both or of neither.

Returns:
    Whether the slots were taken (pair it with one `release(weight=weight)`); `False`
    once the limiter is closed.

Raises:
    TypeError: If `weight` is not an int.
    ValueError: If `weight` is less than 1, or more than `max_running` (this limiter's
        or a parent's): it could never be taken."
    };
    (ConcurrencyLimiter . wait_idle) => {
        "Wait until no slot is held (at once if none is); on asyncio or trio.

It takes no slot and is not a waiter (not in `waiting_count`, not under `max_queued`),
and slots passed from one holder straight to a waiter do not make the limiter idle.

Args:
    timeout: Give up after this many seconds (`None` waits as long as it takes).

Returns:
    True once the limiter is idle, False if `timeout` passed first.

Raises:
    TypeError: If `timeout` is not a number.
    ValueError: If `timeout` is negative or NaN."
    };
    (ConcurrencyLimiter . waiting_count) => {
        "Number of callers queued for a slot right now."
    };
    (ConcurrencyPermit) => {
        "A stream or tool slot held together with a global slot, from `try_stream()` or `try_tool()`.

Release it with `release()` or by using it as a context manager (`with permit: ...`). A permit
that is garbage-collected while still held is released then, as a Rust permit is on drop."
    };
    (ConcurrencyPermit . release) => {
        "Release both slots; may be called from any task or thread.

Raises:
    ValueError: If the permit was already released (`permit already released`); nothing
        changes."
    };
    (ConcurrencyPermit . released) => {
        "Whether the permit has been released."
    };
    (GovernorStats) => {
        "A snapshot of a governor's free and total slots per layer.

Each layer is read at its own instant. A caller holding a stream or tool slot while it waits
for a global slot uses the category slot but no global slot. Each limiter's `stats()` has the
rest (waiting callers, totals)."
    };
    (GovernorStats . global_available) => {
        "Global slots free."
    };
    (GovernorStats . global_max) => {
        "The limit on streams and tool executions together."
    };
    (GovernorStats . streams_available) => {
        "Stream slots free."
    };
    (GovernorStats . streams_max) => {
        "The limit on concurrent streams."
    };
    (GovernorStats . tools_available) => {
        "Tool slots free."
    };
    (GovernorStats . tools_max) => {
        "The limit on concurrent tool executions."
    };
    (KeyedConcurrencyLimiter) => {
        "One independent limit per key (a `str`: a user, a tenant, an API key), backed by Rust.

Every key has its own `max_running` slots and its own FIFO queue (bounded by `max_queued`,
per key), with the weights, priorities and errors of `ConcurrencyLimiter`. With `parent=`,
every key's slots are also slots of that one limiter: per user 2, all users together 50.

A key is in use while it has a holder or a waiter, or an acquire coroutine, context manager
or blocking context made for it is alive; its state is dropped once it is not. That happens
lazily: each new key reclaims up to two unused states, releases through the keyed limiter
reclaim their own key's, and `len()` reclaims all (it counts the keys in use exactly). So a
million distinct keys used one after another leave `len(keyed) == 0` and no memory behind,
and unused states never outnumber the peak of keys in use. Reading a key nobody uses
(`running_count`, `stats`, ...) gives zeros and creates nothing.

Spans and errors name the limiter (or the source), never the key, and metrics (`meter=`) are
attributed by limiter name only, summed over the keys: keys are unbounded, names of spans and
metric series should not be. `rate=` (requests and tokens per period) is not available yet.

Example:
```python
from ferrolimit import ConcurrencyLimiter, KeyedConcurrencyLimiter

provider = ConcurrencyLimiter(50, name='openai')
per_user = KeyedConcurrencyLimiter(2, name='per-user', parent=provider)

async def answer(user_id: str) -> None:
    async with per_user(user_id, 'chat'):
        ...  # at most 2 per user, 50 in all
```

Create the keyed limiter; the arguments are those of `ConcurrencyLimiter`, per key.

Raises:
    UserError: If `max_running` is less than 1, or `max_queued` is less than 0.
    TypeError: If a limit is not an int, `parent` is not a ferrolimit
        `ConcurrencyLimiter`, or `tracer` has no `start_span`.
    ValueError: If a limit is larger than ferrolimit can count."
    };
    (KeyedConcurrencyLimiter . acquire) => {
        "Acquire a slot of `key` (and of the parent), waiting in FIFO order among that key's callers.

The arguments after `key` and the errors are those of `ConcurrencyLimiter.acquire`. Pair
it with `release(key, weight=weight)`.

Raises:
    TypeError: If `key` is not a str (as on every method), or an argument has the wrong type."
    };
    (KeyedConcurrencyLimiter . acquire_blocking) => {
        "Acquire a slot of `key` from a plain thread, as `ConcurrencyLimiter.acquire_blocking`."
    };
    (KeyedConcurrencyLimiter . available_count) => {
        "Free slots of `key` right now (`max_running` for a key nobody uses)."
    };
    (KeyedConcurrencyLimiter . blocking) => {
        "`with keyed.blocking(key, source):` holds a slot of `key` for the block, from a plain thread."
    };
    (KeyedConcurrencyLimiter . close) => {
        "Stop admitting on every key, as `ConcurrencyLimiter.close()`; holders keep their slots."
    };
    (KeyedConcurrencyLimiter . closed) => {
        "Whether `close()` was called."
    };
    (KeyedConcurrencyLimiter . max_queued) => {
        "Each key's queue bound (`None` when unbounded)."
    };
    (KeyedConcurrencyLimiter . max_running) => {
        "Slots per key."
    };
    (KeyedConcurrencyLimiter . name) => {
        "Name of the limiter for observability."
    };
    (KeyedConcurrencyLimiter . parent) => {
        "The limiter every key is nested under (`parent=`), if any."
    };
    (KeyedConcurrencyLimiter . release) => {
        "Release `weight` slots of `key`, handing them to that key's oldest waiters that fit.

Raises:
    ValueError: If `key` holds fewer than `weight` slots (a key nobody uses holds none);
        nothing changes."
    };
    (KeyedConcurrencyLimiter . running_count) => {
        "Slots of `key` held right now (0 for a key nobody uses)."
    };
    (KeyedConcurrencyLimiter . stats) => {
        "A consistent snapshot of the counts of `key` (zeros for a key nobody uses; asking creates nothing)."
    };
    (KeyedConcurrencyLimiter . try_acquire) => {
        "Take `weight` slots of `key` only if they are free and nobody of `key` is queued; never waits.

Returns:
    Whether the slots were taken; `False` once closed.

Raises:
    ValueError: If `weight` is less than 1 or more than `max_running` (or the parent's)."
    };
    (KeyedConcurrencyLimiter . wait_idle) => {
        "Wait until every key that holds a slot now has held none (at once if no key holds one).

Each key is waited for as `ConcurrencyLimiter.wait_idle` waits (a slot passed from a
holder straight to a waiter does not make a key idle); keys taken after the call are not
waited for, so a busy limiter cannot keep the caller waiting forever. After `close()`,
it returns once the last slot is released. On asyncio or trio.

Args:
    timeout: Give up after this many seconds (`None` waits as long as it takes).

Returns:
    True once each of those keys has been idle, False if `timeout` passed first.

Raises:
    TypeError: If `timeout` is not a number.
    ValueError: If `timeout` is negative or NaN."
    };
    (KeyedConcurrencyLimiter . waiting_count) => {
        "Callers of `key` queued right now."
    };
    (LimiterContext) => {
        "Async context manager holding one slot of a limiter for its block.

Returned by `get_concurrency_context` and `ConcurrencyLimiter.__call__`. It holds no state of
its own between uses, so one instance may be entered by many tasks at once."
    };
    (LimiterStats) => {
        "A consistent snapshot of a limiter, taken at one instant."
    };
    (LimiterStats . acquired_total) => {
        "Slots handed out since the limiter was created."
    };
    (LimiterStats . available) => {
        "Free slots."
    };
    (LimiterStats . cancelled_total) => {
        "Waits given up (cancelled or timed out) before using a slot."
    };
    (LimiterStats . max_queued) => {
        "The queue bound, `None` when unbounded."
    };
    (LimiterStats . max_running) => {
        "The limit on holders."
    };
    (LimiterStats . rejected_total) => {
        "Arrivals refused because the queue was full."
    };
    (LimiterStats . running) => {
        "Slots held."
    };
    (LimiterStats . waiting) => {
        "Callers queued."
    };
    (RedisConcurrencyLimiter) => {
        "A concurrency limiter shared by every process that uses the same Redis key.

The same interface as `ConcurrencyLimiter` (`acquire(source, *, timeout, weight, priority)`,
`try_acquire`, `acquire_blocking`, `blocking()`, `release(*, weight)`, `async with
limiter(source, ...)`, `stats()`, a settable `max_running`, `close()`, `closed`,
`wait_idle()`, `get_concurrency_context`, the counts, `_max_queued`, `_get_tracer()` and the
same wait span), so it works with `Agent(max_concurrency=...)` and `ConcurrencyLimitedModel`.
Everything is fleet-wide (resizing included) except `close()` and `wait_idle()`, which
concern the callers of this one limiter object. Guarantees:

- never more than `max_running` slots are held across all processes sharing `key` (a
  caller of weight `w` holds `w`); the limit lives in Redis: the first limiter to use the key
  stores its `max_running`, `limiter.max_running = n` changes it for everyone, and a limiter
  built with another value follows the stored one (and warns once, see `other_max_running`);
  a limiter that set or saw a resize stores the resized value, also over a built value or an
  earlier resize it finds stored while nobody holds or awaits the key (the later of two
  resizes is never undone so; resizes are ordered by the clocks of the processes that made
  them);
- waiters are admitted by priority, then in arrival order across processes (FIFO, no
  barging, head-of-line blocking for weights), exactly as in `ConcurrencyLimiter`;
- `max_queued` bounds the fleet-wide queue atomically (one server-side script decides);
- each held slot is a lease renewed in the background while held: a process that dies
  (even `kill -9`) loses its slots within `lease_seconds`, and its waiters leave the queue
  as fast;
- a release wakes the next waiter at once (Redis pub/sub; polling is only a fallback);
- releases are fenced by the slot's token: a holder whose lease ran out (it was paused longer
  than the lease) can never free the slot its successor holds;
- every key the limiter creates expires once the key is idle (no holder and no waiter for
  about three leases), so a million keys used once leave nothing behind;
- if Redis restarts and keeps its data (RDB or AOF persistence), nothing changes; if it loses
  its data, nobody is admitted for one lease while the running processes re-register their
  slots. Only a process that first talks to Redis after the loss, before any process from
  before it (or that did not talk to it for longer than the idle expiry), can then be
  admitted beyond the limit (nothing left in Redis tells it that slots were held): turn
  persistence on, or, as Redlock advises, keep a Redis that lost its data unreachable for
  one lease before it serves again.

Slots are not owned by tasks: `release(weight=w)` gives back `w` of the slots this limiter
object holds, from any task or thread, and returns at once (the Redis round trip runs in the
background; this object's own counts and acquires wait for it). The counts, `stats()`,
`try_acquire()` and setting `max_running` are one blocking round trip each (the GIL is
released meanwhile).

After `os.fork()` (`gunicorn --preload`, `multiprocessing` with the fork start method), a
limiter created in the parent opens its own connections and I/O threads in the child on first
use there, as redis-py's connection pool does; the slots the parent holds stay the parent's
(`held_count` starts at 0 in the child).

Redis I/O runs on a small tokio runtime shared by the process (two threads), and every
limiter of the process on one server URL shares one command connection and one pub/sub
subscription, whatever the number of keys. If Redis is
unreachable, `acquire` raises `ConcurrencyBackendError` at once rather than hanging, or, with
`fail_open=True`, proceeds without limiting and records that on the wait span (attribute
`fail_open`, and the error as an exception event). The connection comes back on its own.

Example:
```python
from ferrolimit import RedisConcurrencyLimiter

limiter = RedisConcurrencyLimiter('redis://127.0.0.1:6379/0', 'llm:openai', max_running=8)

async def call_model() -> None:
    async with limiter('model:gpt-4o'):
        ...
```

Create the limiter; it connects on first use.

Args:
    redis_url: The server, as `redis://[user:password@]host[:port][/db]` (`user` an
        ACL user; `unix:///path/to/socket` for a local socket), or `rediss://...` for
        TLS, which trusts the system's roots (or the bundle `SSL_CERT_FILE` names) unless
        the URL's query says otherwise, with redis-py's parameters: `ssl_ca_certs=<path>`
        (a CA bundle, PEM), `ssl_certfile=<path>` and `ssl_keyfile=<path>` (a client
        certificate and its key), `ssl_cert_reqs=none` (no verification of the
        server's certificate: for tests only). A wrong password, missing credentials or
        an untrusted certificate raise `ConcurrencyBackendError` at the first use, naming
        the cause (`(auth)`, `certificate`); the password is never in a message.
    key: The name the fleet shares. The limiter uses Redis keys named `{key}:...`
        (`holders`, `queue`, `waiters`, `seq`, `epoch`, `recovering`, `limit`, `weights`,
        `places`, `used`), which expire once idle, and the channel `{key}:wake`.
    max_running: Maximum number of slots held across the fleet, stored in Redis by the
        first limiter to use the key. Must be >= 1.
    max_queued: Maximum fleet-wide queue depth before `acquire` raises
        `ConcurrencyLimitExceeded`. Must be >= 0; `None` for an unbounded queue.
    lease_seconds: How long a slot survives its holder's death (renewed every third of
        it while held). From 0.03 to 86400 (a day).
    name: Optional name, used in spans and errors.
    tracer: OpenTelemetry tracer for the wait span; the global tracer by default.
    fail_open: When Redis is unreachable, let `acquire` proceed without limiting instead
        of raising `ConcurrencyBackendError`.

Raises:
    UserError: If `max_running` is less than 1, or `max_queued` is less than 0.
    TypeError: If an argument has the wrong type.
    ValueError: For an invalid URL, an empty key, or a lease out of range."
    };
    (RedisConcurrencyLimiter . _get_tracer) => {
        "The tracer the wait span goes to."
    };
    (RedisConcurrencyLimiter . _max_queued) => {
        "The fleet-wide queue bound (read by pydantic-ai's tests)."
    };
    (RedisConcurrencyLimiter . acquire) => {
        "Acquire fleet-wide slots, waiting by priority and arrival if too few are free.

Only a caller that has to wait opens the span `waiting for {name or source} concurrency`.
Works on asyncio and trio.

Args:
    source: Identifier for observability (e.g., 'model:gpt-4o').
    timeout: Give up after this many seconds (the place in the queue is left); `None`,
        infinity or 2**32 seconds or more waits as long as it takes.
    weight: How many slots to take at once, as for `ConcurrencyLimiter.acquire` (a
        fleet-wide token budget). Pair it with `release(weight=weight)`.
    priority: Higher is served first across the fleet, FIFO within one priority, as for
        `ConcurrencyLimiter.acquire` (strict priorities can starve the lower ones).

Raises:
    ConcurrencyLimitExceeded: If the fleet-wide queue already holds `max_queued` waiters.
    ConcurrencyBackendError: If Redis cannot be used (unreachable without `fail_open`, a
        key of the wrong type, or the queue place expired while this process was paused).
    LimiterClosedError: If this limiter object is closed, or is closed while waiting.
    TimeoutError: If no slot came within `timeout`.
    TypeError: If `source` is not a str, `timeout` not a number, or `weight` or
        `priority` not an int.
    ValueError: If `timeout` is negative or NaN, `weight` is less than 1 or more than the
        fleet's `max_running` (also when a resize shrinks it below the weight of a
        queued waiter), or `priority` does not fit 32 bits."
    };
    (RedisConcurrencyLimiter . acquire_blocking) => {
        "Acquire fleet-wide slots from a plain thread (Celery, gunicorn sync workers, Django views).

The same queue and arguments as `acquire`; the GIL is released while waiting, and Ctrl-C
(`KeyboardInterrupt`) interrupts the wait without losing anything. On a thread that runs
an event loop it takes a free slot but refuses to wait (the wait would freeze the loop):
there, use `await acquire()`. Pair it with one `release(weight=weight)`. It raises the
errors of `acquire`, and one more:

Raises:
    RuntimeError: If it would have to wait on a thread that runs an event loop (asyncio,
        uvloop or trio); nothing is taken."
    };
    (RedisConcurrencyLimiter . available_count) => {
        "Free slots across the fleet, read from Redis.

Raises:
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisConcurrencyLimiter . blocking) => {
        "`with limiter.blocking(source):` holds fleet-wide slots for the block, from a plain thread.

The arguments and errors are those of `acquire_blocking`; leaving the block releases
`weight` slots.

Example:
```python
with limiter.blocking('celery-task'):
    call_the_api()
```"
    };
    (RedisConcurrencyLimiter . close) => {
        "Stop admitting through this limiter object: a graceful shutdown, with `wait_idle()`.

From now on its queued waiters and its new acquires raise `LimiterClosedError`, and
`try_acquire()` returns False; holders keep their slots and release them as usual.
Other limiter objects on the key, in this process or others, are not affected.
Idempotent."
    };
    (RedisConcurrencyLimiter . closed) => {
        "Whether `close()` was called on this object."
    };
    (RedisConcurrencyLimiter . fail_open) => {
        "Whether `acquire` proceeds without limiting when Redis is unreachable."
    };
    (RedisConcurrencyLimiter . held_count) => {
        "Slots this limiter object holds, weights counted (no Redis round trip)."
    };
    (RedisConcurrencyLimiter . key) => {
        "The Redis key the fleet shares."
    };
    (RedisConcurrencyLimiter . lease_seconds) => {
        "How long a held slot survives without renewal."
    };
    (RedisConcurrencyLimiter . lost_count) => {
        "Leases of this limiter object that ran out while held.

That happens when the process was paused, or Redis was unreachable, for longer than a
lease. Releasing such a slot frees nothing."
    };
    (RedisConcurrencyLimiter . max_running) => {
        "The fleet's limit, as this object last saw it in Redis (no round trip).

Setting it changes the limit for the whole fleet (one blocking round trip): growing
admits waiters at once, shrinking lets holders finish and refuses the queued waiters
heavier than the new limit (`ValueError`). Every limiter on the key follows it from its
next call to Redis.

Raises:
    UserError: If set below 1.
    TypeError: If set to a non-int.
    ValueError: If set above 2**31 - 1.
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisConcurrencyLimiter . name) => {
        "Name of the limiter for observability."
    };
    (RedisConcurrencyLimiter . other_max_running) => {
        "The fleet's `max_running` in Redis, when another process stored a different one.

The value this object found stored for the key at its latest call to Redis, if it differs
from the one it was built with and no resize set it; this object follows the stored
value. `None` when they agree, or after a resize (which every limiter adopts). The first
`release()` after a new different value is found warns (`RuntimeWarning`)."
    };
    (RedisConcurrencyLimiter . release) => {
        "Release `weight` of the slots this limiter object holds; returns at once.

The slots need not come from one acquire: slots whose lease is already lost go first,
then whole acquires, and only the rest is taken from a larger one.

Raises:
    TypeError: If `weight` is not an int.
    ValueError: If this object holds fewer than `weight` slots (nothing changes), or
        `weight` is less than 1."
    };
    (RedisConcurrencyLimiter . running_count) => {
        "Slots held across the fleet, read from Redis.

Raises:
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisConcurrencyLimiter . stats) => {
        "The fleet-wide counts and limit (one round trip) and this object's lifetime totals.

`running`, `waiting`, `available` and `max_running` are the fleet's, read at one instant
on the server; `acquired_total`, `rejected_total` and `cancelled_total` count this
object's callers.

Raises:
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisConcurrencyLimiter . try_acquire) => {
        "Take `weight` fleet-wide slots only if they are free and nobody is queued; never waits.

One blocking round trip (the GIL is released meanwhile).

Returns:
    Whether the slots were taken (pair it with one `release(weight=weight)`); `False`
    once this limiter object is closed. When Redis is unreachable and the limiter fails
    open, `True` without a slot.

Raises:
    ConcurrencyBackendError: If Redis cannot be used (and the limiter does not fail open).
    TypeError: If `weight` is not an int.
    ValueError: If `weight` is less than 1, or more than the fleet's `max_running`."
    };
    (RedisConcurrencyLimiter . wait_idle) => {
        "Wait until this limiter object's callers hold no slot (at once if none do).

It takes no slot and is not a waiter. Works on asyncio and trio.

Args:
    timeout: Give up after this many seconds (`None` waits as long as it takes).

Returns:
    True once idle, False if `timeout` passed first.

Raises:
    TypeError: If `timeout` is not a number.
    ValueError: If `timeout` is negative or NaN."
    };
    (RedisConcurrencyLimiter . waiting_count) => {
        "Callers queued across the fleet, read from Redis.

Raises:
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisKeyedConcurrencyLimiter) => {
        "One fleet-wide limit per key (a user, a tenant, an API key), shared by every process.

Each key is a `RedisConcurrencyLimiter` of its own on the Redis key `{key_prefix}:{key}`,
with all its guarantees and semantics; the methods take the key (a `str`) first: `await
keyed.acquire(key, source, ...)`, `keyed.release(key, ...)`, `async with keyed(key, source):`,
`keyed.running_count(key)`, `keyed.stats(key)`. `max_queued` bounds each key's queue.

Memory returns to nothing: a key's state exists in this process only while one of its
slots is held or one of its acquires is in progress (`len(keyed)` counts those keys, and
includes, for one round trip, a key whose last release is on its way to Redis), and in Redis
every key of a limit expires once idle (about three leases after its last use). Reading an
unknown key's counts gives zeros and creates nothing. A key's state subscribes to its
wake-up channel only once a caller has to wait for it.

`close()` and `wait_idle()` concern every key of this limiter object, in this process.
Setting `max_running` resizes every key this object uses now (fleet-wide), and is the limit
this object stores for the keys it uses later: for a key it is the first to use, and for one
it finds idle with the built value of another process or an earlier resize (a key another
process resized after this object's resize keeps that resize). A key that other processes
keep busy, and this object does not use, keeps its limit: give every process the same value.

Example:
```python
from ferrolimit import RedisKeyedConcurrencyLimiter

per_user = RedisKeyedConcurrencyLimiter('redis://127.0.0.1:6379/0', 'llm:per-user', max_running=2)

async def chat(user_id: str) -> None:
    async with per_user(user_id, 'chat'):
        ...  # at most 2 calls of this user at once, across the fleet
```

Create the limiter; it connects on first use. The arguments are `RedisConcurrencyLimiter`'s, per key.

Raises:
    UserError: If `max_running` is less than 1, or `max_queued` is less than 0.
    TypeError: If an argument has the wrong type.
    ValueError: For an invalid URL, an empty prefix, or a lease out of range."
    };
    (RedisKeyedConcurrencyLimiter . _get_tracer) => {
        "The tracer the wait span goes to."
    };
    (RedisKeyedConcurrencyLimiter . acquire) => {
        "Acquire slots of `key`, as `RedisConcurrencyLimiter.acquire` (with its errors).

Raises:
    TypeError: If `key` is not a str."
    };
    (RedisKeyedConcurrencyLimiter . acquire_blocking) => {
        "Acquire slots of `key` from a plain thread, as `RedisConcurrencyLimiter.acquire_blocking`."
    };
    (RedisKeyedConcurrencyLimiter . available_count) => {
        "Free slots of `key` across the fleet (one round trip)."
    };
    (RedisKeyedConcurrencyLimiter . blocking) => {
        "`with keyed.blocking(key, source):` holds slots of `key` for the block, from a plain thread."
    };
    (RedisKeyedConcurrencyLimiter . close) => {
        "Stop admitting through this object, for every key (its queued waiters raise `LimiterClosedError`)."
    };
    (RedisKeyedConcurrencyLimiter . closed) => {
        "Whether `close()` was called."
    };
    (RedisKeyedConcurrencyLimiter . fail_open) => {
        "Whether `acquire` proceeds without limiting when Redis is unreachable."
    };
    (RedisKeyedConcurrencyLimiter . held_count) => {
        "Slots of `key` this limiter object holds (no round trip)."
    };
    (RedisKeyedConcurrencyLimiter . key_prefix) => {
        "The prefix of the Redis keys: key `k` uses `{key_prefix}:{k}`."
    };
    (RedisKeyedConcurrencyLimiter . lease_seconds) => {
        "How long a held slot survives without renewal."
    };
    (RedisKeyedConcurrencyLimiter . max_queued) => {
        "The bound of each key's queue, `None` when unbounded."
    };
    (RedisKeyedConcurrencyLimiter . max_running) => {
        "The limit of each key: the one built with, or the last one set.

Setting it resizes every key in use here, fleet-wide (a blocking round trip per key).

Raises:
    UserError: If set below 1.
    TypeError: If set to a non-int.
    ValueError: If set above 2**31 - 1.
    ConcurrencyBackendError: If Redis cannot be reached."
    };
    (RedisKeyedConcurrencyLimiter . name) => {
        "Name of the limiter for observability."
    };
    (RedisKeyedConcurrencyLimiter . release) => {
        "Release `weight` slots of `key` held by this object; returns at once.

Raises:
    TypeError: If `key` is not a str or `weight` not an int.
    ValueError: If this object holds fewer than `weight` slots of `key` (nothing changes)."
    };
    (RedisKeyedConcurrencyLimiter . running_count) => {
        "Slots of `key` held across the fleet (one round trip)."
    };
    (RedisKeyedConcurrencyLimiter . stats) => {
        "`key`'s fleet-wide counts and limit (one round trip) and this process's totals for it.

Raises:
    ConcurrencyBackendError: If Redis cannot be reached.
    TypeError: If `key` is not a str."
    };
    (RedisKeyedConcurrencyLimiter . try_acquire) => {
        "Take `weight` free slots of `key` if nobody is queued for it; never waits (one round trip)."
    };
    (RedisKeyedConcurrencyLimiter . wait_idle) => {
        "Wait until this object's callers hold no slot of any key.

Returns:
    True once idle, False if `timeout` passed first."
    };
    (RedisKeyedConcurrencyLimiter . waiting_count) => {
        "Callers queued for `key` across the fleet (one round trip)."
    };
    (SessionLimiter) => {
        "Slots for sessions and their runs, taken by ID and never waited for.

At most `max_parallel_sessions` sessions and at most `max_parallel_runs` runs (across all
sessions) hold a slot at once. Every method returns at once:

- acquiring takes a slot or raises `MaxSessionsExceeded` / `MaxRunsExceeded`;
- acquiring an ID that already holds a slot does nothing (it counts once);
- releasing an ID that holds no slot does nothing, and releasing a session releases its runs;
- a run needs its session to hold a slot, and a run ID held under one session cannot be
  acquired under another until it is released (both `ValueError`).

`status()` and `limits()` never wait for an acquire or release in progress: they read counts
published by the writers, without taking their lock. One limiter may be shared by any number
of threads and tasks.

Example:
```python
from ferrolimit import SessionLimiter

limiter = SessionLimiter(max_parallel_sessions=10, max_parallel_runs=20)

def run_turn(session_id: str, run_id: str) -> None:
    limiter.acquire_session(session_id)  # MaxSessionsExceeded if 10 other sessions are open
    limiter.acquire_run(session_id, run_id)  # MaxRunsExceeded if 20 runs are in progress
    try:
        ...
    finally:
        limiter.release_run(run_id)

def close(session_id: str) -> None:
    limiter.release_session(session_id)  # and any runs it still holds
```

Create a limiter.

Args:
    max_parallel_sessions: Maximum sessions holding a slot at once; `None` for unlimited.
        Must be >= 1 (and at most 4294967295).
    max_parallel_runs: Maximum runs holding a slot at once, across all sessions; `None`
        for unlimited. Must be >= 1 (and at most 4294967295).

Raises:
    UserError: If a limit is less than 1.
    TypeError: If a limit is neither an int nor None.
    ValueError: If a limit is larger than 4294967295."
    };
    (SessionLimiter . acquire_run) => {
        "Take a run slot under a session, or do nothing if the run already holds one under it.

Never waits. The checks run in the order below, and a failed acquire changes nothing.

Args:
    session_id: The run's session, which must hold a slot.
    run_id: The run's identifier, unique across sessions while it holds a slot.

Raises:
    TypeError: If an ID is not a str.
    ValueError: If an ID is empty; if the session holds no slot (`session 'abc' holds no
        slot: acquire_session first`); or if the run ID holds a slot under another session
        (`run 'r' is held by session 'a', not 'b': release_run first`).
    MaxRunsExceeded: If `max_parallel_runs` other runs hold a slot
        (`Maximum parallel runs (N) reached`)."
    };
    (SessionLimiter . acquire_session) => {
        "Take a slot for a session, or do nothing if it already holds one. Never waits.

Args:
    session_id: The session's identifier.

Raises:
    MaxSessionsExceeded: If `max_parallel_sessions` other sessions hold a slot
        (`Maximum parallel sessions (N) reached`).
    TypeError: If `session_id` is not a str.
    ValueError: If `session_id` is empty."
    };
    (SessionLimiter . limits) => {
        "The configured limits. Never waits.

Returns:
    A new dict: `max_parallel_sessions` and `max_parallel_runs`, `None` when unlimited."
    };
    (SessionLimiter . release_run) => {
        "Release a run's slot; does nothing if it holds none (an empty ID never does).

Never raises for an unknown ID, so it is safe in a `finally` block.

Args:
    run_id: The run's identifier.

Raises:
    TypeError: If `run_id` is not a str."
    };
    (SessionLimiter . release_session) => {
        "Release a session's slot and the slots of all its runs; does nothing if it holds none.

Never raises for an unknown ID (an empty ID never holds one), so it is safe in a `finally`
block.

Args:
    session_id: The session's identifier.

Raises:
    TypeError: If `session_id` is not a str."
    };
    (SessionLimiter . status) => {
        "The active counts and free slots at one instant. Never waits.

Returns:
    A new dict: `active_sessions`, `active_runs`, `max_parallel_sessions`,
    `max_parallel_runs`, `available_session_slots` and `available_run_slots` (the last
    four `None` when unlimited). It never shows a run without its session."
    };
    (_AsyncioWait) => {
        "The awaitable of a caller that waits on an asyncio loop (internal: the native slow path)."
    };
    (_AsyncioWait . close) => {
        "Give the wait up quietly."
    };
    (_AsyncioWait . send) => {
        "Resume the wait, as `__next__`."
    };
    (_AsyncioWait . throw) => {
        "Give the wait up (a cancellation): every slot held so far is returned, then `typ` is raised."
    };
    (_Counts) => {
        "Reads a limiter's counts for its metrics (internal)."
    };
    (_Counts . stats) => {
        "A snapshot of the counts."
    };
    (_IdleWait) => {
        "One caller's wait for a limiter to be idle (internal: used by `ferrolimit._idle`)."
    };
    (_IdleWait . cancel) => {
        "Give the wait up."
    };
    (_IdleWait . poll) => {
        "Whether the limiter is idle (now or since the last call); else `callback(arg)` wakes the caller.

The wake-up may come early: call again then."
    };
    (_Ready) => {
        "An awaitable that is already finished (value `None`), also a no-op async context manager.

The fast path returns one shared instance; `get_concurrency_context(None)` returns it too."
    };
    (_RedisOp) => {
        "One `RedisConcurrencyLimiter` acquire or wait for idleness in flight (internal: used by `ferrolimit._redis`)."
    };
    (_RedisOp . cancel) => {
        "Give up; slots granted meanwhile (also those `take()` reported) pass on."
    };
    (_RedisOp . done) => {
        "The caller has the slots `take()` reported: `cancel()` no longer gives them back."
    };
    (_RedisOp . fail_open_error) => {
        "Why the slot was granted without limiting, or `None`."
    };
    (_RedisOp . span) => {
        "The wait span's name and attributes."
    };
    (_RedisOp . take) => {
        "Take the next event: `True` once admitted (or idle), `False` when queued (or not idle in time).

A failure raises the error `RedisConcurrencyLimiter.acquire` would."
    };
    (_RedisOp . tracer) => {
        "The tracer the wait span goes to; `None` when the span would certainly be dropped."
    };
    (_RedisOp . wait) => {
        "Run `callback(arg)` (or `schedule(callback, arg)` off this thread) on the next event.

Returns:
    `False` if an event is already there (nothing was registered)."
    };
    (_RedisOp . withdraw) => {
        "Give up unless a wake-up is already on its way (trio's abort)."
    };
    (_RedisStart) => {
        "A `RedisConcurrencyLimiter` acquire not started yet (internal: used by `ferrolimit._redis`)."
    };
    (_RedisStart . start) => {
        "Start the acquire."
    };
    (_ScheduledWake) => {
        "A wake-up scheduled on a waiter's event loop (internal): keeps wake-ups in hand-over order."
    };
    (_Waiter) => {
        "A caller on the slow path, level by level up a limiter's parents (internal: used by `ferrolimit._wait`)."
    };
    (_Waiter . cancel) => {
        "Give up the wait and every slot held; a slot handed over at that instant passes on."
    };
    (_Waiter . climb) => {
        "Go on to the parent's level: `True` once every level is held, `False` to wait at the next one."
    };
    (_Waiter . enqueue) => {
        "Queue the caller at its current level; `False` if a slot was free after all.

A release wakes it with `callback(arg)` on this thread, `schedule(callback, arg)` from another.

Raises:
    ConcurrencyLimitExceeded: If the queue is full."
    };
    (_Waiter . finish) => {
        "Take the slot a release handed over."
    };
    (_Waiter . span) => {
        "The wait span's name and attributes."
    };
    (_Waiter . timeout_message) => {
        "The `TimeoutError` message for this waiter."
    };
    (_Waiter . tracer) => {
        "The tracer the wait span goes to; `None` when the span would certainly be dropped."
    };
    (_Waiter . withdraw) => {
        "Leave the queue if still queued; `False` if a slot was already handed over."
    };
    (_after_fork_in_child) => {
        "Forget the parent's wake-ups in flight in a forked child (an `os.register_at_fork` hook)."
    };
    (_before_exit) => {
        "Stop wake-ups from ferrolimit's I/O threads before the interpreter exits (an `atexit` hook)."
    };
    (_check_limits) => {
        "Validate limits exactly as `ConcurrencyLimiter()` does (used by `ConcurrencyLimit`).

Raises:
    UserError: If `max_running` is less than 1, or `max_queued` is less than 0."
    };
    (_resolve_future) => {
        "Set an asyncio waiter's future's result unless it is already done."
    };
    (get_concurrency_context) => {
        "Get an async context manager for the concurrency limiter.

If limiter is None, returns a no-op context manager. A ferrolimit limiter takes a free slot
without touching the event loop; any other `AbstractConcurrencyLimiter` (pydantic-ai's
included) is entered through its own `acquire(source)` and `release()`.

Args:
    limiter: The limiter or None.
    source: Identifier for the source of this acquisition (e.g., 'agent:my-agent' or 'model:gpt-4').

Returns:
    An async context manager.

Raises:
    TypeError: If `limiter` has no `acquire`/`release`, or `source` is not a str."
    };
}

/// `docstring!(key)` as a C string for a raw type or method, after a text signature if given
/// (`c_docstring!("f(a, b)", f)`); checked when compiling.
macro_rules! c_docstring {
    ($signature:literal, $($key:tt)+) => {
        const { $crate::python::docstrings::c_str(concat!($signature, "\n--\n\n", $crate::python::docstrings::docstring!($($key)+), "\0")) }
    };
    ($($key:tt)+) => {
        const { $crate::python::docstrings::c_str(concat!($crate::python::docstrings::docstring!($($key)+), "\0")) }
    };
}

pub(crate) use {c_docstring, docstring};

/// `text`, which ends with its only NUL, as a C string.
pub(crate) const fn c_str(text: &'static str) -> &'static std::ffi::CStr {
    match std::ffi::CStr::from_bytes_with_nul(text.as_bytes()) {
        Ok(text) => text,
        Err(_) => panic!("a docstring must not hold a NUL"),
    }
}
