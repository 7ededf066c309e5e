"""The Redis engine: one sorted set per state, one Lua script per state change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from ..adapter import Delivery, Exchange, Outgoing, RawDeadLetter, Settlement
from ..errors import ConfigError
from ..messages import ChannelStats
from ..options import Duration, duration_ms
from . import scripts
from .commands import commands_for
from .keys import ChannelKeys, channel_of
from .lua import Script
from .replication import Acknowledged, acknowledged_by

__all__ = ["RedisAdapter"]


def _only_deduplicated(items: Sequence[Outgoing]) -> bool:
    """All exactly-once with one window and nothing else: the compact argument layout."""
    window = items[0].dedup_ms
    return all(
        i.dedup_key is not None
        and i.dedup_ms == window
        and i.priority == 0
        and i.delay_ms == 0
        and i.headers is None
        for i in items
    )


# Blocking waits stay well under any socket timeout a caller may configure.
MAX_BLOCK_MS = 1000


class RedisAdapter:
    """brokerq on Redis (single server or Redis Cluster).

    ``RedisAdapter("redis://:password@host:6379/0")``, ``"rediss://..."`` for TLS, with the
    options of ``brokerq.redis.Connection`` (``socket_timeout``, ``ssl_ca_certs``, ...) as
    keyword arguments or in the URL's query; ``"redis+cluster://host:port[,host:port...]/"``
    (or ``cluster=True`` with a plain URL of one node) for Redis Cluster (through redis-py's
    cluster client, options passed on to it), or ``RedisAdapter(client=...)`` with a
    ``redis.asyncio`` client of your own (it must not decode responses). Nothing connects until
    the first command.

    On a single server every command goes through brokerq's own connection: script calls and
    the rest share one pipelined connection, and each idle consumer's blocking wait has a
    connection of its own.

    ``replicas_ack=N``: a produce returns only once N replicas hold it (Redis's ``WAIT``, up to
    ``replicas_ack_timeout``), so that a failover to a replica cannot take back an acknowledged
    message; if fewer confirm in time it raises ``ReplicationError`` (the primary has the
    messages: they may still be delivered). One ``WAIT`` covers every message of a produce call
    (the messages produced in one event-loop tick), on a connection of its own, so that the
    other commands never queue behind it: to the server, or on Redis Cluster to the primary
    that holds the channel's slot (found in the cluster client's slot map, which follows a
    failover). ``WAIT`` must run on the connection that wrote: not available with a client of
    your own.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        cluster: bool = False,
        password: str | None = None,
        replicas_ack: int = 0,
        replicas_ack_timeout: Duration = "500ms",
        **options: Any,
    ) -> None:
        self._redis = commands_for(
            url, client=client, cluster=cluster, password=password, options=options
        )
        self._keys: dict[str, ChannelKeys] = {}
        if replicas_ack < 0:
            raise ConfigError("replicas_ack must be 0 (off) or a number of replicas")
        timeout_ms = duration_ms(replicas_ack_timeout, what="replicas_ack_timeout")
        self._acked: Acknowledged | None = None
        if replicas_ack:
            if timeout_ms <= 0:
                # WAIT with 0 would block for ever.
                raise ConfigError("replicas_ack_timeout must be above 0")
            self._acked = acknowledged_by(
                self._redis, url=url, password=password, options=options,
                wanted=replicas_ack, timeout_ms=timeout_ms,
            )  # fmt: skip

    def _k(self, channel: str) -> ChannelKeys:
        keys = self._keys.get(channel)
        if keys is None:
            keys = self._keys[channel] = ChannelKeys(channel)
        return keys

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        return script.run(self._redis, keys, args)

    async def produce(self, channel: str, items: Sequence[Outgoing]) -> list[tuple[str, bool]]:
        k = self._k(channel)
        keys = [k.seq, k.msg, k.ready, k.delayed, k.wake, k.stats, k.dd_a, k.dd_b, k.dd_meta]
        field = ChannelKeys.dedup_field
        args: list[Any]
        if all(item.plain for item in items):
            args = ["p"]
            args.extend(item.payload for item in items)
        elif _only_deduplicated(items):
            args = ["d", items[0].dedup_ms]
            for item in items:
                args += (item.payload, field(item.dedup_key))  # type: ignore[arg-type]
        else:
            args = ["x"]
            for item in items:
                args += (item.payload, item.priority, item.delay_ms, item.dedup_ms)
                args.append(item.headers or b"")
                args.append("" if item.dedup_key is None else field(item.dedup_key))
        if self._acked is not None:
            reply = await self._acked.run(scripts.PRODUCE, keys, args)
        else:
            reply = await self._run(scripts.PRODUCE, keys, args)
        return [
            (text[1:], True) if text[0] == "=" else (text, False)
            for text in reply.decode().split(" ")
            if text
        ]

    async def exchange(
        self,
        channel: str,
        consumer: str,
        settle: Settlement,
        fetch: int,
        lease_ms: int,
        max_attempts: int,
    ) -> Exchange:
        k = self._k(channel)
        args: list[Any] = [
            consumer, fetch, lease_ms, max_attempts,
            len(settle.acks), len(settle.retries), len(settle.dead), len(settle.releases),
        ]  # fmt: skip
        args.extend(settle.acks)
        for retry in settle.retries:
            args.extend(retry)
        for dead in settle.dead:
            args.extend(dead)
        args.extend(settle.releases)
        keys = [k.msg, k.ready, k.delayed, k.lease, k.dead, k.err, k.wake, k.stats]
        flat, lost, hint = await self._run(scripts.EXCHANGE, keys, args)
        deliveries = []
        for i in range(0, len(flat), 2):
            value: bytes = flat[i + 1]
            cut = value.index(b"\n")
            head = value[:cut].split(b" ", 2)
            deliveries.append(
                Delivery(
                    flat[i].decode(),
                    value[cut + 1 :],
                    int(head[0]) + 1,
                    headers=head[2] if len(head) == 3 else None,
                )
            )
        return Exchange(deliveries, [x.decode() for x in lost], int(hint))

    async def renew(
        self, channel: str, consumer: str, ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        if not ids:
            return []
        lost = await self._run(scripts.RENEW, [self._k(channel).lease], [consumer, lease_ms, *ids])
        return [x.decode() for x in lost]

    async def wait(self, channel: str, timeout_ms: int) -> None:
        seconds = min(max(timeout_ms, 1), MAX_BLOCK_MS) / 1000
        await self._redis.block(seconds, "BLPOP", self._k(channel).wake, seconds)

    async def stats(self, channel: str) -> ChannelStats:
        k = self._k(channel)
        waiting, in_flight, delayed, dead, pairs, head, now = await self._run(
            scripts.STATS, [k.ready, k.lease, k.delayed, k.dead, k.stats], []
        )
        counters = {pairs[i].decode(): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        lag = max(0, now - int(head.split(b"-")[0])) if head else 0
        return ChannelStats(
            channel=channel,
            waiting=waiting,
            in_flight=in_flight,
            delayed=delayed,
            dead=dead,
            produced=counters.get("produced", 0),
            processed=counters.get("processed", 0),
            retried=counters.get("retried", 0),
            redelivered=counters.get("redelivered", 0),
            dead_lettered=counters.get("dead_lettered", 0),
            lag_ms=lag,
        )

    async def dead_letters(self, channel: str, offset: int, limit: int) -> list[RawDeadLetter]:
        k = self._k(channel)
        last = offset + limit - 1
        flat = await self._run(scripts.DEAD_LETTERS, [k.msg, k.dead, k.err], [offset, last])
        letters = []
        for i in range(0, len(flat), 4):
            value: bytes = flat[i + 2]
            head, _, payload = value.partition(b"\n")
            failures = int(head.split(b" ")[0]) if head else 0
            letters.append(
                RawDeadLetter(
                    id=flat[i].decode(),
                    payload=payload,
                    error=flat[i + 3].decode(errors="replace"),
                    tries=failures,
                    dead_at_ms=int(float(flat[i + 1])),
                )
            )
        return letters

    async def _drain(self, script: Script, keys: list[str], ids: Sequence[str] | None) -> int:
        if ids is not None:
            return int(await self._run(script, keys, list(ids))) if ids else 0
        total = 0
        while True:  # the script takes up to 1000 per call to keep each call short
            moved = int(await self._run(script, keys, []))
            total += moved
            if moved == 0:
                return total

    async def redrive(self, channel: str, ids: Sequence[str] | None) -> int:
        k = self._k(channel)
        return await self._drain(scripts.REDRIVE, [k.msg, k.ready, k.dead, k.err, k.wake], ids)

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        k = self._k(channel)
        return await self._drain(scripts.DELETE_DEAD, [k.msg, k.dead, k.err], ids)

    async def purge(self, channel: str) -> None:
        await self._redis.call("DEL", *self._k(channel).all())

    async def channels(self) -> list[str]:
        found: set[str] = set()
        async for key in self._redis.scan("bq:{*}:seq", 1000):
            name = channel_of(key.decode() if isinstance(key, bytes) else key)
            if name is not None:
                found.add(name)
        return sorted(found)

    async def close(self) -> None:
        if self._acked is not None:
            await self._acked.close()
        await self._redis.close()
        await asyncio.sleep(0)  # let the transports finish closing
