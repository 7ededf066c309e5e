"""The API's HTTP server: uvicorn with httptools, plus the limits uvicorn has no setting for.

uvicorn's httptools protocol is the fast one (the service's throughput depends on it) but it puts
no bound on a request head and no deadline on a request: one connection streaming a header
without end grows the process's memory and stalls every other client, and connections that
connect and never send, or send a byte every few seconds, are kept for ever until the process
runs out of file descriptors. ``GuardedHttpProtocol`` wraps uvicorn's protocol by composition
(uvicorn takes a protocol class for ``http=``) and enforces, before a byte reaches it:

- a size limit on the request head (request line and headers): over it, ``431`` (``414`` when the
  URL is most of it), answered as soon as the limit is passed, and the connection closed;
- a head deadline: the first request's head must arrive within ``REQUEST_HEAD_TIMEOUT`` of the
  connection's start, a later one's within that of its first byte, however slowly it trickles;
- a body deadline: a request body (``Content-Length`` or chunked) must arrive within
  ``REQUEST_BODY_TIMEOUT`` of the end of its head;
- a cap on open connections per process: past ``MAX_CONNECTIONS`` a new one is answered ``503``
  and closed, instead of the process running out of file descriptors and refusing everyone.

It follows the request framing with a second httptools parser fed the same bytes, which costs a
few microseconds per request (see ``bench/``). Idle keep-alive connections are uvicorn's own
business (``KEEP_ALIVE_TIMEOUT``), as is ``X-Forwarded-For`` from the proxies in
``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from .settings import Settings

__all__ = ["GuardedHttpProtocol", "HttpLimits", "raise_open_files_limit", "run_api"]

log = logging.getLogger("uvicorn.error")

# File descriptors kept for what is not a client connection: the listening socket, the database
# pool, Redis, logs.
_RESERVED_FDS = 128
# After answering 414/431/503 the server reads and drops what the client still sends, for at most
# this long, so that the client reads the answer instead of a reset; then it closes.
_LINGER_S = 2.0
# At most one "over the connection cap" warning per this many seconds: under a flood, one line.
_CAP_WARNING_INTERVAL_S = 10.0

# Where a connection's request stream is.
_IDLE = 0  # between requests (or before the first)
_HEAD = 1  # in a request line and headers
_BODY = 2  # in a request body
_CLOSING = 3  # refused: what still arrives is dropped


@dataclass(frozen=True)
class HttpLimits:
    max_head_bytes: int
    head_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The configured limits, with the connection cap kept below the open-files limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - _RESERVED_FDS if soft != resource.RLIM_INFINITY else settings.max_connections
        max_connections = max(1, min(settings.max_connections, room))
        if max_connections < settings.max_connections:
            log.warning(
                "MAX_CONNECTIONS=%d is over what the open-files limit (%d) leaves; using %d",
                settings.max_connections,
                soft,
                max_connections,
            )
        return cls(
            max_head_bytes=settings.max_header_bytes,
            head_timeout_s=settings.request_head_timeout_s,
            body_timeout_s=settings.request_body_timeout_s,
            max_connections=max_connections,
        )


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing at the byte that passed the limit."""


