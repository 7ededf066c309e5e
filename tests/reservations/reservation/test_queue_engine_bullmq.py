"""QUEUE_ENGINE=bullmq: the reservation queue is a BullMQ queue, as the seed's NestJS services
use it (queue ``reservation-queue``, job ``reserveEvent``, data ``{userId, eventId, ...}``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reservations.app import create_app
from reservations.settings import Settings
from reservations.worker import consuming

from ..conftest import Api
from ..helpers import create_event, create_user, eventually


@pytest.fixture
async def bullmq_api(settings: Settings) -> AsyncIterator[Api]:
    import httpx

    app = create_app(settings.model_copy(update={"queue_engine": "bullmq"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(app, client)


async def test_requests_travel_as_bullmq_jobs_and_are_reserved(bullmq_api: Api) -> None:
    api = bullmq_api
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "On BullMQ", 1)
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]

    redis = api.resources.redis
    raw = await redis.call("HGETALL", "bull:reservation-queue:1")
    job = dict(zip(raw[::2], raw[1::2], strict=True))
    assert job[b"name"] == b"reserveEvent"
    data = json.loads(job[b"data"])
    assert (data["userId"], data["eventId"], data["requestId"]) == (user_id, event_id, request_id)
    assert await redis.call("LRANGE", "bull:reservation-queue:wait", 0, -1) == [b"1"]

    async def outcome() -> dict[str, Any]:
        body: dict[str, Any] = (await api.client.get(f"/reservation/requests/{request_id}")).json()
        return body

    async with consuming(api.resources, max_parallel=4):
        final = await eventually(outcome, lambda b: b["status"] != "PENDING", what="outcome")
    assert final["status"] == "RESERVED"
    assert await redis.call("LLEN", "bull:reservation-queue:wait") == 0
