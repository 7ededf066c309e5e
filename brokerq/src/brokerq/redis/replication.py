"""``replicas_ack``: a produce is acknowledged only once replicas hold it.

Redis's ``WAIT`` counts the replicas that have the last write of the connection it runs on, so
the produce script and its ``WAIT`` must share one connection (on another, ``WAIT`` confirms
nothing). A redis-py client's pool gives no such guarantee: brokerq opens its own connection,
to the single server, or on Redis Cluster to the primary that holds the channel's slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..errors import ClusterError, ConfigError, RedisConnectionError, ReplicationError
from .commands import Commands, ServerCommands
from .connection import Connection
from .lua import Script
from .url import CONNECTION_OPTIONS, cluster_of, is_cluster_url

__all__ = ["Acknowledged", "ClusterAcknowledged", "ServerAcknowledged", "acknowledged_by"]

# A slot that moved (a failover, a resharding) while its node was asked: try where it went.
MAX_REDIRECTIONS = 3


async def _confirm(connection: Connection, wanted: int, timeout_ms: int) -> None:
    """Until ``wanted`` replicas have this connection's last write, or raise."""
    acknowledged = int(await connection.call("WAIT", wanted, timeout_ms))
    if acknowledged < wanted:
        raise ReplicationError(
            f"{acknowledged} of {wanted} replicas confirmed the produce within {timeout_ms} ms: "
            "the primary has it, but a failover could lose it",
            acknowledged=acknowledged,
            wanted=wanted,
        )


class Acknowledged(Protocol):
    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply, once ``replicas_ack`` replicas hold what it wrote."""
        ...

    async def close(self) -> None: ...


class ServerAcknowledged:
    """Runs a produce script, then its ``WAIT``, on one connection of its own to the server (so
    that the adapter's other commands never queue behind a ``WAIT``)."""

    def __init__(self, commands: ServerCommands, wanted: int, timeout_ms: int) -> None:
        self._connection = commands.new_connection()
        self._wanted = wanted
        self._timeout_ms = timeout_ms

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        reply = await script.run(self._connection, keys, args)
        # After every message above (and every write before it, on any connection).
        await _confirm(self._connection, self._wanted, self._timeout_ms)
        return reply

    async def close(self) -> None:
        await self._connection.close()


class ClusterAcknowledged:
    """The same on Redis Cluster: on a connection of its own to the primary of the keys' slot,
    found in the slot map of the adapter's redis-py cluster client."""

    def __init__(
        self, commands: Commands, url: str, options: dict[str, Any], wanted: int, timeout_ms: int
    ) -> None:
        from .redispy import RedisPyCommands

        assert isinstance(commands, RedisPyCommands)
        self._commands = commands
        # Each node's URL: this one's credentials and TLS, another host and port; the options
        # a Connection has (the others are the cluster client's).
        parts = urlsplit(cluster_of(url).url if is_cluster_url(url) else url)
        given = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        self._options = {k: v for k, v in {**given, **options}.items() if k in CONNECTION_OPTIONS}
        self._url = parts._replace(query="")
        self._nodes: dict[tuple[str, int], Connection] = {}
        Connection(self._url.geturl(), **self._options)  # refuses wrong options now, not later
        self._wanted = wanted
        self._timeout_ms = timeout_ms

    def _node(self, host: str, port: int) -> Connection:
        connection = self._nodes.get((host, port))
        if connection is None:
            userinfo, at, _ = self._url.netloc.rpartition("@")
            shown = f"[{host}]" if ":" in host else host
            url = self._url._replace(netloc=f"{userinfo}{at}{shown}:{port}").geturl()
            connection = self._nodes[(host, port)] = Connection(url, **self._options)
        return connection

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        host, port = await self._commands.node_for(keys[0])
        for _ in range(MAX_REDIRECTIONS):
            connection = self._node(host, port)
            try:
                reply = await script.run(connection, keys, args)
            except ClusterError as exc:
                moved = _moved_to(str(exc))
                if moved is None:
                    raise
                host, port = moved  # nothing was written there: run it where the slot is now
                continue
            except RedisConnectionError:
                # The node is gone (a failover may be under way): let the cluster client learn
                # the slot map again, for the next produce.
                await self._commands.refresh(keys[0])
                raise
            await _confirm(connection, self._wanted, self._timeout_ms)
            return reply
        raise ClusterError(f"the slot of {keys[0]!r} moved {MAX_REDIRECTIONS} times in a row")

    async def close(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for connection in nodes.values():
            await connection.close()


def _moved_to(message: str) -> tuple[str, int] | None:
    """The node a ``MOVED <slot> <host>:<port>`` error reply names."""
    words = message.split(" ")
    if len(words) != 3 or words[0] != "MOVED":
        return None
    host, _, port = words[2].rpartition(":")
    return host.strip("[]"), int(port)


def acknowledged_by(
    commands: Commands,
    *,
    url: str | None,
    password: str | None,
    options: dict[str, Any],
    wanted: int,
    timeout_ms: int,
) -> Acknowledged:
    """How the adapter made with these arguments runs its acknowledged produces."""
    if isinstance(commands, ServerCommands):
        return ServerAcknowledged(commands, wanted, timeout_ms)
    if url is None:
        raise ConfigError(
            "replicas_ack needs a Redis URL, not a client of your own: WAIT must run on the "
            "connection that wrote the messages, and a redis-py client's connection pool "
            "cannot promise that"
        )
    if password is not None:
        options = {**options, "password": password}
    return ClusterAcknowledged(commands, url, options, wanted, timeout_ms)
