"""Small helpers shared by the service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# The admin token the test settings configure; creating events and cancelling need it.
ADMIN_TOKEN = "s3cret-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout_s: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``done`` holds for its value, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(0.05)
        value = await probe()
    return value


async def create_user(client: httpx.AsyncClient, n: int) -> int:
    r = await client.post("/user", json={"name": f"user {n}", "email": f"user{n}@example.com"})
    assert r.status_code == 201, r.text
    user_id: int = r.json()["id"]
    return user_id


async def create_event(
    client: httpx.AsyncClient, name: str, max_tickets: int, **options: Any
) -> int:
    """An event on sale; ``options`` are more fields of its body (``holdSeconds=10``, ...)."""
    body = {
        "name": name,
        "date": "2030-05-01T19:00:00Z",
        "location": "Seoul",
        "maxTickets": max_tickets,
        **options,
    }
    r = await client.post("/event", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    for field, value in options.items():
        if field != "date":  # answered in its canonical form
            assert r.json()[field] == value, (field, r.text)
    event_id: int = r.json()["id"]
    return event_id


async def request_outcome(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """``GET`` of a request's status URL."""
    r = await client.get(f"/reservation/requests/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def processed(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """A request's outcome once a worker has processed it (no longer PENDING)."""
    return await eventually(
        lambda: request_outcome(client, job_id),
        lambda body: body["status"] != "PENDING",
        what=f"request {job_id} processed",
    )


async def outcomes(client: httpx.AsyncClient, event_id: int) -> dict[str, Any]:
    r = await client.get(f"/event/{event_id}/outcomes")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for(
    condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` if too late."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
