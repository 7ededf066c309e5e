"""PostgreSQL and the admission gate (Redis) disagreeing after a partial failure, and converging.

Each test runs the API in-process and a real worker process (``python -m reservations.worker``)
against a Redis server of this module's own, which the tests pause (SIGSTOP), flush and restart
without its data while the service runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from brokerq import RedisConnectionError
from brokerq.server import RedisServer
from reservations.app import create_app
from reservations.reservation.gate import event_keys
from reservations.reservation.settle.reconcile import FULL_CHECK_PASSES
from reservations.resources import Resources
from reservations.settings import Settings

from ..helpers import ADMIN, ADMIN_TOKEN, create_event, create_user, eventually, outcomes

# The workers' maintenance pass runs this often here; the gate must agree with PostgreSQL again
# within one pass of Redis answering when the seat counts differ, and within FULL_CHECK_PASSES
# when they happen to be equal (plus the time a pass takes, on a busy machine).
INTERVAL_S = 0.3
CONVERGE_S = (FULL_CHECK_PASSES + 2) * INTERVAL_S + 2.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def own_settings(settings: Settings, own_redis: RedisServer) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": SecretStr(own_redis.url),
            "redis_socket_timeout_s": 1.0,
            "maintenance_interval_s": INTERVAL_S,
        }
    )


class Service:
    def __init__(self, client: httpx.AsyncClient, resources: Resources) -> None:
        self.client = client
        self.resources = resources

    async def request(self, event_id: int, user_id: int) -> str:
        r = await self.client.post(f"/reservation/{event_id}/{user_id}")
        assert r.status_code == 202, r.text
        job: str = r.json()["id"]
        return job

    async def final(self, job: str) -> dict[str, Any]:
        async def probe() -> httpx.Response:
            return await self.client.get(f"/reservation/requests/{job}")

        r = await eventually(
            probe,
            lambda r: r.status_code != 200 or r.json()["status"] != "PENDING",
            what=f"job {job} final",
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def admitted(self, event_id: int) -> dict[int, str]:
        """The gate's seats of the event: user id -> the request holding the seat."""
        raw = await self.resources.redis.call("HGETALL", event_keys(event_id).admitted)
        return {int(raw[i]): raw[i + 1].decode() for i in range(0, len(raw), 2)}

    async def maintain_until_rebuilt(self, event_id: int) -> None:
        """Maintenance passes, as a worker runs them, until the event's gate is back: the first
        pass after a Redis restart may meet a stale connection and fail, as it would there."""
        from reservations.reservation.settle.recovery import maintenance_pass

        res = self.resources

        async def rebuilt() -> bool:
            await maintenance_pass(res.gate, res.channel, res.session_factory)
            try:
                return await res.gate.counters(event_id) is not None
            except RedisConnectionError:
                return False

        await eventually(rebuilt, bool, timeout_s=10, what="the gate rebuilt")


