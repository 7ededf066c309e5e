"""brokerq's own connection to one Redis server: many commands in flight on one socket.

brokerq's hot path is a stream of small script calls (a produce batch, an exchange, a renewal).
Through a general client each call costs about 100 us of Python on a 2-core machine (pool
checkout, a timeout context, a task, observability hooks), as much as the Lua script itself.
Here a call packs its command with hiredis (in C), writes it, and waits on a future; Redis
answers a connection's commands in the order sent, so one deque of futures matches the replies,
which hiredis's ``Reader`` parses (in C). Calls issued together travel together without waiting
for each other. Only public APIs are used: asyncio's transports and hiredis's ``Reader`` and
``pack_command``.

The connection opens itself on first use, and again on the next call after it was lost: TCP or
TLS (``rediss://``) or a unix socket (``unix://``), then ``AUTH``, ``CLIENT SETNAME`` and
``SELECT``. A command that blocks (``BLPOP``) must not be sent here: every call behind it would
wait with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast

import hiredis

from ..errors import (
    AuthenticationError,
    BusyError,
    ClusterError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    LoadingError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisConnectionError,
    RedisError,
    RedisTimeoutError,
    ScriptError,
    ServerError,
    WrongTypeError,
)
from .url import DEFAULT_URL, Target, target_of

__all__ = ["DEFAULT_URL", "Connection", "connect", "server_error"]


_pack = hiredis.pack_command


# -- error replies ------------------------------------------------------------------------------

_BY_CODE: dict[str, type[RedisError]] = {
    "READONLY": ReadOnlyError,
    "LOADING": LoadingError,
    "BUSY": BusyError,
    "OOM": OutOfMemoryError,
    "WRONGTYPE": WrongTypeError,
    "NOSCRIPT": NoScriptError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "MOVED": ClusterError,
    "ASK": ClusterError,
    "TRYAGAIN": ClusterError,
    "CLUSTERDOWN": ClusterError,
    "CROSSSLOT": ClusterError,
}


def server_error(message: str, code: str | None = None) -> RedisError:
    """The brokerq error for Redis's error reply ``message`` (``code`` when the message no longer
    starts with it). A failure inside a script names the script in Redis 7's replies."""
    if code is None:
        head = message.split(" ", 1)[0]
        code = head if head.isupper() else None
    cls = _BY_CODE.get(code or "")
    if cls is None and "Protocol error: unauthenticated" in message:
        # A server that wants a password refuses large commands before any AUTH this way.
        cls = AuthenticationError
    if cls is None:
        cls = ScriptError if " script: " in message or "@user_script" in message else ServerError
    if issubclass(cls, ServerError):
        return cls(message, code=code)
    return cls(message)


