"""`SessionLimiter`: the seed's documented behaviours, the decisions on runs without a session and
run IDs reused across sessions, bad input, and randomized checks against a plain-dict model (single
task, many tasks, many threads)."""

from __future__ import annotations

import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ferrolimit import (
    ConcurrencyLimitExceeded,
    MaxRunsExceeded,
    MaxSessionsExceeded,
    SessionLimiter,
    SessionStatus,
    UserError,
)


def status(active_sessions: int, active_runs: int, max_sessions: int | None, max_runs: int | None) -> SessionStatus:
    return {
        'active_sessions': active_sessions,
        'active_runs': active_runs,
        'max_parallel_sessions': max_sessions,
        'max_parallel_runs': max_runs,
        'available_session_slots': None if max_sessions is None else max_sessions - active_sessions,
        'available_run_slots': None if max_runs is None else max_runs - active_runs,
    }


# --- construction and limits ---


def test_defaults_are_the_seeds():
    limiter = SessionLimiter()
    assert limiter.limits() == {'max_parallel_sessions': 100, 'max_parallel_runs': 50}
    assert limiter.status() == status(0, 0, 100, 50)


def test_limits_are_keyword_only():
    with pytest.raises(TypeError):
        SessionLimiter(10, 20)  # type: ignore[misc]


def test_status_and_limits_have_the_seeds_keys_in_order():
    limiter = SessionLimiter(max_parallel_sessions=10, max_parallel_runs=20)
    assert list(limiter.limits()) == ['max_parallel_sessions', 'max_parallel_runs']
    assert list(limiter.status()) == [
        'active_sessions',
        'active_runs',
        'max_parallel_sessions',
        'max_parallel_runs',
        'available_session_slots',
        'available_run_slots',
    ]


def test_status_and_limits_are_fresh_dicts():
    limiter = SessionLimiter(max_parallel_sessions=10, max_parallel_runs=20)
    limiter.status()['active_sessions'] = 5
    limiter.limits()['max_parallel_runs'] = 1
    assert limiter.status() == status(0, 0, 10, 20)
    assert limiter.limits() == {'max_parallel_sessions': 10, 'max_parallel_runs': 20}


@pytest.mark.parametrize('value', [0, -1])
@pytest.mark.parametrize('name', ['max_parallel_sessions', 'max_parallel_runs'])
def test_limits_below_one_are_user_errors(name: str, value: int):
    with pytest.raises(UserError) as exc_info:
        SessionLimiter(**{name: value})
    assert str(exc_info.value) == f'{name} must be >= 1, got {value}. Use None for unlimited.'


@pytest.mark.parametrize('value', ['3', 1.5, [1]])
@pytest.mark.parametrize('name', ['max_parallel_sessions', 'max_parallel_runs'])
def test_limits_of_other_types_are_type_errors(name: str, value: Any):
    with pytest.raises(TypeError) as exc_info:
        SessionLimiter(**{name: value})
    assert str(exc_info.value) == f'{name} must be an int or None, got {type(value).__name__}'


@pytest.mark.parametrize('name', ['max_parallel_sessions', 'max_parallel_runs'])
def test_limits_beyond_the_maximum_are_value_errors(name: str):
    with pytest.raises(ValueError, match=rf'^{name} must be <= 4294967295, got 4294967296$'):
        SessionLimiter(**{name: 2**32})
    with pytest.raises(ValueError, match=rf'^{name} must be <= 4294967295, got {2**200}$'):
        SessionLimiter(**{name: 2**200})
    assert SessionLimiter(**{name: 2**32 - 1}).limits()[name] == 2**32 - 1


def test_repr():
    limiter = SessionLimiter(max_parallel_sessions=None, max_parallel_runs=20)
    limiter.acquire_session('a')
    assert repr(limiter) == (
        'SessionLimiter(max_parallel_sessions=None, max_parallel_runs=20, active_sessions=1, active_runs=0)'
    )


# --- the seed's behaviours ---


def test_acquire_session_is_idempotent():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    for _ in range(3):
        limiter.acquire_session('a')
    assert limiter.status()['active_sessions'] == 1


def test_acquire_run_is_idempotent():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    limiter.acquire_session('a')
    for _ in range(3):
        limiter.acquire_run('a', 'r')
    assert limiter.status()['active_runs'] == 1


def test_reacquiring_a_held_id_succeeds_at_the_limit():
    limiter = SessionLimiter(max_parallel_sessions=1, max_parallel_runs=1)
    limiter.acquire_session('a')
    limiter.acquire_run('a', 'r')
    limiter.acquire_session('a')
    limiter.acquire_run('a', 'r')
    assert limiter.status() == status(1, 1, 1, 1)


