"""``RESERVATION_CHANNEL_SHARDS``: the reservation channel spread over shards by event id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from brokerq.server import RedisCluster
from brokerq.shards import partition, shard_names
from reservations.channels import QUEUE_NAME
from reservations.settings import Settings
from reservations.worker import consuming

from ..conftest import Api, running_api
from ..helpers import ADMIN_TOKEN, create_event, create_user, processed

SHARDS = 3


@pytest.fixture(params=["redis", "cluster"])
async def sharded_api(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, clean: None
) -> AsyncIterator[tuple[Api, RedisCluster | None]]:
    """The API with the reservation channel over 3 shards: on one redis-server, or on a
    3-primary Redis Cluster (then also yielded)."""
    cluster: RedisCluster | None = None
    if request.param == "cluster":
        cluster = request.getfixturevalue("cluster")
        client = ClusterClient.from_url(cluster.nodes[0].url)
        await client.flushall(target_nodes=ClusterClient.PRIMARIES)
        await client.aclose()
        redis_url = cluster.url
    settings = Settings(
        _env_file=None, ENVIRONMENT="test", DATABASE_URL=database_url, REDIS_URL=redis_url,
        ADMIN_TOKEN=ADMIN_TOKEN, RESERVATION_CHANNEL_SHARDS=SHARDS,
    )  # fmt: skip
    async with running_api(settings) as api:
        yield api, cluster


async def test_each_events_requests_go_to_its_shard_and_are_all_processed(
    sharded_api: tuple[Api, RedisCluster | None],
) -> None:
    api, cluster = sharded_api
    events: list[int] = []
    while len(events) < 3 or len({partition(e, SHARDS) for e in events}) < 2:
        events.append(await create_event(api.client, f"sharded {len(events)}", 2))
    users = [await create_user(api.client, n) for n in range(3)]
    jobs: dict[int, list[str]] = {event: [] for event in events}
    for event in events:
        for user in users:
            r = await api.client.post(f"/reservation/{event}/{user}")
            assert r.status_code == 202, r.text
            jobs[event].append(r.json()["id"])

    queue = api.resources.queue
    names = shard_names(QUEUE_NAME, SHARDS)
    stored = [await queue.adapter.stats(name) for name in names]
    expected = [0] * SHARDS
    for event in events:
        expected[partition(event, SHARDS)] += len(users)
    assert [stats.waiting for stats in stored] == expected
    if cluster is not None:
        client = ClusterClient.from_url(cluster.nodes[0].url)
        try:
            await client.initialize()  # the slot map
            holders = {client.get_node_from_key(f"bq:{{{name}}}:msg").name for name in names}
        finally:
            await client.aclose()
        assert len(holders) == SHARDS  # one primary each

    async with consuming(api.resources, max_parallel=8):
        for event in events:
            outcomes = [(await processed(api.client, job))["status"] for job in jobs[event]]
            # Two seats each: the first two requests of every event win them.
            assert outcomes == ["RESERVED", "RESERVED", "REJECTED"], (event, outcomes)
    stats = await api.resources.channel.stats()
    assert (stats.produced, stats.waiting, stats.in_flight) == (3 * len(events), 0, 0)


def test_shards_are_for_brokerqs_own_layout(database_url: str) -> None:
    assert Settings(_env_file=None, DATABASE_URL=database_url).reservation_channel_shards == 1
    with pytest.raises(ValueError, match="RESERVATION_CHANNEL_SHARDS"):
        Settings(
            _env_file=None, DATABASE_URL=database_url, RESERVATION_CHANNEL_SHARDS=2,
            QUEUE_ENGINE="bullmq",
        )  # fmt: skip
    for bad in (0, 129):
        with pytest.raises(ValueError, match="RESERVATION_CHANNEL_SHARDS"):
            Settings(_env_file=None, DATABASE_URL=database_url, RESERVATION_CHANNEL_SHARDS=bad)
