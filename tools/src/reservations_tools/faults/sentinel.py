"""A Redis failover set for the fault harness: a primary, its replica and three Sentinels on
local ports, each data node with its append-only file; the harness kills the primary and waits
for the Sentinels to promote the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from brokerq.server import RedisSentinel, RedisServer

__all__ = ["SentinelSet"]

NAME = "mymaster"
_TIMEOUT_S = 60.0
# No wait before a full sync (5 s by default, to batch replicas that come together).
_SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")


class SentinelSet:
    def __init__(self, dir: Path, *, appendfsync: str = "always") -> None:
        first = RedisServer(
            dir / "node0", appendonly=True, appendfsync=appendfsync, extra_args=_SYNC_AT_ONCE
        )
        second = RedisServer(
            dir / "node1", appendonly=True, appendfsync=appendfsync,
            extra_args=(*_SYNC_AT_ONCE, "--replicaof", "127.0.0.1", str(first.port)),
        )  # fmt: skip
        self.nodes = [first, second]
        """The data nodes: the first started as the primary (a failover swaps their roles)."""
        self.sentinels = [
            RedisSentinel(dir / f"sentinel{i}", primary_port=first.port) for i in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{NAME}"

    async def start(self) -> None:
        for server in [*self.nodes, *self.sentinels]:
            await server.start()
        await self.wait_ready()

    async def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):
                await server.stop()

    async def primary(self) -> RedisServer:
        """The data node every Sentinel names as the primary now."""
        ports = {await _primary_port(s) for s in self.sentinels}
        if len(ports) != 1:
            raise RuntimeError(f"the Sentinels disagree on the primary: {sorted(ports)}")
        [port] = ports
        return next(node for node in self.nodes if node.port == port)

    def other(self, node: RedisServer) -> RedisServer:
        return next(n for n in self.nodes if n is not node)

    async def wait_failover(self, replica: RedisServer, within_s: float = _TIMEOUT_S) -> None:
        """Until every Sentinel names ``replica`` the primary and it acts as one."""

        async def done() -> bool:
            for sentinel in self.sentinels:
                if await _primary_port(sentinel) != replica.port:
                    return False
            return await _role(replica) == "master"

        await _until(done, f"the node on port {replica.port} took over", within_s)

    async def wait_ready(self, within_s: float = _TIMEOUT_S) -> None:
        """Until the primary's replica is in sync and every Sentinel knows it and the others:
        a failover can happen."""

        async def ready() -> bool:
            primary = await self.primary()
            replica = self.other(primary)
            if await _role(primary) != "master" or not await _linked(replica):
                return False
            for sentinel in self.sentinels:
                fields = await _sentinel_master(sentinel)
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
            return True

        await _until(ready, "the Sentinel set became ready", within_s)


def _client(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis(port=server.port, socket_timeout=2, socket_connect_timeout=2)


async def _primary_port(sentinel: RedisSentinel) -> int:
    client = _client(sentinel)
    try:
        _, port = await client.sentinel_get_master_addr_by_name(NAME)
        return int(port)
    finally:
        await client.aclose()


async def _sentinel_master(sentinel: RedisSentinel) -> dict[str, object]:
    client = _client(sentinel)
    try:
        fields: dict[str, object] = await client.sentinel_master(NAME)
        return fields
    finally:
        await client.aclose()


async def _role(node: RedisServer) -> str:
    client = _client(node)
    try:
        return str((await client.info("replication"))["role"])
    finally:
        await client.aclose()


async def _linked(replica: RedisServer) -> bool:
    client = _client(replica)
    try:
        info = await client.info("replication")
        return bool(info["role"] == "slave" and info.get("master_link_status") == "up")
    finally:
        await client.aclose()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, within_s: float) -> None:
    """Poll ``condition``: Sentinels and replicas learn by their own polling, nothing signals it.
    An error from a node that is down or starting counts as not yet."""
    deadline = time.monotonic() + within_s
    last: Exception | None = None
    while True:
        try:
            if await condition():
                return
        except (aioredis.RedisError, OSError, RuntimeError, StopIteration) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {within_s:g} s: {what} (last error: {last})")
        await asyncio.sleep(0.05)
