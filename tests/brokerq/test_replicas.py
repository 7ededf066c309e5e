"""``replicas_ack``: a produce is acknowledged only once replicas hold it, on a real primary and
replica. With asynchronous replication a replica that takes over may miss writes its primary
already acknowledged; these tests make that failover happen and count what it takes back."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from brokerq import BrokerQueue, ConfigError, ReplicationError
from brokerq.redis import RedisAdapter, Script, acknowledged_by, connect, open_commands
from brokerq.server import RedisServer

from ..failover import linked, started_pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    with started_pair(tmp_path) as servers:
        yield servers


def _queue(url: str, **options: object) -> BrokerQueue:
    return BrokerQueue(RedisAdapter(url, **options))  # type: ignore[arg-type]


async def _count(url: str, channel: str) -> int:
    queue = _queue(url)
    try:
        return (await queue.channel(channel, bytes).stats()).waiting
    finally:
        await queue.close()


async def test_a_produce_waits_for_its_replica(pair: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = pair
    await linked(replica)
    # A confirmation may take long on a loaded machine; a stopped replica never confirms.
    patient = _queue(primary.url, replicas_ack=1, replicas_ack_timeout="10s")
    hasty = _queue(primary.url, replicas_ack=1, replicas_ack_timeout="300ms")
    try:
        await patient.channel("acked", bytes).produce(b"replicated")
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ReplicationError) as caught:
                await hasty.channel("acked", bytes).produce(b"not confirmed")
            assert (caught.value.acknowledged, caught.value.wanted) == (0, 1)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        channel = patient.channel("acked", bytes)
        await channel.produce(b"replicated again")
        assert (await channel.stats()).waiting == 3  # the primary has all three
    finally:
        await patient.close()
        await hasty.close()


@pytest.mark.parametrize("replicas_ack", [0, 1])
async def test_a_failover_takes_back_only_unconfirmed_produces(
    pair: tuple[RedisServer, RedisServer], replicas_ack: int
) -> None:
    """The replica is promoted while the old primary still takes produces (a partition, then a
    failover): what the old primary acknowledged after that is not on the new primary. Without
    ``replicas_ack`` those produces were acknowledged and vanish; with it, none is acknowledged."""
    primary, replica = pair
    await linked(replica)
    acknowledged = 0
    # On the replica before the failover, however slow a loaded machine makes it.
    patient = _queue(primary.url, replicas_ack=1, replicas_ack_timeout="10s")
    try:
        for i in range(20):
            await patient.channel("failover", bytes).produce(b"before %d" % i)
            acknowledged += 1
    finally:
        await patient.close()
    queue = _queue(primary.url, replicas_ack=replicas_ack, replicas_ack_timeout="50ms")
    try:
        channel = queue.channel("failover", bytes)
        promoted = aioredis.Redis.from_url(replica.url)
        try:
            await promoted.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            await promoted.aclose()
        for i in range(20):
            try:
                await channel.produce(b"after %d" % i)
            except ReplicationError:
                continue
            acknowledged += 1
    finally:
        await queue.close()
    survived = await _count(replica.url, "failover")
    vanished = acknowledged - survived
    assert survived == 20, "everything replicated before the failover is on the new primary"
    assert vanished == (20 if replicas_ack == 0 else 0)


async def _wait_calls(url: str) -> int:
    async with await connect(url) as connection:
        stats = (await connection.call("INFO", "commandstats")).decode()
    line = next((x for x in stats.splitlines() if x.startswith("cmdstat_wait:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


async def test_writes_at_the_same_time_share_their_wait(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    # A WAIT holds its connection until the replica answers: one per write would queue each
    # write behind the last one's confirmation. One WAIT answers for every write sent before it.
    primary, replica = pair
    await linked(replica)
    commands = open_commands(primary.url)
    acknowledged = acknowledged_by(
        commands, url=primary.url, password=None, options={}, wanted=1, timeout_ms=10_000
    )
    count = Script("count", "return redis.call('INCR', KEYS[1])")
    before = await _wait_calls(primary.url)
    try:
        replies = await asyncio.gather(*(acknowledged.run(count, ["n"], []) for _ in range(200)))
        # Each write answered once its replica held it: the replica has all 200.
        async with await connect(replica.url) as connection:
            on_replica = int(await connection.call("GET", "n"))
    finally:
        await acknowledged.close()
        await commands.close()
    assert sorted(replies) == list(range(1, 201))
    assert on_replica == 200
    waits = await _wait_calls(primary.url) - before
    # One per write would be 200 (as before the WAITs were shared). How many rounds there are
    # depends on how the replies come in: 10 on a quiet machine, 25 seen under the suite's load.
    assert 1 <= waits < 200, f"{waits} WAITs for 200 writes"


def test_replicas_ack_needs_brokerqs_own_connection() -> None:
    # WAIT must run on the connection that wrote: a redis-py client's pool cannot promise it.
    client = aioredis.Redis(port=1)
    with pytest.raises(ConfigError, match="replicas_ack needs a Redis URL"):
        RedisAdapter(client=client, replicas_ack=1)
    with pytest.raises(ConfigError, match="replicas_ack"):
        RedisAdapter("redis://127.0.0.1:1/0", replicas_ack=-1)
    # Redis Cluster: brokerq's own connection to the node of each channel, with the options
    # a connection has (the cluster client's own are its alone).
    RedisAdapter("redis://127.0.0.1:1/0", cluster=True, replicas_ack=1)
    RedisAdapter("redis+cluster://a:1,b:2/?socket_timeout=5", replicas_ack=1, reinitialize_steps=5)
    with pytest.raises(ConfigError, match="socket_timeout"):
        RedisAdapter("redis+cluster://a:1/?socket_timeout=-1", replicas_ack=1)
