"""A server we depend on being down is a 503 that says which, not a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from brokerq.server import free_port
from reservations.app import create_app
from reservations.settings import Settings

from .helpers import ADMIN


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # As a client gets the answer, even when the app re-raises after sending it.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def without_redis(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async for client in _client(settings.model_copy(update={"redis_url": SecretStr(url)})):
        yield client


@pytest.fixture
async def without_postgres(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    assert settings.database_url is not None
    url = make_url(settings.database_url.get_secret_value()).set(port=free_port())
    down = url.render_as_string(hide_password=False)
    async for client in _client(settings.model_copy(update={"database_url": SecretStr(down)})):
        yield client


def _assert_unavailable(r: httpx.Response, server: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    body = r.json()
    assert body["error"] == "UNAVAILABLE"
    assert f"{server} is unavailable" in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/reservation/1/1", None),
        ("POST", "/reservation", {"eventId": 1, "userId": 1}),
    ],
)
async def test_reservation_requests_without_redis_are_a_503_not_accepted(
    without_redis: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    r = await without_redis.request(method, path, json=body)
    _assert_unavailable(r, "Redis")
    assert "not accepted" in r.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/user/1", None),
        ("POST", "/user", {"name": "Ada", "email": "ada@example.com"}),
        ("GET", "/event/1", None),
        ("GET", "/reservation?eventId=1&userId=1", None),
    ],
)
async def test_reads_and_writes_without_postgres_are_a_503(
    without_postgres: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    r = await without_postgres.request(method, path, json=body, headers=ADMIN)
    _assert_unavailable(r, "PostgreSQL")


async def test_health_names_the_server_that_is_down(without_postgres: httpx.AsyncClient) -> None:
    r = await without_postgres.get("/health")
    assert r.status_code == 503
    assert r.json()["checks"]["redis"] == "ok"
    assert r.json()["checks"]["postgres"].startswith("down")
