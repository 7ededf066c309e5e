"""One Redis connection that keeps many script calls in flight.

brokerq's hot path is a stream of small script calls (a produce batch, an exchange, a renewal).
Through redis-py each call costs about 100 us of Python on a 2-core machine (pool checkout, a
timeout context, a task, observability hooks), as much as the Lua script itself. Here a call
packs its command with hiredis, writes it, and waits on a future; replies come back in order on
the connection (Redis answers a connection's commands in the order sent), so one deque of
futures matches them. Calls issued together travel together without waiting for each other.

redis-py still opens the connection, so AUTH, TLS, SELECT and every connection option are its
own; the socket is then handed to this protocol. Only commands that answer at once belong here:
a blocking command would hold up every call behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

__all__ = ["PipelinedConnection"]

log = logging.getLogger("brokerq.redis")


class _HandoverUnsupported(Exception):
    """This redis-py keeps its socket where the handover cannot reach it."""


def _transport_of(connection: Any) -> asyncio.Transport | None:
    """The transport of a connected redis-py connection (redis-py keeps no public handle)."""
    return getattr(getattr(connection, "_writer", None), "transport", None)


def _error(message: str) -> Exception:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.handed_over: object = None
        self.lost: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(ConnectionError(f"invalid reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError(f"unexpected reply from Redis: {reply!r:.100}"))
                return
            future, _ = self.waiting.popleft()
            if future.done():  # its caller was cancelled; the reply is still consumed in order
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._fail(ConnectionError(f"connection to Redis lost{detail}"))

    def eof_received(self) -> bool:
        self._fail(ConnectionError("Redis closed the connection"))
        return False

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        future = self.loop.create_future()
        self.waiting.append((future, self.loop.time()))
        self.transport.write(command)
        if self._watchdog is None and self.timeout is not None:
            self._watchdog = self.loop.call_later(self.timeout, self._check)
        return future

    def _check(self) -> None:
        """Fail the connection when its oldest call has waited longer than the timeout."""
        self._watchdog = None
        if not self.waiting or self.lost is not None:
            return
        assert self.timeout is not None
        overdue = self.waiting[0][1] + self.timeout - self.loop.time()
        if overdue <= 0:
            self._fail(TimeoutError(f"no reply from Redis within {self.timeout:g}s"))
        else:
            self._watchdog = self.loop.call_later(overdue, self._check)

    def _fail(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


async def _reconnect_later(error: Exception) -> None:
    """Nothing to undo after a failure: the lost connection is replaced by the next send."""


class PipelinedConnection:
    """Commands on one connection of ``pool``'s server, many in flight at once.

    Opened on first use and again after the connection is lost. A call that fails with a
    connection error or a timeout is sent again under the pool's redis-py ``Retry`` policy, as
    redis-py does; ``socket_timeout`` bounds the wait for a reply. Should a redis-py version not
    let its connection be handed over, every call goes through ``fallback`` (redis-py's own
    ``execute_command``) instead, with a warning.
    """

    def __init__(self, pool: ConnectionPool, fallback: Callable[..., Awaitable[Any]]) -> None:
        self._pool = pool
        self._fallback = fallback
        self._unsupported = False
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        self._retry: Retry | None = pool.connection_kwargs.get("retry")
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def call(self, *args: Any) -> Any:
        if self._unsupported:
            return await self._fallback(*args)
        command = hiredis.pack_command(args)
        retry = self._retry
        try:
            if retry is None or retry.get_retries() == 0:
                return await self._send(command)
            return await retry.call_with_retry(lambda: self._send(command), _reconnect_later)
        except _HandoverUnsupported:
            return await self._fallback(*args)

    async def _send(self, command: bytes) -> Any:
        protocol = self._protocol
        if (
            protocol is None
            or protocol.lost is not None
            or protocol.loop is not asyncio.get_running_loop()
        ):
            protocol = await self._open()
        return await protocol.send(command)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:  # a lock belongs to one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            protocol = self._protocol
            if protocol is not None:
                if protocol.lost is None and protocol.loop is loop:
                    return protocol  # another call opened it while this one waited
                # Lost, or opened in another event loop (successive asyncio.run), which owns it.
                self._abandon(protocol)
            protocol = self._protocol = await self._handshake(loop)
            return protocol

    async def _handshake(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        if self._retry is None:  # a pool made by from_url keeps the policy on its connections
            self._retry = connection.retry
        await connection.connect()
        transport = _transport_of(connection)
        if transport is None:
            await connection.disconnect()
            self._unsupported = True
            log.warning(
                "redis-py %s cannot hand a connection over; brokerq's script calls go through "
                "redis-py's command path (slower, same results)",
                getattr(redis, "__version__", "?"),
            )
            raise _HandoverUnsupported
        protocol = _Protocol(loop, self._timeout)
        transport.set_protocol(protocol)
        protocol.transport = transport
        # The socket is ours now: redis-py must neither read from nor close it. The stream
        # writer stays referenced, as collecting it would close the transport.
        protocol.handed_over = connection._writer
        connection._writer = connection._reader = None
        return protocol

    def _abandon(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
        with contextlib.suppress(RuntimeError):  # its event loop is closed, the socket with it
            protocol._fail(ConnectionError("connection closed"))

    def close(self) -> None:
        if self._protocol is not None:
            self._abandon(self._protocol)
