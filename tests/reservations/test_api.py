"""The HTTP API against real PostgreSQL and Redis (no workers here: requests stay PENDING)."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter
from reservations.app import create_app
from reservations.channels import reservation_channel
from reservations.settings import Settings

from .conftest import Api
from .helpers import ADMIN, create_event, create_user


async def test_user_create_and_get(api: Api) -> None:
    r = await api.client.post("/user", json={"name": "Peter", "email": "Peter@Example.com"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "Peter"
    assert body["email"] == "peter@example.com"
    r = await api.client.get(f"/user/{body['id']}")
    assert r.status_code == 200
    assert r.json()["id"] == body["id"]


async def test_duplicate_email_is_409(api: Api) -> None:
    await create_user(api.client, 1)
    r = await api.client.post("/user", json={"name": "again", "email": "user1@example.com"})
    assert r.status_code == 409
    assert "already exists" in r.json()["message"]


async def test_bad_input_is_a_clear_4xx(api: Api) -> None:
    r = await api.client.post("/user", json={"name": "", "email": "not-an-email"})
    assert r.status_code == 422
    message = r.json()["message"]
    assert "name" in message
    assert "email" in message
    r = await api.client.get("/user/0")
    assert r.status_code == 422
    r = await api.client.get("/user/99999999999")
    assert r.status_code == 422
    r = await api.client.get("/user/abc")
    assert r.status_code == 422
    r = await api.client.get("/user/12345")
    assert r.status_code == 404
    assert r.json()["message"] == "user 12345 does not exist"
    r = await api.client.post(
        "/event", json={"name": "x", "date": "tomorrow", "location": "y"}, headers=ADMIN
    )
    assert r.status_code == 422
    assert "maxTickets" in r.json()["message"]
    r = await api.client.post("/reservation", json={"userId": "one"})
    assert r.status_code == 422
    r = await api.client.post(
        "/reservation", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_event_create_and_get(api: Api) -> None:
    event_id = await create_event(api.client, "Concert", 100)
    r = await api.client.get(f"/event/{event_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["maxTickets"] == 100
    assert body["reservedTickets"] == 0
    assert body["remainingTickets"] == 100
    r = await api.client.post(
        "/event",
        json={"name": "Concert", "date": "2030-01-01T00:00:00Z", "location": "x", "maxTickets": 1},
        headers=ADMIN,
    )
    assert r.status_code == 409
    r = await api.client.get("/event/777")
    assert r.status_code == 404


async def test_reservation_is_accepted_with_the_seed_job_shape(
    api: Api, db: asyncpg.Connection
) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["name"] == "reserveEvent"
    assert job["data"] == {"userId": user_id, "eventId": event_id}
    assert job["queueQualifiedName"].endswith("reservation-queue")
    assert isinstance(job["timestamp"], int)
    assert job["opts"]["attempts"] >= 1
    assert job["status"] == "PENDING"
    assert r.headers["location"] == f"/reservation/requests/{job['id']}"
    assert job["statusUrl"] == r.headers["location"]

    r = await api.client.get(r.headers["location"])
    assert r.status_code == 200
    assert r.json() == {
        "jobId": job["id"],
        "userId": user_id,
        "eventId": event_id,
        "status": "PENDING",
        "reason": None,
        "reservationId": None,
        "seq": 1,
        "error": None,
        "position": 1,
        "estimatedWaitSeconds": None,
        "reservationStatus": None,
        "holdExpiresAt": None,
        "quantity": 1,
    }
    # The message really is in the queue.
    stats = await api.resources.channel.stats()
    assert stats.waiting == 1

    r = await api.client.post("/reservation", json={"userId": user_id, "eventId": event_id})
    assert r.status_code == 202
    outcomes = (await api.client.get(f"/event/{event_id}/outcomes")).json()
    assert outcomes["accepted"] == 2
    assert outcomes["pending"] == 2
    # Nothing was written to PostgreSQL by the API.
    assert await db.fetchval("SELECT count(*) FROM reservation_requests") == 0


async def test_unknown_user_or_event_is_404_at_the_api(api: Api) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    r = await api.client.post(f"/reservation/{event_id}/4242")
    assert r.status_code == 404
    assert r.json()["message"] == "user 4242 does not exist"
    r = await api.client.post(f"/reservation/4343/{user_id}")
    assert r.status_code == 404
    assert r.json()["message"] == "event 4343 does not exist"
    r = await api.client.post("/reservation/0/1")
    assert r.status_code == 422
    assert "event_id" in r.json()["message"]
    r = await api.client.post(f"/reservation/{event_id}/99999999999")
    assert r.status_code == 422
    assert "user_id" in r.json()["message"]
    r = await api.client.post(f"/reservation/{event_id}/-1")
    assert r.status_code == 422
    r = await api.client.post(f"/reservation/abc/{user_id}")
    assert r.status_code == 422
    assert (await api.resources.channel.stats()).waiting == 0


async def test_user_missing_from_cache_is_found_in_postgres(api: Api) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    await api.resources.redis.call("FLUSHDB")
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202


async def test_get_reservation_404_and_unknown_job(api: Api) -> None:
    r = await api.client.get("/reservation", params={"eventId": 1, "userId": 1})
    assert r.status_code == 404
    r = await api.client.get("/reservation", params={"eventId": 1})
    assert r.status_code == 422
    r = await api.client.get("/reservation/requests/nope")
    assert r.status_code == 404
    r = await api.client.delete("/reservation/5", headers=ADMIN)
    assert r.status_code == 404
    r = await api.client.get("/event/5/reservations")
    assert r.status_code == 404
    r = await api.client.get("/event/5/outcomes")
    assert r.status_code == 404


async def test_docs_and_health(api: Api) -> None:
    r = await api.client.get("/api")
    assert r.status_code == 200
    assert "swagger" in r.text.lower()
    r = await api.client.get("/api-json")
    paths = r.json()["paths"]
    assert "/reservation/{event_id}/{user_id}" in paths
    assert "/reservation/requests/{job_id}" in paths
    r = await api.client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"redis": "ok", "postgres": "ok"}}


async def test_health_is_503_when_postgres_is_down(api: Api) -> None:
    # Point the engine at a port where nothing listens; Redis stays up.
    from reservations.db import create_engine

    good = api.resources.engine
    api.resources.engine = create_engine("postgresql://postgres:secret-pw@127.0.0.1:1/none")
    try:
        r = await api.client.get("/health")
    finally:
        await api.resources.engine.dispose()
        api.resources.engine = good
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["postgres"].startswith("down")
    assert "secret-pw" not in r.text


async def test_health_is_503_when_redis_is_down(api: Api) -> None:
    from brokerq.redis import Connection

    good = api.resources.redis
    api.resources.redis = Connection("redis://:secret-pw@127.0.0.1:1/0")
    try:
        r = await api.client.get("/health")
    finally:
        await api.resources.redis.close()
        api.resources.redis = good
    assert r.status_code == 503
    assert r.json()["checks"]["postgres"] == "ok"
    assert "secret-pw" not in r.text


async def test_queue_down_is_503_and_the_place_is_handed_back(api: Api) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "One seat", 1)
    assert (await api.client.post(f"/reservation/{event_id}/{users[0]}")).status_code == 202
    # The queue's Redis is unreachable (the gate's stays up).
    good = api.resources.channel
    dead = BrokerQueue(RedisAdapter("redis://127.0.0.1:1/0"))
    api.resources.channel = reservation_channel(dead)
    try:
        r = await api.client.post(f"/reservation/{event_id}/{users[1]}")
    finally:
        api.resources.channel = good
        await dead.close()
    assert r.status_code == 503, r.text
    assert "not accepted" in r.json()["message"]
    counters = await api.resources.gate.counters(event_id)
    assert counters is not None
    assert counters.accepted == 1
    assert counters.admitted == 1


async def test_fast_lane_is_seen_by_outer_middleware_as_the_documented_route(
    settings: Settings,
) -> None:
    """The reservation POST skips the framework's routing; middlewares added after the app is
    built (metrics, tracing) must still see which route served it."""
    from starlette.types import ASGIApp, Receive, Scope, Send

    seen: list[tuple[str | None, int]] = []

    class Recorder:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            status = 0

            async def capture(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, capture)
            if scope["type"] == "http":
                seen.append((getattr(scope.get("route"), "path", None), status))

    app = create_app(settings)
    app.add_middleware(Recorder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            user_id = await create_user(client, 1)
            event_id = await create_event(client, "Concert", 10)
            seen.clear()
            assert (await client.post(f"/reservation/{event_id}/{user_id}")).status_code == 202
            assert (await client.post(f"/reservation/{event_id}/777")).status_code == 404
            assert (await client.post(f"/reservation/{event_id}/0")).status_code == 422
    template = "/reservation/{event_id}/{user_id}"
    assert seen == [(template, 202), (template, 404), (template, 422)]
