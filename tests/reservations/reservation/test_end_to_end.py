"""The deployed shape: one API process (uvicorn) and worker processes, over real Redis and
PostgreSQL, hit by a burst; then the same with a worker SIGKILLed mid-burst."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from brokerq.server import free_port
from reservations.settings import Settings

from ..helpers import ADMIN, ADMIN_TOKEN, eventually

TICKETS = 50
DISTINCT_USERS = 1500
REQUESTS = 2000


@dataclass
class Deployment:
    settings: Settings
    logs: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        assert self.settings.database_url is not None
        assert self.settings.redis_url is not None
        env.update(
            ENVIRONMENT="test",
            DATABASE_URL=self.settings.database_url.get_secret_value(),
            REDIS_URL=self.settings.redis_url.get_secret_value(),
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            WORKER_CONCURRENCY="64",
            ADMIN_TOKEN=ADMIN_TOKEN,
        )
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(args, env=self._env(), stdout=out, stderr=subprocess.STDOUT)

    def start_api(self) -> None:
        self.api = self._spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "reservations.app:app_from_env", "--factory",
                "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--log-level", "warning", "--timeout-keep-alive", "60",
            ],
        )  # fmt: skip

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn(
            f"worker{len(self.workers)}", [sys.executable, "-m", "reservations.worker"]
        )
        self.workers.append(worker)
        return worker

    async def wait_worker_ready(self, index: int) -> None:
        log = self.logs / f"worker{index}.log"

        async def started() -> bool:
            if self.workers[index].poll() is not None:
                raise AssertionError(f"worker {index} exited: {self.log_tail()}")
            return log.exists() and "worker_started" in log.read_text(errors="replace")

        await eventually(started, bool, timeout_s=60, what=f"worker {index} started")

    def stop(self) -> None:
        procs = [p for p in [self.api, *self.workers] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
            for f in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def deployment(settings: Settings, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(settings, tmp_path)
    try:
        yield d
    finally:
        d.stop()
    for p in d.workers:
        # A SIGKILLed worker exits with -9; every other one must stop cleanly on SIGTERM.
        assert p.returncode in (0, -signal.SIGKILL), d.log_tail()


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    deployment.start_api()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=deployment.base_url, limits=limits, timeout=30) as client:

        async def probe() -> int:
            assert deployment.api is not None
            if deployment.api.poll() is not None:
                raise AssertionError(f"API exited: {deployment.log_tail()}")
            try:
                return (await client.get("/health")).status_code
            except httpx.TransportError:
                return 0

        await eventually(probe, lambda s: s == 200, timeout_s=60, what="API healthy")
        yield client


async def _setup(client: httpx.AsyncClient, db: asyncpg.Connection) -> tuple[int, list[int]]:
    r = await client.post(
        "/event",
        json={"name": "Burst", "date": "2030-01-01T00:00:00Z", "location": "Busan",
              "maxTickets": TICKETS},
        headers=ADMIN,
    )  # fmt: skip
    assert r.status_code == 201
    event_id: int = r.json()["id"]
    # Written straight to the database: the API then learns of each user on its first request,
    # which exercises the gate's fallback to PostgreSQL under load.
    rows = await db.fetch(
        "INSERT INTO users (name, email) SELECT 'u' || n, 'u' || n || '@example.com' "
        "FROM generate_series(1, $1) AS n RETURNING id",
        DISTINCT_USERS,
    )
    return event_id, [r["id"] for r in rows]


async def _burst(client: httpx.AsyncClient, event_id: int, users: list[int]) -> list[str]:
    rng = random.Random(7)
    plan = users + [rng.choice(users) for _ in range(REQUESTS - len(users))]
    rng.shuffle(plan)
    sem = asyncio.Semaphore(100)

    async def one(user_id: int) -> str:
        async with sem:
            r = await client.post(f"/reservation/{event_id}/{user_id}")
            assert r.status_code == 202, r.text
            job_id: str = r.json()["id"]
            return job_id

    return list(await asyncio.gather(*(one(u) for u in plan)))


async def _all_final(client: httpx.AsyncClient, event_id: int, timeout_s: float) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"/event/{event_id}/outcomes")).json()
        return body

    return await eventually(
        probe,
        lambda o: o["accepted"] == REQUESTS and o["pending"] == 0,
        timeout_s=timeout_s,
        what="every request final",
    )


async def _check_invariants(db: asyncpg.Connection, event_id: int, jobs: list[str]) -> None:
    reserved = await db.fetch(
        "SELECT user_id FROM reservations WHERE event_id = $1 AND status = 'RESERVED'", event_id
    )
    assert len(reserved) == TICKETS
    assert len({r["user_id"] for r in reserved}) == TICKETS, "a user holds two reservations"
    assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == TICKETS
    # Every accepted request has exactly one final outcome.
    rows = await db.fetch(
        "SELECT id, status FROM reservation_requests WHERE event_id = $1", event_id
    )
    assert sorted(r["id"] for r in rows) == sorted(jobs)
    assert {r["status"] for r in rows} <= {"RESERVED", "REJECTED"}
    # First come, first served: the seats went to the first TICKETS distinct users to arrive.
    first = await db.fetch(
        "SELECT user_id FROM reservation_requests WHERE event_id = $1 "
        "GROUP BY user_id ORDER BY min(seq) LIMIT $2",
        event_id,
        TICKETS,
    )
    assert {r["user_id"] for r in first} == {r["user_id"] for r in reserved}


async def test_burst_with_three_workers(
    deployment: Deployment, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Also stops one worker gracefully mid-burst: it must exit cleanly and lose nothing."""
    workers = [deployment.start_worker() for _ in range(3)]
    for i in range(3):
        # Before its handlers are installed, SIGTERM would end a worker the default way.
        await deployment.wait_worker_ready(i)
    event_id, users = await _setup(client, db)
    started = time.monotonic()
    burst = asyncio.create_task(_burst(client, event_id, users))

    async def processed() -> int:
        count: int = await db.fetchval(
            "SELECT count(*) FROM reservation_requests WHERE event_id = $1", event_id
        )
        return count

    await eventually(processed, lambda n: n >= 100, timeout_s=60, what="workers busy")
    workers[2].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(workers[2].wait, 60) == 0, deployment.log_tail()
    jobs = await burst
    burst_s = time.monotonic() - started
    final = await _all_final(client, event_id, timeout_s=60)
    print(
        f"burst of {REQUESTS} in {burst_s:.2f}s, all final after {time.monotonic() - started:.2f}s"
    )
    assert final["reserved"] == TICKETS
    assert final["byReason"]["SOLD_OUT"] + final["byReason"]["DUPLICATE"] == REQUESTS - TICKETS
    await _check_invariants(db, event_id, jobs)
    r = await client.get(f"/reservation/requests/{jobs[0]}")
    assert r.json()["status"] in {"RESERVED", "REJECTED"}


async def test_worker_killed_mid_burst(
    deployment: Deployment, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    workers = [deployment.start_worker() for _ in range(3)]
    event_id, users = await _setup(client, db)
    burst = asyncio.create_task(_burst(client, event_id, users))

    async def processed() -> int:
        count: int = await db.fetchval(
            "SELECT count(*) FROM reservation_requests WHERE event_id = $1", event_id
        )
        return count

    await eventually(processed, lambda n: n >= 100, timeout_s=60, what="workers busy")
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    jobs = await burst
    started = time.monotonic()
    deployment.start_worker()
    await deployment.wait_worker_ready(3)
    await _all_final(client, event_id, timeout_s=90)
    await _check_invariants(db, event_id, jobs)
    assert time.monotonic() - started < 60
