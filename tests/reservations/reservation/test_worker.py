"""Requests finished by real brokerq consumers on real Redis, written to real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from brokerq import Message
from reservations.channels import QUEUE_NAME, Admission, ReserveEvent
from reservations.reservation.gate import event_snapshot
from reservations.reservation.settle.batch import Incoming, process_batch
from reservations.reservation.settle.recovery import requeue_unfinished
from reservations.worker import ReservationProcessor, batch_shape, consuming

from ..conftest import Api
from ..helpers import ADMIN, create_event, create_user, eventually, outcomes


@pytest.fixture
async def worker(api: Api) -> AsyncIterator[None]:
    async with consuming(api.resources, max_parallel=32):
        yield


async def _final(api: Api, job_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        r = await api.client.get(f"/reservation/requests/{job_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    return await eventually(probe, lambda b: b["status"] != "PENDING", what=f"job {job_id} final")


async def _request(api: Api, event_id: int, user_id: int) -> str:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


async def test_reservation_is_written_and_queryable(api: Api, worker: None) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Concert", 2)
    job_id = await _request(api, event_id, user_id)
    outcome = await _final(api, job_id)
    assert outcome["status"] == "RESERVED"
    assert outcome["reason"] is None
    r = await api.client.get("/reservation", params={"eventId": event_id, "userId": user_id})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == outcome["reservationId"]
    assert body["userId"] == user_id
    assert body["status"] == "RESERVED"
    assert "reservedAt" in body
    event = (await api.client.get(f"/event/{event_id}")).json()
    assert event["reservedTickets"] == 1
    assert event["remainingTickets"] == 1


async def test_sold_out_and_duplicate_are_final_rejections(
    api: Api, worker: None, db: asyncpg.Connection
) -> None:
    users = [await create_user(api.client, n) for n in range(4)]
    event_id = await create_event(api.client, "Small", 2)
    jobs = [await _request(api, event_id, u) for u in users]
    again = await _request(api, event_id, users[0])
    results = [await _final(api, j) for j in [*jobs, again]]
    # Sequential requests: arrival order is the order above.
    assert [r["status"] for r in results] == [
        "RESERVED",
        "RESERVED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
    ]
    assert [r["reason"] for r in results] == [None, None, "SOLD_OUT", "SOLD_OUT", "DUPLICATE"]
    counts = await outcomes(api.client, event_id)
    assert counts == {
        "eventId": event_id,
        "accepted": 5,
        "final": 5,
        "pending": 0,
        "waiting": 0,
        "lost": 0,
        "reserved": 2,
        "held": 0,
        "rejected": 3,
        "byReason": {"SOLD_OUT": 2, "DUPLICATE": 1},
    }
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 2


async def test_cancel_gives_the_ticket_to_the_next_arrival(api: Api, worker: None) -> None:
    users = [await create_user(api.client, n) for n in range(3)]
    event_id = await create_event(api.client, "One seat", 1)
    first = await _final(api, await _request(api, event_id, users[0]))
    late = await _final(api, await _request(api, event_id, users[1]))
    assert (first["status"], late["reason"]) == ("RESERVED", "SOLD_OUT")

    r = await api.client.delete(f"/reservation/{first['reservationId']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELLED"
    r = await api.client.post(f"/reservation/{first['reservationId']}/cancel", headers=ADMIN)
    assert r.status_code == 409
    assert (await api.client.get(f"/event/{event_id}")).json()["remainingTickets"] == 1

    nxt = await _final(api, await _request(api, event_id, users[2]))
    assert nxt["status"] == "RESERVED"
    # The cancelled user may come back once the seat is free again; it is taken now.
    back = await _final(api, await _request(api, event_id, users[0]))
    assert back["reason"] == "SOLD_OUT"

    page = (await api.client.get(f"/event/{event_id}/reservations?limit=1&offset=0")).json()
    assert page["total"] == 2
    assert len(page["items"]) == 1
    assert page["items"][0]["status"] == "CANCELLED"
    page = (await api.client.get(f"/event/{event_id}/reservations?limit=1&offset=1")).json()
    assert page["items"][0]["userId"] == users[2]
    r = await api.client.get(f"/event/{event_id}/reservations?limit=0")
    assert r.status_code == 422


async def test_user_deleted_after_admission_is_rejected_and_seat_released(
    api: Api, db: asyncpg.Connection
) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "One seat", 1)
    job = await _request(api, event_id, users[0])  # admitted, queued, no worker yet
    await db.execute("UPDATE users SET deleted_at = now() WHERE id = $1", users[0])
    async with consuming(api.resources, max_parallel=4):
        outcome = await _final(api, job)
        assert (outcome["status"], outcome["reason"]) == ("REJECTED", "UNKNOWN_USER")
        # Its admission went back to the gate: the next user gets the seat.
        nxt = await _final(api, await _request(api, event_id, users[1]))
        assert nxt["status"] == "RESERVED"


async def test_event_deleted_after_admission_is_rejected(api: Api, db: asyncpg.Connection) -> None:
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Gone", 5)
    job = await _request(api, event_id, user_id)
    await db.execute("UPDATE events SET deleted_at = now() WHERE id = $1", event_id)
    async with consuming(api.resources, max_parallel=4):
        outcome = await _final(api, job)
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", "UNKNOWN_EVENT")


async def test_redelivered_and_concurrent_duplicates_change_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    """The same request written by several transactions at once, then again: one outcome."""
    user_id = await create_user(api.client, 1)
    event_id = await create_event(api.client, "Idem", 10)
    res = api.resources
    # Admit through the gate as the API would, then write the same message many times.
    async with res.session_factory() as session:
        snapshot = await event_snapshot(session, event_id)
    assert snapshot is not None
    await res.gate.seed(event_id, snapshot)
    result = await res.gate.admit(
        event_id=event_id, user_id=user_id, request_id="req-1", accepted_at_ms=1
    )
    assert result.verdict == Admission.ADMITTED.value
    message = ReserveEvent(
        userId=user_id, eventId=event_id, requestId="req-1",
        admission=Admission.ADMITTED, seq=result.seq, acceptedAtMs=1,
    )  # fmt: skip
    copies = [Incoming(f"msg-{i}", message) for i in range(8)]
    results = await asyncio.gather(
        *(process_batch(res.session_factory, res.gate, [c]) for c in copies)
    )
    assert {r["req-1"].reservation_id for r in results} == {results[0]["req-1"].reservation_id}
    again = await process_batch(res.session_factory, res.gate, copies)
    assert again["req-1"] == results[0]["req-1"]
    assert await db.fetchval("SELECT count(*) FROM reservations") == 1
    assert await db.fetchval("SELECT count(*) FROM reservation_requests") == 1
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 1


async def test_database_refuses_overselling_whatever_the_gate_says(
    api: Api, db: asyncpg.Connection
) -> None:
    """Messages that claim admission beyond capacity (a lost gate state, a forged message)."""
    users = [await create_user(api.client, n) for n in range(5)]
    event_id = await create_event(api.client, "Two", 2)
    messages = [
        Incoming(
            f"m{i}",
            ReserveEvent(
                userId=u,
                eventId=event_id,
                requestId=f"r{i}",
                admission=Admission.ADMITTED,
                seq=i + 1,
                acceptedAtMs=1,
            ),
        )
        for i, u in enumerate(users)
    ]
    res = api.resources
    await asyncio.gather(
        *(process_batch(res.session_factory, res.gate, [m]) for m in messages[::-1])
    )
    assert await db.fetchval("SELECT count(*) FROM reservations") == 2
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 2
    rows = await db.fetch("SELECT status, reason FROM reservation_requests ORDER BY seq")
    assert sum(r["status"] == "RESERVED" for r in rows) == 2
    assert sum(r["reason"] == "SOLD_OUT" for r in rows) == 3


async def test_batch_keeps_arrival_order_within_an_event(api: Api, db: asyncpg.Connection) -> None:
    users = [await create_user(api.client, n) for n in range(6)]
    event_id = await create_event(api.client, "Three", 3)
    messages = [
        Incoming(
            f"m{i}",
            ReserveEvent(
                userId=u,
                eventId=event_id,
                requestId=f"r{i}",
                admission=Admission.ADMITTED,
                seq=i + 1,
                acceptedAtMs=1,
            ),
        )
        for i, u in enumerate(users)
    ]
    res = api.resources
    decisions = await process_batch(res.session_factory, res.gate, messages[::-1])
    reserved = sorted(r for r, d in decisions.items() if d.status == "RESERVED")
    assert reserved == ["r0", "r1", "r2"]


async def test_gate_state_is_rebuilt_from_postgres(api: Api, worker: None) -> None:
    users = [await create_user(api.client, n) for n in range(4)]
    event_id = await create_event(api.client, "Rebuild", 2)
    for u in users[:2]:
        assert (await _final(api, await _request(api, event_id, u)))["status"] == "RESERVED"
    # Lose every piece of gate state (as a Redis without persistence would after a restart).
    await api.resources.gate.forget_event(event_id)
    await api.resources.redis.call("DEL", *[f"rsv:user:{u}" for u in users])
    dup = await _final(api, await _request(api, event_id, users[0]))
    assert dup["reason"] == "DUPLICATE"
    late = await _final(api, await _request(api, event_id, users[2]))
    assert late["reason"] == "SOLD_OUT"
    assert late["seq"] > 2
    counts = await outcomes(api.client, event_id)
    assert counts["pending"] == 0
    assert counts["reserved"] == 2


async def test_request_admitted_by_an_api_that_died_before_queueing_is_recovered(
    api: Api, worker: None, db: asyncpg.Connection
) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "One seat", 1)
    # Seed the gate with a first real request, then admit a second user the way the API does,
    # and never queue it: the API died in between.
    first = await _final(api, await _request(api, event_id, users[0]))
    assert first["status"] == "RESERVED"
    r = await api.client.delete(f"/reservation/{first['reservationId']}", headers=ADMIN)
    assert r.status_code == 200
    res = api.resources
    orphan_id = (await res.request_ids()).new(event_id=event_id, user_id=users[1], accepted_at_ms=1)
    orphan = await res.gate.admit(
        event_id=event_id, user_id=users[1], request_id=orphan_id, accepted_at_ms=1
    )
    assert orphan.verdict == Admission.ADMITTED.value
    # The seat is held by the orphan: the cancelled user cannot have it back.
    late = await _final(api, await _request(api, event_id, users[0]))
    assert late["reason"] == "SOLD_OUT"
    pending = (await api.client.get(f"/reservation/requests/{orphan_id}")).json()
    assert pending["status"] == "PENDING"

    requeued = await requeue_unfinished(res.gate, res.channel, res.session_factory, older_than_ms=0)
    assert requeued == 1
    outcome = await _final(api, orphan_id)
    assert outcome["status"] == "RESERVED"
    counts = await outcomes(api.client, event_id)
    assert counts["pending"] == 0
    # Nothing left to recover, and the request was written once.
    assert (
        await requeue_unfinished(res.gate, res.channel, res.session_factory, older_than_ms=0) == 0
    )
    assert await db.fetchval("SELECT count(*) FROM reservation_requests") == 3
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 1


async def test_a_request_that_cannot_be_written_fails_alone_and_its_neighbours_are_done(
    api: Api, db: asyncpg.Connection
) -> None:
    users = [await create_user(api.client, n) for n in range(2)]
    event_id = await create_event(api.client, "Neighbours", 5)

    def message(i: int, user_id: int) -> Message[ReserveEvent]:
        data = ReserveEvent(
            userId=user_id, eventId=event_id, requestId=f"r{i}",
            admission=Admission.ADMITTED, seq=i + 1, acceptedAtMs=1,
        )  # fmt: skip
        return Message(data, f"m{i}", 1, QUEUE_NAME, 1)

    # A user id past PostgreSQL's integer: that request's row cannot be written, so the batch's
    # transaction fails; its neighbours are then written one by one.
    batch = [message(0, users[0]), message(1, 2**40), message(2, users[1])]
    res = api.resources
    failures = await ReservationProcessor(res.session_factory, res.gate).handle(batch)
    assert list(failures) == ["m1"]
    assert "int32" in str(failures["m1"]), failures["m1"]
    rows = await db.fetch("SELECT id, status FROM reservation_requests ORDER BY id")
    assert [(r["id"], r["status"]) for r in rows] == [("r0", "RESERVED"), ("r2", "RESERVED")]


def test_a_worker_holds_its_concurrency_in_two_batches() -> None:
    assert batch_shape(64) == (32, 2)
    assert batch_shape(5) == (2, 2)
    assert batch_shape(1) == (1, 1)
