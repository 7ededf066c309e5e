"""The admin token guards creating events, cancelling, the dashboard's data and actions, and
/metrics: without it, 401 and nothing changes."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from ..helpers import ADMIN, ADMIN_TOKEN, create_user
from ._fixtures import Observed, guarded, observed, unconfigured

__all__ = ["guarded", "observed", "unconfigured"]

EVENT = {"name": "Gala", "date": "2030-05-01T19:00:00Z", "location": "Seoul", "maxTickets": 5}
GUARDED = [
    ("POST", "/event", EVENT),
    ("POST", "/reservation/1/cancel", None),
    ("DELETE", "/reservation/1", None),
    ("GET", "/admin/queue/api/overview", None),
    ("GET", "/admin/queue/api/dead-letters?channel=reservation-queue", None),
    ("POST", "/admin/queue/api/redrive", {"channel": "reservation-queue", "ids": []}),
    ("POST", "/admin/queue/api/delete-dead", {"channel": "reservation-queue", "ids": []}),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_without_a_configured_token_everything_is_refused(
    unconfigured: Observed, method: str, path: str, body: object
) -> None:
    # A forgotten setting must not leave the server writable by anyone.
    r = await unconfigured.client.request(
        method, path, json=body, headers={"Authorization": "Bearer anything"}
    )
    assert r.status_code == 401, r.text
    assert r.json()["message"] == (
        "admin operations are disabled: the server has no ADMIN_TOKEN configured"
    )


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_with_a_token_requests_without_it_get_a_clear_401(
    guarded: Observed, method: str, path: str, body: object
) -> None:
    r = await guarded.client.request(method, path, json=body)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {
        "statusCode": 401,
        "error": "UNAUTHORIZED",
        "message": (
            "this endpoint needs the admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'"
        ),
    }


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer wrong-token", "the admin token is not valid"),
        (f"Bearer {ADMIN_TOKEN}x", "the admin token is not valid"),
        (f"Basic {ADMIN_TOKEN}", "expected 'Authorization: Bearer <ADMIN_TOKEN>'"),
        ("Bearer ", "expected 'Authorization: Bearer <ADMIN_TOKEN>'"),
    ],
)
async def test_a_wrong_token_is_refused_without_echoing_anything(
    guarded: Observed, header: str, message: str
) -> None:
    r = await guarded.client.get("/admin/queue/api/overview", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["message"] == message
    assert ADMIN_TOKEN not in r.text


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_the_right_token_opens_everything(
    guarded: Observed, method: str, path: str, body: object
) -> None:
    r = await guarded.client.request(
        method, path, json=body, headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )
    # Past the token check: the operation itself answers (there is no reservation 1).
    expected = {"/event": 201, "/reservation/1/cancel": 404, "/reservation/1": 404}
    assert r.status_code == expected.get(path, 200), r.text


async def test_refused_operations_change_nothing(guarded: Observed, db: asyncpg.Connection) -> None:
    client = guarded.client
    user_id = await create_user(client, 1)
    r = await client.post("/event", json=EVENT, headers=ADMIN)
    assert r.status_code == 201, r.text
    event_id = r.json()["id"]
    # A reservation as a worker writes it, so that there is something to cancel.
    reservation_id = await db.fetchval(
        "INSERT INTO reservations (event_id, user_id, status, reserved_at) "
        "VALUES ($1, $2, 'RESERVED', now()) RETURNING id",
        event_id,
        user_id,
    )
    await db.execute("UPDATE events SET reserved = reserved + 1 WHERE id = $1", event_id)
    before = await _tables(db)
    attempts = [
        ("POST", "/event", EVENT),
        ("POST", f"/reservation/{reservation_id}/cancel", None),
        ("DELETE", f"/reservation/{reservation_id}", None),
    ]
    for method, path, body in attempts:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
    assert await _tables(db) == before
    # The same requests with the token do change it: the check above can fail.
    r = await client.post(f"/reservation/{reservation_id}/cancel", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert await _tables(db) != before


async def _tables(db: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await db.fetch(
        "SELECT 'event', id, name, reserved::text FROM events "
        "UNION ALL SELECT 'reservation', id, status, cancelled_at::text FROM reservations "
        "ORDER BY 1, 2"
    )
    return [tuple(r) for r in rows]


async def test_the_page_itself_holds_no_data_and_loads_without_the_token(
    guarded: Observed,
) -> None:
    page = await guarded.client.get("/admin/queue")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Queue dashboard" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = await guarded.client.get(f"/admin/queue/static/{name}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(kind)
    assert (await guarded.client.get("/admin/queue/static/index.html")).status_code == 404
    assert (await guarded.client.get("/admin/queue/static/..%2Fdata.py")).status_code == 404
