"""What the idempotency-key tests share: a connection for holding PostgreSQL locks, and helpers.

A request is made to wait inside the app, honestly, by holding a real lock it needs (the ``users``
table, read when the admission gate does not know the user) and waiting until PostgreSQL shows
it waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from ..helpers import eventually

KEY = "Idempotency-Key"


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {KEY: key, **headers}


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def locker(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own for holding locks, apart from ``db``'s looks at the tables."""
    plain = make_url(database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(plain.render_as_string(hide_password=False))
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def users_locked(locker: asyncpg.Connection) -> AsyncIterator[None]:
    """Hold a lock every read of ``users`` waits for, until the block ends."""
    async with locker.transaction():
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        yield


async def wait_until_blocked_on_users(db: asyncpg.Connection, requests: int = 1) -> None:
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted"
        ),
        lambda waiting: waiting >= requests,
        what=f"{requests} request(s) waiting for the users table",
    )


async def key_rows(db: asyncpg.Connection) -> list[tuple[str, int | None]]:
    rows = await db.fetch("SELECT key, status FROM idempotency_keys ORDER BY key")
    return [(r["key"], r["status"]) for r in rows]
