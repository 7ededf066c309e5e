"""``Idempotency-Key`` on POSTs against real PostgreSQL and Redis: replays, refusals, what is
kept, and a retry while the first request still runs (on another API process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter
from reservations.app import create_app
from reservations.channels import reservation_channel
from reservations.reservation.gate import user_key
from reservations.settings import Settings

from ..conftest import Api
from ..helpers import ADMIN, create_event, create_user, outcomes
from .conftest import KEY, client_of, key_rows, keyed, users_locked, wait_until_blocked_on_users


async def test_a_retry_replays_the_first_answer_and_queues_nothing(api: Api) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    path = f"/reservation/{event_id}/{user_id}"  # the fast lane's request shape

    first = await api.client.post(path, headers=keyed("retry-1"))
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await api.client.post(path, headers=keyed("retry-1"))
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == "application/json"

    assert (await outcomes(api.client, event_id))["accepted"] == 1
    assert (await api.resources.channel.stats()).waiting == 1
    # A new key is a new request.
    other = await api.client.post(path, headers=keyed("retry-2"))
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]
    assert (await outcomes(api.client, event_id))["accepted"] == 2


async def test_a_retried_create_gets_its_201_not_a_conflict(
    api: Api, db: asyncpg.Connection
) -> None:
    body = {"name": "Ada", "email": "ada@example.com"}
    first = await api.client.post("/user", json=body, headers=keyed("signup-ada"))
    assert first.status_code == 201, first.text
    again = await api.client.post("/user", json=body, headers=keyed("signup-ada"))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # Without a key, sending it again is a second attempt, refused by the data.
    assert (await api.client.post("/user", json=body)).status_code == 409
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_the_same_key_with_another_request_is_422(api: Api) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "Concert", 10)
    body = {"userId": users[0], "eventId": event_id}
    assert (await api.client.post("/reservation", json=body, headers=keyed("k"))).status_code == 202

    for method_path, sent in [
        ("/reservation", {"userId": users[1], "eventId": event_id}),  # another body
        (f"/reservation/{event_id}/{users[0]}", None),  # another path
        ("/reservation?x=1", body),  # another query
    ]:
        r = await api.client.post(method_path, json=sent, headers=keyed("k"))
        assert r.status_code == 422, (method_path, r.text)
        assert r.json() == {
            "statusCode": 422,
            "error": "IDEMPOTENCY_KEY_REUSED",
            "message": "this Idempotency-Key was already used with a different request (method, "
            "path, query or body); use a new key for a new request",
        }
    assert (await outcomes(api.client, event_id))["accepted"] == 1
    # The first request's answer is still there for its own retries.
    r = await api.client.post("/reservation", json=body, headers=keyed("k"))
    assert r.status_code == 202
    assert r.headers["idempotent-replayed"] == "true"


async def test_a_retry_during_the_first_request_is_409_on_any_api_process(
    api: Api, settings: Settings, db: asyncpg.Connection, locker: asyncpg.Connection
) -> None:
    """The first request runs on one API process, its retries come to another (one database,
    as in a cluster)."""
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    # The gate forgets the user, so the request reads it from PostgreSQL.
    await api.resources.redis.call("DEL", user_key(user_id))
    path = f"/reservation/{event_id}/{user_id}"

    async with client_of(create_app(settings)) as other_process:
        async with users_locked(locker):
            first = asyncio.create_task(api.client.post(path, headers=keyed("slow")))
            await wait_until_blocked_on_users(db)

            retry = await other_process.post(path, headers=keyed("slow"))
            assert retry.status_code == 409, retry.text
            assert retry.headers["retry-after"] == "1"
            assert retry.json()["error"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
            assert "still in progress" in retry.json()["message"]
            # The fingerprint is checked first: another request with the key is refused as such.
            other = await other_process.post(f"/reservation/{event_id}/{user_id + 1}",
                                             headers=keyed("slow"))  # fmt: skip
            assert other.status_code == 422
            assert await key_rows(db) == [("slow", None)]
            assert not first.done()

        answer = await first
        assert answer.status_code == 202, answer.text
        replay = await other_process.post(path, headers=keyed("slow"))
        assert replay.status_code == 202
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == answer.content
    assert (await outcomes(api.client, event_id))["accepted"] == 1
    assert await key_rows(db) == [("slow", 202)]


async def test_failed_answers_are_not_kept_so_a_retry_runs_again(
    api: Api, db: asyncpg.Connection
) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    path = f"/reservation/{event_id}/{user_id}"
    # The queue's Redis is unreachable: 503, the request was not accepted.
    good = api.resources.channel
    dead = BrokerQueue(RedisAdapter("redis://127.0.0.1:1/0"))
    api.resources.channel = reservation_channel(dead)
    try:
        failed = await api.client.post(path, headers=keyed("after-503"))
    finally:
        api.resources.channel = good
        await dead.close()
    assert failed.status_code == 503, failed.text
    assert await key_rows(db) == []

    ran = await api.client.post(path, headers=keyed("after-503"))
    assert ran.status_code == 202
    assert "idempotent-replayed" not in ran.headers
    replay = await api.client.post(path, headers=keyed("after-503"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == ran.content
    assert (await outcomes(api.client, event_id))["accepted"] == 1


async def test_rate_limited_answers_are_not_kept(
    settings: Settings, db: asyncpg.Connection
) -> None:
    limited = settings.model_copy(update={"reservation_rate_limit": "1/h"})
    async with client_of(create_app(limited)) as client:
        user_id = await create_user(client, 1)
        event_id = await create_event(client, "Concert", 10)
        path = f"/reservation/{event_id}/{user_id}"
        assert (await client.post(path, headers=keyed("a"))).status_code == 202
        r = await client.post(path, headers=keyed("b"))
        assert r.status_code == 429, r.text
    assert await key_rows(db) == [("a", 202)]


async def test_an_admin_answer_is_replayed_only_to_the_same_credentials(
    api: Api, db: asyncpg.Connection
) -> None:
    event = {"name": "Gala", "date": "2030-05-01T19:00:00Z", "location": "Seoul", "maxTickets": 5}
    first = await api.client.post("/event", json=event, headers=keyed("gala", **ADMIN))
    assert first.status_code == 201, first.text
    again = await api.client.post("/event", json=event, headers=keyed("gala", **ADMIN))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()

    for headers in [keyed("gala"), keyed("gala", Authorization="Bearer not-the-token")]:
        r = await api.client.post("/event", json=event, headers=headers)
        assert r.status_code == 401, r.text
        assert "idempotent-replayed" not in r.headers
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    # The 401s were not kept: only the admin's answer is.
    assert await key_rows(db) == [("gala", 201)]


async def test_a_bad_key_is_400_and_nothing_runs(api: Api) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    path = f"/reservation/{event_id}/{user_id}"
    for value in [b"", b"has space", b"x" * 256, "clé".encode("latin-1"), b"tab\there"]:
        r = await api.client.post(path, headers=[(KEY.encode(), value)])
        assert r.status_code == 400, (value, r.text)
        assert r.json() == {
            "statusCode": 400,
            "error": "INVALID_IDEMPOTENCY_KEY",
            "message": "the Idempotency-Key header must be 1 to 255 visible ASCII characters "
            "(letters, digits, punctuation; no spaces), e.g. a UUID",
        }
    r = await api.client.post(path, headers=[(KEY, "one"), (KEY, "two")])
    assert r.status_code == 400
    assert r.json()["message"] == "send one Idempotency-Key header, not several"
    assert (await outcomes(api.client, event_id))["accepted"] == 0
    # The longest key there may be, and every visible character.
    for value in ["x" * 255, "".join(map(chr, range(0x21, 0x7F)))]:
        assert (await api.client.post(path, headers=keyed(value))).status_code == 202


async def test_postgresql_down_is_503_for_keyed_requests_only(api: Api) -> None:
    from reservations.db import create_engine

    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    path = f"/reservation/{event_id}/{user_id}"
    good = api.resources.engine
    api.resources.engine = create_engine("postgresql://postgres:secret-pw@127.0.0.1:1/none")
    try:
        keyed_answer = await api.client.post(path, headers=keyed("while-pg-is-down"))
        # The reservation path itself needs no PostgreSQL once the gate knows user and event.
        plain_answer = await api.client.post(path)
    finally:
        await api.resources.engine.dispose()
        api.resources.engine = good
    assert keyed_answer.status_code == 503
    assert keyed_answer.json()["message"] == (
        "PostgreSQL is unavailable right now; the request was not run"
    )
    assert "secret-pw" not in keyed_answer.text
    assert plain_answer.status_code == 202
    assert (await outcomes(api.client, event_id))["accepted"] == 1


async def test_every_post_documents_the_header_and_its_answers(api: Api) -> None:
    document = (await api.client.get("/api-json")).json()
    parameter = document["components"]["parameters"]["IdempotencyKey"]
    assert parameter["in"] == "header"
    assert parameter["name"] == "Idempotency-Key"
    ref = {"$ref": "#/components/parameters/IdempotencyKey"}
    posts = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = ref in operation.get("parameters", [])
            assert declared == (method == "post"), (method, path)
            if method != "post":
                continue
            posts += 1
            responses = operation["responses"]
            assert "IDEMPOTENCY_KEY_IN_PROGRESS" in responses["409"]["description"]
            assert "IDEMPOTENCY_KEY_REUSED" in responses["422"]["description"]
            assert "Idempotency-Key" in responses["400"]["description"]
            success = [r for status, r in responses.items() if status.startswith("2")]
            assert all("Idempotent-Replayed" in r["headers"] for r in success), path
    assert posts == 10


async def test_a_keyed_body_over_the_limit_is_413_and_keeps_no_key(
    api: Api, db: asyncpg.Connection
) -> None:
    """Streamed without a length, the body is cut off at the limit while the key's middleware
    reads it, before anything is claimed."""
    limit = api.resources.settings.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 1024 + 2):
            yield b" " * 1024

    r = await api.client.post("/user", content=chunks(), headers=keyed("too-big"))
    assert r.status_code == 413, r.text
    assert await key_rows(db) == []
