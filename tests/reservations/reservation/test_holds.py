"""Events sold with holds, over real Redis and PostgreSQL: a won request holds its seat until its
sender confirms or releases it, or the hold expires on time and the seat goes back on sale."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from reservations.reservation.models import ReservationStatus
from reservations.reservation.settle.batch import Incoming, process_batch
from reservations.reservation.settle.holds import end_holds, expire_overdue
from reservations.worker import consuming

from ..conftest import Api
from ..helpers import ADMIN, create_event, create_user, eventually, processed


async def _request(api: Api, event_id: int, user_id: int) -> dict[str, Any]:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    assert body["holdToken"]
    return body


async def _win(api: Api, event_id: int, user_id: int) -> tuple[int, str, dict[str, Any]]:
    """A request that wins a hold: (reservation id, hold token, its outcome)."""
    accepted = await _request(api, event_id, user_id)
    outcome = await processed(api.client, accepted["id"])
    assert outcome["status"] == "HELD", outcome
    assert outcome["reservationStatus"] == "HELD"
    assert outcome["holdExpiresAt"] is not None
    return outcome["reservationId"], accepted["holdToken"], outcome


async def _seats(db: asyncpg.Connection, event_id: int) -> int:
    taken: int = await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id)
    live = await db.fetchval(
        "SELECT count(*) FROM reservations WHERE event_id = $1 AND status IN ('HELD', 'RESERVED')",
        event_id,
    )
    assert taken == live, "the event's counter must match its live reservations"
    return taken


async def test_confirm_by_the_holder_keeps_the_seat(api: Api, db: asyncpg.Connection) -> None:
    event_id = await create_event(api.client, "hold-confirm", 1, holdSeconds=60)
    holder, other = await create_user(api.client, 1), await create_user(api.client, 2)
    async with consuming(api.resources, max_parallel=4):
        reservation_id, token, _ = await _win(api, event_id, holder)
        late = await processed(api.client, (await _request(api, event_id, other))["id"])
        assert (late["status"], late["reason"]) == ("REJECTED", "SOLD_OUT")

        r = await api.client.post(
            f"/reservation/{reservation_id}/confirm", headers={"Hold-Token": token}
        )
        assert r.status_code == 200, r.text
        confirmed = r.json()
        assert confirmed["status"] == "RESERVED" and confirmed["confirmedAt"] is not None
        # A retry answers the same and changes nothing.
        again = await api.client.post(
            f"/reservation/{reservation_id}/confirm", headers={"Hold-Token": token}
        )
        assert again.status_code == 200 and again.json() == confirmed
        # A confirmed reservation is no hold to release any more.
        r = await api.client.post(
            f"/reservation/{reservation_id}/release", headers={"Hold-Token": token}
        )
        assert r.status_code == 409, r.text
    assert await _seats(db, event_id) == 1
    status = await db.fetchval("SELECT status FROM reservations WHERE id = $1", reservation_id)
    assert status == "RESERVED"


async def test_only_the_holder_or_an_operator_may_confirm_or_release(
    api: Api, db: asyncpg.Connection
) -> None:
    event_id = await create_event(api.client, "hold-owner", 2, holdSeconds=60)
    alice, mallory = await create_user(api.client, 1), await create_user(api.client, 2)
    async with consuming(api.resources, max_parallel=4):
        reservation_id, _, _ = await _win(api, event_id, alice)
        # Mallory won a hold of her own: her token is valid, but not for Alice's hold.
        _, mallory_token, _ = await _win(api, event_id, mallory)
    for action in ("confirm", "release"):
        url = f"/reservation/{reservation_id}/{action}"
        r = await api.client.post(url)
        assert r.status_code == 401 and "Hold-Token" in r.json()["message"], r.text
        r = await api.client.post(url, headers={"Hold-Token": mallory_token})
        assert r.status_code == 403, r.text
        r = await api.client.post(url, headers={"Hold-Token": "x" * 24})
        assert r.status_code == 403, r.text
    status = await db.fetchval("SELECT status FROM reservations WHERE id = $1", reservation_id)
    assert status == "HELD", "refused attempts must change nothing"
    r = await api.client.post(f"/reservation/{reservation_id}/confirm", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "RESERVED", r.text
    r = await api.client.post("/reservation/999999/confirm", headers=ADMIN)
    assert r.status_code == 404, r.text


async def test_release_puts_the_seat_back_on_sale(api: Api, db: asyncpg.Connection) -> None:
    event_id = await create_event(api.client, "hold-release", 1, holdSeconds=60)
    holder, next_user = await create_user(api.client, 1), await create_user(api.client, 2)
    async with consuming(api.resources, max_parallel=4):
        reservation_id, token, _ = await _win(api, event_id, holder)
        r = await api.client.post(
            f"/reservation/{reservation_id}/release", headers={"Hold-Token": token}
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "RELEASED" and r.json()["cancelledAt"] is not None
        assert await api.resources.gate.holders(event_id) == {}
        assert await _seats(db, event_id) == 0
        # Released once is released: the seat is not given back twice.
        r = await api.client.post(
            f"/reservation/{reservation_id}/release", headers={"Hold-Token": token}
        )
        assert r.status_code == 409, r.text
        r = await api.client.post(
            f"/reservation/{reservation_id}/confirm", headers={"Hold-Token": token}
        )
        assert r.status_code == 409, r.text
        # The seat went to the next request.
        await _win(api, event_id, next_user)
        # The released request's status URL says where its hold went.
        holder_job = await db.fetchval(
            "SELECT request_id FROM reservations WHERE id = $1", reservation_id
        )
        outcome = await processed(api.client, holder_job)
        assert (outcome["status"], outcome["reservationStatus"]) == ("HELD", "RELEASED")
    assert await _seats(db, event_id) == 1


async def test_an_unconfirmed_hold_expires_on_time(api: Api, db: asyncpg.Connection) -> None:
    event_id = await create_event(api.client, "hold-expiry", 1, holdSeconds=1)
    holder, next_user = await create_user(api.client, 1), await create_user(api.client, 2)
    async with consuming(api.resources, max_parallel=4):
        reservation_id, token, _ = await _win(api, event_id, holder)

        async def status() -> str:
            value: str = await db.fetchval(
                "SELECT status FROM reservations WHERE id = $1", reservation_id
            )
            return value

        await eventually(status, lambda s: s == "EXPIRED", timeout_s=10, what="hold expired")
        expires_at, ended_at = await db.fetchrow(
            "SELECT expires_at, cancelled_at FROM reservations WHERE id = $1", reservation_id
        )
        late_s = (ended_at - expires_at).total_seconds()
        assert 0 <= late_s < 1.0, f"the seat came back {late_s:.3f} s after the hold's end"
        assert await api.resources.gate.holders(event_id) == {}
        r = await api.client.post(
            f"/reservation/{reservation_id}/confirm", headers={"Hold-Token": token}
        )
        assert r.status_code == 409 and "ended" in r.json()["message"], r.text
        await _win(api, event_id, next_user)
    assert await _seats(db, event_id) == 1


async def test_confirm_and_expiry_at_the_same_instant(api: Api, db: asyncpg.Connection) -> None:
    """Many holds, each confirmed by its holder while its expiry runs at its end: each ends one
    way or the other, never both, and the seats counted match."""
    holds = 12
    event_id = await create_event(api.client, "hold-race", holds, holdSeconds=1)
    users = [await create_user(api.client, n) for n in range(holds)]
    async with consuming(api.resources, max_parallel=16):
        won = await asyncio.gather(*(_win(api, event_id, u) for u in users))
    res = api.resources
    expires = [datetime.fromisoformat(o["holdExpiresAt"]) for _, _, o in won]
    # Wake at the end of the holds (the race needs the two to meet there, whoever wins it).
    now = await db.fetchval("SELECT clock_timestamp()")
    await asyncio.sleep(max(0.0, (max(expires) - now).total_seconds()))

    async def confirm(reservation_id: int, token: str) -> int:
        r = await api.client.post(
            f"/reservation/{reservation_id}/confirm", headers={"Hold-Token": token}
        )
        assert r.status_code in (200, 409), r.text
        return r.status_code

    ids = [reservation_id for reservation_id, _, _ in won]
    results = await asyncio.gather(
        *(confirm(reservation_id, token) for reservation_id, token, _ in won),
        end_holds(
            res.session_factory, res.gate, ids, ended=ReservationStatus.EXPIRED, due_only=True
        ),
    )
    codes = results[:-1]
    # A confirmation refused at the end may have come before the expiry's clock said so: those
    # holds are past their end and the next expiry ends them.
    await end_holds(
        res.session_factory, res.gate, ids, ended=ReservationStatus.EXPIRED, due_only=True
    )
    rows = dict(
        await db.fetch("SELECT id, status FROM reservations WHERE id = ANY($1::int[])", ids)
    )
    for reservation_id, code in zip(ids, codes, strict=True):
        assert rows[reservation_id] == ("RESERVED" if code == 200 else "EXPIRED"), (code, rows)
    expired = sum(1 for s in rows.values() if s == "EXPIRED")
    assert await _seats(db, event_id) == holds - expired
    assert len(await res.gate.holders(event_id)) == holds - expired


async def test_a_hold_whose_timer_was_lost_is_ended_by_the_backstop(
    api: Api, db: asyncpg.Connection
) -> None:
    event_id = await create_event(api.client, "hold-backstop", 1, holdSeconds=1)
    user_id = await create_user(api.client, 1)
    res = api.resources
    job_id = (await _request(api, event_id, user_id))["id"]
    marker = await res.gate.pending(event_id, job_id)
    assert marker is not None
    from reservations.channels import ReserveEvent

    message = ReserveEvent(
        userId=user_id, eventId=event_id, requestId=job_id, admission=marker.admission,
        seq=marker.seq, acceptedAtMs=marker.accepted_at_ms,
    )  # fmt: skip
    # Written without its timer, as if Redis lost the timer afterwards.
    decisions = await process_batch(res.session_factory, res.gate, [Incoming("m-1", message)])
    reservation_id = decisions[job_id].reservation_id
    # Not past its end yet: the backstop leaves it.
    assert await expire_overdue(res.session_factory, res.gate, late_s=0) == 0
    now = await db.fetchval("SELECT clock_timestamp()")
    expires_at = await db.fetchval(
        "SELECT expires_at FROM reservations WHERE id = $1", reservation_id
    )
    await asyncio.sleep(max(0.0, (expires_at - now).total_seconds()) + 0.05)
    assert await expire_overdue(res.session_factory, res.gate, late_s=0) == 1
    status = await db.fetchval("SELECT status FROM reservations WHERE id = $1", reservation_id)
    assert status == "EXPIRED"
    assert await res.gate.holders(event_id) == {}
    assert await _seats(db, event_id) == 0


async def test_the_openapi_document_shows_holds_waitlists_and_quantities(api: Api) -> None:
    r = await api.client.get("/api-json")
    assert r.status_code == 200
    document = r.json()
    schemas = document["components"]["schemas"]
    assert {"holdSeconds", "waitlist", "maxPerUser"} <= set(schemas["EventCreate"]["properties"])
    outcome = schemas["RequestOutcome"]["properties"]
    assert {"reservationStatus", "holdExpiresAt", "quantity", "position"} <= set(outcome)
    assert {"HELD", "WAITING"} <= set(schemas["RequestStatus"]["enum"])
    assert {"HELD", "EXPIRED", "RELEASED"} <= set(schemas["ReservationStatus"]["enum"])
    assert {"OVER_LIMIT", "LEFT_LINE", "EVENT_CLOSED", "EVENT_ENDED"} <= set(
        schemas["RejectReason"]["enum"]
    )
    paths = document["paths"]
    for action in ("confirm", "release"):
        parameters = paths[f"/reservation/{{reservation_id}}/{action}"]["post"]["parameters"]
        assert any(p["name"] == "Hold-Token" and p["in"] == "header" for p in parameters)
    assert "delete" in paths["/reservation/requests/{job_id}"]
    assert "post" in paths["/event/{event_id}/close"]
