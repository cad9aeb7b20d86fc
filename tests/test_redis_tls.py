"""The Redis limiters over TLS (`rediss://`) with an ACL user, against the TLS server `make test`
starts (`FERROLIMIT_REDIS_TLS_URL`; skipped without it): the quick start, wake-ups and the
blocking API over TLS, the URL's TLS parameters, and the errors a user meets first (a wrong
password, no credentials, an untrusted certificate, a TLS parameter on a plain URL), each a clear
exception that names its cause within 10 s and never shows the password.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from pathlib import Path

import anyio
import pytest

from ferrolimit import ConcurrencyBackendError, RedisConcurrencyLimiter, RedisKeyedConcurrencyLimiter

pytestmark = pytest.mark.anyio


def with_query(url: str, **params: str) -> str:
    """`url` with its query replaced by `params` (the server part kept)."""
    base = url.split('?', 1)[0]
    return f'{base}?{urllib.parse.urlencode(params)}' if params else base


def credentials(url: str, user: str | None, password: str | None) -> str:
    """`url` with other credentials (none if `user` and `password` are None)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit('@', 1)[-1]
    auth = f'{user or ""}:{password}@' if password is not None else ''
    return urllib.parse.urlunsplit(parts._replace(netloc=auth + host))


async def test_the_quick_start_over_tls_with_an_acl_user(redis_tls_url: str, redis_key: str) -> None:
    """Two objects share one fleet-wide limit: waiters are woken over TLS (the subscription)."""
    limiter = RedisConcurrencyLimiter(redis_tls_url, redis_key, 2, name='tls')
    other = RedisConcurrencyLimiter(redis_tls_url, redis_key, 2)
    running = peak = 0

    async def call(lim: RedisConcurrencyLimiter) -> None:
        nonlocal running, peak
        async with lim('model:x'):
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(call, limiter if i % 2 else other)
    assert peak == 2
    assert (limiter.running_count, limiter.waiting_count, limiter.held_count, other.held_count) == (0, 0, 0, 0)
    stats = limiter.stats()
    assert (stats.max_running, stats.acquired_total) == (2, 6)


def test_the_blocking_api_and_a_keyed_limiter_over_tls(redis_tls_url: str, redis_key: str) -> None:
    keyed = RedisKeyedConcurrencyLimiter(redis_tls_url, redis_key, 1)
    keyed.acquire_blocking('alice')
    entered = threading.Event()

    def second() -> None:
        with keyed.blocking('alice', timeout=10):
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    assert not entered.is_set(), 'the key has one slot'
    keyed.release('alice')
    thread.join(10)
    assert entered.is_set()
    assert keyed.try_acquire('bob')
    keyed.release('bob')


@pytest.mark.parametrize('how', ['client-certificate', 'no-verification'])
async def test_the_tls_parameters_of_the_url(redis_tls_url: str, redis_tls_dir: Path, redis_key: str, how: str) -> None:
    params = {
        'client-certificate': {
            'ssl_ca_certs': str(redis_tls_dir / 'ca.crt'),
            'ssl_certfile': str(redis_tls_dir / 'client.crt'),
            'ssl_keyfile': str(redis_tls_dir / 'client.key'),
        },
        'no-verification': {'ssl_cert_reqs': 'none'},
    }[how]
    limiter = RedisConcurrencyLimiter(with_query(redis_tls_url, **params), redis_key, 1)
    async with limiter('a'):
        assert limiter.running_count == 1


async def refused(url: str, key: str, match: str) -> str:
    """The error of a first acquire on `url`: a `ConcurrencyBackendError` matching `match`, in 10 s."""
    limiter = RedisConcurrencyLimiter(url, key, 1)
    start = time.monotonic()
    with pytest.raises(ConcurrencyBackendError, match=match) as info:
        await limiter.acquire('a')
    assert time.monotonic() - start < 10
    assert limiter.held_count == 0
    return str(info.value)


