"""A worker process serves its own metrics: handler durations and lost leases live in it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from brokerq.server import free_port
from reservations.settings import Settings

from .helpers import eventually


@pytest.fixture
def worker(settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    assert settings.database_url is not None and settings.redis_url is not None
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "REDIS_URL": settings.redis_url.get_secret_value(),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "reservations.cli", "worker", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def test_a_worker_serves_its_handler_metrics(
    worker: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = worker
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:

        async def scrape() -> str:
            assert process.poll() is None, "the worker exited"
            try:
                return (await client.get("/metrics")).text
            except httpx.TransportError:
                return ""

        text = await eventually(
            scrape,
            lambda t: 'brokerq_handler_duration_seconds_count{channel="reservation-queue"' in t,
            what="the worker's metrics",
        )
    assert 'brokerq_lost_leases_total{channel="reservation-queue"}' in text
