"""The faults, each a coroutine run in the middle of a burst against a ``Deployment``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .deployment import Deployment

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    fault: str
    run: Callable[[Deployment], Awaitable[None]] | None
    appendfsync: str = "always"


async def _kill_one_worker(d: Deployment) -> None:
    d.kill_worker(0)
    await d.start_worker(0)


async def _kill_all_workers(d: Deployment) -> None:
    for i in range(len(d.workers)):
        d.kill_worker(i)
    for i in range(len(d.workers)):
        await d.start_worker(i)


async def _kill_redis(d: Deployment) -> None:
    await d.kill_redis()
    await d.start_redis()


async def _restart_postgres(d: Deployment) -> None:
    await d.stop_postgres()
    await d.start_postgres()


async def _postgres_down_10s(d: Deployment) -> None:
    await d.stop_postgres()
    await asyncio.sleep(10)  # the fault itself: ten seconds without a database
    await d.start_postgres()


async def _kill_api(d: Deployment) -> None:
    d.kill_api()
    await d.start_api()


SCENARIOS = [
    Scenario("baseline", "none", None),
    Scenario("worker-killed", "SIGKILL one worker, restart it", _kill_one_worker),
    Scenario("all-workers-killed", "SIGKILL all three workers, restart them", _kill_all_workers),
    Scenario(
        "redis-killed-always",
        "SIGKILL Redis (appendfsync always), restart it",
        _kill_redis,
        appendfsync="always",
    ),
    Scenario(
        "redis-killed-everysec",
        "SIGKILL Redis (appendfsync everysec), restart it",
        _kill_redis,
        appendfsync="everysec",
    ),
    Scenario("postgres-restarted", "stop PostgreSQL (fast), start it", _restart_postgres),
    Scenario("postgres-down-10s", "PostgreSQL down for 10 s", _postgres_down_10s),
    Scenario("api-killed", "SIGKILL the API, restart it", _kill_api),
]
