"""Redis Cluster with replicas: a primary's failure and its replica taking over, on six real
nodes (three primaries, a replica each) that fail over within about two seconds.

With asynchronous replication a replica that takes over may miss writes its primary already
acknowledged; ``replicas_ack`` makes a produce wait until the replica holds it (``WAIT`` on the
node of the channel's slot). These tests make the failover happen and count what it takes back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from brokerq import BrokerQueue, RedisError, ReplicationError
from brokerq.redis import RedisAdapter
from brokerq.server import RedisCluster

from ..failover import caught_up, failover_cluster, whole_cluster
from .conftest import until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with failover_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def whole(cluster: RedisCluster) -> RedisCluster:
    return whole_cluster(cluster)


def _queue(url: str, **options: object) -> BrokerQueue:
    return BrokerQueue(RedisAdapter(url, **options))  # type: ignore[arg-type]


async def _waiting(url: str, channel: str) -> int:
    queue = _queue(url)
    try:
        return (await queue.channel(channel, bytes).stats()).waiting
    finally:
        await queue.close()


def test_a_killed_primary_is_replaced_by_its_replica(whole: RedisCluster) -> None:
    primary = whole.primary_for("{killed}")
    replica = whole.replica_of(primary)
    assert primary in whole.nodes and replica in whole.nodes and replica is not primary
    primary.kill()
    whole.wait_failover_sync(replica)
    assert whole.primary_for("{killed}") is replica
    primary.start_sync()
    whole.wait_ready_sync()
    assert whole.replica_of(replica) is primary, "the old primary came back as a replica"


async def test_a_produce_waits_for_the_replica_of_its_slot(whole: RedisCluster) -> None:
    name = "acked"
    replica = whole.replica_of(whole.primary_for(f"{{{name}}}"))
    patient = _queue(whole.url, replicas_ack=1, replicas_ack_timeout="5s")
    hasty = _queue(whole.url, replicas_ack=1, replicas_ack_timeout="300ms")
    try:
        await patient.channel(name, bytes).produce(b"replicated")
        channel = hasty.channel(name, bytes)
        assert (await channel.stats()).waiting == 1  # the cluster client knows the slot map
        assert replica.process is not None
        # Stopped, still connected: only a WAIT after this produce's own write can tell.
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ReplicationError) as caught:
                await channel.produce(b"not confirmed")
            assert (caught.value.acknowledged, caught.value.wanted) == (0, 1)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        await patient.channel(name, bytes).produce(b"replicated again")
        assert (await channel.stats()).waiting == 3  # the primary has all three
    finally:
        await patient.close()
        await hasty.close()


@pytest.mark.parametrize("replicas_ack", [0, 1])
async def test_a_takeover_takes_back_only_unconfirmed_produces(
    whole: RedisCluster, replicas_ack: int
) -> None:
    """The replica is cut off (its link killed, the process stopped so it cannot reconnect)
    while its primary takes produces; then it takes over (``CLUSTER FAILOVER TAKEOVER``, as
    after a partition) and the old primary, back as its replica, drops what it alone had.
    Without ``replicas_ack`` those produces were acknowledged and vanish; with it, none is."""
    name = f"takeover-{replicas_ack}"
    primary = whole.primary_for(f"{{{name}}}")
    replica = whole.replica_of(primary)
    acknowledged = 0
    before = _queue(whole.url)
    try:
        for i in range(20):
            await before.channel(name, bytes).produce(b"before %d" % i)
            acknowledged += 1
    finally:
        await before.close()
    await caught_up(primary, replica)
    queue = _queue(whole.url, replicas_ack=replicas_ack, replicas_ack_timeout="50ms")
    unconfirmed: list[tuple[int, int]] = []  # (replicas that confirmed, replicas wanted)
    try:
        channel = queue.channel(name, bytes)
        # The cluster client learns the slot map now: from any node, maybe the one stopped next.
        assert (await channel.stats()).waiting == 20
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            admin = aioredis.Redis(port=primary.port)
            try:
                assert await admin.execute_command("CLIENT", "KILL", "TYPE", "replica") == 1
            finally:
                await admin.aclose()
            for i in range(10):
                try:
                    await channel.produce(b"after %d" % i)
                except ReplicationError as exc:
                    unconfirmed.append((exc.acknowledged, exc.wanted))
                    continue
                acknowledged += 1
            # Sent while the replica is stopped: it reads this with its link's end, before its
            # once-a-second reconnection could fetch what it missed.
            takeover = socket.create_connection(("127.0.0.1", replica.port))
            takeover.sendall(b"CLUSTER FAILOVER TAKEOVER\r\n")
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        with takeover:
            takeover.settimeout(10)
            assert takeover.recv(64) == b"+OK\r\n"
    finally:
        await queue.close()
    await whole.wait_failover(replica)
    await asyncio.to_thread(whole.wait_ready_sync)  # the old primary resynced as its replica
    assert whole.replica_of(replica) is primary
    survived = await _waiting(whole.url, name)
    vanished = acknowledged - survived
    assert survived == 20, "everything replicated before the takeover is on the new primary"
    assert vanished == (10 if replicas_ack == 0 else 0)
    assert unconfirmed == ([] if replicas_ack == 0 else [(0, 1)] * 10)


async def test_nothing_acknowledged_is_lost_when_a_primary_dies_mid_burst(
    whole: RedisCluster,
) -> None:
    """Producers and a consumer keep going while the channel's primary is killed: the cluster
    promotes its replica by itself, the clients find it (MOVED, a fresh slot map), and every
    produce that returned is delivered."""
    name = "burst"
    primary = whole.primary_for(f"{{{name}}}")
    replica = whole.replica_of(primary)
    queue = _queue(whole.url, replicas_ack=1, replicas_ack_timeout="2s")
    acknowledged: set[int] = set()
    received: set[int] = set()
    failures = 0
    phase = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal failures
        next_number = 0
        while not stop.is_set():
            numbers = range(next_number, next_number + 10)
            next_number += 10
            # One tick's produces travel together: one script call and one WAIT.
            results = await asyncio.gather(
                *(channel.produce(n) for n in numbers), return_exceptions=True
            )
            for n, result in zip(numbers, results, strict=True):
                if isinstance(result, RedisError):
                    failures += 1
                elif isinstance(result, BaseException):
                    raise result
                else:
                    acknowledged.add(n)
            if any(isinstance(r, RedisError) for r in results):
                await asyncio.sleep(0.05)  # a client's pause before it tries again

    async def handler(n: int) -> None:
        received.add(n)

    try:
        channel = queue.channel(name, int, lease="2s")
        consumer = await channel.consume(handler, max_parallel=20)
        producer = asyncio.create_task(produce())
        await until(lambda: len(acknowledged) >= 200, what="produces before the kill")
        before = len(acknowledged)
        primary.kill()
        await whole.wait_failover(replica)
        phase = 1
        # Back as the new primary's replica: produces can be confirmed again.
        await asyncio.to_thread(primary.start_sync)
        await asyncio.to_thread(whole.wait_ready_sync)
        after = len(acknowledged)
        await until(lambda: len(acknowledged) >= after + 200, what="produces after the failover")
        stop.set()
        await producer
        await until(lambda: acknowledged <= received, timeout=20, what="every acknowledged produce")
        await consumer.close()
    finally:
        stop.set()
        await queue.close()
    assert phase == 1 and before >= 200
    assert failures > 0, "produces right after the kill cannot have been confirmed"
    assert whole.primary_for(f"{{{name}}}") is replica