async def test_a_wrong_password_is_an_auth_error_that_hides_it(redis_tls_url: str, redis_key: str) -> None:
    message = await refused(credentials(redis_tls_url, 'app', 'n0t-1t'), redis_key, r'\(auth\)')
    assert 'n0t-1t' not in message
    assert 's3cret' not in message


async def test_missing_credentials_are_an_auth_error(redis_tls_url: str, redis_key: str) -> None:
    await refused(credentials(redis_tls_url, None, None), redis_key, r'\(auth\)')


async def test_an_untrusted_certificate_is_a_certificate_error(redis_tls_url: str, redis_key: str) -> None:
    """Without the test CA (the system's roots do not trust it) the handshake fails."""
    message = await refused(with_query(redis_tls_url), redis_key, 'certificate')
    assert 's3cret' not in message


def test_a_tls_parameter_needs_rediss_and_readable_files(redis_tls_url: str) -> None:
    plain = with_query(redis_tls_url.replace('rediss://', 'redis://', 1), ssl_cert_reqs='none')
    with pytest.raises(ValueError, match='the ssl_\\* parameters need a rediss:// URL'):
        RedisConcurrencyLimiter(plain, 'k', 1)
    with pytest.raises(ValueError, match='^cannot read ssl_ca_certs "/nonexistent/ca.pem"'):
        RedisConcurrencyLimiter(with_query(redis_tls_url, ssl_ca_certs='/nonexistent/ca.pem'), 'k', 1)
    with pytest.raises(ValueError, match='ssl_certfile and ssl_keyfile go together'):
        RedisConcurrencyLimiter(with_query(redis_tls_url, ssl_certfile='/c.pem'), 'k', 1)


async def test_concurrent_first_uses_without_credentials_all_see_the_auth_error(
    redis_tls_url: str, redis_key: str
) -> None:
    """The server drops the connection under every caller's script; each is told why, and none
    fails open (found by a helper: some saw 'broken pipe', and with fail_open proceeded)."""
    url = credentials(redis_tls_url, None, None)
    for fail_open in (False, True):
        limiter = RedisConcurrencyLimiter(url, redis_key, 1, fail_open=fail_open)
        outcomes: list[str] = []

        async def first_use(lim: RedisConcurrencyLimiter = limiter, outcomes: list[str] = outcomes) -> None:
            try:
                await lim.acquire('a')
                outcomes.append('admitted')
                lim.release()
            except ConcurrencyBackendError as e:
                outcomes.append('(auth)' if '(auth)' in str(e) else str(e))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(first_use)
        assert outcomes == ['(auth)'] * 20, (fail_open, outcomes)


async def test_missing_credentials_on_another_database_are_an_auth_error(redis_tls_url: str, redis_key: str) -> None:
    url = credentials(redis_tls_url, None, None)
    parts = urllib.parse.urlsplit(url)
    await refused(urllib.parse.urlunsplit(parts._replace(path='/3')), redis_key, r'\(auth\)')


async def test_a_certificate_problem_does_not_fail_open(redis_tls_url: str, redis_key: str) -> None:
    """An untrusted server certificate is a setting to fix, not an outage."""
    limiter = RedisConcurrencyLimiter(with_query(redis_tls_url), redis_key, 1, fail_open=True)
    with pytest.raises(ConcurrencyBackendError, match='the TLS handshake with Redis failed'):
        await limiter.acquire('a')
    assert limiter.held_count == 0


async def test_no_verification_still_sends_the_client_certificate(
    redis_tls_url: str, redis_tls_dir: Path, redis_key: str
) -> None:
    url = with_query(
        redis_tls_url,
        ssl_cert_reqs='none',
        ssl_certfile=str(redis_tls_dir / 'client.crt'),
        ssl_keyfile=str(redis_tls_dir / 'client.key'),
    )
    async with RedisConcurrencyLimiter(url, redis_key, 1)('a'):
        pass
    with pytest.raises(ValueError, match='^cannot read ssl_certfile "/nonexistent"'):
        RedisConcurrencyLimiter(
            with_query(redis_tls_url, ssl_cert_reqs='none', ssl_certfile='/nonexistent', ssl_keyfile='/nonexistent'),
            'k',
            1,
        )
