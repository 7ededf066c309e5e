"""Fixtures for the observability tests: the app with ``install``, a real HTTP server, a token.

Imported by the ``test_observability_*`` modules (``from ._fixtures import *``
would hide the names from linters, so each module imports what it uses).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from brokerq import Channel, Message
from brokerq.server import free_port
from reservations.app import create_app
from reservations.observability import install
from reservations.resources import Resources
from reservations.settings import Settings

from ..helpers import ADMIN, ADMIN_TOKEN

TEST_CHANNEL = "observability/test"
STARTUP_TIMEOUT_S = 30.0


class Job(msgspec.Struct, frozen=True):
    n: int
    fail: bool = False


@dataclass
class Observed:
    """An app with ``install`` applied, its lifespan running, and a client on it."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources

    def test_channel(self) -> Channel[Job]:
        """A channel of its own whose failing messages go to the dead letters after 2 tries."""
        return self.resources.queue.channel(
            TEST_CHANNEL, Job, max_attempts=2, retry_backoff="10ms", max_retry_backoff="20ms"
        )


async def failing_handler(message: Message[Job]) -> None:
    if message.data.fail:
        raise RuntimeError(f"job {message.data.n} refused: fail=True")


def settings_with_token(settings: Settings, token: str | None) -> Settings:
    return settings.model_copy(update={"admin_token": None if token is None else SecretStr(token)})


async def _observed(
    settings: Settings, headers: dict[str, str] | None = None, base_url: str = "http://test"
) -> AsyncIterator[Observed]:
    app = create_app(settings)
    install(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=headers
        ) as client:
            yield Observed(app, client)


@pytest.fixture
async def observed(settings: Settings) -> AsyncIterator[Observed]:
    """``ADMIN_TOKEN`` set and a client that sends it: an operator's view."""
    async for o in _observed(settings_with_token(settings, ADMIN_TOKEN), ADMIN):
        yield o


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[Observed]:
    """``ADMIN_TOKEN`` set, and a client without it."""
    async for o in _observed(settings_with_token(settings, ADMIN_TOKEN)):
        yield o


@pytest.fixture
async def unconfigured(settings: Settings) -> AsyncIterator[Observed]:
    """No ``ADMIN_TOKEN`` configured at all."""
    async for o in _observed(settings_with_token(settings, None)):
        yield o


@dataclass
class LiveServer:
    app: FastAPI
    url: str
    client: httpx.AsyncClient

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources


async def serve(app: FastAPI) -> AsyncIterator[LiveServer]:
    """Run ``app`` under uvicorn on a free port in this event loop until the generator closes."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            raise AssertionError(f"uvicorn did not start in {STARTUP_TIMEOUT_S}s")
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        # Idle connections dropped after 1 s, before uvicorn's 5 s keep-alive ends: a request
        # never goes out on a connection the server is closing (a ReadError on a slow machine).
        limits = httpx.Limits(keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            yield LiveServer(app, url, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
