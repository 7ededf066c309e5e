"""What the load test and the fault harness share: making events and users over HTTP, running
many requests a pool's worth at a time, and the checks' record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .http import Pool, Response, bearer

__all__ = [
    "Check",
    "LoadTestError",
    "Progress",
    "bounded",
    "create_event",
    "create_users",
    "expect",
    "first_int",
]


class LoadTestError(Exception):
    """The run could not be carried out (service unreachable, setup refused, ...)."""


class Progress:
    """What the run reports as it goes; the CLI draws it with Rich, tests ignore it."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, done: int) -> None: ...

    def note(self, text: str) -> None: ...

    def measure(self, point: str) -> None:
        """``"start"`` just before the first POST is sent, ``"end"`` once every outcome is final
        (or the wait for it gave up), before the checks' reads: the window a caller can meter."""


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    target: bool = False  # a performance target rather than a correctness invariant


def first_int(data: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


async def expect(resp: Response, what: str, *ok: int) -> Any:
    if resp.status not in ok:
        raise LoadTestError(
            f"{what}: HTTP {resp.status}: {resp.body[:500].decode(errors='replace')}"
        )
    return resp.json()


async def bounded(
    pool: Pool, count: int, make: Callable[[int], Any], progress: Progress
) -> list[Any]:
    """Run ``make(i)`` for i in range(count), at most ``pool.size`` at a time, in order."""
    results: list[Any] = [None] * count
    next_i = 0
    done = 0

    async def run() -> None:
        nonlocal next_i, done
        while next_i < count:
            i = next_i
            next_i += 1
            results[i] = await make(i)
            done += 1
            if done % 256 == 0 or done == count:
                progress.advance(done)

    await asyncio.gather(*(run() for _ in range(pool.size)))
    return results


async def create_event(
    pool: Pool, *, name: str, tickets: int, admin_token: str | None, location: str = "loadtest"
) -> int:
    """Put an event with ``tickets`` tickets on sale, a month from now; its id."""
    body = {
        "name": name,
        "date": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "location": location,
        "maxTickets": tickets,
    }
    resp = await pool.post("/event", body, bearer(admin_token))
    if resp.status == 401:
        raise LoadTestError(
            "POST /event needs the admin token: pass --admin-token or set ADMIN_TOKEN "
            "(`reservations-tools up` keeps the one it made in <data dir>/admin-token)"
        )
    data = await expect(resp, "POST /event", 200, 201)
    event_id = first_int(data, "id", "eventId")
    if event_id is None:
        raise LoadTestError(f"POST /event answered without an id: {data!r}")
    return event_id


async def create_users(
    pool: Pool, prefix: str, count: int, progress: Progress | None = None
) -> list[int]:
    """``count`` users named ``<prefix>-<i>``, a pool's worth at a time; their ids, in order."""
    progress = progress or Progress()
    progress.phase("creating users", count)

    async def make(i: int) -> int:
        body = {"name": f"{prefix}-{i}", "email": f"{prefix}-{i}@loadtest.example"}
        data = await expect(await pool.post("/user", body), "POST /user", 200, 201)
        user_id = first_int(data, "id", "userId")
        if user_id is None:
            raise LoadTestError(f"POST /user answered without an id: {data!r}")
        return user_id

    return await bounded(pool, count, make, progress)
