"""brokerq's commands through redis-py's public API, with redis-py's errors made brokerq's.

Used for Redis Cluster, where redis-py routes each command to the node that holds its keys
(owning that piece makes no sense), and for a redis-py client the user gives an adapter.
Imported only then: brokerq's single-server path does not use redis-py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import redis.exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster

from ..errors import (
    AuthenticationError,
    BrokerError,
    ClusterError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    LoadingError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    RedisTimeoutError,
    ServerError,
)
from .connection import server_error
from .url import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, cluster_of, is_cluster_url

__all__ = ["RedisPyCommands", "error_from"]

# What redis-py raises when Redis or the way to it fails (TimeoutError is an OSError).
FAILURES = (rx.RedisError, rx.RedisClusterException, OSError)

# redis-py's classes for error replies whose code it strips from the message.
_REPLIES: tuple[tuple[type[Exception], type[ServerError], str], ...] = (
    (rx.ReadOnlyError, ReadOnlyError, "READONLY"),
    (rx.NoScriptError, NoScriptError, "NOSCRIPT"),
    (rx.OutOfMemoryError, OutOfMemoryError, "OOM"),
)


def _closed_under(exc: AttributeError) -> ConnectionLostError:
    """redis-py's cluster client closes every connection when it refreshes its view of the
    cluster (a failover, CLUSTERDOWN, repeated MOVED), those in use by other commands too, which
    then fail inside redis-py with an AttributeError on the closed socket: a lost connection,
    and the command's fate unknown, as for any connection lost mid-command."""
    return ConnectionLostError(
        f"the cluster client closed the connection under the command ({exc})"
    )


def error_from(exc: BaseException) -> BrokerError:
    """The brokerq error for an error redis-py raised."""
    message = str(exc)
    if isinstance(exc, rx.AuthenticationError):
        return AuthenticationError(message)
    if isinstance(exc, rx.BusyLoadingError):  # a ConnectionError to redis-py
        return LoadingError(message, code="LOADING")
    if isinstance(exc, rx.TimeoutError | TimeoutError):
        return RedisTimeoutError(message or "no reply from Redis in time (socket_timeout)")
    if isinstance(exc, rx.ConnectionError):
        if "connecting to" in message:
            return ConnectError(message)
        return ConnectionLostError(message)
    if isinstance(exc, rx.ClusterError | rx.AskError | rx.TryAgainError):
        return ClusterError(message)  # MOVED and ASK beyond redis-py's redirections, too
    if isinstance(exc, rx.ClusterCrossSlotError):
        return ClusterError(message)
    for redis_py, ours, code in _REPLIES:
        if isinstance(exc, redis_py):
            return ours(message, code=code)
    if isinstance(exc, rx.ResponseError):
        return server_error(message)
    if isinstance(exc, rx.DataError):
        return ConfigError(message)
    if isinstance(exc, rx.InvalidResponse):
        return ConnectionLostError(f"invalid reply from Redis: {message}")
    if isinstance(exc, rx.RedisClusterException):
        if "cannot be connected" in message and "not enabled" not in message:
            return ConnectError(message)  # no node of the URL reachable
        return ClusterError(message)
    if isinstance(exc, OSError):
        return ConnectError(f"cannot connect to Redis: {message}")
    return RedisError(message)


class RedisPyCommands:
    """Commands through a redis-py asyncio client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: Any) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            # Message bodies would come back as str and binary arguments would not survive.
            raise ConfigError("brokerq needs a redis-py client without decode_responses=True")
        self.client = client
        self.is_cluster = isinstance(client, RedisCluster)

    async def _ready(self) -> None:
        # A cluster client that has not read the slot map yet sends keyed commands to any node
        # (each then answers MOVED, and enough MOVEDs make the client drop every connection,
        # in-flight ones too): the map first, once (a no-op after).
        if self.is_cluster:
            await self.client.initialize()

    @classmethod
    def cluster(cls, url: str, *, password: str | None = None, **options: Any) -> RedisPyCommands:
        options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
        options.setdefault("socket_timeout", DEFAULT_TIMEOUT_S)
        # Replies shaped as on brokerq's own connection (RESP2: ZRANGE ... WITHSCORES is one
        # flat list), not RESP3's that redis-py 8 speaks unless told otherwise.
        options.setdefault("protocol", 2)
        if password is not None:
            options["password"] = password
        if is_cluster_url(url):
            seeds = cluster_of(url)
            url = seeds.url
            options["startup_nodes"] = [ClusterNode(host, port) for host, port in seeds.nodes[1:]]
        try:
            client = RedisCluster.from_url(url, **options)
        except (TypeError, ValueError, rx.RedisError, rx.RedisClusterException) as exc:
            raise ConfigError(f"invalid Redis Cluster URL or options: {exc}") from exc
        return cls(client)

    async def node_for(self, key: str) -> tuple[str, int]:
        """Host and port of the primary that holds ``key``'s slot, in the cluster client's slot
        map (learnt on first use)."""
        try:
            await self.client.initialize()
            node = self.client.get_node_from_key(key)
        except FAILURES as exc:
            raise error_from(exc) from exc
        return node.host, node.port

    async def refresh(self, key: str) -> None:
        """Have the cluster client check where ``key``'s slot is, after its node failed: a
        command for that slot makes redis-py follow ``MOVED`` or learn the slot map again
        when the node does not answer. It may well fail too while a failover is under way, and
        only to learn: the caller raises its own error. (redis-py has been seen to raise
        AttributeError here, when another task dropped the node's connections mid-send.)"""
        with contextlib.suppress(Exception):
            await self.call("EXISTS", key)

    async def call(self, *args: Any) -> Any:
        try:
            await self._ready()
            return await self.client.execute_command(*args)
        except FAILURES as exc:
            raise error_from(exc) from exc
        except AttributeError as exc:
            raise _closed_under(exc) from exc

    async def call_many(
        self, commands: Iterable[Sequence[Any]], *, transaction: bool = False
    ) -> list[Any]:
        try:
            await self._ready()
            pipe = self.client.pipeline(transaction=transaction)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())
        except FAILURES as exc:
            raise error_from(exc) from exc
        except AttributeError as exc:
            raise _closed_under(exc) from exc

    async def block(self, block_s: float, *args: Any) -> Any:
        # redis-py gives each call a connection of its pool; the wait stays under socket_timeout.
        return await self.call(*args)

    async def scan(self, match: str, count: int) -> AsyncIterator[bytes]:
        try:
            async for key in self.client.scan_iter(match=match, count=count):
                yield key
        except FAILURES as exc:
            raise error_from(exc) from exc

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except FAILURES as exc:
            raise error_from(exc) from exc
