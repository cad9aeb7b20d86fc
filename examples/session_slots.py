"""Session and run slots for pydantic-ai agents: each conversation holds a session slot while it is
open, and each agent run holds a run slot while it runs.

`SessionLimiter` never waits: a conversation that finds every session slot taken, or a turn that
finds every run slot taken, is told so at once (`MaxSessionsExceeded`, `MaxRunsExceeded`). Here the
caller retries after a short pause; a server could answer "busy" instead.

Run it with `python examples/session_slots.py`. It uses pydantic-ai's `TestModel`, so it needs no
API key and no network; a tool that sleeps briefly stands in for real work, so runs overlap.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.test import TestModel

from ferrolimit import ConcurrencyLimitExceeded, SessionLimiter

limiter = SessionLimiter(max_parallel_sessions=3, max_parallel_runs=2)
agent = Agent(TestModel(), instructions='Answer in one line.')
run_numbers = itertools.count(1)


@agent.tool_plain
async def look_up(topic: str) -> str:
    """Look a topic up (here: pretend to, briefly)."""
    await asyncio.sleep(0.02)
    return f'notes on {topic}'


def show(event: str) -> None:
    s = limiter.status()
    print(
        f'[sessions {s["active_sessions"]}/{s["max_parallel_sessions"]}, '
        f'runs {s["active_runs"]}/{s["max_parallel_runs"]}] {event}'
    )


async def take(acquire: Callable[[], None], who: str) -> None:
    """Take a slot, retrying while the limiter is full (acquires never wait on their own)."""
    told = False
    while True:
        try:
            acquire()
            return
        except ConcurrencyLimitExceeded as e:  # MaxSessionsExceeded or MaxRunsExceeded
            if not told:
                show(f'{who}: {e}, retrying')
                told = True
            await asyncio.sleep(0.01)


@asynccontextmanager
async def conversation(session_id: str) -> AsyncGenerator[None]:
    """Hold a session slot for the whole conversation."""
    await take(lambda: limiter.acquire_session(session_id), session_id)
    show(f'{session_id}: opened')
    try:
        yield
    finally:
        # Also releases any run slot the conversation still held.
        limiter.release_session(session_id)
        show(f'{session_id}: closed')


async def turn(session_id: str, prompt: str, history: list[ModelMessage]) -> list[ModelMessage]:
    """One agent run, holding a run slot of its conversation's session."""
    # A run ID is unique across sessions while it holds a slot: one counter for all.
    run_id = f'run-{next(run_numbers)}'
    await take(lambda: limiter.acquire_run(session_id, run_id), f'{session_id}/{run_id}')
    show(f'{session_id}/{run_id}: running')
    try:
        result = await agent.run(prompt, message_history=history)
    finally:
        limiter.release_run(run_id)
    return result.all_messages()


async def chat(session_id: str, prompts: list[str]) -> None:
    async with conversation(session_id):
        history: list[ModelMessage] = []
        for prompt in prompts:
            history = await turn(session_id, prompt, history)


async def main() -> None:
    print(f'limits: {limiter.limits()}')
    conversations = {f'chat-{i}': ['What is a semaphore?', 'And a mutex?'] for i in range(1, 5)}
    await asyncio.gather(*(chat(session_id, prompts) for session_id, prompts in conversations.items()))
    show('all conversations done')
    assert limiter.status()['active_sessions'] == limiter.status()['active_runs'] == 0


if __name__ == '__main__':
    asyncio.run(main())