# -- the protocol -------------------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    """Replies matched in order to the futures of the commands sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, timeout: float | None) -> None:
        self.loop = loop
        self.where = where
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        """Each command sent and not answered yet: its future and its reply's deadline."""
        self.transport: asyncio.Transport | None = None
        self.lost: RedisConnectionError | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport, though not always an asyncio.Transport (uvloop's TLS one).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiting = self.waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(ConnectionLostError, f"invalid reply from Redis at {self.where}: {exc}")
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(ConnectionLostError, f"unexpected reply from Redis at {self.where}")
                return
            future = waiting.popleft()[0]
            if future.done():  # its caller was cancelled; the reply is still consumed in order
                continue
            if type(reply) is hiredis.ReplyError:
                future.set_exception(server_error(str(reply)))
            else:
                future.set_result(reply)

    def eof_received(self) -> bool:
        self.fail(ConnectionLostError, f"Redis at {self.where} closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self.fail(ConnectionLostError, f"connection to Redis at {self.where} lost{detail}")

    def send(self, data: bytes, timeout: float | None) -> asyncio.Future[Any]:
        """Write one command; its reply resolves the future."""
        if self.lost is not None:
            raise type(self.lost)(str(self.lost))
        assert self.transport is not None
        future = self.loop.create_future()
        deadline = math.inf if timeout is None else self.loop.time() + timeout
        self.waiting.append((future, deadline))
        self.transport.write(data)
        if self._watchdog is None and timeout is not None:
            self._watchdog = self.loop.call_at(deadline, self._check)
        return future

    def send_many(
        self, data: bytes, count: int, timeout: float | None
    ) -> list[asyncio.Future[Any]]:
        """Write ``count`` packed commands at once: nothing else comes between them."""
        if self.lost is not None:
            raise type(self.lost)(str(self.lost))
        assert self.transport is not None
        deadline = math.inf if timeout is None else self.loop.time() + timeout
        futures = [self.loop.create_future() for _ in range(count)]
        self.waiting.extend((f, deadline) for f in futures)
        self.transport.write(data)
        if self._watchdog is None and timeout is not None:
            self._watchdog = self.loop.call_at(deadline, self._check)
        return futures

    def _check(self) -> None:
        """Fail the connection when its oldest command is past its deadline."""
        self._watchdog = None
        if not self.waiting or self.lost is not None:
            return
        deadline = self.waiting[0][1]
        if deadline <= self.loop.time():
            limit = "its timeout" if self.timeout is None else f"{self.timeout:g}s"
            self.fail(
                RedisTimeoutError,
                f"no reply from Redis at {self.where} within {limit} (socket_timeout)",
            )
        elif deadline != math.inf:
            self._watchdog = self.loop.call_at(deadline, self._check)

    def fail(self, cls: type[RedisConnectionError], message: str) -> None:
        """Fail every command in flight with ``cls(message)`` and drop the socket."""
        if self.lost is None:
            self.lost = cls(message)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(cls(message))
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close after what was written is sent; commands still waiting fail."""
        if self.lost is None:
            self.lost = ConnectionLostError(f"the connection to Redis at {self.where} was closed")
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(type(self.lost)(str(self.lost)))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.close()


def _packed(args: Sequence[Any]) -> bytes:
    try:
        data: bytes = _pack(tuple(args))
    except TypeError as exc:
        raise ConfigError(
            f"a Redis command argument must be bytes, str, int or float: {exc}"
        ) from None
    return data


# -- the connection -----------------------------------------------------------------------------


class Connection:
    """One connection to a Redis server that keeps many commands in flight.

    ``Connection("redis://:password@host:6379/0")``; ``rediss://`` for TLS, ``unix:///path``
    for a unix socket. Options, in the URL's query or as keyword arguments (redis-py's names):
    ``username``, ``password``, ``db``, ``client_name``, ``socket_connect_timeout`` (default
    5 s), ``socket_timeout`` (how long a reply may take, default 30 s; ``None`` waits forever),
    and for TLS ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_ca_data``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_password``, ``ssl_cert_reqs`` (``none``, ``optional``, ``required``,
    the default) and ``ssl_check_hostname`` (default true).

    Nothing connects until the first call (or ``open()``); a lost connection is opened again by
    the next call. ``await conn.call("HGET", key, field)`` sends any command that answers at once
    and returns Redis's reply as hiredis gives it (bytes, int, None, lists); an error reply
    raises a ``brokerq.errors.ServerError`` subclass, a failed connection a
    ``RedisConnectionError`` subclass. Calls awaited together share the connection, in flight
    at once. Blocking commands (``BLPOP``, ``WAIT``, ...) go through ``call_blocking`` on a
    connection of their own: every call behind them would wait too. One connection works in one
    event loop at a time; used from another (successive ``asyncio.run``), it opens a new socket
    there.
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, password: str | None = None, **options: Any
    ) -> None:
        self._target = target_of(url, password, options)
        self._timeout = self._target.timeout
        self._protocol: _Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._opened = 0

    @property
    def server(self) -> str:
        """``host:port`` (or ``unix:path``) of the server, for messages."""
        return self._target.where

    @property
    def opened(self) -> int:
        """How many sockets this connection has opened: two commands went over the same socket
        (``WAIT`` counts only its own socket's writes) only if this did not change between
        them."""
        return self._opened

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply."""
        data = _packed(args)
        protocol = await self._usable()
        try:
            return await protocol.send(data, self._timeout)
        except ReadOnlyError:
            self._demoted(protocol)
            raise

    def _demoted(self, protocol: _Protocol) -> None:
        """A server named by Sentinel as the primary answers as a replica (a failover moved the
        primary): the next call asks Sentinel again."""
        if self._target.sentinels and self._protocol is protocol:
            self._protocol = None
            protocol.fail(ConnectionLostError, "the primary became a replica")

    async def call_many(
        self, commands: Iterable[Sequence[Any]], *, transaction: bool = False
    ) -> list[Any]:
        """Send the commands together, in order, and return their replies.

        An error reply raises (the first one's error) once every reply is in. With
        ``transaction=True`` they run as one ``MULTI``/``EXEC`` transaction, nothing between
        them, and the replies are ``EXEC``'s.
        """
        packed = [_packed(command) for command in commands]
        if not packed:
            return []
        if transaction:
            packed = [_packed(("MULTI",)), *packed, _packed(("EXEC",))]
        protocol = await self._usable()
        futures = protocol.send_many(b"".join(packed), len(packed), self._timeout)
        try:
            replies = await _all(futures)
        except ReadOnlyError:
            self._demoted(protocol)
            raise
        if transaction:
            replies = replies[-1]
            if replies is None:
                raise ServerError("the transaction was aborted (EXEC returned nil)")
            for i, reply in enumerate(replies):
                if type(reply) is hiredis.ReplyError:
                    replies[i] = server_error(str(reply))
            for reply in replies:
                if isinstance(reply, RedisError):
                    raise reply
        return list(replies)

    async def open(self) -> None:
        """Connect now (else the first call does): raises at once if Redis cannot be used."""
        await self._usable()

    async def close(self) -> None:
        """Close the socket; a later call opens a new one."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is closed, the socket with it
                protocol.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<brokerq.redis.Connection {self._target.where} db={self._target.db}>"

    async def call_blocking(self, block_s: float, *args: Any) -> Any:
        """Send a command that may wait up to ``block_s`` on the server before it answers
        (``"BLPOP", key, block_s``): its reply may take that much longer than
        ``socket_timeout``. Give such commands a connection of their own."""
        data = _packed(args)
        protocol = await self._usable()
        timeout = None if self._timeout is None else self._timeout + block_s
        return await protocol.send(data, timeout)

    # -- opening ---------------------------------------------------------------------------------

    async def _usable(self) -> _Protocol:
        """The open socket of this event loop, opened (again) if there is none."""
        protocol = self._protocol
        if (
            protocol is None
            or protocol.lost is not None
            or protocol.loop is not asyncio.get_running_loop()
        ):
            protocol = await self._open()
        return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock belongs to one loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            protocol = self._protocol
            if protocol is not None:
                if protocol.lost is None and protocol.loop is loop:
                    return protocol  # another call opened it while this one waited
                # Lost, or opened in another event loop (successive asyncio.run), which owns it.
                self._protocol = None
                with contextlib.suppress(RuntimeError):  # that loop is closed, the socket too
                    protocol.fail(ConnectionLostError, "connection replaced")
            protocol = self._protocol = await _handshake(loop, self._target)
            self._opened += 1
            return protocol


async def _settled(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Every future's result, or its Redis error in its place."""
    results: list[Any] = []
    try:
        for future in futures:
            try:
                results.append(await future)
            except RedisError as exc:
                results.append(exc)
    except BaseException:
        for future in futures:  # a cancelled caller: the replies are still consumed in order
            future.cancel()
        raise
    return results


async def _all(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Every future's result; the first failure raised once all are done."""
    results = await _settled(futures)
    for result in results:
        if isinstance(result, RedisError):
            raise result
    return results


async def _handshake(loop: asyncio.AbstractEventLoop, target: Target) -> _Protocol:
    if target.sentinels:
        return await _via_sentinel(loop, target)
    protocol = _Protocol(loop, target.where, target.timeout)
    hello: list[tuple[Any, ...]] = []
    if target.password is not None:
        user = () if target.username is None else (target.username,)
        hello.append(("AUTH", *user, target.password))
    elif target.username is not None:
        raise ConfigError("a Redis username needs a password")
    if target.client_name:
        hello.append(("CLIENT", "SETNAME", target.client_name))
    if target.db:
        hello.append(("SELECT", target.db))
    try:
        async with asyncio.timeout(target.connect_timeout):
            if target.path is not None:
                await loop.create_unix_connection(lambda: protocol, target.path)
            else:
                await loop.create_connection(
                    lambda: protocol,
                    target.host,
                    target.port,
                    ssl=target.tls,
                    server_hostname=target.host if target.tls else None,
                )
            if hello:
                data = b"".join(_packed(command) for command in hello)
                futures = protocol.send_many(data, len(hello), target.connect_timeout)
                _check_hello(hello, await _settled(futures), target)
    except TimeoutError:
        protocol.fail(ConnectionLostError, "connect timed out")
        raise RedisTimeoutError(
            f"no connection to Redis at {target.where} within {target.connect_timeout:g}s "
            "(socket_connect_timeout)"
        ) from None
    except ssl.SSLError as exc:
        protocol.fail(ConnectionLostError, "TLS handshake failed")
        raise ConnectError(f"TLS handshake with Redis at {target.where} failed: {exc}") from exc
    except OSError as exc:
        protocol.fail(ConnectionLostError, "connect failed")
        raise ConnectError(f"cannot connect to Redis at {target.where}: {exc}") from exc
    except RedisError:
        protocol.fail(ConnectionLostError, "handshake failed")
        raise
    except BaseException:
        protocol.fail(ConnectionLostError, "connect abandoned")
        raise
    return protocol


async def _via_sentinel(loop: asyncio.AbstractEventLoop, target: Target) -> _Protocol:
    """Ask each Sentinel in turn where the primary is, connect there, and check that it is a
    primary (a failover in progress may name one that is not yet, or no longer)."""
    failures: list[str] = []
    for host, port in target.sentinels:
        sentinel = dataclasses.replace(
            target, host=host, port=port, sentinels=(), username=target.sentinel_username,
            password=target.sentinel_password, db=0,
        )  # fmt: skip
        try:
            protocol = await _handshake(loop, sentinel)
        except RedisError as exc:
            failures.append(f"{sentinel.where}: {exc}")
            continue
        try:
            reply = await protocol.send(
                _packed(("SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.master_name)),
                target.connect_timeout,
            )
        except RedisError as exc:
            failures.append(f"{sentinel.where}: {exc}")
            continue
        finally:
            protocol.close()
        if not reply:
            failures.append(f"{sentinel.where}: knows no primary {target.master_name!r}")
            continue
        primary = dataclasses.replace(
            target, host=reply[0].decode(), port=int(reply[1]), sentinels=()
        )
        connection = await _handshake(loop, primary)
        role = await connection.send(_packed(("ROLE",)), target.connect_timeout)
        if role[0] != b"master":
            connection.fail(ConnectionLostError, "not a primary")
            raise ConnectError(
                f"Sentinel names {primary.where} as primary {target.master_name!r}, but it is a "
                f"{role[0].decode()} (a failover in progress); try again"
            )
        return connection
    raise ConnectError(
        f"no Sentinel named the primary {target.master_name!r}: " + "; ".join(failures)
    )


def _check_hello(hello: list[tuple[Any, ...]], replies: list[Any], target: Target) -> None:
    for command, reply in zip(hello, replies, strict=True):
        if not isinstance(reply, RedisError):
            continue
        if command[0] == "AUTH" or isinstance(reply, AuthenticationError):
            # Redis's words ("WRONGPASS invalid username-password pair ...") never hold it.
            raise AuthenticationError(
                f"Redis at {target.where} refused the login: {reply}"
            ) from reply
        raise reply


async def connect(
    url: str = DEFAULT_URL, *, password: str | None = None, **options: Any
) -> Connection:
    """A ``Connection`` (see there for the URL and options), connected: raises at once if Redis
    cannot be reached or refuses the login."""
    connection = Connection(url, password=password, **options)
    await connection.open()
    return connection
