"""Real PostgreSQL and Redis for the service tests; never mocks.

PostgreSQL: ``TEST_DATABASE_URL`` points at an existing server, otherwise the suite starts its own
with ``PostgresServer`` in a temporary directory. Each test module gets a fresh database with the
migrations applied; each test starts from empty tables and an empty Redis database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from reservations.app import create_app
from reservations.db import migrate
from reservations.resources import Resources
from reservations.settings import Settings
from reservations_tools.servers.postgres import PostgresServer

from .helpers import ADMIN_TOKEN

# A Redis database of our own, apart from the library's tests.
REDIS_DB = 7


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # Not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, which cannot enter
    # pytest's private temporary directories.
    directory = tempfile.mkdtemp(prefix="rsv-pg-")
    try:
        with PostgresServer(directory) as server:
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    name = f"rsv_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    admin = await asyncpg.connect(_plain(pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: object) -> str:
    url: str = redis_server.url  # type: ignore[attr-defined]
    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url
    return f"{base}/{REDIS_DB}"


@pytest.fixture
async def clean(database_url: str, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(_plain(database_url))
    try:
        await conn.execute(
            "TRUNCATE reservation_requests, reservations, events, users, gate_releases, "
            "gate_checkpoints, idempotency_keys RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, clean: None) -> Settings:
    return Settings(
        _env_file=None,
        ENVIRONMENT="test",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ADMIN_TOKEN=ADMIN_TOKEN,
    )


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """The app with ``settings``, started, and a client that calls it in this process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(app, client)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for checking what is really in the database."""
    conn = await asyncpg.connect(_plain(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def one_client_over(apis: list[Api], event_id: int, users: list[int]) -> list[int]:
    """The answers to one client (one peer address) sending a reservation for each of
    ``users``, the i-th to ``apis[i]``, as to API processes behind a balancer."""
    peer = ("203.0.113.9", 40000)
    answers = []
    for api, user_id in zip(apis, users, strict=True):
        transport = httpx.ASGITransport(app=api.app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers.append((await client.post(f"/reservation/{event_id}/{user_id}")).status_code)
    return answers
