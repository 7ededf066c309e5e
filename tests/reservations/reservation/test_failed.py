"""Requests whose processing fails on every attempt: a final outcome (REJECTED, FAILED and the
error's class), their seats back, their dead letters kept, and a redrive that changes nothing.

PostgreSQL refuses one user's rows with a trigger (a persistent failure no retry can get past);
real brokerq consumers on real Redis retry the request on a channel with few attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from brokerq import Channel, Message, Processing
from reservations.channels import QUEUE_NAME, RESERVATION_LEASE, ReserveEvent
from reservations.reservation.settle.recovery import maintenance_pass
from reservations.worker import ReservationProcessor, consuming

from ..conftest import Api
from ..helpers import create_event, create_user, eventually, outcomes

ATTEMPTS = 3
# The class of what SQLAlchemy raises for the trigger's RAISE EXCEPTION (SQLSTATE P0001).
REFUSED = "DBAPIError"


class Refusal:
    """A trigger that makes PostgreSQL refuse every row of one user in one table."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.table: str | None = None

    async def start(self, table: str, user_id: int) -> None:
        await self.db.execute(
            f"""
            CREATE FUNCTION refuse_for_test() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'user % refused for the test', NEW.user_id; END $$
            LANGUAGE plpgsql;
            CREATE TRIGGER refuse_for_test BEFORE INSERT ON {table}
                FOR EACH ROW WHEN (NEW.user_id = {int(user_id)})
                EXECUTE FUNCTION refuse_for_test();
            """
        )
        self.table = table

    async def stop(self) -> None:
        if self.table is not None:
            await self.db.execute(
                f"DROP TRIGGER refuse_for_test ON {self.table}; DROP FUNCTION refuse_for_test()"
            )
            self.table = None


@pytest.fixture
async def refusal(db: asyncpg.Connection) -> AsyncIterator[Refusal]:
    refusal = Refusal(db)
    try:
        yield refusal
    finally:
        await refusal.stop()


def few_attempts(api: Api) -> Channel[ReserveEvent]:
    """The reservation queue as the service declares it, but with few attempts and short
    backoffs, so that a failing request reaches the dead letters in a moment."""
    return api.resources.queue.channel(
        QUEUE_NAME,
        ReserveEvent,
        process=Processing.AT_LEAST_ONCE,
        lease=RESERVATION_LEASE,
        max_attempts=ATTEMPTS,
        retry_backoff="10ms",
        max_retry_backoff="20ms",
    )


async def status(api: Api, job_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/reservation/requests/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def final(api: Api, job_id: str) -> dict[str, Any]:
    return await eventually(
        lambda: status(api, job_id), lambda b: b["status"] != "PENDING", what=f"{job_id} final"
    )


async def request(api: Api, event_id: int, user_id: int) -> str:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def failed(job_id: str, user_id: int, event_id: int) -> dict[str, Any]:
    return {
        "jobId": job_id, "userId": user_id, "eventId": event_id, "status": "REJECTED",
        "reason": "FAILED", "reservationId": None, "seq": 1, "error": REFUSED,
        "position": None, "estimatedWaitSeconds": None, "reservationStatus": None,
        "holdExpiresAt": None, "quantity": 1,
    }  # fmt: skip


async def test_a_request_failing_on_every_attempt_ends_failed_and_gives_its_seat_back(
    api: Api, db: asyncpg.Connection, refusal: Refusal
) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "One seat", 1)
    res = api.resources
    channel = few_attempts(api)
    await refusal.start("reservations", users[0])
    job = await request(api, event_id, users[0])
    async with consuming(res, max_parallel=4, channel=channel):
        assert await final(api, job) == failed(job, users[0], event_id)
        # The message still went to the dead letters after its last attempt, for inspection.
        await eventually(channel.stats, lambda s: s.dead == 1, what="a dead letter")
        [letter] = await channel.dead_letters()
        assert letter.data is not None and letter.data.requestId == job
        assert letter.tries == ATTEMPTS
        assert letter.error.startswith(f"{REFUSED}: "), letter.error

        # Its seat was handed back with the outcome: the gate counts nobody, and the next user
        # gets the seat.
        counters = await res.gate.counters(event_id)
        assert counters is not None and (counters.admitted, counters.pending) == (0, 0)
        assert await db.fetchval("SELECT count(*) FROM gate_releases") == 0
        assert await outcomes(api.client, event_id) == {
            "eventId": event_id, "accepted": 1, "final": 1, "pending": 0, "waiting": 0, "lost": 0,
            "reserved": 0, "held": 0, "rejected": 1, "byReason": {"FAILED": 1},
        }  # fmt: skip
        nxt = await request(api, event_id, users[1])
        assert (await final(api, nxt))["status"] == "RESERVED"

        # The maintenance pass keeps the dead letter of a FAILED request.
        await maintenance_pass(res.gate, res.channel, res.session_factory)
        assert [d.id for d in await channel.dead_letters()] == [letter.id]

        # A redrive is processed and changes nothing: the outcome was final.
        before = await db.fetchrow("SELECT * FROM reservation_requests WHERE id = $1", job)
        processed = (await channel.stats()).processed
        assert await channel.redrive([letter.id]) == 1
        await eventually(
            channel.stats,
            lambda s: (s.processed, s.dead, s.waiting, s.delayed) == (processed + 1, 0, 0, 0),
            what="the redriven message processed",
        )
    assert await status(api, job) == failed(job, users[0], event_id)
    assert await db.fetchrow("SELECT * FROM reservation_requests WHERE id = $1", job) == before
    assert await db.fetchval("SELECT count(*) FROM reservation_requests") == 2
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 1
    assert await res.gate.holders(event_id) == {users[1]: nxt}
    counters = await res.gate.counters(event_id)
    assert counters is not None and (counters.admitted, counters.pending) == (1, 0)