def test_release_is_idempotent():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    limiter.acquire_session('a')
    limiter.acquire_run('a', 'r')
    limiter.release_run('r')
    limiter.release_run('r')
    assert limiter.status() == status(1, 0, 2, 2)
    limiter.release_session('a')
    limiter.release_session('a')
    assert limiter.status() == status(0, 0, 2, 2)


def test_releasing_unknown_ids_is_a_no_op():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    limiter.acquire_session('a')
    limiter.acquire_run('a', 'r')
    limiter.release_run('unknown')
    limiter.release_session('unknown')
    limiter.release_run('')
    limiter.release_session('')
    limiter.release_run('a')  # a session ID is not a run ID
    limiter.release_session('r')  # nor the other way round
    assert limiter.status() == status(1, 1, 2, 2)


def test_releasing_a_session_releases_its_runs():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=3)
    limiter.acquire_session('a')
    limiter.acquire_session('b')
    limiter.acquire_run('a', 'a1')
    limiter.acquire_run('a', 'a2')
    limiter.acquire_run('b', 'b1')
    limiter.release_session('a')
    assert limiter.status() == status(1, 1, 2, 3)
    # The released runs hold nothing, and may be taken again, under any session.
    limiter.acquire_run('b', 'a1')
    assert limiter.status() == status(1, 2, 2, 3)


def test_max_sessions_exceeded():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=None)
    limiter.acquire_session('a')
    limiter.acquire_session('b')
    with pytest.raises(MaxSessionsExceeded) as exc_info:
        limiter.acquire_session('c')
    err = exc_info.value
    assert str(err) == 'Maximum parallel sessions (2) reached'
    assert err.code == 'max_sessions_exceeded'
    assert isinstance(err, ConcurrencyLimitExceeded)
    assert limiter.status()['active_sessions'] == 2
    limiter.release_session('a')
    limiter.acquire_session('c')


def test_max_runs_exceeded_counts_runs_across_sessions():
    limiter = SessionLimiter(max_parallel_sessions=None, max_parallel_runs=2)
    limiter.acquire_session('a')
    limiter.acquire_session('b')
    limiter.acquire_run('a', 'a1')
    limiter.acquire_run('b', 'b1')
    with pytest.raises(MaxRunsExceeded) as exc_info:
        limiter.acquire_run('a', 'a2')
    err = exc_info.value
    assert str(err) == 'Maximum parallel runs (2) reached'
    assert err.code == 'max_runs_exceeded'
    assert isinstance(err, ConcurrencyLimitExceeded)
    assert limiter.status()['active_runs'] == 2
    limiter.release_run('b1')
    limiter.acquire_run('a', 'a2')


def test_error_codes_are_class_attributes():
    assert MaxSessionsExceeded.code == 'max_sessions_exceeded'
    assert MaxRunsExceeded.code == 'max_runs_exceeded'
    assert issubclass(MaxSessionsExceeded, ConcurrencyLimitExceeded)
    assert issubclass(MaxRunsExceeded, ConcurrencyLimitExceeded)


def test_limit_errors_are_pydantic_ais_too():
    exceptions = pytest.importorskip('pydantic_ai.exceptions')
    limiter = SessionLimiter(max_parallel_sessions=1, max_parallel_runs=1)
    limiter.acquire_session('a')
    with pytest.raises(exceptions.ConcurrencyLimitExceeded):
        limiter.acquire_session('b')
    limiter.acquire_run('a', 'r')
    with pytest.raises(exceptions.ConcurrencyLimitExceeded):
        limiter.acquire_run('a', 's')
    with pytest.raises(exceptions.UserError):
        SessionLimiter(max_parallel_runs=0)


def test_unlimited_limits():
    limiter = SessionLimiter(max_parallel_sessions=None, max_parallel_runs=None)
    assert limiter.limits() == {'max_parallel_sessions': None, 'max_parallel_runs': None}
    for i in range(1000):
        limiter.acquire_session(f's{i}')
        limiter.acquire_run(f's{i}', f'r{i}')
    assert limiter.status() == status(1000, 1000, None, None)


def test_one_limit_unlimited():
    limiter = SessionLimiter(max_parallel_sessions=3, max_parallel_runs=None)
    limiter.acquire_session('a')
    assert limiter.status() == status(1, 0, 3, None)


def test_status_through_a_lifecycle():
    limiter = SessionLimiter(max_parallel_sessions=10, max_parallel_runs=20)
    assert limiter.limits() == {'max_parallel_sessions': 10, 'max_parallel_runs': 20}
    assert limiter.status() == status(0, 0, 10, 20)
    limiter.acquire_session('s1')
    assert limiter.status() == status(1, 0, 10, 20)
    limiter.acquire_run('s1', 'r1')
    limiter.acquire_run('s1', 'r2')
    assert limiter.status() == status(1, 2, 10, 20)
    limiter.acquire_session('s2')
    limiter.acquire_run('s2', 'r3')
    assert limiter.status() == status(2, 3, 10, 20)
    limiter.release_run('r1')
    assert limiter.status() == status(2, 2, 10, 20)
    limiter.release_session('s1')
    assert limiter.status() == status(1, 1, 10, 20)
    limiter.release_session('s2')
    assert limiter.status() == status(0, 0, 10, 20)


