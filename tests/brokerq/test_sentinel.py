"""Redis Sentinel: ``redis+sentinel://`` URLs follow the primary through a failover, on a real
primary, replica and three Sentinels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerq import BrokerQueue, ConfigError, RedisError
from brokerq.redis import Connection, RedisAdapter

from ..failover import FailoverSet, sentinels_ready, started_failover_set


@pytest.fixture
def failover_set(tmp_path: Path) -> Iterator[FailoverSet]:
    with started_failover_set(tmp_path) as found:
        yield found


async def test_a_channel_follows_the_primary_through_a_failover(failover_set: FailoverSet) -> None:
    await sentinels_ready(failover_set)
    acked = BrokerQueue(RedisAdapter(failover_set.url, replicas_ack=1))
    try:
        channel = acked.channel("sentinel", bytes)
        for i in range(10):
            await channel.produce(b"before %d" % i)  # each held by the replica too
    finally:
        await acked.close()
    failover_set.primary.kill()
    # The promoted replica has no replica of its own: produce without waiting for one.
    queue = BrokerQueue(RedisAdapter(failover_set.url))
    try:
        channel = queue.channel("sentinel", bytes)
        deadline = time.monotonic() + 30
        failures = 0
        while True:
            try:
                await channel.produce(b"after")
                break
            except RedisError:
                # The primary is gone and no replica promoted yet: what a client sees meanwhile.
                failures += 1
                assert time.monotonic() < deadline, "no failover within 30 s"
                await asyncio.sleep(0.05)  # a client's pause before it tries again
        assert failures > 0, "the produce right after the kill cannot have reached a primary"
        conn = Connection(failover_set.url)
        try:
            assert (await conn.call("ROLE"))[0] == b"master"
        finally:
            await conn.close()
        stats = await channel.stats()
        assert stats.waiting == 11, "every acknowledged produce survived the failover"
    finally:
        await queue.close()


def test_sentinel_urls_are_checked() -> None:
    for bad, words in [
        ("redis+sentinel://127.0.0.1:26379", "names the primary"),
        ("redis+sentinel://127.0.0.1:x/m", "port number"),
        ("redis+sentinel://127.0.0.1:26379/m/0/extra", "path is"),
    ]:
        with pytest.raises(ConfigError, match=words):
            Connection(bad)
    conn = Connection("redis+sentinel://:pw@a:1,b:2/mymaster/3?sentinel_password=sp")
    assert conn.server == "sentinel primary 'mymaster'"
