"""A lean HTTP/1.1 keep-alive client for the load test.

The load generator shares a small machine with the service it measures, so every microsecond it
spends per request is taken from the service. This client is an ``asyncio.Protocol`` with the
``httptools`` parser (the one uvicorn uses): one request in flight per connection, no pipelining,
no redirects, no cookies, JSON bodies only. It is not a general HTTP client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import msgspec

__all__ = ["Connection", "HttpError", "Pool", "Response", "parse_base_url"]

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def bearer(token: str | None) -> dict[str, str] | None:
    """The ``Authorization`` header for ``token``, or None without one."""
    return {"Authorization": f"Bearer {token}"} if token else None


class HttpError(Exception):
    """The connection failed or closed before a whole response arrived."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return _json_decode(self.body)


def parse_base_url(base_url: str) -> tuple[str, int, str]:
    """``http://host:port/prefix`` -> (host, port, prefix without trailing slash)."""
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// base URLs are supported, got {base_url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {base_url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends one request and waits for its response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._host_header = f"{host}:{port}"
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None
        self._closed = True
        self._keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._closed = False

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._transport = None
        self._fail(HttpError(f"connection closed: {exc}" if exc else "connection closed"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), b"".join(self._body)))
        if not self._keep_alive:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    @property
    def closed(self) -> bool:
        return self._closed

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._keep_alive = True
        transport, _ = await loop.create_connection(lambda: self, self.host, self.port)
        # uvloop may call connection_made after create_connection returns; don't wait for it.
        self._transport = transport
        self._closed = False

    async def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        if self._closed:
            await self.connect()
        transport = self._transport
        assert transport is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
        if body is None:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n{extra}"
                "Content-Length: 0\r\n\r\n"
            )
            payload = head.encode()
        else:
            raw = _json_encode(body)
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n{extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            )
            payload = head.encode() + raw
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        transport.write(payload)
        return await waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._closed = True


class Pool:
    """At most ``size`` connections to one server; a request borrows one for its duration."""

    def __init__(self, base_url: str, size: int) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.host, self.port, self.prefix = parse_base_url(base_url)
        self.size = size
        self._idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        self._all: list[Connection] = []
        for _ in range(size):
            conn = Connection(self.host, self.port)
            self._all.append(conn)
            self._idle.put_nowait(conn)

    async def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        conn = await self._idle.get()
        try:
            return await conn.request(method, self.prefix + path, body, headers)
        except (OSError, HttpError):
            conn.close()
            raise
        finally:
            self._idle.put_nowait(conn)

    async def get(self, path: str) -> Response:
        return await self.request("GET", path)

    async def post(
        self, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        return await self.request("POST", path, body, headers)

    def connections(self) -> Sequence[Connection]:
        return self._all

    def close(self) -> None:
        for conn in self._all:
            conn.close()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
