"""How brokerq's Redis engines send commands: one small interface, two ways.

On a single server, through brokerq's own connections (``connection.py``): one pipelined
connection for every command that answers at once, and connections of their own for blocking
waits. On Redis Cluster, or with a redis-py client given by the user, through redis-py's public
API (``redispy.py``, imported only then). Both raise brokerq's errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from .connection import Connection
from .url import is_cluster_url

__all__ = ["Commands", "ServerCommands", "commands_for", "open_commands"]


class Commands(Protocol):
    @property
    def is_cluster(self) -> bool:
        """Redis Cluster: each command goes to the node of its keys, which must share a slot."""
        ...

    async def call(self, *args: Any) -> Any:
        """One command that answers at once; its reply as hiredis gives it."""
        ...

    async def call_many(
        self, commands: Iterable[Sequence[Any]], *, transaction: bool = False
    ) -> list[Any]:
        """Commands sent together (in one transaction if asked); the first error raises."""
        ...

    async def block(self, block_s: float, *args: Any) -> Any:
        """A command that may wait up to ``block_s`` on the server (``BLPOP``)."""
        ...

    def scan(self, match: str, count: int) -> AsyncIterator[bytes]:
        """Every key matching ``match`` (on every node of a cluster)."""
        ...

    async def close(self) -> None: ...


class ServerCommands:
    """Commands to one Redis server over brokerq's own connections."""

    is_cluster = False

    def __init__(self, url: str, password: str | None, options: dict[str, Any]) -> None:
        self._url = url
        self._password = password
        self._options = options
        self.connection = Connection(url, password=password, **options)
        self.call = self.connection.call
        self.call_many = self.connection.call_many
        # Connections for blocking waits, one wait each at a time; kept for the next wait.
        self._idle: list[Connection] = []

    async def block(self, block_s: float, *args: Any) -> Any:
        connection = self._idle.pop() if self._idle else self._connection()
        try:
            reply = await connection.call_blocking(block_s, *args)
        except BaseException:
            # Cancelled mid-wait, the reply is still to come: nobody else may use this socket.
            await connection.close()  # at once: it does not wait for anything
            raise
        self._idle.append(connection)
        return reply

    def _connection(self) -> Connection:
        return Connection(self._url, password=self._password, **self._options)

    def new_connection(self) -> Connection:
        """Another connection to the same server, with the same options, for the caller."""
        return self._connection()

    async def scan(self, match: str, count: int) -> AsyncIterator[bytes]:
        cursor: bytes | int = 0
        while True:
            cursor, keys = await self.call("SCAN", cursor, "MATCH", match, "COUNT", count)
            for key in keys:
                yield key
            if cursor in (b"0", 0):
                return

    async def close(self) -> None:
        await self.connection.close()
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


def commands_for(
    url: str | None,
    *,
    client: Any = None,
    cluster: bool = False,
    password: str | None = None,
    options: dict[str, Any],
) -> Commands:
    """The commands of an adapter made with a URL, or with a redis-py client of the user's."""
    if (url is None) == (client is None):
        raise ConfigError("give either a Redis URL or a client")
    if client is not None or cluster or (url is not None and is_cluster_url(url)):
        from .redispy import RedisPyCommands

        if client is not None:
            if password is not None or options:
                raise ConfigError("with a client, connection options belong to the client")
            return RedisPyCommands(client)
        assert url is not None
        return RedisPyCommands.cluster(url, password=password, **options)
    assert url is not None
    return ServerCommands(url, password, options)


def open_commands(url: str, *, password: str | None = None, **options: Any) -> Commands:
    """Commands to the Redis a URL names, for a service that shares brokerq's Redis.

    ``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://`` go through brokerq's
    pipelined ``Connection`` (many calls in flight on one socket); ``redis+cluster://`` through
    redis-py's cluster client, which sends each command to the node holding its keys (a script's
    keys must share one slot). Nothing connects until the first command.
    """
    return commands_for(url, password=password, options=options)
