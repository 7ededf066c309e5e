"""The admin token guards the dashboard's data, its actions and /metrics."""

from __future__ import annotations

import pytest

from ._observability_fixtures import ADMIN_TOKEN, Observed, guarded, observed

__all__ = ["guarded", "observed"]

GUARDED = [
    ("GET", "/admin/queue/api/overview", None),
    ("GET", "/admin/queue/api/dead-letters?channel=reservation-queue", None),
    ("POST", "/admin/queue/api/redrive", {"channel": "reservation-queue", "ids": []}),
    ("POST", "/admin/queue/api/delete-dead", {"channel": "reservation-queue", "ids": []}),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_without_a_configured_token_everything_is_open(
    observed: Observed, method: str, path: str, body: object
) -> None:
    r = await observed.client.request(method, path, json=body)
    assert r.status_code == 200, r.text


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
    assert r.status_code == 200, r.text


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
