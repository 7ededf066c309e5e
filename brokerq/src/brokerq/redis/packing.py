"""Connections that pack commands with hiredis.

redis-py's asyncio connections build the wire format of a command in Python, about 0.3 us an
argument; brokerq's scripts take one or two arguments per message, so for a batch of produces
that is a fifth of the client's work. hiredis (a dependency of ``redis[hiredis]``) packs the same
bytes in C. Without a hiredis that can pack, the stock connections are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import connection
from redis.exceptions import DataError

__all__ = ["connection_class_for"]

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack = None


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        assert _pack is not None
        # As redis-py does: a command name with a space ("CONFIG GET") is several arguments.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [_pack(args)]
        except TypeError as exc:
            raise DataError(f"invalid command argument: {exc}") from exc


class HiredisConnection(_HiredisPacking, connection.Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, connection.SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, connection.UnixDomainSocketConnection):
    pass


_BY_SCHEME: dict[str, type[connection.AbstractConnection]] = {
    "redis": HiredisConnection,
    "rediss": HiredisSSLConnection,
    "unix": HiredisUnixConnection,
}


def connection_class_for(url: str) -> type[connection.AbstractConnection] | None:
    """The hiredis-packing connection class for ``url``'s scheme, or None to keep redis-py's."""
    if _pack is None:
        return None
    return _BY_SCHEME.get(urlsplit(url).scheme)