class _Framing:
    """The httptools callbacks that follow the request framing and count the head's bytes.

    A separate object, not the protocol, so that the parser holding it makes no reference cycle.
    """

    __slots__ = (
        "begun",
        "head_bytes",
        "max_head_bytes",
        "phase",
        "requests",
        "too_large",
        "url_bytes",
    )

    def __init__(self, max_head_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.phase = _IDLE
        self.begun = 0  # requests begun in the current chunk of data
        self.requests = 0  # requests begun on the connection
        self.head_bytes = 0  # of the current head, counted from complete pieces
        self.url_bytes = 0
        self.too_large = False

    def on_message_begin(self) -> None:
        self.phase = _HEAD
        self.begun += 1
        self.requests += 1
        self.head_bytes = self.url_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url_bytes += len(url)
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head_bytes:
            self.too_large = True
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_head_bytes:
            self.too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self.phase = _BODY

    def on_message_complete(self) -> None:
        self.phase = _IDLE


class GuardedHttpProtocol(asyncio.Protocol):
    """uvicorn's ``HttpToolsProtocol`` with head and body limits and a connection cap.

    uvicorn creates one per connection with the arguments it gives any HTTP protocol; they are
    passed on to the wrapped protocol untouched. The limits come from ``limits``, or, when that
    is not set, from the settings in the environment (read once per process: with several
    uvicorn worker processes, each reads them).
    """

    limits: ClassVar[HttpLimits | None] = None
    _last_cap_warning: ClassVar[float] = 0.0

    __slots__ = (
        "_connections",
        "_deadline",
        "_deadline_phase",
        "_framing",
        "_inner",
        "_limits",
        "_loop",
        "_parser",
        "_served",
        "_streamed",
        "_transport",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._inner = HttpToolsProtocol(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self._connections = server_state.connections
        self._loop = _loop or asyncio.get_running_loop()
        self._limits = limits = self.configured_limits()
        self._framing = _Framing(limits.max_head_bytes)
        self._parser = httptools.HttpRequestParser(self._framing)
        # As uvicorn's own parser, so that both read the same bytes the same way.
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._transport: asyncio.Transport | None = None
        self._served = False  # handed to uvicorn's protocol (not refused at once)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase = _IDLE
        # Bytes of the current head counted by whole chunks, for a head still incomplete.
        self._streamed = 0

    @classmethod
    def configured_limits(cls) -> HttpLimits:
        if cls.limits is None:
            from .settings import Settings

            cls.limits = HttpLimits.from_settings(Settings())
        return cls.limits

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but have the same methods.
        transport = cast("asyncio.Transport", transport)
        self._transport = transport
        if len(self._connections) >= self._limits.max_connections:
            self._warn_over_cap()
            self._refuse(
                503,
                "SERVICE_UNAVAILABLE",
                "the server has too many open connections; retry shortly",
                retry_after_s=1,
            )
            return
        self._arm(self._limits.head_timeout_s, _HEAD)
        self._served = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        framing = self._framing
        start_phase = framing.phase
        if start_phase == _CLOSING:
            return
        framing.begun = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # uvicorn decides what an upgrade becomes; its parser stops at the same byte
        except httptools.HttpParserError:
            if framing.too_large:
                self._refuse_head(framing.url_bytes, framing.head_bytes)
                return
            # Malformed: uvicorn's parser fails on the same bytes and answers 400.
            self._cancel_deadline()
            framing.phase = _CLOSING
            self._inner.data_received(data)
            return
        phase = framing.phase
        if phase == _IDLE:
            if self._deadline is not None:
                self._cancel_deadline()
        elif phase == _HEAD:
            # A later request's head has its deadline from its first byte; the first request's
            # from the connection's start.
            if framing.begun and framing.requests > 1:
                self._arm(self._limits.head_timeout_s, _HEAD)
            # httptools reports a header once it is complete: a header still arriving is
            # counted by whole chunks, when the chunk is known to be all head.
            if start_phase == _HEAD and not framing.begun:
                self._streamed += len(data)
            elif start_phase == _IDLE and framing.begun == 1:
                self._streamed = len(data)
            else:
                self._streamed = 0
            if self._streamed > self._limits.max_head_bytes:
                self._refuse_head(framing.url_bytes, self._streamed)
                return
        elif framing.begun or self._deadline_phase != _BODY:
            self._arm(self._limits.body_timeout_s, _BODY)
        self._inner.data_received(data)

    def eof_received(self) -> None:
        # Returning None lets the transport close, as uvicorn's protocol does.
        if self._served and self._framing.phase != _CLOSING:
            self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._served:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # Deadlines

    def _arm(self, timeout_s: float, phase: int) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._loop.call_later(timeout_s, self._expire)
        self._deadline_phase = phase

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._deadline_phase = _IDLE

    def _expire(self) -> None:
        # A head or a body that did not arrive in time: the connection is closed without an
        # answer (a response could interleave with one the app is writing).
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # Refusals

    def _refuse_head(self, url_bytes: int, head_bytes: int) -> None:
        limit = self._limits.max_head_bytes
        if url_bytes * 2 > head_bytes:
            self._refuse(
                414,
                "URI_TOO_LONG",
                f"the request URL is too long: the request line and headers may take at most "
                f"{limit} bytes",
            )
        else:
            self._refuse(
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                f"the request headers are too large: the request line and headers may take at "
                f"most {limit} bytes",
            )

    def _refuse(
        self, status: int, error: str, message: str, retry_after_s: int | None = None
    ) -> None:
        """Answer ``status`` and close, reading and dropping what still arrives meanwhile."""
        transport = self._transport
        assert transport is not None
        self._framing.phase = _CLOSING
        self._cancel_deadline()
        if transport.is_closing():
            return
        transport.write(_response(status, error, message, retry_after_s))
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self._loop.call_later(_LINGER_S, transport.close)

    @classmethod
    def _warn_over_cap(cls) -> None:
        now = time.monotonic()
        if now - cls._last_cap_warning >= _CAP_WARNING_INTERVAL_S:
            cls._last_cap_warning = now
            log.warning(
                "over MAX_CONNECTIONS (%d open): new connections are answered 503",
                cls.configured_limits().max_connections,
            )


_REASONS = {
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _response(status: int, error: str, message: str, retry_after_s: int | None) -> bytes:
    body = json.dumps({"statusCode": status, "error": error, "message": message}).encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after_s is not None:
        head.append(b"retry-after: %d" % retry_after_s)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to the hard one; the soft limit in force.

    Each connection is a file descriptor, and the usual soft limit (1024) is far below what a
    server meets; the hard limit is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def run_api(settings: Settings, *, host: str, port: int, processes: int, access_log: bool) -> None:
    """Serve the API with uvicorn (uvloop, httptools) behind ``GuardedHttpProtocol``."""
    import uvicorn

    raise_open_files_limit()
    trusted = settings.trusted_proxies()
    uvicorn.run(
        "reservations.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=processes if processes > 1 else None,
        loop="uvloop",
        http=GuardedHttpProtocol,
        access_log=access_log,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        # Without trusted proxies uvicorn would trust 127.0.0.1 by default: trust none instead.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
    )