async def test_a_failure_the_worker_cannot_record_is_recorded_by_the_maintenance_pass(
    api: Api, db: asyncpg.Connection, refusal: Refusal
) -> None:
    """PostgreSQL refuses the request's outcome row itself, FAILED included: the request stays
    pending in the dead letters until the maintenance pass can write FAILED."""
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "One seat", 1)
    res = api.resources
    channel = few_attempts(api)
    await refusal.start("reservation_requests", users[0])
    job = await request(api, event_id, users[0])
    async with consuming(res, max_parallel=4, channel=channel):
        await eventually(channel.stats, lambda s: s.dead == 1, what="a dead letter")
    [letter] = await channel.dead_letters()

    await maintenance_pass(res.gate, res.channel, res.session_factory)
    assert (await status(api, job))["status"] == "PENDING"
    assert await res.gate.holders(event_id) == {users[0]: job}

    await refusal.stop()
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    assert await status(api, job) == failed(job, users[0], event_id)
    assert await res.gate.holders(event_id) == {}
    counters = await res.gate.counters(event_id)
    assert counters is not None and (counters.admitted, counters.pending) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM gate_releases") == 0
    # Its dead letter stays, pass after pass.
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    assert [d.id for d in await channel.dead_letters()] == [letter.id]
    async with consuming(res, max_parallel=4, channel=channel):
        nxt = await request(api, event_id, users[1])
        assert (await final(api, nxt))["status"] == "RESERVED"


async def test_a_request_is_failed_on_its_last_attempt_only(
    api: Api, db: asyncpg.Connection, refusal: Refusal
) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Refused", 5)
    await refusal.start("reservations", user_id)
    job = await request(api, event_id, user_id)
    marker = await api.resources.gate.pending(event_id, job)
    assert marker is not None
    data = ReserveEvent(
        userId=user_id, eventId=event_id, requestId=job, admission=marker.admission,
        seq=marker.seq, acceptedAtMs=marker.accepted_at_ms,
    )  # fmt: skip
    res = api.resources
    processor = ReservationProcessor(res.session_factory, res.gate, max_attempts=ATTEMPTS)
    for tries in range(1, ATTEMPTS):
        failures = await processor.handle([Message(data, "m1", tries, QUEUE_NAME, 1)])
        assert type(failures["m1"]).__name__ == REFUSED
        assert (await status(api, job))["status"] == "PENDING"
    failures = await processor.handle([Message(data, "m1", ATTEMPTS, QUEUE_NAME, 1)])
    assert type(failures["m1"]).__name__ == REFUSED
    assert await status(api, job) == failed(job, user_id, event_id)
    row = await db.fetchrow("SELECT message_id, error FROM reservation_requests")
    assert (row["message_id"], row["error"]) == ("m1", REFUSED)
