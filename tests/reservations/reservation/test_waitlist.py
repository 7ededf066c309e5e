"""Waitlists over real Redis and PostgreSQL: requests that find an event sold out wait in line,
and a seat that comes back (released, expired, cancelled) goes to the first of them."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx

from reservations.channels import ReserveEvent
from reservations.reservation.models import ReservationStatus
from reservations.reservation.settle.batch import Incoming, process_batch
from reservations.reservation.settle.holds import end_holds
from reservations.reservation.settle.recovery import end_past_waitlists
from reservations.worker import consuming

from ..conftest import Api
from ..helpers import (
    ADMIN,
    create_event,
    create_user,
    eventually,
    outcomes,
    request_outcome,
)


async def _event(
    client: httpx.AsyncClient,
    name: str,
    tickets: int,
    *,
    hold_s: int | None = 60,
    date: str = "2030-05-01T19:00:00Z",
) -> int:
    return await create_event(client, name, tickets, holdSeconds=hold_s, waitlist=True, date=date)


async def _settled(api: Api, event_id: int, user_id: int) -> tuple[str, str, dict[str, Any]]:
    """Send one request and wait until it is processed: (job id, hold token, outcome)."""
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    job_id, token = r.json()["id"], r.json()["holdToken"]
    outcome = await eventually(
        lambda: request_outcome(api.client, job_id),
        lambda b: b["status"] != "PENDING",
        what="processed",
    )
    return job_id, token, outcome


async def _status(api: Api, job_id: str, status: str) -> dict[str, Any]:
    return await eventually(
        lambda: request_outcome(api.client, job_id),
        lambda b: b["status"] == status,
        what=f"{job_id} {status}",
    )


async def _check_seats(api: Api, db: asyncpg.Connection, event_id: int, capacity: int) -> None:
    taken = await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id)
    live = await db.fetch(
        "SELECT user_id, request_id FROM reservations "
        "WHERE event_id = $1 AND status IN ('HELD', 'RESERVED')",
        event_id,
    )
    assert taken == len(live) <= capacity
    assert await api.resources.gate.holders(event_id) == {
        r["user_id"]: r["request_id"] for r in live
    }


async def test_a_released_seat_goes_to_the_head_of_the_line(
    api: Api, db: asyncpg.Connection
) -> None:
    event_id = await _event(api.client, "wl-release", 2)
    users = [await create_user(api.client, n) for n in range(5)]
    async with consuming(api.resources, max_parallel=4):
        sent = [await _settled(api, event_id, u) for u in users]
        assert [o["status"] for _, _, o in sent] == [
            "HELD",
            "HELD",
            "WAITING",
            "WAITING",
            "WAITING",
        ]
        assert [o["position"] for _, _, o in sent[2:]] == [1, 2, 3]
        counts = await outcomes(api.client, event_id)
        assert (counts["held"], counts["waiting"], counts["pending"]) == (2, 3, 0)
        assert counts["accepted"] == 5

        first = sent[0][2]
        r = await api.client.post(
            f"/reservation/{first['reservationId']}/release", headers={"Hold-Token": sent[0][1]}
        )
        assert r.status_code == 200, r.text
        promoted = await request_outcome(api.client, sent[2][0])
        assert promoted["status"] == "HELD" and promoted["reservationStatus"] == "HELD"
        assert promoted["holdExpiresAt"] is not None and promoted["position"] is None
        assert [(await request_outcome(api.client, j))["position"] for j, _, _ in sent[3:]] == [
            1,
            2,
        ]
        # The promoted request's own token confirms its seat.
        r = await api.client.post(
            f"/reservation/{promoted['reservationId']}/confirm",
            headers={"Hold-Token": sent[2][1]},
        )
        assert r.status_code == 200 and r.json()["status"] == "RESERVED", r.text
    await _check_seats(api, db, event_id, 2)


async def test_expired_holds_are_reassigned_in_arrival_order(
    api: Api, db: asyncpg.Connection
) -> None:
    event_id = await _event(api.client, "wl-expiry", 1, hold_s=1)
    users = [await create_user(api.client, n) for n in range(3)]
    async with consuming(api.resources, max_parallel=4):
        sent = [await _settled(api, event_id, u) for u in users]
        assert [o["status"] for _, _, o in sent] == ["HELD", "WAITING", "WAITING"]
        # Nobody confirms: the seat passes down the line as each hold expires.
        await _status(api, sent[1][0], "HELD")
        await _status(api, sent[2][0], "HELD")
        last = await request_outcome(api.client, sent[2][0])
        r = await api.client.post(
            f"/reservation/{last['reservationId']}/confirm", headers={"Hold-Token": sent[2][1]}
        )
        assert r.status_code == 200, r.text
    rows = await db.fetch(
        "SELECT r.status, r.reserved_at, r.expires_at, r.cancelled_at, q.seq "
        "FROM reservations r JOIN reservation_requests q ON q.id = r.request_id "
        "WHERE r.event_id = $1 ORDER BY r.id",
        event_id,
    )
    assert [r["status"] for r in rows] == ["EXPIRED", "EXPIRED", "RESERVED"]
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    for expired, promoted in itertools.pairwise(rows):
        # Given in the transaction that expired the hold before it, late by less than 1 s.
        assert promoted["reserved_at"] == expired["cancelled_at"]
        assert (expired["cancelled_at"] - expired["expires_at"]).total_seconds() < 1.0
    await _check_seats(api, db, event_id, 1)


async def test_leaving_the_line_and_duplicates(api: Api, db: asyncpg.Connection) -> None:
    event_id = await _event(api.client, "wl-leave", 1, hold_s=None)
    users = [await create_user(api.client, n) for n in range(3)]
    async with consuming(api.resources, max_parallel=4):
        sent = [await _settled(api, event_id, u) for u in users]
        assert [o["status"] for _, _, o in sent] == ["RESERVED", "WAITING", "WAITING"]
        # One place per user: in a seat or in line.
        for user_id in users[:2]:
            _, _, again = await _settled(api, event_id, user_id)
            assert (again["status"], again["reason"]) == ("REJECTED", "DUPLICATE")

        r = await api.client.delete(f"/reservation/requests/{sent[1][0]}")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["reason"]) == ("REJECTED", "LEFT_LINE")
        r = await api.client.delete(f"/reservation/requests/{sent[1][0]}")
        assert r.status_code == 409, r.text
        r = await api.client.delete(f"/reservation/requests/{sent[0][0]}")
        assert r.status_code == 409 and "RESERVED" in r.json()["message"], r.text
        r = await api.client.delete("/reservation/requests/nope")
        assert r.status_code == 404, r.text

        # An operator's cancellation: the seat goes to the one still in line, RESERVED at once.
        r = await api.client.post(
            f"/reservation/{sent[0][2]['reservationId']}/cancel", headers=ADMIN
        )
        assert r.status_code == 200, r.text
        assert (await request_outcome(api.client, sent[2][0]))["status"] == "RESERVED"
        assert (await request_outcome(api.client, sent[1][0]))["reason"] == "LEFT_LINE"
    await _check_seats(api, db, event_id, 1)


async def test_closing_ends_the_line_and_the_sale(api: Api, db: asyncpg.Connection) -> None:
    event_id = await _event(api.client, "wl-close", 1)
    users = [await create_user(api.client, n) for n in range(4)]
    async with consuming(api.resources, max_parallel=4):
        sent = [await _settled(api, event_id, u) for u in users[:3]]
        r = await api.client.post(f"/event/{event_id}/close")
        assert r.status_code == 401, r.text
        r = await api.client.post(f"/event/{event_id}/close", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (r.json()["waiting"], r.json()["held"]) == (0, 1)
        assert r.json()["byReason"] == {"EVENT_CLOSED": 2}
        for job_id, _, _ in sent[1:]:
            assert (await request_outcome(api.client, job_id))["reason"] == "EVENT_CLOSED"
        _, _, late = await _settled(api, event_id, users[3])
        assert (late["status"], late["reason"]) == ("REJECTED", "EVENT_CLOSED")
        # The hold made before the close stays, and its release gives the seat to nobody.
        first = sent[0]
        r = await api.client.post(
            f"/reservation/{first[2]['reservationId']}/release", headers={"Hold-Token": first[1]}
        )
        assert r.status_code == 200, r.text
        event = (await api.client.get(f"/event/{event_id}")).json()
        assert event["closedAt"] is not None and event["reservedTickets"] == 0
        r = await api.client.post("/event/999999/close", headers=ADMIN)
        assert r.status_code == 404, r.text
    await _check_seats(api, db, event_id, 1)


async def test_the_line_ends_when_the_event_takes_place(api: Api, db: asyncpg.Connection) -> None:
    past = await _event(api.client, "wl-past", 1, date="2020-05-01T19:00:00Z")
    future = await _event(api.client, "wl-future", 1)
    users = [await create_user(api.client, n) for n in range(2)]
    async with consuming(api.resources, max_parallel=4):
        waiting = []
        for event_id in (past, future):
            sent = [await _settled(api, event_id, u) for u in users]
            assert sent[1][2]["status"] == "WAITING"
            waiting.append(sent[1][0])
    assert await end_past_waitlists(api.resources.session_factory) == 1
    ended, still = [await request_outcome(api.client, job_id) for job_id in waiting]
    assert (ended["status"], ended["reason"]) == ("REJECTED", "EVENT_ENDED")
    assert still["status"] == "WAITING"


async def test_seats_coming_back_together_go_to_the_first_in_line(
    api: Api, db: asyncpg.Connection
) -> None:
    """A holder's release and other holds' expiry at the same moment: each seat goes to one
    waiting request, the earliest ones, and never more seats than capacity."""
    capacity = 4
    event_id = await _event(api.client, "wl-race", capacity, hold_s=1)
    users = [await create_user(api.client, n) for n in range(capacity + 6)]
    async with consuming(api.resources, max_parallel=8):
        sent = [await _settled(api, event_id, u) for u in users]
    assert [o["status"] for _, _, o in sent].count("HELD") == capacity
    res = api.resources
    holders = sent[:capacity]
    ids = [o["reservationId"] for _, _, o in holders]
    deadline = await db.fetchval(
        "SELECT max(expires_at) - clock_timestamp() FROM reservations WHERE event_id = $1",
        event_id,
    )
    await asyncio.sleep(max(0.0, deadline.total_seconds()))

    async def release(reservation_id: int, token: str) -> None:
        r = await api.client.post(
            f"/reservation/{reservation_id}/release", headers={"Hold-Token": token}
        )
        assert r.status_code in (200, 409), r.text

    await asyncio.gather(
        *(release(o["reservationId"], token) for _, token, o in holders[:2]),
        end_holds(
            res.session_factory, res.gate, ids, ended=ReservationStatus.EXPIRED, due_only=True,
            timers=res.holds,
        ),
    )  # fmt: skip
    # Whatever each hold's end was, all four seats came back; none of the holds' timers ran
    # (no consumer), so the four seats went to the first four in line, none twice.
    states = [
        (await request_outcome(api.client, job_id))["status"] for job_id, _, _ in sent[capacity:]
    ]
    assert states == ["HELD"] * capacity + ["WAITING"] * 2
    await _check_seats(api, db, event_id, capacity)


async def test_a_later_arrival_written_first_does_not_take_an_earlier_ones_seat(
    api: Api, db: asyncpg.Connection
) -> None:
    """Workers write requests in the order their batches commit, not their arrival order: a
    seat that comes back waits for an earlier request still in the queue."""
    event_id = await _event(api.client, "wl-order", 1)
    a, b, c = [await create_user(api.client, n) for n in range(3)]
    res = api.resources
    async with consuming(res, max_parallel=4):
        _, holder_token, holder = await _settled(api, event_id, a)
    assert holder["status"] == "HELD"
    # B, then C, are queued with no worker running.
    jobs = []
    for user_id in (b, c):
        r = await api.client.post(f"/reservation/{event_id}/{user_id}")
        assert r.status_code == 202, r.text
        jobs.append(r.json()["id"])
    job_b, job_c = jobs

    async def write(job_id: str, user_id: int) -> None:
        marker = await res.gate.pending(event_id, job_id)
        assert marker is not None
        message = ReserveEvent(
            userId=user_id, eventId=event_id, requestId=job_id, admission=marker.admission,
            seq=marker.seq, acceptedAtMs=marker.accepted_at_ms,
        )  # fmt: skip
        await process_batch(res.session_factory, res.gate, [Incoming(job_id, message)])

    await write(job_c, c)  # C's batch commits first
    assert (await request_outcome(api.client, job_c))["status"] == "WAITING"
    r = await api.client.post(
        f"/reservation/{holder['reservationId']}/release", headers={"Hold-Token": holder_token}
    )
    assert r.status_code == 200, r.text
    # B, ahead of C, is still on its way: the seat waits for it.
    assert (await request_outcome(api.client, job_c))["status"] == "WAITING"
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == 0
    await write(job_b, b)
    assert (await request_outcome(api.client, job_b))["status"] == "HELD"
    c_now = await request_outcome(api.client, job_c)
    assert (c_now["status"], c_now["position"]) == ("WAITING", 1)
    await _check_seats(api, db, event_id, 1)
