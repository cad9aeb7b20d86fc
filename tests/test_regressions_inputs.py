"""Regression tests for the repros of `../shared/repros` about arguments: huge timeouts
(repro_blocking_timeout_panic.py), Redis leases (repro_redis_lease_panic.py), and the input edges found
with them (bools as numbers, `source=None`, lone surrogates, a tracer that is not one).

A `pyo3_runtime.PanicException` is a `BaseException`: `pytest.raises(ValueError)` lets it through and
the test fails on it.

Already right on the build of 807758a, kept to pin the decisions: 1e10 everywhere, 9.3e18 and 1e19
with `await acquire()`, the negative and NaN timeouts, a str lease, leases of 30 and 86400, the default
sources, and a lone-surrogate source on an event loop.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from ferrolimit import (
    ConcurrencyGovernor,
    ConcurrencyLimiter,
    KeyedConcurrencyLimiter,
    RedisConcurrencyLimiter,
    RedisKeyedConcurrencyLimiter,
    get_concurrency_context,
)

pytestmark = pytest.mark.anyio

ALL_BACKENDS = [
    pytest.param('asyncio', id='asyncio'),
    pytest.param(('asyncio', {'use_uvloop': True}), id='uvloop'),
    pytest.param('trio', id='trio'),
]

REDIS_URL = 'redis://127.0.0.1:1/0'  # never contacted: the constructor does not connect


class Waiting:
    """A thread that runs `wait()` (which blocks on a limiter), recording how it ended."""

    def __init__(self, wait: Callable[[], None]) -> None:
        self.outcome: str | None = None

        def run() -> None:
            try:
                wait()
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                self.outcome = f'{type(e).__module__}.{type(e).__name__}: {e}'
            else:
                self.outcome = 'ok'

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def wait_queued(self, limiter: ConcurrencyLimiter) -> None:
        """Poll until the thread is queued on `limiter` (or has already failed)."""
        deadline = time.monotonic() + 10
        while limiter.waiting_count == 0 and self.thread.is_alive():
            assert time.monotonic() < deadline, 'the thread never queued'
            time.sleep(0.001)
        assert limiter.waiting_count == 1, f'the thread did not wait: {self.outcome}'

    def join(self) -> str | None:
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        return self.outcome


# --- repro_blocking_timeout_panic.py: huge timeouts mean no time limit -------------------------

HUGE = [
    pytest.param(1e10, id='1e10'),
    pytest.param(9.3e18, id='9.3e18'),
    pytest.param(1e19, id='1e19'),
    pytest.param(1e300, id='1e300'),
    pytest.param(2**64, id='2**64'),
    pytest.param(2**1024, id='2**1024'),
]


@pytest.mark.parametrize('seconds', HUGE)
def test_acquire_blocking_with_a_huge_timeout_takes_a_free_slot(seconds: float) -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire_blocking('x', timeout=seconds)
    assert limiter.running_count == 1


@pytest.mark.parametrize('seconds', HUGE)
def test_blocking_context_with_a_huge_timeout_takes_a_free_slot(seconds: float) -> None:
    limiter = ConcurrencyLimiter(1)
    with limiter.blocking('x', timeout=seconds):
        assert limiter.running_count == 1
    assert limiter.running_count == 0


@pytest.mark.parametrize('how', ['acquire_blocking', 'blocking'])
@pytest.mark.parametrize('seconds', HUGE)
def test_a_blocking_wait_with_a_huge_timeout_waits_without_limit(how: str, seconds: float) -> None:
    assert_a_blocking_wait_gets_the_slot(how, 'x', seconds)


def assert_a_blocking_wait_gets_the_slot(how: str, source: str, timeout: float | None) -> None:
    """A plain thread waits on a busy limiter (`acquire_blocking` or `blocking()`) and gets the slot."""
    limiter = ConcurrencyLimiter(1)
    assert limiter.try_acquire()

    def wait() -> None:
        if how == 'acquire_blocking':
            limiter.acquire_blocking(source, timeout=timeout)
            limiter.release()
        else:
            with limiter.blocking(source, timeout=timeout):
                pass

    thread = Waiting(wait)
    thread.wait_queued(limiter)
    limiter.release()
    assert thread.join() == 'ok'
    assert (limiter.running_count, limiter.available_count) == (0, 1)


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize('seconds', HUGE)
async def test_acquire_with_a_huge_timeout_takes_a_free_slot(seconds: float) -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire('x', timeout=seconds)
    assert limiter.running_count == 1


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize('seconds', HUGE)
async def test_acquire_with_a_huge_timeout_waits_without_limit(seconds: float) -> None:
    limiter = ConcurrencyLimiter(1)
    assert limiter.try_acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: limiter.acquire('x', timeout=seconds))
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 1
        limiter.release()
    assert (limiter.running_count, limiter.waiting_count) == (1, 0)


INVALID_TIMEOUTS = [
    pytest.param(-1, ValueError, 'timeout must be a non-negative number, got -1', id='-1'),
    pytest.param(-0.5, ValueError, 'timeout must be a non-negative number, got -0.5', id='-0.5'),
    pytest.param(-math.inf, ValueError, 'timeout must be a non-negative number, got -inf', id='-inf'),
    pytest.param(math.nan, ValueError, 'timeout must be a non-negative number, got nan', id='nan'),
    pytest.param(True, TypeError, 'timeout must be a number or None, got bool', id='True'),
]


@pytest.mark.parametrize('how', ['acquire_blocking', 'blocking'])
@pytest.mark.parametrize(('seconds', 'error', 'message'), INVALID_TIMEOUTS)
def test_an_invalid_timeout_is_refused_by_the_blocking_apis(
    how: str, seconds: Any, error: type[Exception], message: str
) -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(error, match=f'^{re.escape(message)}$'):
        if how == 'acquire_blocking':
            limiter.acquire_blocking('x', timeout=seconds)
        else:
            with limiter.blocking('x', timeout=seconds):
                pass
    assert limiter.running_count == 0


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize(('seconds', 'error', 'message'), INVALID_TIMEOUTS)
async def test_an_invalid_timeout_is_refused_by_acquire(seconds: Any, error: type[Exception], message: str) -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(error, match=f'^{re.escape(message)}$'):
        await limiter.acquire('x', timeout=seconds)
    assert limiter.running_count == 0


# --- repro_redis_lease_panic.py: a lease is a finite number of seconds, up to a day --------------

LEASE_RANGE = 'lease_seconds must be a finite number between 0.03 and 86400'


@pytest.mark.parametrize(
    'lease',
    [1e19, 1.8e19, 1e20, 1e300, math.inf, math.nan, 0.01, -1, 2**64, 2**1024],
    ids=['1e19', '1.8e19', '1e20', '1e300', 'inf', 'nan', '0.01', '-1', '2**64', '2**1024'],
)
def test_a_lease_out_of_range_is_a_value_error(lease: float) -> None:
    with pytest.raises(ValueError) as raised:
        RedisConcurrencyLimiter(REDIS_URL, 'k', 2, lease_seconds=lease)
    assert str(raised.value).startswith(LEASE_RANGE), str(raised.value)


@pytest.mark.parametrize(('lease', 'kind'), [('1', 'str'), (True, 'bool')])
def test_a_lease_that_is_not_a_number_is_a_type_error(lease: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=f'^{re.escape(f"lease_seconds must be a number, got {kind}")}$'):
        RedisConcurrencyLimiter(REDIS_URL, 'k', 2, lease_seconds=lease)


@pytest.mark.parametrize('lease', [30.0, 86400])
def test_a_lease_in_range_is_accepted(lease: float) -> None:
    RedisConcurrencyLimiter(REDIS_URL, 'k', 2, lease_seconds=lease)


# --- input edges ------------------------------------------------------------------------------


def test_a_bool_is_not_a_limit() -> None:
    with pytest.raises(TypeError, match=re.escape('max_running must be an int, got bool')):
        ConcurrencyLimiter(True)
    with pytest.raises(TypeError, match=re.escape('max_queued must be an int, got bool')):
        ConcurrencyLimiter(2, max_queued=True)
    limiter = ConcurrencyLimiter(2)
    with pytest.raises(TypeError, match=re.escape('max_running must be an int, got bool')):
        limiter.max_running = True
    assert limiter.max_running == 2


SOURCE_NONE = '^' + re.escape('source must be a str, got NoneType') + '$'


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize(
    'how', ['get_concurrency_context', 'call', 'acquire', 'acquire_blocking', 'blocking', 'tool', 'stream']
)
async def test_source_none_is_a_type_error(how: str) -> None:
    governor = ConcurrencyGovernor(max_streams=1, max_tools=1, max_global=2)
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(TypeError, match=SOURCE_NONE):
        if how == 'get_concurrency_context':
            async with get_concurrency_context(limiter, None):  # type: ignore[arg-type]
                pass
        elif how == 'call':
            async with limiter(None):  # type: ignore[arg-type]
                pass
        elif how == 'acquire':
            await limiter.acquire(None)  # type: ignore[arg-type]
        elif how == 'acquire_blocking':
            limiter.acquire_blocking(None)  # type: ignore[arg-type]
        elif how == 'blocking':
            with limiter.blocking(None):  # type: ignore[arg-type]
                pass
        elif how == 'tool':
            async with governor.tool(None):  # type: ignore[arg-type]
                pass
        else:
            async with governor.stream(None):  # type: ignore[arg-type]
                pass
    assert limiter.running_count == 0
    stats = governor.stats()
    assert (stats.streams_available, stats.tools_available, stats.global_available) == (1, 1, 2)


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
async def test_a_source_left_out_is_still_the_default(tracer: Any, exporter: Any) -> None:
    """A guard for the `source=None` fix: the defaults 'unnamed', 'tool' and 'stream' still apply."""
    limiter = ConcurrencyLimiter(1, tracer=tracer)
    governor = ConcurrencyGovernor(max_streams=1, max_tools=1, max_global=2, tracer=tracer)
    held = [governor.try_tool(), governor.try_stream()]
    assert limiter.try_acquire()

    async def use_limiter() -> None:
        async with limiter:
            pass
        await limiter.acquire()
        limiter.release()

    async def use_tool() -> None:
        async with governor.tool():
            pass

    async def use_stream() -> None:
        async with governor.stream():
            pass

    async with anyio.create_task_group() as tg:
        for use in (use_limiter, use_tool, use_stream):
            tg.start_soon(use)
        await anyio.wait_all_tasks_blocked()
        limiter.release()
        for permit in held:
            assert permit is not None
            permit.release()
    sources = sorted(str(span.attributes['source']) for span in exporter.get_finished_spans())
    assert sources == ['stream', 'tool', 'unnamed']


LONE_SURROGATE = '\ud800'


@pytest.mark.parametrize('how', ['acquire_blocking', 'blocking'])
def test_a_lone_surrogate_source_waits_on_a_plain_thread(how: str) -> None:
    assert_a_blocking_wait_gets_the_slot(how, LONE_SURROGATE, None)


@pytest.mark.parametrize('anyio_backend', ALL_BACKENDS)
@pytest.mark.parametrize('how', ['acquire', 'async_with'])
async def test_a_lone_surrogate_source_waits_on_an_event_loop(how: str) -> None:
    limiter = ConcurrencyLimiter(1)
    entered: list[str] = []
    assert limiter.try_acquire()

    async def wait() -> None:
        if how == 'acquire':
            await limiter.acquire(LONE_SURROGATE)
            limiter.release()
        else:
            async with limiter(LONE_SURROGATE):
                pass
        entered.append(how)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting_count == 1
        limiter.release()
    assert entered == [how]
    assert (limiter.running_count, limiter.available_count) == (0, 1)


TRACER_NOT_ONE = '^' + re.escape('tracer must be an OpenTelemetry Tracer or None, got int') + '$'


@pytest.mark.parametrize(
    'make',
    [
        pytest.param(lambda: ConcurrencyLimiter(2, tracer=1), id='ConcurrencyLimiter'),
        pytest.param(lambda: ConcurrencyGovernor(tracer=1), id='ConcurrencyGovernor'),
        pytest.param(lambda: RedisConcurrencyLimiter(REDIS_URL, 'k', 2, tracer=1), id='RedisConcurrencyLimiter'),
    ],
)
def test_a_tracer_that_is_not_one_is_refused_at_construction(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError, match=TRACER_NOT_ONE):
        make()


@pytest.mark.parametrize('value', [-1, -(10**40)])
def test_a_limit_below_the_minimum_is_a_user_error_however_negative(value: int) -> None:
    """An int too negative for 128 bits is below the minimum too, not "too large"."""
    from ferrolimit import UserError

    with pytest.raises(UserError, match='max_running must be >= 1'):
        ConcurrencyLimiter(value)
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(UserError, match='max_running must be >= 1'):
        limiter.max_running = value
    with pytest.raises(ValueError, match=f'weight must be >= 1, got {value}'):
        limiter.try_acquire(weight=value)
    priority = value * 2**32
    with pytest.raises(ValueError, match=f'priority must be between -2147483648 and 2147483647, got {priority}'):
        limiter('x', priority=priority)


NAMED_CONSTRUCTORS: list[Callable[[Any], object]] = [
    lambda name: ConcurrencyLimiter(1, name=name),
    lambda name: ConcurrencyLimiter.from_limit(1, name=name),
    lambda name: KeyedConcurrencyLimiter(1, name=name),
    lambda name: RedisConcurrencyLimiter(REDIS_URL, 'k', 1, name=name),
    lambda name: RedisKeyedConcurrencyLimiter(REDIS_URL, 'k', 1, name=name),
]


@pytest.mark.parametrize('make', NAMED_CONSTRUCTORS)
@pytest.mark.parametrize('name', [3, b'llm', ['llm']])
def test_a_name_that_is_not_a_str_is_a_type_error_naming_it(make: Callable[[Any], object], name: object) -> None:
    with pytest.raises(TypeError, match=rf'^name must be a str or None, got {type(name).__name__}$'):
        make(name)


@pytest.mark.parametrize('make', NAMED_CONSTRUCTORS)
def test_a_name_with_a_lone_surrogate_is_a_value_error_naming_it(make: Callable[[Any], object]) -> None:
    with pytest.raises(ValueError, match=r'^name must be encodable as UTF-8'):
        make('llm\ud800')


@pytest.mark.parametrize('priority', [2**31, 2**63, 2**200, -(2**31) - 1, -(2**200)])
def test_a_priority_out_of_range_names_the_range_however_large(priority: int) -> None:
    with pytest.raises(ValueError, match=r'^priority must be between -2147483648 and 2147483647, got -?\d+$'):
        ConcurrencyLimiter(1).acquire_blocking(priority=priority)


def test_an_empty_key_prefix_is_named() -> None:
    with pytest.raises(ValueError, match=r'^key_prefix must not be empty$'):
        RedisKeyedConcurrencyLimiter(REDIS_URL, '', 1)


REDIS_KEYED_CALLS: dict[str, Callable[[RedisKeyedConcurrencyLimiter, str], object]] = {
    'call': lambda keyed, key: keyed(key),
    'blocking': lambda keyed, key: keyed.blocking(key),
    'acquire': lambda keyed, key: keyed.acquire(key),
    'acquire_blocking': lambda keyed, key: keyed.acquire_blocking(key),
    'try_acquire': lambda keyed, key: keyed.try_acquire(key),
    'release': lambda keyed, key: keyed.release(key),
    'stats': lambda keyed, key: keyed.stats(key),
    'running_count': lambda keyed, key: keyed.running_count(key),
    'held_count': lambda keyed, key: keyed.held_count(key),
}


@pytest.mark.parametrize('call', REDIS_KEYED_CALLS.values(), ids=list(REDIS_KEYED_CALLS))
def test_a_redis_key_with_a_lone_surrogate_is_refused_at_the_call(
    call: Callable[[RedisKeyedConcurrencyLimiter, str], object],
) -> None:
    """Every method refuses it before anything is made or sent (the server is never contacted)."""
    keyed = RedisKeyedConcurrencyLimiter(REDIS_URL, 'k', 1)
    with pytest.raises(
        ValueError, match=r"^key must be encodable as UTF-8, got '\\ud800' \(it holds a lone surrogate\)$"
    ):
        call(keyed, '\ud800')
    assert len(keyed) == 0


@pytest.mark.parametrize('what', ['redis_url', 'key'])
def test_a_redis_url_or_key_with_a_lone_surrogate_is_a_value_error_naming_it(what: str) -> None:
    args = {'redis_url': REDIS_URL, 'key': 'k'} | {what: 'k\udc00'}
    with pytest.raises(ValueError, match=rf'^{what} must be encodable as UTF-8'):
        RedisConcurrencyLimiter(args['redis_url'], args['key'], 1)


RELEASES: dict[str, Callable[[str | None], Callable[[], object]]] = {
    'local': lambda name: ConcurrencyLimiter(2, name=name).release,
    'child': lambda name: ConcurrencyLimiter(1, name=name, parent=ConcurrencyLimiter(2, name='parent')).release,
    'keyed-held': lambda name: _keyed_release_beyond_held(name),
    'redis': lambda name: RedisConcurrencyLimiter(REDIS_URL, 'k', 1, name=name).release,
    'redis-keyed': lambda name: lambda: RedisKeyedConcurrencyLimiter(REDIS_URL, 'k', 1, name=name).release('key'),
}


def _keyed_release_beyond_held(name: str | None) -> Callable[[], object]:
    keyed = KeyedConcurrencyLimiter(2, name=name)
    assert keyed.try_acquire('key')
    return lambda: keyed.release('key', weight=2)


@pytest.mark.parametrize('release', RELEASES.values(), ids=list(RELEASES))
def test_a_release_without_a_slot_names_the_limiter(release: Callable[[str | None], Callable[[], object]]) -> None:
    """anyio's message, with the limiter's name when it has one (no server is contacted)."""
    with pytest.raises(ValueError, match='^semaphore released too many times for llm$'):
        release('llm')()
    with pytest.raises(ValueError, match='^semaphore released too many times$'):
        release(None)()


def test_a_release_of_a_key_never_taken_names_the_keyed_limiter() -> None:
    with pytest.raises(ValueError, match=r"^key 'k' holds no slot of keyed limiter 'users'$"):
        KeyedConcurrencyLimiter(2, name='users').release('k')
    with pytest.raises(ValueError, match=r"^key 'k' holds no slot of this keyed limiter$"):
        KeyedConcurrencyLimiter(2).release('k')


@pytest.mark.parametrize(
    'url',
    [
        'rediss://app:hunter2@127.0.0.1:1/0?ssl_cert_reqs=maybe',
        'redis://app:hunter2@127.0.0.1:1/0?ssl_cert_reqs=none',
        'rediss://app:hunter2@127.0.0.1:1/0?ssl_certfile=/tmp/x.pem',
        'redis://app:hunter2@127.0.0.1:1/notadb',
        'rediss://app:hunter2@127.0.0.1:1/0#fragment',
        'rediss://app:hunter2@127.0.0.1:1/0?ssl_ca_certs=/etc/hostname',
    ],
)
def test_a_bad_redis_url_is_refused_without_showing_its_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        RedisConcurrencyLimiter(url, 'k', 1)
    assert 'hunter2' not in str(info.value)
    assert 'app:***@' in str(info.value) or 'cannot read' in str(info.value)


@pytest.mark.parametrize('path', ['/dev/zero', '/tmp', '/etc/hostname'])
def test_a_certificate_file_must_be_a_small_regular_pem_file(path: str) -> None:
    """A device or a FIFO would block (or fill memory) forever at construction."""
    with pytest.raises(ValueError, match=f'^cannot read ssl_ca_certs "{path}": '):
        RedisConcurrencyLimiter(f'rediss://h/0?ssl_ca_certs={path}', 'k', 1)


def test_a_redis_url_with_a_lone_surrogate_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match=r'^redis_url must be encodable as UTF-8 \(it holds a lone surrogate\)$'):
        RedisConcurrencyLimiter('redis://app:hunter2\udc00@h/0', 'k', 1)