@pytest.fixture
async def service(own_settings: Settings) -> AsyncIterator[Service]:
    app = create_app(own_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Service(client, app.state.resources)


@pytest.fixture
def worker_process(own_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert own_settings.database_url is not None and own_settings.redis_url is not None
    env = dict(os.environ)
    env.update(
        ENVIRONMENT="test",
        DATABASE_URL=own_settings.database_url.get_secret_value(),
        REDIS_URL=own_settings.redis_url.get_secret_value(),
        ADMIN_TOKEN=ADMIN_TOKEN,
        MAINTENANCE_INTERVAL=str(INTERVAL_S),
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reservations.worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def worker(worker_process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"

    async def started() -> bool:
        assert worker_process.poll() is None, log.read_text(errors="replace")
        return "worker_started" in log.read_text(errors="replace")

    await eventually(started, bool, timeout_s=60, what="worker started")


async def _pg_reserved(db: asyncpg.Connection, event_id: int) -> dict[int, str]:
    rows = await db.fetch(
        "SELECT user_id, request_id FROM reservations WHERE event_id = $1 AND status = 'RESERVED'",
        event_id,
    )
    return {row["user_id"]: row["request_id"] for row in rows}


# -- item: a cancellation whose release the gate never got ---------------------------------------


async def test_a_ticket_cancelled_while_redis_is_paused_is_sold_again(
    service: Service, worker: None, own_redis: RedisServer, db: asyncpg.Connection
) -> None:
    first, second = [await create_user(service.client, n) for n in range(2)]
    event_id = await create_event(service.client, "One seat", 1)
    held = await service.final(await service.request(event_id, first))
    assert held["status"] == "RESERVED"

    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)  # slow, not dead: replies never come
    try:
        r = await service.client.delete(f"/reservation/{held['reservationId']}", headers=ADMIN)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELLED"
    # PostgreSQL has the ticket back ...
    event = (await service.client.get(f"/event/{event_id}")).json()
    assert event["remainingTickets"] == 1
    # ... and the gate follows within a few maintenance passes.
    await eventually(
        lambda: service.admitted(event_id),
        lambda seats: seats == {},
        timeout_s=CONVERGE_S,
        what="the gate released the cancelled seat",
    )
    sold = await service.final(await service.request(event_id, second))
    assert sold["status"] == "RESERVED"
    assert await db.fetchval("SELECT count(*) FROM gate_releases") == 0


async def test_the_gate_is_corrected_in_both_directions(
    service: Service, worker: None, db: asyncpg.Connection, own_redis: RedisServer
) -> None:
    users = [await create_user(service.client, n) for n in range(4)]
    event_id = await create_event(service.client, "Three seats", 3)
    for user_id in users[:2]:
        assert (await service.final(await service.request(event_id, user_id)))["status"] == (
            "RESERVED"
        )
    truth = await _pg_reserved(db, event_id)
    assert await service.admitted(event_id) == truth
    # Drift both ways at once: a reserved user forgotten, a seat held by nobody's request.
    redis = Redis.from_url(own_redis.url)
    try:
        await redis.hdel(event_keys(event_id).admitted, str(users[0]))
        await redis.hset(event_keys(event_id).admitted, "999999", "a-request-nobody-sent")
    finally:
        await redis.aclose()
    await eventually(
        lambda: service.admitted(event_id),
        lambda seats: seats == truth,
        timeout_s=CONVERGE_S,
        what="the gate back in line with PostgreSQL",
    )
    # The forgotten user is a duplicate again, the freed seat goes to the next user.
    dup = await service.final(await service.request(event_id, users[0]))
    assert dup["reason"] == "DUPLICATE"
    assert (await service.final(await service.request(event_id, users[2])))["status"] == (
        "RESERVED"
    )


async def test_correcting_the_gate_during_a_burst_keeps_first_come_first_served(
    service: Service, worker: None, db: asyncpg.Connection
) -> None:
    """Maintenance passes run all through a burst (every admitted-but-unwritten request makes
    the counts differ, so each pass corrects user by user): none may take or give a seat."""
    tickets = 20
    users = [await create_user(service.client, n) for n in range(200)]
    event_id = await create_event(service.client, "Burst", tickets)
    jobs = await asyncio.gather(*(service.request(event_id, u) for u in users))
    finals = [await service.final(job) for job in jobs]
    by_seq = sorted(finals, key=lambda f: f["seq"])
    assert [f["status"] for f in by_seq] == ["RESERVED"] * tickets + ["REJECTED"] * (
        len(users) - tickets
    )
    reserved = await _pg_reserved(db, event_id)
    assert len(reserved) == tickets
    assert await service.admitted(event_id) == reserved


# -- item: Redis loses accepted requests ---------------------------------------------------------


async def test_requests_lost_with_redis_are_reported_lost_not_unknown(
    service: Service, own_redis: RedisServer, own_settings: Settings
) -> None:
    """No worker runs, so the accepted requests are still queued when Redis restarts without
    its data; their clients learn that they must send them again, and the counts say so."""
    from reservations.reservation.settle.recovery import maintenance_pass

    users = [await create_user(service.client, n) for n in range(6)]
    event_id = await create_event(service.client, "Lost", 3)
    jobs = [await service.request(event_id, u) for u in users]
    res = service.resources
    # A maintenance pass checkpoints the gate's counters (as a worker would every few seconds).
    await maintenance_pass(res.gate, res.channel, res.session_factory)

    own_redis.kill()  # no append-only file: everything Redis held is gone
    await own_redis.start()
    await service.maintain_until_rebuilt(event_id)

    counts = await outcomes(service.client, event_id)
    assert (counts["accepted"], counts["pending"], counts["lost"]) == (6, 0, 6)
    for job in jobs:
        r = await service.client.get(f"/reservation/requests/{job}")
        assert r.status_code == 410, r.text
        body = r.json()
        assert (body["error"], body["status"], body["jobId"]) == ("REQUEST_LOST", "LOST", job)
        assert "send it again" in body["message"]
        assert (body["eventId"], body["userId"]) == (event_id, users[jobs.index(job)])
    # An id this service never issued is still unknown, not lost.
    forged = jobs[0][:-4] + ("AAAA" if not jobs[0].endswith("AAAA") else "BBBB")
    assert (await service.client.get(f"/reservation/requests/{forged}")).status_code == 404
    # Resent, the requests are served, first come first served, by the rebuilt gate.
    again = [await service.request(event_id, u) for u in users]
    r = await service.client.get(f"/reservation/requests/{again[0]}")
    assert r.status_code == 200 and r.json()["status"] == "PENDING"
    counts = await outcomes(service.client, event_id)
    assert (counts["accepted"], counts["pending"], counts["lost"]) == (12, 6, 6)


async def test_requests_lost_when_redis_comes_back_older_are_reported_lost(
    service: Service, tmp_path: Path, own_redis: RedisServer
) -> None:
    """Redis restarts from an append-only file that misses its latest writes (as after a crash
    with appendfsync everysec, or a failover to a replica behind): the requests it forgot are
    reported lost, the ones it kept are still pending."""
    users = [await create_user(service.client, n) for n in range(6)]
    event_id = await create_event(service.client, "Rolled back", 10)
    redis = Redis.from_url(own_redis.url)
    await redis.config_set("appendfsync", "always")
    await redis.config_set("appendonly", "yes")
    await eventually(
        lambda: redis.info("persistence"),
        lambda i: i["aof_rewrite_in_progress"] == 0 and i["aof_rewrite_scheduled"] == 0,
        what="the append-only file started",
    )
    kept = [await service.request(event_id, u) for u in users[:3]]
    older = tmp_path / "older-aof"
    server_dir = Path((await redis.config_get("dir"))["dir"])
    shutil.copytree(server_dir / "appendonlydir", older)
    forgotten = [await service.request(event_id, u) for u in users[3:]]
    res = service.resources
    from reservations.reservation.settle.recovery import maintenance_pass

    await maintenance_pass(res.gate, res.channel, res.session_factory)  # checkpoints 6

    server = RedisServer(server_dir, port=own_redis.port)
    await redis.shutdown(nosave=True)
    await redis.aclose()
    shutil.rmtree(server_dir / "appendonlydir")
    shutil.copytree(older, server_dir / "appendonlydir")
    server.appendonly = True
    await server.start()
    try:
        await service.maintain_until_rebuilt(event_id)
        await maintenance_pass(res.gate, res.channel, res.session_factory)
        counts = await outcomes(service.client, event_id)
        assert (counts["accepted"], counts["pending"], counts["lost"]) == (6, 3, 3)
        for job in kept:
            r = await service.client.get(f"/reservation/requests/{job}")
            assert r.status_code == 200 and r.json()["status"] == "PENDING", r.text
        for job in forgotten:
            r = await service.client.get(f"/reservation/requests/{job}")
            assert r.status_code == 410, r.text
    finally:
        await server.stop()


async def test_status_and_metrics_show_the_lost_requests(
    service: Service, own_redis: RedisServer, own_settings: Settings
) -> None:
    from reservations.reservation.settle.recovery import maintenance_pass
    from reservations_tools.status import collect_status

    users = [await create_user(service.client, n) for n in range(4)]
    event_id = await create_event(service.client, "Counted", 10)
    for u in users:
        await service.request(event_id, u)
    res = service.resources
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    redis = Redis.from_url(own_redis.url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    await service.maintain_until_rebuilt(event_id)

    assert own_settings.database_url is not None
    report = await collect_status(
        own_redis.url, own_settings.database_url.get_secret_value(), [event_id], 10
    )
    (row,) = report["events"]
    assert (row["accepted"], row["pending"], row["lost"]) == (4, 0, 4)
    metrics = await service.client.get("/metrics", headers=ADMIN)
    assert metrics.status_code == 200
    assert "reservations_requests_lost 4.0" in metrics.text
    dashboard = await service.client.get("/admin/queue/api/overview", headers=ADMIN)
    assert dashboard.status_code == 200
    (shown,) = [e for e in dashboard.json()["events"] if e["id"] == event_id]
    assert (shown["pending"], shown["lost"]) == (0, 4)


# -- item: recovery must not multiply requests that fail --------------------------------------


async def test_a_request_the_database_keeps_refusing_is_not_copied_by_recovery(
    service: Service, db: asyncpg.Connection
) -> None:
    """A request that fails attempt after attempt stays one message, retried by the queue:
    recovery passes meanwhile (with no grace at all) queue no copy of it."""
    from reservations.reservation.settle.recovery import requeue_unfinished
    from reservations.worker import consuming

    user_id = await create_user(service.client, 1)
    event_id = await create_event(service.client, "Refused", 5)
    await db.execute(
        """
        CREATE FUNCTION refuse_request() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'refused for the test'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse BEFORE INSERT ON reservation_requests
            FOR EACH ROW EXECUTE FUNCTION refuse_request();
        """
    )
    res = service.resources
    refused = True
    try:
        job = await service.request(event_id, user_id)
        async with consuming(res, max_parallel=4):

            async def retried() -> int:
                return (await res.channel.stats()).retried

            await eventually(retried, lambda n: n >= 2, timeout_s=60, what="two failed tries")
            for _ in range(3):
                copies = await requeue_unfinished(
                    res.gate, res.channel, res.session_factory, older_than_ms=0
                )
                assert copies == 0
            assert (await res.channel.stats()).produced == 1
            await db.execute(
                "DROP TRIGGER refuse ON reservation_requests; DROP FUNCTION refuse_request()"
            )
            refused = False
            assert (await service.final(job))["status"] == "RESERVED"
        stats = await res.channel.stats()
        assert (stats.produced, stats.dead, stats.waiting, stats.delayed) == (1, 0, 0, 0)
    finally:
        if refused:
            await db.execute(
                "DROP TRIGGER refuse ON reservation_requests; DROP FUNCTION refuse_request()"
            )


async def test_dead_letters_of_final_requests_are_cleared(
    service: Service, db: asyncpg.Connection
) -> None:
    """A dead letter whose request has its final outcome needs nobody: the maintenance pass
    deletes it. One whose request has no outcome (its worker could not write FAILED) makes the
    request FAILED, with the error's class, and stays, for an operator to inspect."""
    from brokerq import Processing
    from reservations.channels import QUEUE_NAME, Admission, ReserveEvent
    from reservations.reservation.settle.recovery import maintenance_pass
    from reservations.worker import consuming

    users = [await create_user(service.client, n) for n in range(2)]
    event_id = await create_event(service.client, "Dead letters", 5)
    res = service.resources
    done = await service.request(event_id, users[0])
    async with consuming(res, max_parallel=4):
        assert (await service.final(done))["status"] == "RESERVED"
    stuck = await service.request(event_id, users[1])
    # Dead-letter a copy of the final request and the not yet final one at their first failure,
    # through the same channel name with one attempt.
    brittle = res.queue.channel(
        QUEUE_NAME, ReserveEvent, process=Processing.AT_LEAST_ONCE, max_attempts=1
    )
    await brittle.produce(
        ReserveEvent(
            userId=users[0],
            eventId=event_id,
            requestId=done,
            admission=Admission.ADMITTED,
            seq=1,
            acceptedAtMs=1,
        )
    )

    async def fail(_: ReserveEvent) -> None:
        raise RuntimeError("poisoned for the test")

    consumer = await brittle.consume(fail, max_parallel=2)
    try:
        await eventually(
            lambda: res.channel.stats(), lambda s: s.dead == 2, what="two dead letters"
        )
    finally:
        await consumer.close()
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    (left,) = await res.channel.dead_letters()
    assert left.data is not None and left.data.requestId == stuck
    outcome = await service.final(stuck)
    assert (outcome["status"], outcome["reason"], outcome["error"]) == (
        "REJECTED",
        "FAILED",
        "RuntimeError",
    )
    assert await service.admitted(event_id) == {users[0]: done}
    await maintenance_pass(res.gate, res.channel, res.session_factory)
    assert [d.id for d in await res.channel.dead_letters()] == [left.id]
