"""The error hierarchy: every error brokerq raises is a ``BrokerError``.

::

    BrokerError
    ├── ConfigError              invalid arguments or options (also a ValueError)
    ├── ChannelError             a channel declared or used with invalid options
    │   └── MessageTypeError     a message does not fit its channel's type (also a TypeError)
    ├── QueueClosedError         the queue was closed
    ├── ConsumerError            a consumer used in a state that does not allow it
    └── RedisError               Redis, or the way to it, failed
        ├── RedisConnectionError     the connection failed; the server may be fine
        │   ├── ConnectError         no connection: refused, unreachable, unknown host, TLS refused
        │   ├── AuthenticationError  the username or password was refused, or one is needed
        │   ├── ConnectionLostError  the connection broke with calls in flight
        │   └── RedisTimeoutError    no connection or no reply within its timeout
        ├── ServerError              Redis answered with an error reply (``.code``: "ERR", ...)
        │   ├── ReadOnlyError        the server is a read-only replica
        │   ├── LoadingError         the server is still loading its data set; try again soon
        │   ├── BusyError            the server is busy running a script
        │   ├── OutOfMemoryError     the server reached its ``maxmemory``
        │   ├── WrongTypeError       a key holds a value of another type
        │   ├── NoScriptError        the server does not know a script's SHA (brokerq then
        │   │                        sends the script itself; you meet it only from your own
        │   │                        EVALSHA)
        │   └── ScriptError          a Lua script failed (raised an error, or a command in it did)
        ├── ClusterError             Redis Cluster cannot serve the keys right now (cluster down,
        │                            slot not covered, too many redirections)
        └── ReplicationError         fewer replicas than asked confirmed a write in time
                                     (``replicas_ack``): stored on the primary, not confirmed
                                     durable

On a ``RedisConnectionError`` whose calls were already sent (``ConnectionLostError``,
``RedisTimeoutError``), Redis may or may not have run them: a produce may have been stored. The
next call opens a new connection. The error a Redis client library raised, if any, is kept as
``__cause__``. Error messages name the server (host and port) but never carry a password.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerError",
    "BusyError",
    "ChannelError",
    "ClusterError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "ConsumerError",
    "LoadingError",
    "MessageTypeError",
    "NoScriptError",
    "OutOfMemoryError",
    "QueueClosedError",
    "ReadOnlyError",
    "RedisConnectionError",
    "RedisError",
    "RedisTimeoutError",
    "ReplicationError",
    "ScriptError",
    "ServerError",
    "WrongTypeError",
]


class BrokerError(Exception):
    """Base of every brokerq error."""


class ConfigError(BrokerError, ValueError):
    """brokerq was given invalid arguments or options (a URL, an adapter option, a command
    argument of a type Redis cannot take). A ``ValueError`` too."""


class ChannelError(BrokerError):
    """A channel was declared or used with invalid options."""

    def __init__(self, message: str, *, channel: str | None = None) -> None:
        super().__init__(f"channel {channel!r}: {message}" if channel else message)
        self.channel = channel


class MessageTypeError(ChannelError, TypeError):
    """A message does not fit its channel's type; nothing was written."""


class QueueClosedError(BrokerError):
    """The queue was closed: it produces nothing more and starts no consumer."""


class ConsumerError(BrokerError):
    """A consumer was used in a state that does not allow it (e.g. started twice)."""


class RedisError(BrokerError):
    """Redis, or the way to it, failed."""


class RedisConnectionError(RedisError):
    """The connection to Redis failed; the next call opens a new one."""


class ConnectError(RedisConnectionError):
    """No connection could be made: refused, unreachable, unknown host, TLS handshake failed."""


class AuthenticationError(RedisConnectionError):
    """Redis refused the username or password, or needs one and none was given."""


class ConnectionLostError(RedisConnectionError):
    """The connection closed or broke while calls were in flight; whether Redis ran them is
    unknown."""


class RedisTimeoutError(RedisConnectionError):
    """No connection, or no reply, within the timeout (``socket_connect_timeout``,
    ``socket_timeout``); whether Redis ran the calls in flight is unknown."""


class ServerError(RedisError):
    """Redis answered a command with an error reply."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        """The reply's error code ("ERR", "WRONGTYPE", ...) when known."""


class ReadOnlyError(ServerError):
    """The server is a read-only replica: point brokerq at the primary."""


class LoadingError(ServerError):
    """The server is still loading its data set into memory; it answers once it is done."""


class BusyError(ServerError):
    """The server is busy running a long script and serves nothing else until it ends."""


class OutOfMemoryError(ServerError):
    """The server reached its ``maxmemory`` and refuses commands that would use more."""


class WrongTypeError(ServerError):
    """A key holds a value of another type than the command expects."""


class NoScriptError(ServerError):
    """The server does not know the script of an ``EVALSHA``."""


class ScriptError(ServerError):
    """A Lua script failed: it raised an error, or a command it called did."""


class ClusterError(RedisError):
    """Redis Cluster cannot serve the keys right now (down, a slot not covered, too many
    redirections)."""


class ReplicationError(RedisError):
    """Fewer replicas than ``replicas_ack`` confirmed a write within its timeout.

    The primary stored it: it may be delivered, or lost if the primary fails before a replica
    has it. Raised instead of acknowledging a produce that a failover could take back.
    """

    def __init__(self, message: str, *, acknowledged: int, wanted: int) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.wanted = wanted