# --- the decisions ---


def test_a_run_for_a_session_without_a_slot_is_a_value_error():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    with pytest.raises(ValueError) as exc_info:
        limiter.acquire_run('abc', 'r')
    assert str(exc_info.value) == "session 'abc' holds no slot: acquire_session first"
    assert not isinstance(exc_info.value, ConcurrencyLimitExceeded)
    # Nor after the session was released.
    limiter.acquire_session('abc')
    limiter.release_session('abc')
    with pytest.raises(ValueError, match='holds no slot'):
        limiter.acquire_run('abc', 'r')
    assert limiter.status() == status(0, 0, 2, 2)


def test_a_run_id_held_under_another_session_is_a_value_error():
    limiter = SessionLimiter(max_parallel_sessions=2, max_parallel_runs=2)
    limiter.acquire_session('a')
    limiter.acquire_session('b')
    limiter.acquire_run('a', 'r')
    with pytest.raises(ValueError) as exc_info:
        limiter.acquire_run('b', 'r')
    assert str(exc_info.value) == "run 'r' is held by session 'a', not 'b': release_run first"
    # Nothing changed: the run still belongs to `a`, and goes with it.
    assert limiter.status() == status(2, 1, 2, 2)
    limiter.release_session('a')
    limiter.acquire_run('b', 'r')
    assert limiter.status() == status(1, 1, 2, 2)


def test_usage_errors_come_before_the_limit():
    limiter = SessionLimiter(max_parallel_sessions=1, max_parallel_runs=1)
    limiter.acquire_session('a')
    limiter.acquire_run('a', 'r')
    with pytest.raises(ValueError, match='holds no slot'):
        limiter.acquire_run('b', 'x')


# --- bad IDs ---


@pytest.mark.parametrize('bad', [None, 1, b'a', ['a']])
def test_ids_must_be_str(bad: object):
    limiter = SessionLimiter()
    limiter.acquire_session('a')
    name = type(bad).__name__
    with pytest.raises(TypeError, match=f'^session_id must be a str, got {name}$'):
        limiter.acquire_session(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f'^session_id must be a str, got {name}$'):
        limiter.acquire_run(bad, 'r')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f'^run_id must be a str, got {name}$'):
        limiter.acquire_run('a', bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f'^run_id must be a str, got {name}$'):
        limiter.release_run(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f'^session_id must be a str, got {name}$'):
        limiter.release_session(bad)  # type: ignore[arg-type]
    assert limiter.status() == status(1, 0, 100, 50)


def test_empty_ids_cannot_be_acquired():
    limiter = SessionLimiter()
    with pytest.raises(ValueError, match='^session_id must not be empty$'):
        limiter.acquire_session('')
    with pytest.raises(ValueError, match='^session_id must not be empty$'):
        limiter.acquire_run('', 'r')
    limiter.acquire_session('a')
    with pytest.raises(ValueError, match='^run_id must not be empty$'):
        limiter.acquire_run('a', '')
    assert limiter.status() == status(1, 0, 100, 50)


def test_str_subclasses_are_ids():
    class Id(str):
        pass

    limiter = SessionLimiter()
    limiter.acquire_session(Id('a'))
    limiter.acquire_session('a')
    assert limiter.status()['active_sessions'] == 1


# --- randomized checks against a model ---


@dataclass
class Model:
    """What a limiter must hold: a set of sessions and a dict of run -> session, as the seed's ETS."""

    max_sessions: int | None
    max_runs: int | None
    sessions: set[str] = field(default_factory=set[str])
    runs: dict[str, str] = field(default_factory=dict[str, str])

    def acquire_session(self, session_id: str) -> None:
        if session_id in self.sessions:
            return
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            raise MaxSessionsExceeded(f'Maximum parallel sessions ({self.max_sessions}) reached')
        self.sessions.add(session_id)

    def acquire_run(self, session_id: str, run_id: str) -> None:
        if session_id not in self.sessions:
            raise ValueError(f"session '{session_id}' holds no slot: acquire_session first")
        holder = self.runs.get(run_id)
        if holder == session_id:
            return
        if holder is not None:
            raise ValueError(f"run '{run_id}' is held by session '{holder}', not '{session_id}': release_run first")
        if self.max_runs is not None and len(self.runs) >= self.max_runs:
            raise MaxRunsExceeded(f'Maximum parallel runs ({self.max_runs}) reached')
        self.runs[run_id] = session_id

    def release_run(self, run_id: str) -> None:
        self.runs.pop(run_id, None)

    def release_session(self, session_id: str) -> None:
        self.sessions.discard(session_id)
        self.runs = {run: holder for run, holder in self.runs.items() if holder != session_id}

    def status(self) -> SessionStatus:
        return status(len(self.sessions), len(self.runs), self.max_sessions, self.max_runs)


