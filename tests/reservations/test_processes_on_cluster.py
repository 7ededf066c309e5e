"""N API processes and M worker processes, started separately as on different machines, against
one Redis Cluster and one PostgreSQL: a burst spread over the API processes keeps every
invariant, and a client over its rate limit is refused by whichever API process it reaches."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from brokerq.server import RedisCluster

from .conftest import _plain
from .helpers import ADMIN, ADMIN_TOKEN, eventually
from .processes import Service, free_port

APIS = 2
WORKERS = 2
EVENTS = 3
SEATS = 20
USERS = 60
LIMIT = 4


@pytest.fixture
def service(
    tmp_path: Path, database_url: str, clean: None, cluster: RedisCluster
) -> Iterator[Service]:
    running = Service(
        tmp_path,
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": cluster.url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "RESERVATION_RATE_LIMIT": f"{LIMIT}/min",
            # The test's clients name themselves in X-Forwarded-For, as behind a proxy.
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        },
    )
    try:
        yield running
    finally:
        running.stop()


async def test_a_burst_over_api_processes_and_workers_on_a_cluster(
    service: Service, cluster: RedisCluster, database_url: str
) -> None:
    ports = [free_port() for _ in range(APIS)]
    apis = [service.spawn(f"api{i}", "api", "--port", str(p)) for i, p in enumerate(ports)]
    workers = [service.spawn(f"worker{i}", "worker", "--concurrency", "8") for i in range(WORKERS)]
    for process in apis:
        await service.wait_logged(process, "api_started", f"{process.name} started")
    for process in workers:
        await service.wait_logged(process, "worker_started", f"{process.name} started")
    clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=30) for p in ports]
    try:
        first = clients[0]
        users = []
        for n in range(USERS):
            r = await first.post("/user", json={"name": f"u{n}", "email": f"u{n}@example.com"})
            assert r.status_code == 201, r.text
            users.append(r.json()["id"])
        events = []
        for n in range(EVENTS):
            body = {"name": f"e{n}", "date": "2030-05-01T19:00:00Z", "location": "Seoul",
                    "maxTickets": SEATS}  # fmt: skip
            r = await first.post("/event", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
            events.append(r.json()["id"])

        # Every user asks for every event, each (user, event) from an address of its own, so
        # within the limit, spread over the API processes.
        spread = itertools.cycle(clients)
        burst = [
            (next(spread), event_id, user_id, f"10.0.{e}.{u}")
            for (e, event_id), (u, user_id) in itertools.product(
                enumerate(events), enumerate(users)
            )
        ]

        async def post(client: httpx.AsyncClient, event_id: int, user_id: int, ip: str) -> str:
            r = await client.post(
                f"/reservation/{event_id}/{user_id}", headers={"X-Forwarded-For": ip}
            )
            assert r.status_code == 202, r.text
            job_id: str = r.json()["id"]
            return job_id

        jobs = list(await asyncio.gather(*(post(*b) for b in burst)))

        # One greedy client, alternating between the API processes: refused past its limit on
        # either.
        greedy = {"X-Forwarded-For": "203.0.113.7"}
        answers = [
            await clients[i % APIS].post(f"/reservation/{events[0]}/{users[i]}", headers=greedy)
            for i in range(LIMIT + 2)
        ]
        assert [a.status_code for a in answers] == [*([202] * LIMIT), 429, 429], answers
        jobs += [a.json()["id"] for a in answers[:LIMIT]]

        async def final(job_id: str) -> dict[str, object]:
            async def probe() -> dict[str, object]:
                body: dict[str, object] = (
                    await first.get(f"/reservation/requests/{job_id}")
                ).json()
                return body

            return await eventually(probe, lambda b: b.get("status") not in (None, "PENDING"))

        outcomes = [await final(j) for j in jobs]
        assert len(outcomes) == EVENTS * USERS + LIMIT
        # The dashboard reads the queue and the gates on the cluster too.
        r = await clients[1].get("/admin/queue/api/overview", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert "reservation-queue" in r.text
    finally:
        for client in clients:
            await client.aclose()
    assert {o["status"] for o in outcomes} == {"RESERVED", "REJECTED"}
    db = await asyncpg.connect(_plain(database_url))
    try:
        for event_id in events:
            reserved = await db.fetchval(
                "SELECT count(*) FROM reservations WHERE event_id = $1 AND status = 'RESERVED'",
                event_id,
            )
            assert reserved == SEATS, (event_id, reserved)
            assert await db.fetchval("SELECT reserved FROM events WHERE id = $1", event_id) == (
                SEATS
            )
        twice = await db.fetchval(
            "SELECT count(*) FROM (SELECT event_id, user_id FROM reservations "
            "WHERE status = 'RESERVED' GROUP BY 1, 2 HAVING count(*) > 1) AS t"
        )
        assert twice == 0
        pending = await db.fetchval(
            "SELECT count(*) FROM reservation_requests WHERE status = 'PENDING'"
        )
        assert pending == 0
    finally:
        await db.close()
    for process in [*apis, *workers]:
        assert process.popen.poll() is None, f"{process.name} exited:\n{service.logs()}"
    # And the operator's status command, from outside.
    env = {**os.environ, "REDIS_URL": cluster.url, "DATABASE_URL": database_url}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reservations_tools", "status", "--json", "--limit", "10"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert {e["id"]: e["reserved"] for e in report["events"]} == dict.fromkeys(events, SEATS)
    assert [c["channel"] for c in report["channels"]] == ["reservation-queue"]
