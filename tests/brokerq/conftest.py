from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest

from brokerq import BrokerQueue
from brokerq.memory import MemoryAdapter
from brokerq.redis import RedisAdapter


class User(msgspec.Struct):
    id: int
    username: str


@pytest.fixture(params=["memory", "redis"])
async def queue(request: pytest.FixtureRequest, redis_server) -> AsyncIterator[BrokerQueue]:
    adapter = MemoryAdapter() if request.param == "memory" else RedisAdapter(redis_server.url)
    q = BrokerQueue(adapter)
    yield q
    await q.close()


@pytest.fixture
def name() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


async def until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll a condition that no event signals (e.g. broker counters) until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
