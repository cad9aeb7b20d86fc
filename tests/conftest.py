"""Shared fixtures: every async test runs on each anyio backend listed here."""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer


@pytest.fixture(params=[pytest.param('asyncio', id='asyncio'), pytest.param('trio', id='trio')])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _redis_url() -> str | None:
    return os.environ.get('FERROLIMIT_REDIS_URL') or None


@pytest.fixture
def redis_url() -> str:
    """The Redis server `make test` starts (`FERROLIMIT_REDIS_URL`).

    Without the variable (a test run by hand) the test is skipped; with it, a server that does not
    answer fails the test.
    """
    url = _redis_url()
    if url is None:
        pytest.skip('FERROLIMIT_REDIS_URL is not set (make test starts a Redis server)')
    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.sendall(b'PING\r\n')
            assert conn.recv(64).startswith(b'+PONG'), f'{url} did not answer PING'
    except OSError as e:  # pragma: no cover - only when the server is missing
        pytest.fail(f'FERROLIMIT_REDIS_URL={url} is not reachable: {e}')
    return url


@pytest.fixture
def redis_tls_url() -> str:
    """The TLS Redis server `make test` starts (`FERROLIMIT_REDIS_TLS_URL`: the ACL user `app`,
    the test CA as `ssl_ca_certs`); skipped without the variable."""
    url = os.environ.get('FERROLIMIT_REDIS_TLS_URL')
    if not url:
        pytest.skip('FERROLIMIT_REDIS_TLS_URL is not set (make test starts a TLS Redis server)')
    return url


@pytest.fixture
def redis_tls_dir(redis_tls_url: str) -> Path:
    """The certificates of that server: `ca.crt`, `client.crt` and `client.key`."""
    return Path(os.environ['FERROLIMIT_REDIS_TLS_DIR'])


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or '127.0.0.1', parsed.port or 6379


@pytest.fixture
def redis_key(request: pytest.FixtureRequest) -> str:
    """A key no other test or earlier run uses."""
    return f'ferrolimit-test:{request.node.name}:{os.getpid()}:{time.time_ns()}'


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Collects the spans that `tracer` finishes."""
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    """A tracer of its own (not the global provider) whose spans go to `exporter`."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer('test')
    provider.shutdown()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """Collects the metrics of `provider`'s meters on demand."""
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """A meter provider of its own (not the global one) whose metrics `reader` reads."""
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()
