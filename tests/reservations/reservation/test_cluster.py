"""The service on Redis Cluster (``REDIS_URL=redis+cluster://...``), on a real 3-primary cluster:
each event's gate is one slot, events spread over the primaries, and the burst, recovery and rate
limit scenarios keep their invariants there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from brokerq.server import RedisCluster
from reservations.reservation.gate import EVENTS_KEY, event_keys
from reservations.reservation.settle.recovery import maintenance_pass, requeue_unfinished
from reservations.settings import Settings
from reservations.worker import consuming

from ..conftest import Api, one_client_over, running_api
from ..helpers import (
    ADMIN_TOKEN,
    create_event,
    create_user,
    outcomes,
    processed,
    request_outcome,
)


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = ClusterClient.from_url(cluster.nodes[0].url)
    await client.flushall(target_nodes=ClusterClient.PRIMARIES)
    yield client
    await client.aclose()


def _settings(database_url: str, cluster: RedisCluster, **more: Any) -> Settings:
    return Settings(
        _env_file=None, ENVIRONMENT="test", DATABASE_URL=database_url, REDIS_URL=cluster.url,
        ADMIN_TOKEN=ADMIN_TOKEN, **more,
    )  # fmt: skip


@pytest.fixture
async def cluster_api(
    database_url: str, clean: None, cluster: RedisCluster, client: ClusterClient
) -> AsyncIterator[Api]:
    async with running_api(_settings(database_url, cluster)) as api:
        yield api


async def _post(api: Api, event_id: int, user_id: int, quantity: int = 1) -> str:
    r = await api.client.post(f"/reservation/{event_id}/{user_id}?quantity={quantity}")
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


async def test_a_burst_over_events_on_every_primary_keeps_every_invariant(
    cluster_api: Api, client: ClusterClient, db: asyncpg.Connection
) -> None:
    api = cluster_api
    events = [await create_event(api.client, f"e{i}", 5, maxPerUser=2) for i in range(6)]
    primaries = {client.get_node_from_key(event_keys(e).state).name for e in events}
    assert len(primaries) >= 2, "the events' gates all landed on one primary"
    users = [await create_user(api.client, n) for n in range(12)]
    # Every user asks for every event at once; a third of them for two seats.
    requests = [(e, u, 2 if u % 3 == 0 else 1) for e in events for u in users]
    jobs = await asyncio.gather(*(_post(api, e, u, q) for e, u, q in requests))
    # A second request of a user for the same event, while the first is in flight.
    again = await asyncio.gather(*(_post(api, e, users[1]) for e in events))
    async with consuming(api.resources, max_parallel=8):
        final = await asyncio.gather(*(processed(api.client, j) for j in [*jobs, *again]))
    assert {b["status"] for b in final} <= {"RESERVED", "REJECTED"}
    holders = {
        (r["event_id"], r["user_id"])
        for r in await db.fetch(
            "SELECT event_id, user_id FROM reservations WHERE status = 'RESERVED'"
        )
    }
    # The second request: DUPLICATE where the first won seats, sold out where it did not.
    for event_id, body in zip(events, final[len(jobs) :], strict=True):
        assert body["reason"] == ("DUPLICATE" if (event_id, users[1]) in holders else "SOLD_OUT"), (
            body
        )
    for event_id in events:
        seats = await db.fetchval(
            "SELECT coalesce(sum(quantity), 0) FROM reservations "
            "WHERE event_id = $1 AND status = 'RESERVED'",
            event_id,
        )
        assert seats == 5, (event_id, seats)
        counts = await outcomes(api.client, event_id)
        assert (counts["pending"], counts["lost"]) == (0, 0), counts
        gate = await api.resources.gate.counters(event_id)
        assert gate is not None and gate.admitted == 5 and gate.pending == 0
    twice = await db.fetchval(
        "SELECT count(*) FROM (SELECT event_id, user_id FROM reservations "
        "WHERE status = 'RESERVED' GROUP BY 1, 2 HAVING count(*) > 1) AS t"
    )
    assert twice == 0


async def test_a_request_admitted_and_never_queued_is_recovered_through_the_registry(
    cluster_api: Api, client: ClusterClient
) -> None:
    """An API that died between the gate and the queue: its request is only in its event's
    unfinished set, on the event's primary; recovery finds the event in the registry (another
    slot), queues the request again, and the event leaves the registry once nothing is left."""
    api = cluster_api
    res = api.resources
    event_id = await create_event(api.client, "orphan", 1)
    user_id = await create_user(api.client, 1)
    orphan = (await res.request_ids()).new(event_id=event_id, user_id=user_id, accepted_at_ms=1)
    result = await res.gate.admit(
        event_id=event_id, user_id=user_id, request_id=orphan, accepted_at_ms=1
    )
    assert result.verdict.value == "ADMITTED"
    assert await client.zscore(EVENTS_KEY, str(event_id)) is not None
    requeued = await requeue_unfinished(res.gate, res.channel, res.session_factory, older_than_ms=0)
    assert requeued == 1
    async with consuming(res, max_parallel=2):
        assert (await processed(api.client, orphan))["status"] == "RESERVED"
    again = await requeue_unfinished(res.gate, res.channel, res.session_factory, older_than_ms=0)
    assert again == 0
    assert await client.zscore(EVENTS_KEY, str(event_id)) is None
    assert await client.hget(event_keys(event_id).state, "reg") is None
    # The event's next request puts it back before it can be left unfinished.
    await _post(api, event_id, user_id)
    assert await client.zscore(EVENTS_KEY, str(event_id)) is not None


async def test_the_rate_limit_is_shared_by_api_processes_on_the_cluster(
    database_url: str, clean: None, cluster: RedisCluster, client: ClusterClient
) -> None:
    """Two API instances on one Cluster: a client that used its allowance on one is refused by
    the other (the limit's key is in one slot, wherever it lands)."""
    settings = _settings(database_url, cluster, RESERVATION_RATE_LIMIT="3/min")
    async with running_api(settings) as one, running_api(settings) as two:
        event_id = await create_event(one.client, "limited", 100)
        users = [await create_user(one.client, n) for n in range(4)]
        answers = await one_client_over([one, two, one, two], event_id, users[:4])
    assert answers == [202, 202, 202, 429]


async def test_the_maintenance_pass_corrects_the_gate_on_the_cluster(
    cluster_api: Api, client: ClusterClient
) -> None:
    api = cluster_api
    res = api.resources
    event_id = await create_event(api.client, "drift", 3)
    users = [await create_user(api.client, n) for n in range(3)]
    async with consuming(res, max_parallel=2):
        for user_id in users[:2]:
            assert (await processed(api.client, await _post(api, event_id, user_id)))[
                "status"
            ] == "RESERVED"
    truth = await res.gate.holders(event_id)
    # Drift both ways: a reserved user forgotten, a seat held by nobody's request.
    await client.hdel(event_keys(event_id).admitted, str(users[0]))
    await client.hset(event_keys(event_id).admitted, "999999", "a-request-nobody-sent")
    await maintenance_pass(res.gate, res.channel, res.session_factory, holds=res.holds)
    assert await res.gate.holders(event_id) == truth


async def test_a_seat_released_on_the_cluster_goes_to_the_head_of_the_line(
    cluster_api: Api,
) -> None:
    api = cluster_api
    event_id = await create_event(api.client, "line", 1, holdSeconds=60, waitlist=True)
    users = [await create_user(api.client, n) for n in range(3)]
    async with consuming(api.resources, max_parallel=2):
        sent = []
        for user_id in users:
            r = await api.client.post(f"/reservation/{event_id}/{user_id}")
            assert r.status_code == 202, r.text
            sent.append((r.json()["id"], r.json()["holdToken"]))
            await processed(api.client, sent[-1][0])
        states = [await request_outcome(api.client, job) for job, _ in sent]
        assert [s["status"] for s in states] == ["HELD", "WAITING", "WAITING"]
        r = await api.client.post(
            f"/reservation/{states[0]['reservationId']}/release",
            headers={"Hold-Token": sent[0][1]},
        )
        assert r.status_code == 200, r.text
        promoted = await request_outcome(api.client, sent[1][0])
        assert promoted["status"] == "HELD"
        assert (await request_outcome(api.client, sent[2][0]))["position"] == 1
