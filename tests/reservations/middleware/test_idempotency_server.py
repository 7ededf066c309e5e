"""``Idempotency-Key`` across two real ``reservations api`` processes sharing PostgreSQL and Redis,
as two members of a cluster behind a balancer: the first request on one, its retries on the
other, while it runs and after."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from redis.asyncio import Redis

from reservations.reservation.gate import user_key

from ..helpers import ADMIN
from ..test_server import ApiProcess
from .conftest import key_rows, keyed, users_locked, wait_until_blocked_on_users


@pytest.fixture
def cluster(
    database_url: str, redis_url: str, clean: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, ApiProcess]]:
    logs = tmp_path_factory.mktemp("cluster")
    urls = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    with ApiProcess(logs / "a.log", **urls) as a, ApiProcess(logs / "b.log", **urls) as b:
        yield a, b


async def test_a_retry_on_another_process_during_and_after_the_first_request(
    cluster: tuple[ApiProcess, ApiProcess],
    db: asyncpg.Connection,
    locker: asyncpg.Connection,
    redis_url: str,
) -> None:
    a, b = cluster
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        r = await on_a.post("/user", json={"name": "Ada", "email": "ada@example.com"})
        user_id = r.json()["id"]
        event = {"name": "Gig", "date": "2030-05-01T19:00:00Z", "location": "Seoul",
                 "maxTickets": 5}  # fmt: skip
        event_id = (await on_a.post("/event", json=event, headers=ADMIN)).json()["id"]
        # The gate forgets the user, so the first request reads it from PostgreSQL.
        redis = Redis.from_url(redis_url)
        try:
            await redis.delete(user_key(user_id))
        finally:
            await redis.aclose()
        path = f"/reservation/{event_id}/{user_id}"

        async with users_locked(locker):
            first = asyncio.create_task(on_a.post(path, headers=keyed("across")))
            await wait_until_blocked_on_users(db)
            during = await on_b.post(path, headers=keyed("across"))
            assert during.status_code == 409, during.text
            assert during.headers["retry-after"] == "1"
            assert during.json()["error"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
        answer = await first
        assert answer.status_code == 202, answer.text

        after = await on_b.post(path, headers=keyed("across"))
        assert after.status_code == 202
        assert after.headers["idempotent-replayed"] == "true"
        assert after.content == answer.content
        assert after.headers["location"] == answer.headers["location"]
        outcomes = (await on_b.get(f"/event/{event_id}/outcomes")).json()
        assert outcomes["accepted"] == 1
    assert await key_rows(db) == [("across", 202)]
