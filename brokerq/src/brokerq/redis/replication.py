"""``replicas_ack``: a produce is acknowledged only once replicas hold it.

Redis's ``WAIT`` counts the replicas that have the last write of the connection it runs on, so
the produce script and its ``WAIT`` must share one connection (on another, ``WAIT`` confirms
nothing). A redis-py client's pool gives no such guarantee: brokerq opens its own connection,
to the single server, or on Redis Cluster to the primary that holds the channel's slot.

A ``WAIT`` holds its connection until the replicas answer, so one per write would queue every
write behind the confirmation of the one before. Writes running at the same time share them
instead (``_Confirmations``): one ``WAIT`` answers for every write sent before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..errors import (
    ClusterError,
    ConfigError,
    ConnectionLostError,
    RedisConnectionError,
    ReplicationError,
)
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


@dataclass(slots=True)
class _Round:
    """Writers waiting for the next ``WAIT``; all of them wrote on socket number ``opened``."""

    done: asyncio.Future[None]
    opened: int


def _replaced(server: str) -> ConnectionLostError:
    return ConnectionLostError(
        f"the connection to {server} was replaced before its replicas confirmed the produce: "
        "the primary may have it, but a failover could lose it"
    )


class _Confirmations:
    """The replicas' confirmation of one connection's writes, one ``WAIT`` for all the writes
    sent before it: a writer that finishes while a ``WAIT`` is out joins the next one."""

    def __init__(self, connection: Connection, wanted: int, timeout_ms: int) -> None:
        self._connection = connection
        self._wanted = wanted
        self._timeout_ms = timeout_ms
        self._next: _Round | None = None
        self._sender: asyncio.Task[None] | None = None

    async def confirmed(self, opened: int) -> None:
        """Until ``wanted`` replicas hold what was written on the connection's socket number
        ``opened`` (``Connection.opened`` before the write), or raise."""
        if self._connection.opened != opened:
            raise _replaced(self._connection.server)
        loop = asyncio.get_running_loop()
        joined = self._next
        if joined is not None and (joined.opened != opened or joined.done.get_loop() is not loop):
            # Its writers wrote on a socket since replaced (or in an event loop that is gone).
            if joined.done.get_loop() is loop and not joined.done.done():
                joined.done.set_exception(_replaced(self._connection.server))
            joined = None
        if joined is None:
            joined = self._next = _Round(loop.create_future(), opened)
            # Retrieved here, so that a round nobody waits for any more logs nothing.
            joined.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._sender is None or self._sender.done() or self._sender.get_loop() is not loop:
            self._sender = loop.create_task(self._send())
        # Shielded: a writer that stops waiting does not take the WAIT from the others.
        await asyncio.shield(joined.done)

    async def _send(self) -> None:
        while (joined := self._next) is not None:
            # Nothing is awaited between taking the round and writing its WAIT (the connection
            # is open): every writer in it had sent its write before.
            self._next = None
            try:
                if self._connection.opened != joined.opened:
                    raise _replaced(self._connection.server)
                await _confirm(self._connection, self._wanted, self._timeout_ms)
                if self._connection.opened != joined.opened:  # the WAIT went on a new socket
                    raise _replaced(self._connection.server)
            except asyncio.CancelledError:
                joined.done.set_exception(_replaced(self._connection.server))
                raise
            except Exception as exc:
                joined.done.set_exception(exc)
            else:
                joined.done.set_result(None)

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            sender.cancel()
        joined, self._next = self._next, None
        if joined is not None and not joined.done.done():
            joined.done.set_exception(_replaced(self._connection.server))


async def _run_confirmed(
    connection: Connection,
    confirmations: _Confirmations,
    script: Script,
    keys: Sequence[Any],
    args: Sequence[Any],
) -> Any:
    await connection.open()
    opened = connection.opened
    reply = await script.run(connection, keys, args)
    # After every message above (and every write before it, on any connection).
    await confirmations.confirmed(opened)
    return reply


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
        self._confirmations = _Confirmations(self._connection, wanted, timeout_ms)

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await _run_confirmed(self._connection, self._confirmations, script, keys, args)

    async def close(self) -> None:
        await self._confirmations.close()
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
        self._nodes: dict[tuple[str, int], tuple[Connection, _Confirmations]] = {}
        Connection(self._url.geturl(), **self._options)  # refuses wrong options now, not later
        self._wanted = wanted
        self._timeout_ms = timeout_ms

    def _node(self, host: str, port: int) -> tuple[Connection, _Confirmations]:
        node = self._nodes.get((host, port))
        if node is None:
            userinfo, at, _ = self._url.netloc.rpartition("@")
            shown = f"[{host}]" if ":" in host else host
            url = self._url._replace(netloc=f"{userinfo}{at}{shown}:{port}").geturl()
            connection = Connection(url, **self._options)
            confirmations = _Confirmations(connection, self._wanted, self._timeout_ms)
            node = self._nodes[(host, port)] = (connection, confirmations)
        return node

    async def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        host, port = await self._commands.node_for(keys[0])
        for _ in range(MAX_REDIRECTIONS):
            connection, confirmations = self._node(host, port)
            try:
                return await _run_confirmed(connection, confirmations, script, keys, args)
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
        raise ClusterError(f"the slot of {keys[0]!r} moved {MAX_REDIRECTIONS} times in a row")

    async def close(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for connection, confirmations in nodes.values():
            await confirmations.close()
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
