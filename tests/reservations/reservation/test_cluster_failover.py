"""The service through a failover of Redis Cluster, on six real nodes (three primaries, a replica
each) that fail over within about two seconds.

The event's gate lives on one primary, the queue on (maybe) another. With asynchronous
replication a replica that takes over may miss admissions its primary already answered:
``REDIS_REPLICAS_ACK`` makes an admission wait until the event's replica holds it, as a produce
waits for the queue's. These tests make the failover happen and count what it takes back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis
import redis.asyncio as aioredis

from brokerq.server import RedisCluster
from reservations.reservation.gate import event_keys
from reservations.settings import Settings
from reservations.worker import consuming

from ...failover import caught_up, failover_cluster, whole_cluster
from ..conftest import Api, running_api
from ..helpers import ADMIN_TOKEN, create_event, create_user, eventually, outcomes

SEATS = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with failover_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def whole(cluster: RedisCluster) -> RedisCluster:
    """The whole cluster (see ``whole_cluster``), nothing in it."""
    whole_cluster(cluster)
    for node in cluster.nodes:
        client = redis.Redis(port=node.port)
        try:
            if client.execute_command("ROLE")[0] == b"master":
                client.flushall()
        finally:
            client.close()
    return cluster


def _api(database_url: str, cluster: RedisCluster, replicas_ack: int) -> Any:
    settings = Settings(
        _env_file=None, ENVIRONMENT="test", DATABASE_URL=database_url, REDIS_URL=cluster.url,
        ADMIN_TOKEN=ADMIN_TOKEN, REDIS_REPLICAS_ACK=replicas_ack,
        REDIS_REPLICAS_ACK_TIMEOUT_MS=1000, REDIS_SOCKET_TIMEOUT=3,
    )  # fmt: skip
    return running_api(settings)


@pytest.fixture(params=[0, 1], ids=["no-ack", "ack"])
async def cluster_api(
    request: pytest.FixtureRequest, database_url: str, clean: None, whole: RedisCluster
) -> AsyncIterator[tuple[Api, int]]:
    async with _api(database_url, whole, request.param) as api:
        yield api, request.param


async def _post(api: Api, event_id: int, user_id: int) -> tuple[int, str | None]:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code in (202, 503), r.text
    return r.status_code, r.json()["id"] if r.status_code == 202 else None


async def _final(api: Api, job_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        r = await api.client.get(f"/reservation/requests/{job_id}")
        body: dict[str, Any] = r.json()
        return body

    return await eventually(probe, lambda b: b.get("status") not in (None, "PENDING"))


async def _check_seats(db: asyncpg.Connection, event_id: int) -> None:
    reserved = await db.fetchval(
        "SELECT count(*) FROM reservations WHERE event_id = $1 AND status = 'RESERVED'", event_id
    )
    assert reserved == SEATS
    twice = await db.fetchval(
        "SELECT count(*) FROM (SELECT user_id FROM reservations WHERE event_id = $1 "
        "AND status = 'RESERVED' GROUP BY 1 HAVING count(*) > 1) AS t",
        event_id,
    )
    assert twice == 0


async def test_a_takeover_takes_back_only_unconfirmed_admissions(
    cluster_api: tuple[Api, int], whole: RedisCluster, db: asyncpg.Connection
) -> None:
    """The event's replica is cut off while its primary admits requests; then it takes over
    (``CLUSTER FAILOVER TAKEOVER``, as after a partition). Without ``REDIS_REPLICAS_ACK`` the
    requests answered 202 after the cut lose their place (their markers vanish: a status poll
    then would call them lost); with it they were never accepted (503, try again), and every
    202 keeps its place."""
    api, replicas_ack = cluster_api
    event_id = await create_event(api.client, "takeover", SEATS)
    users = [await create_user(api.client, n) for n in range(12)]
    before = [await _post(api, event_id, u) for u in users[:4]]
    assert [code for code, _ in before] == [202] * 4
    primary = whole.primary_for(event_keys(event_id).state)
    replica = whole.replica_of(primary)
    await caught_up(primary, replica)
    admin = aioredis.Redis(port=primary.port)
    try:
        # The cut: the primary refuses to replicate (a replica's PSYNC is refused by ACL, the
        # service's commands are not) and its replica's link is closed.
        await admin.execute_command("ACL", "SETUSER", "default", "-psync", "-sync", "-replconf")
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "replica") == 1
        after = [await _post(api, event_id, u) for u in users[4:8]]
        replica_client = aioredis.Redis(port=replica.port)
        try:
            assert await replica_client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        finally:
            await replica_client.aclose()
        await whole.wait_failover(replica)
    finally:
        await admin.execute_command("ACL", "SETUSER", "default", "+@all")
        await admin.aclose()
    await asyncio.to_thread(whole.wait_ready_sync)
    accepted_after = [job for code, job in after if job is not None]
    gate = api.resources.gate
    vanished = [job for job in accepted_after if await gate.pending(event_id, job) is None]
    if replicas_ack:
        assert [code for code, _ in after] == [503] * 4
        assert vanished == []
    else:
        assert len(accepted_after) == 4 and len(vanished) == 4
    # The sale goes on, on the new primary, and ends right either way.
    rest = [await _post(api, event_id, u) for u in users[8:]]
    jobs = [job for _, job in [*before, *after, *rest] if job is not None]
    async with consuming(api.resources, max_parallel=4):
        final = [await _final(api, job) for job in jobs]
    await _check_seats(db, event_id)
    if replicas_ack:
        assert "LOST" not in {b["status"] for b in final}
        assert (await outcomes(api.client, event_id))["lost"] == 0


async def test_nothing_accepted_is_lost_when_the_events_primary_dies_mid_burst(
    database_url: str, clean: None, whole: RedisCluster, db: asyncpg.Connection
) -> None:
    """SIGKILL of the primary holding the event's gate in the middle of a burst, with
    ``REDIS_REPLICAS_ACK=1``: clients send again what is refused (503) until the replica has
    taken over and has a replica of its own (the old primary, started again); every request
    answered 202 ends final, none lost, the seats exactly sold."""
    async with _api(database_url, whole, 1) as api:
        event_id = await create_event(api.client, "killed", SEATS)
        users = [await create_user(api.client, n) for n in range(30)]
        primary = whole.primary_for(event_keys(event_id).state)
        replica = whole.replica_of(primary)
        deadline = time.monotonic() + 60

        async def client(user_id: int) -> str:
            while True:
                _code, job = await _post(api, event_id, user_id)
                if job is not None:
                    return job
                assert time.monotonic() < deadline, "no failover within 60 s"
                await asyncio.sleep(0.1)  # a client's pause before it sends again

        first = await asyncio.gather(*(client(u) for u in users[:15]))
        assert primary.process is not None
        primary.kill()
        second_wave = asyncio.gather(*(client(u) for u in users[15:]))
        await whole.wait_failover(replica)
        # The new primary has no replica to confirm admissions until the old one comes back
        # as its replica: until then every request is refused, none is lost.
        await asyncio.to_thread(primary.start_sync)
        await asyncio.to_thread(whole.wait_ready_sync)
        second = await second_wave
        async with consuming(api.resources, max_parallel=4):
            final = [await _final(api, job) for job in [*first, *second]]
        assert "LOST" not in {b["status"] for b in final}
        await _check_seats(db, event_id)
        assert (await outcomes(api.client, event_id))["lost"] == 0
