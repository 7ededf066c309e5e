"""Redis failover for tests: a primary, its replica and three Sentinels on local ports; a Redis
Cluster with a replica per primary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis.asyncio as aioredis

from brokerq.server import RedisCluster, RedisSentinel, RedisServer


class FailoverSet:
    def __init__(self, primary: RedisServer, replica: RedisServer, sentinels: list[RedisSentinel]):
        self.primary = primary
        self.replica = replica
        self.sentinels = sentinels

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/mymaster"


def failover_cluster(path: Path) -> RedisCluster:
    """3 primaries with a replica each, a node declared failed after 1 s: quick takeovers."""
    return RedisCluster(path, replicas=1, node_timeout_ms=1000)


@contextmanager
def started_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica on local ports (the replica still syncing: see ``linked``)."""
    # No wait before the first full sync (5 s by default, to batch replicas that come together).
    primary = RedisServer(tmp_path / "primary", extra_args=("--repl-diskless-sync-delay", "0"))
    with primary:
        replica = RedisServer(
            tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(primary.port))
        )
        with replica:
            yield primary, replica


async def linked(replica: RedisServer) -> None:
    """Until the replica is in sync with its primary."""
    client = aioredis.Redis.from_url(replica.url)
    try:
        deadline = time.monotonic() + 30
        while (await client.info("replication")).get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync in 30 s"
            await asyncio.sleep(0.05)  # nothing signals it
    finally:
        await client.aclose()


@contextmanager
def started_failover_set(tmp_path: Path) -> Iterator[FailoverSet]:
    """A primary, its replica and three Sentinels watching them as ``mymaster``, on local
    ports; all stopped afterwards."""
    with ExitStack() as stack:
        primary = RedisServer(tmp_path / "primary", extra_args=("--repl-diskless-sync-delay", "0"))
        stack.enter_context(primary)
        replica = RedisServer(
            tmp_path / "replica",
            extra_args=(
                "--replicaof", "127.0.0.1", str(primary.port),
                "--repl-diskless-sync-delay", "0",
            ),
        )  # fmt: skip
        stack.enter_context(replica)
        sentinels = [
            stack.enter_context(RedisSentinel(tmp_path / f"s{i}", primary_port=primary.port))
            for i in range(3)
        ]
        yield FailoverSet(primary, replica, sentinels)


async def sentinels_ready(failover: FailoverSet) -> None:
    """The Sentinels know the replica and each other: a failover can happen."""
    clients = [aioredis.Redis(port=s.port) for s in failover.sentinels]
    try:

        async def known() -> bool:
            for client in clients:
                fields = await client.sentinel_master("mymaster")
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
            return True

        deadline = time.monotonic() + 30
        while not await known():
            assert time.monotonic() < deadline, "the Sentinels did not learn the set in 30 s"
            await asyncio.sleep(0.05)  # nothing signals it: Sentinel learns by its own polling
    finally:
        for client in clients:
            await client.aclose()


def whole_cluster(cluster: RedisCluster) -> RedisCluster:
    """The cluster with all its nodes running and in sync: a node an earlier test killed is
    started again and rejoins as a replica of the node that took its place."""
    for node in cluster.nodes:
        if node.process is None:
            node.start_sync()
    cluster.wait_ready_sync()
    return cluster


async def caught_up(primary: RedisServer, replica: RedisServer) -> None:
    """Until the replica has every write of its primary so far (WAIT would only speak for the
    writes of its own connection)."""
    clients = [aioredis.Redis(port=primary.port), aioredis.Redis(port=replica.port)]
    try:
        target = (await clients[0].info("replication"))["master_repl_offset"]
        deadline = time.monotonic() + 30
        while int((await clients[1].info("replication"))["slave_repl_offset"]) < target:
            assert time.monotonic() < deadline, "the replica did not catch up in 30 s"
            await asyncio.sleep(0.02)  # nothing signals it
    finally:
        for client in clients:
            await client.aclose()
