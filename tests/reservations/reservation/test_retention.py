"""The retention pass: gates of events that took place leave Redis, outcomes past the retention
leave PostgreSQL (answered 410 afterwards), old dead letters of final requests go; nothing that a
running request, hold or line needs is touched. Real Redis, real PostgreSQL, a real consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg  # type: ignore[import-untyped]
import pytest

from reservations.reservation.settle.reconcile import reconcile_events
from reservations.reservation.settle.retention import (
    drop_dead_letters,
    drop_outcomes,
    forget_past_gates,
)
from reservations.settings import Settings
from reservations.worker import consuming

from ..conftest import Api, running_api
from ..helpers import create_event, create_user, eventually, processed
from .test_failed import ATTEMPTS, Refusal, few_attempts, final, request

DAY = timedelta(days=1)


@pytest.fixture
async def keeping_a_day(settings: Settings) -> AsyncIterator[Api]:
    """The API with outcomes kept one day after their event."""
    kept = settings.model_copy(update={"reservation_retention_days": 1.0})
    async with running_api(kept) as api:
        yield api


async def _sell(api: Api, event_id: int, users: list[int]) -> list[str]:
    jobs = [await request(api, event_id, user) for user in users]
    async with consuming(api.resources, max_parallel=4):
        for job in jobs:
            await processed(api.client, job)
    return jobs


async def _took_place(db: asyncpg.Connection, event_id: int, ago: timedelta) -> None:
    await db.execute("UPDATE events SET date = now() - $2::interval WHERE id = $1", event_id, ago)


async def test_the_gate_of_an_event_that_took_place_leaves_redis(
    api: Api, db: asyncpg.Connection
) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    past = await create_event(api.client, "Past", 5)
    coming = await create_event(api.client, "Coming", 5)
    [job] = await _sell(api, past, users[:1])
    await _sell(api, coming, users[1:])
    res = api.resources
    await reconcile_events(res.gate, res.session_factory)  # checkpoints both
    await _took_place(db, past, timedelta(minutes=1))

    assert await forget_past_gates(res.gate, res.session_factory, retention=DAY) == 1
    assert await res.gate.counters(past) is None
    assert await res.gate.counters(coming) is not None
    assert await db.fetchval("SELECT count(*) FROM gate_checkpoints WHERE event_id = $1", past) == 0
    # The maintenance pass leaves it dropped, and the outcome is still kept in PostgreSQL.
    await reconcile_events(res.gate, res.session_factory)
    assert await res.gate.counters(past) is None
    assert (await api.client.get(f"/reservation/requests/{job}")).json()["status"] == "RESERVED"
    # A request that still comes builds the gate from PostgreSQL: the user holds their seat.
    r = await api.client.post(f"/reservation/{past}/{users[0]}")
    assert r.status_code == 202, r.text
    counters = await res.gate.counters(past)
    assert counters is not None and (counters.admitted, counters.pending) == (1, 1)


async def test_an_event_with_requests_in_flight_keeps_its_gate_until_they_are_final(
    api: Api, db: asyncpg.Connection
) -> None:
    user = await create_user(api.client, 0)
    event_id = await create_event(api.client, "Busy", 5)
    job = await request(api, event_id, user)  # queued, no worker yet
    await _took_place(db, event_id, timedelta(minutes=1))
    res = api.resources
    assert await forget_past_gates(res.gate, res.session_factory, retention=DAY) == 0
    assert await res.gate.counters(event_id) is not None
    async with consuming(res, max_parallel=4):
        await processed(api.client, job)
    assert await forget_past_gates(res.gate, res.session_factory, retention=DAY) == 1


async def test_outcomes_past_the_retention_are_deleted_and_answered_410(
    keeping_a_day: Api, db: asyncpg.Connection
) -> None:
    api = keeping_a_day
    users = [await create_user(api.client, n) for n in range(3)]
    old = await create_event(api.client, "Old", 1)
    kept = await create_event(api.client, "Kept", 5)
    won, lost_out = await _sell(api, old, users[:2])
    [live] = await _sell(api, kept, users[2:])
    res = api.resources
    await _took_place(db, old, 2 * DAY)

    # Written a moment ago: a redelivery of their messages may still need them.
    report = await drop_outcomes(res.gate, res.session_factory, retention=DAY)
    assert (report.requests_deleted, report.reservations_deleted) == (0, 0)
    await db.execute(
        "UPDATE reservation_requests SET processed_at = now() - interval '1 hour';"
        "UPDATE reservations SET reserved_at = now() - interval '1 hour'"
    )
    report = await drop_outcomes(res.gate, res.session_factory, retention=DAY)
    assert (report.events_dropped, report.requests_deleted, report.reservations_deleted) == (
        1,
        2,
        1,
    )
    assert (
        await db.fetchval("SELECT count(*) FROM reservation_requests WHERE event_id = $1", old) == 0
    )
    assert await db.fetchval("SELECT closed_at IS NOT NULL FROM events WHERE id = $1", old)
    # The other event keeps everything, its live reservation included.
    assert (await processed(api.client, live))["status"] == "RESERVED"
    assert await db.fetchval("SELECT count(*) FROM reservations WHERE event_id = $1", kept) == 1

    for job in (won, lost_out):
        r = await api.client.get(f"/reservation/requests/{job}")
        assert r.status_code == 410, r.text
        assert r.json()["error"] == "OUTCOME_DELETED"
        assert r.json()["eventId"] == old
    # Not recorded as lost: nothing comes back into the table.
    assert (
        await db.fetchval("SELECT count(*) FROM reservation_requests WHERE event_id = $1", old) == 0
    )
    # A second pass finds nothing left to do.
    report = await drop_outcomes(res.gate, res.session_factory, retention=DAY)
    assert report.events_dropped == 0


async def test_an_event_with_a_hold_running_keeps_its_outcomes(
    api: Api, db: asyncpg.Connection
) -> None:
    user = await create_user(api.client, 0)
    event_id = await create_event(api.client, "Held", 1, holdSeconds=3600)
    [job] = await _sell(api, event_id, [user])
    assert (await processed(api.client, job))["status"] == "HELD"
    await _took_place(db, event_id, 2 * DAY)
    await db.execute("UPDATE reservation_requests SET processed_at = now() - interval '1 hour'")
    report = await drop_outcomes(api.resources.gate, api.resources.session_factory, retention=DAY)
    assert report.events_dropped == 0
    assert await db.fetchval("SELECT count(*) FROM reservation_requests") == 1


async def test_old_dead_letters_of_final_requests_are_deleted(
    api: Api, db: asyncpg.Connection
) -> None:
    refusal = Refusal(db)
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "Refused", 5)
    channel = few_attempts(api)
    await refusal.start("reservations", users[0])
    try:
        job = await request(api, event_id, users[0])
        async with consuming(api.resources, max_parallel=4, channel=channel):
            assert (await final(api, job))["reason"] == "FAILED"
            await eventually(channel.stats, lambda s: s.dead == 1, what="a dead letter")
    finally:
        await refusal.stop()
    [letter] = await channel.dead_letters()
    assert letter.tries == ATTEMPTS
    sf = api.resources.session_factory
    # Younger than the retention: kept.
    assert await drop_dead_letters(channel, sf, retention=DAY) == 0
    assert (await channel.stats()).dead == 1
    # Older: deleted, its FAILED outcome stays with its event.
    assert await drop_dead_letters(channel, sf, retention=timedelta(0)) == 1
    assert (await channel.stats()).dead == 0
    assert (await final(api, job))["reason"] == "FAILED"
