"""A channel spread over shards: checked in memory, on one redis-server and on a 3-primary Redis
Cluster (each shard on a primary of its own)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from brokerq import BrokerQueue, ChannelError, ConnectionLostError, Message, Processing
from brokerq.adapter import Exchange, Settlement
from brokerq.memory import MemoryAdapter
from brokerq.redis import RedisAdapter
from brokerq.server import RedisCluster
from brokerq.shards import base_name, cluster_slot, partition, shard_names

from .conftest import until


class Event(msgspec.Struct):
    key: str
    seq: int


def _shard(id_: str) -> int:
    return int(id_.rpartition("@")[2])


def _keys_on(shards: int) -> list[str]:
    """One key per shard, in shard order."""
    keys: dict[int, str] = {}
    for i in range(1000):
        keys.setdefault(partition(f"k{i}", shards), f"k{i}")
    return [keys[s] for s in range(shards)]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def queue(request: pytest.FixtureRequest, redis_server) -> AsyncIterator[BrokerQueue]:
    if request.param == "memory":
        adapter = MemoryAdapter()
    elif request.param == "redis":
        adapter = RedisAdapter(redis_server.url)
    else:
        adapter = RedisAdapter(request.getfixturevalue("cluster").url)
    q = BrokerQueue(adapter)
    yield q
    await q.close()


def test_the_partition_of_a_key_is_sha256_modulo_the_shard_count() -> None:
    # The documented hash, so that any process in any language finds the same shard.
    for key, data in (("event-7", b"event-7"), (b"\x00\xff", b"\x00\xff"), (123, b"123")):
        expected = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
        assert [partition(key, k) for k in (1, 2, 3, 5)] == [expected % k for k in (1, 2, 3, 5)]
    assert partition(7, 3) == partition("7", 3)
    counts = [0, 0, 0]
    for event_id in range(3000):
        counts[partition(event_id, 3)] += 1
    assert min(counts) > 900  # spread evenly


def test_shard_names_keep_one_shard_as_it_was_and_spread_the_cluster_slots() -> None:
    assert shard_names("orders", 1) == ["orders"]
    for shards in (2, 3, 5):
        names = shard_names("orders", shards)
        assert [base_name(n) for n in names] == ["orders"] * shards
        assert [n.split("#")[1].split(".")[0] for n in names] == [str(i) for i in range(shards)]
        for i, n in enumerate(names):
            # In the middle half of the i-th of ``shards`` equal slot ranges.
            low, high = i * 16384 // shards, (i + 1) * 16384 // shards
            quarter = (high - low) // 4
            assert low + quarter <= cluster_slot(n) < high - quarter


def test_shard_options_and_keys_are_checked() -> None:
    queue = BrokerQueue(MemoryAdapter())
    for bad in (0, 129, True, "3"):
        with pytest.raises(ChannelError, match="shards must be an int from 1 to 128"):
            queue.channel("orders", int, shards=bad)  # type: ignore[arg-type]
    with pytest.raises(ChannelError, match="partition_key must be a function"):
        queue.channel("orders", int, shards=2, partition_key="id")  # type: ignore[arg-type]
    for reserved in ("orders#1", "orders#1.5"):
        with pytest.raises(ChannelError, match="shard"):
            queue.channel(reserved, int)
    with pytest.raises(ChannelError, match="at most 200"):
        queue.channel("x" * 199, int, shards=3)


@pytest.mark.parametrize("shards", [1, 3])
async def test_a_bad_partition_key_is_refused_whatever_the_shard_count(shards: int) -> None:
    queue = BrokerQueue(MemoryAdapter())
    ch = queue.channel("orders", int, shards=shards)
    for bad in (1.5, True, [1]):
        with pytest.raises(ChannelError, match="partition key is a str, bytes or int"):
            await ch.produce(1, key=bad)  # type: ignore[arg-type]
    await queue.close()


async def test_each_keys_order_holds_and_nothing_is_lost_or_doubled(queue: BrokerQueue, name):
    ch = queue.channel(name, Event, shards=3, partition_key=lambda e: e.key)
    keys = [f"event-{i}" for i in range(9)]
    # In order: the batch call, then single produces one after another (both keep the order).
    batch = await ch.produce_many([Event(k, seq) for seq in range(20) for k in keys])
    singles = [await ch.produce(Event(k, 20 + seq)) for seq in range(3) for k in keys]
    produced = batch + singles
    assert len({r.id for r in produced}) == len(produced) == 9 * 23
    assert {_shard(r.id) for r in produced} == {0, 1, 2}

    got: list[Message[Event]] = []

    async def handler(msg: Message[Event]) -> None:
        got.append(msg)

    consumer = await ch.consume(handler, max_parallel=1)  # handled in the order delivered
    await until(lambda: len(got) == len(produced), what="every message")
    await consumer.wait_idle()
    assert sorted(m.id for m in got) == sorted(r.id for r in produced)
    for key in keys:
        assert [m.data.seq for m in got if m.data.key == key] == list(range(23))
        assert len({_shard(m.id) for m in got if m.data.key == key}) == 1
    stats = await ch.stats()
    assert (stats.produced, stats.processed, stats.waiting, stats.in_flight) == (207, 207, 0, 0)
    # One channel to whoever lists them; its shards are the broker's.
    assert name in await queue.channels()
    assert not any(n.startswith(f"{name}#") for n in await queue.channels())
    stored = [n for n in await queue.adapter.channels() if base_name(n) == name]
    assert sorted(stored) == sorted(shard_names(name, 3))
    [listed] = await queue.channel_stats([name])
    assert (listed.channel, listed.produced, listed.processed) == (name, 207, 207)


async def test_messages_without_a_key_go_round_robin_and_duplicates_meet_their_original(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int, shards=3)
    spread = [await ch.produce(n) for n in range(6)]
    assert [_shard(r.id) for r in spread] == [0, 1, 2, 0, 1, 2]
    keyed = [await ch.produce(n, key="same") for n in range(4)]
    assert len({_shard(r.id) for r in keyed}) == 1

    once = queue.channel(f"{name}-once", int, shards=3, process=Processing.EXACTLY_ONCE)
    firsts = [await once.produce(n) for n in range(12)]
    again = [await once.produce(n) for n in range(12)]
    assert not any(r.deduplicated for r in firsts)
    assert [r.id for r in again] == [r.id for r in firsts]
    assert all(r.deduplicated for r in again)
    assert len({_shard(r.id) for r in firsts}) > 1  # the content hash spreads them
    by_hash = [await once.produce(100 + n, hash="order-1") for n in range(3)]
    assert [r.deduplicated for r in by_hash] == [False, True, True]
    assert (await once.stats()).produced == 13


async def test_a_flooded_shard_does_not_starve_another(queue: BrokerQueue, name: str):
    ch = queue.channel(name, Event, shards=3)
    busy, quiet, _ = _keys_on(3)
    await ch.produce_many([Event(busy, i) for i in range(600)], key=busy)
    await ch.produce_many([Event(quiet, i) for i in range(5)], key=quiet)
    order: list[str] = []

    async def handler(event: Event) -> None:
        order.append(event.key)

    consumer = await ch.consume(handler, max_parallel=4)
    await until(lambda: order.count(quiet) == 5, what="the quiet shard's messages")
    # Arrival order alone would hand them out after the 600 of the busy shard.
    last_quiet = max(i for i, key in enumerate(order) if key == quiet)
    assert last_quiet < 60, order[:80]
    await until(lambda: len(order) == 605, what="every message")
    await consumer.close()


async def test_retries_delays_dead_letters_and_counts_work_across_shards(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(
        name, int, shards=3, max_attempts=2, retry_backoff="10ms", partition_key=lambda n: n
    )
    await ch.produce_many(list(range(30)))
    await ch.produce(1000, delay="200ms")
    failing = {3, 13, 23}
    assert len({partition(n, 3) for n in failing}) > 1
    done: list[int] = []

    async def handler(n: int) -> None:
        if n in failing:
            raise ValueError(f"bad {n}")
        done.append(n)

    consumer = await ch.consume(handler, max_parallel=10)
    await until(lambda: 1000 in done, what="the delayed message")
    await until(lambda: _counts(ch, dead=3), what="three dead letters")
    await consumer.wait_idle()
    stats = await ch.stats()
    assert (stats.produced, stats.processed, stats.retried, stats.dead_lettered) == (31, 28, 3, 3)
    assert (stats.waiting, stats.delayed, stats.in_flight, stats.dead) == (0, 0, 0, 3)

    letters = await ch.dead_letters()
    assert sorted(letter.data for letter in letters) == [3, 13, 23]  # type: ignore[type-var]
    assert [(x.dead_at_ms, x.id) for x in letters] == sorted((x.dead_at_ms, x.id) for x in letters)
    assert {_shard(x.id) for x in letters} == {partition(n, 3) for n in failing}
    assert [x.id for x in await ch.dead_letters(offset=1, limit=1)] == [letters[1].id]
    assert await ch.dead_letters(offset=3) == []

    failing.clear()
    assert await ch.redrive([letters[0].id, "nonsense", "1-1@9"]) == 1
    await until(lambda: letters[0].data in done, what="the redriven message")
    assert await ch.delete_dead() == 2
    await consumer.wait_idle()
    stats = await ch.stats()
    assert (stats.dead, stats.processed) == (0, 29)
    await ch.produce_many([1, 2, 3])
    await consumer.close()
    await ch.purge()
    assert (await ch.stats()).waiting == 0


async def _counts(ch, **expected: int) -> bool:
    stats = await ch.stats()
    return all(getattr(stats, k) == v for k, v in expected.items())


async def test_shards_lie_on_different_primaries(cluster: RedisCluster, name: str):
    queue = BrokerQueue(RedisAdapter(cluster.url))
    ch = queue.channel(name, int, shards=3)
    await ch.produce_many(list(range(30)))
    nodes = [aioredis.Redis(port=node.port) for node in cluster.nodes]
    try:
        holders = []
        for shard in shard_names(name, 3):
            slot = await nodes[0].execute_command("CLUSTER KEYSLOT", f"bq:{{{shard}}}:msg")
            assert slot == cluster_slot(shard)
            counts = [await n.execute_command("CLUSTER COUNTKEYSINSLOT", slot) for n in nodes]
            [holder] = [i for i, count in enumerate(counts) if count > 0]
            assert await nodes[holder].hlen(f"bq:{{{shard}}}:msg") == 10
            holders.append(holder)
        assert sorted(holders) == [0, 1, 2]
    finally:
        for n in nodes:
            await n.aclose()
    await queue.close()


class BrokenShard(MemoryAdapter):
    """The memory engine with one channel's exchanges failing while ``broken`` is set, as a
    shard's primary that is out of reach."""

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel = channel
        self.broken = False

    async def exchange(
        self, channel: str, consumer: str, settle: Settlement, fetch: int, lease_ms: int,
        max_attempts: int,
    ) -> Exchange:  # fmt: skip
        if self.broken and channel == self.channel:
            raise ConnectionLostError(f"{channel} is out of reach")
        return await super().exchange(channel, consumer, settle, fetch, lease_ms, max_attempts)


