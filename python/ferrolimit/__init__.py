"""ferrolimit: a Rust-backed, drop-in replacement for pydantic-ai's concurrency limiter."""

from ._ferrolimit import (
    ConcurrencyGovernor,
    ConcurrencyLimiter,
    ConcurrencyPermit,
    GovernorStats,
    KeyedConcurrencyLimiter,
    LimiterStats,
    RedisConcurrencyLimiter,
    RedisKeyedConcurrencyLimiter,
    SessionLimiter,
    __version__,
    get_concurrency_context,
)
from ._install import install, installed, uninstall
from ._limit import AbstractConcurrencyLimiter, AnyConcurrencyLimit, ConcurrencyLimit, normalize_to_limiter
from ._session import SessionLimits, SessionStatus
from ._wait import SUPPORTS_TRIO
from .exceptions import (
    ConcurrencyBackendError,
    ConcurrencyLimitExceeded,
    LimiterClosedError,
    MaxRunsExceeded,
    MaxSessionsExceeded,
    UserError,
)

__all__ = (
    'SUPPORTS_TRIO',
    'AbstractConcurrencyLimiter',
    'AnyConcurrencyLimit',
    'ConcurrencyBackendError',
    'ConcurrencyGovernor',
    'ConcurrencyLimit',
    'ConcurrencyLimitExceeded',
    'ConcurrencyLimiter',
    'ConcurrencyPermit',
    'GovernorStats',
    'KeyedConcurrencyLimiter',
    'LimiterClosedError',
    'LimiterStats',
    'MaxRunsExceeded',
    'MaxSessionsExceeded',
    'RedisConcurrencyLimiter',
    'RedisKeyedConcurrencyLimiter',
    'SessionLimiter',
    'SessionLimits',
    'SessionStatus',
    'UserError',
    '__version__',
    'get_concurrency_context',
    'install',
    'installed',
    'normalize_to_limiter',
    'uninstall',
)
