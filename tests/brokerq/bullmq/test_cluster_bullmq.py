"""The BullMQ engine on Redis Cluster (three primaries): the prefix's hash tag keeps every key
of a queue in one slot, as BullMQ advises; the brokerq contract that holds on BullMQ runs here
too, queues of prefixes on different nodes work side by side, and Node BullMQ on the cluster
(ioredis's Cluster client) shares a queue with us."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from brokerq import BrokerQueue, ConfigError
from brokerq.bullmq import BullMQAdapter
from brokerq.server import RedisCluster

from ..conftest import until
from ..test_contract import User
from . import test_contract_bullmq as single_server
from .conftest import NODE_DIR, ReserveEvent

# The contract tests that hold on BullMQ, with this module's ``queue`` fixture.
for _name in dir(single_server):
    if _name.startswith("test_"):
        globals()[_name] = getattr(single_server, _name)


@pytest.fixture
async def queue(cluster: RedisCluster) -> AsyncIterator[BrokerQueue]:
    q = BrokerQueue(BullMQAdapter(cluster.url))
    yield q
    await q.close()


async def test_the_default_prefix_is_hash_tagged_and_keys_share_its_slot(
    cluster: RedisCluster,
) -> None:
    adapter = BullMQAdapter(cluster.url)
    assert adapter.prefix == "{bull}"
    queue = BrokerQueue(adapter)
    try:
        channel = queue.channel("tagged", User)
        await channel.produce(User(1, "a"))
        await channel.produce(User(2, "b"), delay="1h", priority=3)
        node = cluster.primary_for("{bull}")
        client = aioredis.Redis(port=node.port)
        try:
            keys = {k.decode() for k in await client.keys("{bull}:tagged:*")}
        finally:
            await client.aclose()
        # Every key of the queue is on the node of the tag's slot (KEYS sees one node only).
        assert {"{bull}:tagged:wait", "{bull}:tagged:delayed", "{bull}:tagged:meta"} <= keys
        assert "{bull}:tagged:1" in keys and "{bull}:tagged:2" in keys
    finally:
        await queue.close()


async def test_queues_of_prefixes_on_different_nodes(cluster: RedisCluster) -> None:
    prefixes = ["{bull-a}", "{bull-b}", "{bull-c}", "{bull-d}", "{bull-e}"]
    nodes = {cluster.primary_for(p).port for p in prefixes}
    assert len(nodes) >= 2, "the prefixes spread over several nodes"
    queues = [BrokerQueue(BullMQAdapter(cluster.url, prefix=p)) for p in prefixes]
    try:
        for q in queues:
            channel = q.channel("spread", int, max_attempts=1)
            await channel.produce_many(list(range(50)))
            got: list[int] = []

            async def handler(n: int, got: list[int] = got) -> None:
                if n == 13:
                    raise ValueError("unlucky")
                got.append(n)

            consumer = await channel.consume(handler, max_parallel=10)
            await consumer.wait_idle()
            await consumer.close()
            assert sorted(got) == [n for n in range(50) if n != 13]
            stats = await channel.stats()
            assert (stats.processed, stats.dead, stats.waiting) == (49, 1, 0)
            [letter] = await channel.dead_letters()
            assert letter.data == 13
            assert await channel.redrive() == 1
            assert (await channel.stats()).waiting == 1
            await channel.purge()
            assert await q.channels() == []
    finally:
        for q in queues:
            await q.close()


async def test_a_prefix_without_a_hash_tag_is_refused_on_cluster(cluster: RedisCluster) -> None:
    for prefix in ("bull", "{}bull", "bull{"):
        with pytest.raises(ConfigError, match="hash tag"):
            BullMQAdapter(cluster.url, prefix=prefix)
    client = AsyncRedisCluster.from_url(f"redis://127.0.0.1:{cluster.nodes[0].port}/0")
    try:
        with pytest.raises(ConfigError, match="hash tag"):
            BullMQAdapter(client=client, prefix="bull")
        assert BullMQAdapter(client=client).prefix == "{bull}"
    finally:
        await client.aclose()
    # A single server takes any prefix, BullMQ's "bull" by default.
    assert BullMQAdapter("redis://127.0.0.1:1/0").prefix == "bull"


async def test_node_bullmq_on_the_cluster_sees_our_jobs_and_we_see_its(
    cluster: RedisCluster, node_modules: Path
) -> None:
    """Node BullMQ (ioredis's Cluster client, prefix '{bull}') and brokerq on one queue: Node
    works our jobs; we work the ones Node adds."""
    seeds = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    queue = BrokerQueue(BullMQAdapter(cluster.url, job_name="reserveEvent"))
    try:
        channel = queue.channel("interop", ReserveEvent)
        for i in range(5):
            await channel.produce(ReserveEvent(userId=i, eventId=100))
        lines = await _node_cluster(seeds, "interop", [], 5)
        seen = sorted(line["data"]["userId"] for line in lines if "seen" in line)
        assert seen == [0, 1, 2, 3, 4]
        assert {line["name"] for line in lines if "seen" in line} == {"reserveEvent"}
        [counts] = [line["counts"] for line in lines if "counts" in line]
        assert counts == {"completed": 5, "wait": 0, "active": 0}

        jobs = [
            {"name": "reserveEvent", "data": {"userId": 10 + i, "eventId": 7}} for i in range(3)
        ]
        lines = await _node_cluster(seeds, "interop", jobs, 0)  # Node adds, we work
        [added] = [line["added"] for line in lines if "added" in line]
        got: list[int] = []

        async def handler(event: ReserveEvent) -> None:
            got.append(event.userId)

        consumer = await channel.consume(handler)
        await until(lambda: len(got) == 3, what="Node's jobs worked")
        await consumer.wait_idle()
        await consumer.close()
        assert sorted(got) == [10, 11, 12] and len(added) == 3
        stats = await channel.stats()
        # Node's worker keeps no metrics unless told to: "processed" counts ours alone.
        assert (stats.waiting, stats.in_flight, stats.processed) == (0, 0, 3)
    finally:
        await queue.close()


async def _node_cluster(seeds: str, queue: str, jobs: list[dict[str, Any]], finish: int):
    proc = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node", str(NODE_DIR / "cluster.cjs"), seeds, queue,
        json.dumps(jobs), str(finish),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"node cluster.cjs failed: {err.decode()}"
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
