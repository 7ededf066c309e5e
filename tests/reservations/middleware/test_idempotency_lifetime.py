"""How long an ``Idempotency-Key`` holds: its lease while the first request runs, its 24 h, and the
cleanup in the workers' maintenance pass. Real PostgreSQL and Redis; the first request is held
by a real PostgreSQL lock it needs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg  # type: ignore[import-untyped]

from reservations.app import create_app
from reservations.idempotency.store import (
    KEY_TTL_S,
    Answer,
    Claimed,
    InProgress,
    KeyStore,
    RequestKey,
)
from reservations.middleware.idempotency import IdempotencyKeys
from reservations.reservation.gate import user_key
from reservations.reservation.settle.recovery import maintenance_pass
from reservations.settings import Settings

from ..conftest import Api
from ..helpers import create_event, create_user, eventually, outcomes
from .conftest import client_of, key_rows, keyed, users_locked, wait_until_blocked_on_users


async def _uncached_reservation(api: Api) -> tuple[str, int]:
    """A reservation path whose request reads ``users`` in PostgreSQL."""
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    await api.resources.redis.call("DEL", user_key(user_id))
    return f"/reservation/{event_id}/{user_id}", event_id


async def test_a_key_left_by_a_dead_process_is_taken_over_after_its_lease(
    api: Api, db: asyncpg.Connection, locker: asyncpg.Connection
) -> None:
    """Its lease run out, the key is the retry's: the first request's late answer is sent to its
    own client but not recorded, and later retries get the answer of the one that took over."""
    path, event_id = await _uncached_reservation(api)
    async with users_locked(locker):
        first = asyncio.create_task(api.client.post(path, headers=keyed("orphan")))
        await wait_until_blocked_on_users(db)
        # As if its process had died: no renewal, and the lease has run out.
        await db.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
        retry = asyncio.create_task(api.client.post(path, headers=keyed("orphan")))
        await wait_until_blocked_on_users(db, requests=2)  # the retry runs too
    late, taken_over = await first, await retry
    assert late.status_code == taken_over.status_code == 202
    assert late.json()["id"] != taken_over.json()["id"]
    replay = await api.client.post(path, headers=keyed("orphan"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == taken_over.content
    assert (await outcomes(api.client, event_id))["accepted"] == 2


async def test_the_lease_is_renewed_while_the_first_request_runs(
    settings: Settings, db: asyncpg.Connection, locker: asyncpg.Connection
) -> None:
    """A request running longer than the lease keeps its key: a retry is still 409."""
    app = create_app(settings)
    for middleware in app.user_middleware:
        if middleware.cls is IdempotencyKeys:
            middleware.kwargs["lease_s"] = 0.6
    async with client_of(app) as client:
        user_id = await create_user(client, 1)
        event_id = await create_event(client, "Concert", 10)
        await app.state.resources.redis.call("DEL", user_key(user_id))
        path = f"/reservation/{event_id}/{user_id}"
        async with users_locked(locker):
            first = asyncio.create_task(client.post(path, headers=keyed("long")))
            await wait_until_blocked_on_users(db)
            lease: datetime = await db.fetchval("SELECT locked_until FROM idempotency_keys")
            # The first lease has run out, and a renewed one holds the key.
            await eventually(
                lambda: db.fetchval(
                    "SELECT clock_timestamp() > $1 AND locked_until > clock_timestamp()"
                    " FROM idempotency_keys",
                    lease,
                ),
                bool,
                what="the lease renewed past its first end",
            )
            retry = await client.post(path, headers=keyed("long"))
            assert retry.status_code == 409, retry.text
        assert (await first).status_code == 202
    assert await key_rows(db) == [("long", 202)]


async def test_a_key_past_its_24_hours_is_a_new_request(api: Api, db: asyncpg.Connection) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 10)
    path = f"/reservation/{event_id}/{user_id}"
    first = await api.client.post(path, headers=keyed("old"))
    aged = "UPDATE idempotency_keys SET created_at = now() - CAST($1 AS interval)"
    await db.execute(aged, timedelta(hours=23, minutes=59))
    assert (await api.client.post(path, headers=keyed("old"))).content == first.content

    await db.execute(aged, timedelta(hours=24, seconds=1))
    fresh = await api.client.post(path, headers=keyed("old"))
    assert fresh.status_code == 202
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    assert (await outcomes(api.client, event_id))["accepted"] == 2


async def test_the_maintenance_pass_deletes_only_expired_keys(
    api: Api, db: asyncpg.Connection
) -> None:
    for key in ("fresh", "day-old", "expired"):
        r = await api.client.post("/user", json={"name": key, "email": f"{key}@example.com"},
                                  headers=keyed(key))  # fmt: skip
        assert r.status_code == 201
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - CASE key"
        " WHEN 'day-old' THEN interval '23 hours 59 minutes'"
        " WHEN 'expired' THEN interval '24 hours 1 minute' END"
        " WHERE key <> 'fresh'"
    )
    res = api.resources
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    assert await key_rows(db) == [("day-old", 201), ("fresh", 201)]


async def test_only_the_lease_holder_records_or_frees_the_key(
    api: Api, db: asyncpg.Connection
) -> None:
    """Once another process has taken a key over, the first one's late answer neither replaces
    the new holder's nor frees the key under it."""
    store = KeyStore(api.resources.engine)
    request = RequestKey(scope=b"", key="shared", fingerprint=b"f" * 32)
    first = await store.claim(request, lease_s=30, ttl_s=KEY_TTL_S)
    assert isinstance(first, Claimed)
    assert isinstance(await store.claim(request, lease_s=30, ttl_s=KEY_TTL_S), InProgress)
    await db.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
    second = await store.claim(request, lease_s=30, ttl_s=KEY_TTL_S)
    assert isinstance(second, Claimed)

    late = Answer(500, [], b"late")
    assert not await store.finish(request, first.lease_id, late)
    assert not await store.release(request, first.lease_id)
    assert not await store.renew(request, first.lease_id, lease_s=30)
    assert await key_rows(db) == [("shared", None)]
    assert await store.finish(request, second.lease_id, Answer(201, [["location", "/x"]], b"{}"))
    assert await store.claim(request, lease_s=30, ttl_s=KEY_TTL_S) == Answer(
        201, [["location", "/x"]], b"{}"
    )