async def test_a_failing_shard_keeps_its_acknowledgements_and_holds_up_no_other():
    names = shard_names("orders", 3)
    engine = BrokenShard(names[1])
    queue = BrokerQueue(engine)
    ch = queue.channel("orders", int, shards=3)
    await ch.produce_many(list(range(9)))  # round robin: 3 a shard
    seen: list[int] = []

    async def handler(msg: Message[int]) -> None:
        seen.append(msg.data)
        if _shard(msg.id) == 1 and msg.data == 1:
            engine.broken = True  # its acknowledgement cannot reach its shard now

    consumer = await ch.consume(handler, max_parallel=1)
    await until(lambda: len(seen) == 7, what="the other shards' messages")
    await until(lambda: _counts(ch, processed=6), what="the other shards acknowledged")
    # The broken shard gave one message before it broke, and its acknowledgement waits.
    assert sum(1 for n in seen if n % 3 == 1) == 1
    engine.broken = False
    await until(lambda: _counts(ch, processed=9), what="the kept acknowledgement and the rest")
    await consumer.wait_idle()
    stats = await ch.stats()
    assert (stats.redelivered, stats.retried, stats.waiting, stats.in_flight) == (0, 0, 0, 0)
    assert sorted(seen) == list(range(9))
    assert consumer.lost == 0
    await queue.close()