Op = tuple[str, tuple[str, ...]]


def random_op(rng: random.Random, sessions: list[str], runs: list[str]) -> Op:
    session, run = rng.choice(sessions), rng.choice(runs)
    return rng.choice(
        [
            ('acquire_session', (session,)),
            ('acquire_run', (session, run)),
            ('release_run', (run,)),
            ('release_session', (session,)),
        ]
    )


def outcome(target: SessionLimiter | Model, op: Op) -> tuple[type[BaseException], str] | None:
    name, args = op
    try:
        getattr(target, name)(*args)
    except (ValueError, ConcurrencyLimitExceeded) as e:
        return type(e), str(e)
    return None


LIMITS = [(2, 3), (3, 1), (1, 5), (None, 2), (2, None), (None, None)]


@pytest.mark.parametrize(('max_sessions', 'max_runs'), LIMITS)
def test_random_ops_match_a_model_after_every_step(max_sessions: int | None, max_runs: int | None):
    limiter = SessionLimiter(max_parallel_sessions=max_sessions, max_parallel_runs=max_runs)
    model = Model(max_sessions, max_runs)
    rng = random.Random(f'{max_sessions}-{max_runs}')
    sessions, runs = [f's{i}' for i in range(4)], [f'r{i}' for i in range(6)]
    for step in range(5000):
        op = random_op(rng, sessions, runs)
        assert outcome(limiter, op) == outcome(model, op), f'step {step}: {op}'
        assert limiter.status() == model.status(), f'step {step}: {op}'


@pytest.mark.anyio
async def test_many_tasks_on_shared_ids_match_a_model_after_every_step():
    """Tasks interleave at every step; each step is one call, checked against the shared model."""
    limiter = SessionLimiter(max_parallel_sessions=3, max_parallel_runs=4)
    model = Model(3, 4)
    sessions, runs = [f's{i}' for i in range(5)], [f'r{i}' for i in range(8)]
    steps = 0

    async def worker(seed: int) -> None:
        nonlocal steps
        rng = random.Random(seed)
        for _ in range(500):
            op = random_op(rng, sessions, runs)
            assert outcome(limiter, op) == outcome(model, op), op
            assert limiter.status() == model.status(), op
            steps += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for seed in range(50):
            tg.start_soon(worker, seed)
    assert steps == 50 * 500
    for session in sessions:
        limiter.release_session(session)
    assert limiter.status() == status(0, 0, 3, 4)


def check_invariants(current: SessionStatus) -> None:
    max_sessions, max_runs = current['max_parallel_sessions'], current['max_parallel_runs']
    assert max_sessions is None or 0 <= current['active_sessions'] <= max_sessions, current
    assert max_runs is None or 0 <= current['active_runs'] <= max_runs, current
    assert current['active_runs'] == 0 or current['active_sessions'] > 0, current


def test_many_threads_with_their_own_ids_match_their_models():
    """Threads share the limits but not the IDs, so each knows exactly what it holds.

    A thread's outcome must be its model's, except that an acquire its model allows may find the
    shared limit taken by other threads. After joining, the counts are what the threads hold.
    """
    limiter = SessionLimiter(max_parallel_sessions=10, max_parallel_runs=12)
    n_threads = 8
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> Model:
        rng = random.Random(t)
        model = Model(None, None)
        sessions, runs = [f't{t}-s{i}' for i in range(3)], [f't{t}-r{i}' for i in range(4)]
        barrier.wait()
        for _ in range(3000):
            op = random_op(rng, sessions, runs)
            before = (set(model.sessions), dict(model.runs))
            expected = outcome(model, op)
            actual = outcome(limiter, op)
            if expected is None and actual is not None and issubclass(actual[0], ConcurrencyLimitExceeded):
                model.sessions, model.runs = before
            else:
                assert actual == expected, op
            current = limiter.status()
            check_invariants(current)
            assert current['active_sessions'] >= len(model.sessions)
            assert current['active_runs'] >= len(model.runs)
        return model

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            models = list(pool.map(worker, range(n_threads)))
    finally:
        sys.setswitchinterval(interval)
    held_sessions = sum(len(m.sessions) for m in models)
    held_runs = sum(len(m.runs) for m in models)
    assert limiter.status() == status(held_sessions, held_runs, 10, 12)
