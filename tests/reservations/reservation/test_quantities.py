"""Several seats per request and a per-user limit, over real Redis and PostgreSQL: all or none,
never more than the event's seats, never more than ``maxPerUser`` for one user."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from reservations.reservation.settle.reconcile import reconcile_seats
from reservations.worker import consuming

from ..conftest import Api
from ..helpers import ADMIN, create_event, create_user, processed


async def _send(api: Api, event_id: int, user_id: int, quantity: int) -> dict[str, Any]:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}?quantity={quantity}")
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def _request(api: Api, event_id: int, user_id: int, quantity: int) -> dict[str, Any]:
    return await processed(api.client, (await _send(api, event_id, user_id, quantity))["id"])


async def _check(api: Api, db: asyncpg.Connection, event_id: int) -> int:
    """Seats taken, after checking that every count of them agrees."""
    taken, capacity, per_user = await db.fetchrow(
        "SELECT reserved, max_tickets, max_per_user FROM events WHERE id = $1", event_id
    )
    rows = await db.fetch(
        "SELECT user_id, request_id, quantity FROM reservations "
        "WHERE event_id = $1 AND status IN ('HELD', 'RESERVED')",
        event_id,
    )
    assert taken == sum(r["quantity"] for r in rows) <= capacity
    assert all(r["quantity"] <= per_user for r in rows)
    assert len({r["user_id"] for r in rows}) == len(rows), "one reservation per user"
    gate = api.resources.gate
    counters = await gate.counters(event_id)
    assert counters is not None and counters.admitted == taken
    holders = {
        r["user_id"]: r["request_id"] + ("" if r["quantity"] == 1 else f"*{r['quantity']}")
        for r in rows
    }
    assert await gate.holders(event_id) == holders
    # And the periodic correction finds nothing to correct.
    assert await reconcile_seats(gate, api.resources.session_factory, [event_id]) == {}
    return int(taken)


async def test_several_seats_all_or_none(api: Api, db: asyncpg.Connection) -> None:
    event_id = await create_event(api.client, "qty-basic", 5, maxPerUser=4)
    a, b, c, d = [await create_user(api.client, n) for n in range(4)]
    async with consuming(api.resources, max_parallel=4):
        first = await _request(api, event_id, a, 3)
        assert (first["status"], first["quantity"]) == ("RESERVED", 3)
        # Two seats are left: three are all or nothing.
        late = await _request(api, event_id, b, 3)
        assert (late["status"], late["reason"], late["quantity"]) == ("REJECTED", "SOLD_OUT", 3)
        over = await _request(api, event_id, d, 5)
        assert (over["status"], over["reason"]) == ("REJECTED", "OVER_LIMIT")
        body = await api.client.post(
            "/reservation", json={"userId": c, "eventId": event_id, "quantity": 2}
        )
        assert body.status_code == 202, body.text
        assert (await processed(api.client, body.json()["id"]))["status"] == "RESERVED"
        assert await _check(api, db, event_id) == 5
        reservation = await api.client.get(f"/reservation/{first['reservationId']}")
        assert reservation.json()["quantity"] == 3
        # A cancellation gives all its seats back.
        r = await api.client.post(f"/reservation/{first['reservationId']}/cancel", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert await _check(api, db, event_id) == 2
        again = await _request(api, event_id, b, 3)
        assert again["status"] == "RESERVED"
    assert await _check(api, db, event_id) == 5


async def test_bad_quantities_are_refused_clearly(api: Api) -> None:
    event_id = await create_event(api.client, "qty-bad", 5, maxPerUser=4)
    user = await create_user(api.client, 1)
    for bad in ("0", "101", "-1", "two", "1.5"):
        r = await api.client.post(f"/reservation/{event_id}/{user}?quantity={bad}")
        assert r.status_code == 422, (bad, r.text)
        assert "quantity" in r.text
    r = await api.client.post(
        "/reservation", json={"userId": user, "eventId": event_id, "quantity": 0}
    )
    assert r.status_code == 422, r.text
    r = await api.client.post(
        "/event",
        json={"name": "qty-e", "date": "2030-05-01T19:00:00Z", "location": "S", "maxTickets": 1,
              "maxPerUser": 0},
        headers=ADMIN,
    )  # fmt: skip
    assert r.status_code == 422 and "maxPerUser" in r.text, r.text


async def test_one_users_requests_never_exceed_the_limit(api: Api, db: asyncpg.Connection) -> None:
    """Two requests of one user at once, whose seats together exceed ``maxPerUser``: one wins,
    the other is refused, whatever their order; the same for every user of a crowd."""
    event_id = await create_event(api.client, "qty-race", 100, maxPerUser=4)
    users = [await create_user(api.client, n) for n in range(10)]
    async with consuming(api.resources, max_parallel=16):
        sent = await asyncio.gather(*(_send(api, event_id, u, q) for u in users for q in (3, 2)))
        final = [await processed(api.client, s["id"]) for s in sent]
    for i, _ in enumerate(users):
        pair = final[2 * i : 2 * i + 2]
        assert sorted(o["status"] for o in pair) == ["REJECTED", "RESERVED"], pair
        assert [o["reason"] for o in pair if o["status"] == "REJECTED"] == ["DUPLICATE"]
    assert await _check(api, db, event_id) == sum(
        o["quantity"] for o in final if o["status"] == "RESERVED"
    )


async def test_a_returned_seat_goes_to_the_first_waiting_request_it_fits(
    api: Api, db: asyncpg.Connection
) -> None:
    event_id = await create_event(
        api.client, "qty-waitlist", 3, maxPerUser=3, waitlist=True, holdSeconds=60
    )
    a, b, c, d = [await create_user(api.client, n) for n in range(4)]
    async with consuming(api.resources, max_parallel=4):
        accepted = await _send(api, event_id, a, 2)
        held_a = await processed(api.client, accepted["id"])
        held_b = await _request(api, event_id, b, 1)
        assert (held_a["status"], held_b["status"]) == ("HELD", "HELD")
        waiting_c = await _request(api, event_id, c, 3)
        waiting_d = await _request(api, event_id, d, 1)
        assert [waiting_c["status"], waiting_d["status"]] == ["WAITING", "WAITING"]
        # A's two seats come back: too few for C's three, so D, behind C, gets one of them.
        r = await api.client.post(
            f"/reservation/{held_a['reservationId']}/release",
            headers={"Hold-Token": accepted["holdToken"]},
        )
        assert r.status_code == 200, r.text
        c_now = await processed(api.client, waiting_c["jobId"])
        d_now = await processed(api.client, waiting_d["jobId"])
        assert (c_now["status"], c_now["position"]) == ("WAITING", 1)
        assert d_now["status"] == "HELD"
        assert await _check(api, db, event_id) == 2
    assert await _check(api, db, event_id) == 2
