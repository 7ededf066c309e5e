"""``Idempotency-Key`` on POST requests, with Stripe's semantics.

A client that sends a POST again with the same key (because the first answer never reached it)
gets the first answer again, with ``Idempotent-Replayed: true``, and the request is not run a
second time. The same key with a different request (method, path, query or body, byte for byte)
is refused with 422; a retry while the first request still runs gets 409 with ``Retry-After``.
Keys live in PostgreSQL (``reservations.idempotency``), so every API process of a cluster sees
them, and are kept 24 h.

Recorded are the answers of requests that ran: below 500, except 401, 408 and 429, which say the
request was not run. Any other answer (a 5xx, a 503 because a server was down) frees the key, so
that a retry runs the request again, as Stripe does.

A pure ASGI middleware, outside the fast lane (so the reservation POST is covered) and inside the
body limit (so the body it reads first is capped). A request without the header costs a scan of
its headers; with one, the body is read whole before the app sees it, and the answer is recorded
before it is sent, so a client that has seen it can only get it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reservations.errors import DomainError, Unavailable, error_response
from reservations.idempotency.store import (
    KEY_TTL_S,
    LEASE_S,
    Answer,
    Claimed,
    InProgress,
    KeyStore,
    RequestKey,
)
from reservations.log import get_logger
from reservations.outage import outage_of

__all__ = [
    "IdempotencyKeyInProgress",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyReused",
    "IdempotencyKeys",
]

log = get_logger(__name__)

_HEADER = b"idempotency-key"
_KEY = re.compile(rb"[\x21-\x7e]{1,255}")
# Worth replaying; the others (date, content-length) are the replay's own.
_REPLAYED_HEADERS = frozenset({b"content-type", b"location"})
# Answers that say the request was not run: a retry must run it.
_NOT_RUN = frozenset({401, 408, 429})

INVALID = (
    "the Idempotency-Key header must be 1 to 255 visible ASCII characters (letters, digits, "
    "punctuation; no spaces), e.g. a UUID"
)
SEVERAL = "send one Idempotency-Key header, not several"
REUSED = (
    "this Idempotency-Key was already used with a different request (method, path, query or "
    "body); use a new key for a new request"
)
IN_PROGRESS = (
    "a request with this Idempotency-Key is still in progress; retry after the Retry-After "
    "header's seconds to get its answer"
)


class IdempotencyKeyInvalid(DomainError):
    code = "INVALID_IDEMPOTENCY_KEY"


class IdempotencyKeyReused(DomainError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInProgress(DomainError):
    status_code = 409
    code = "IDEMPOTENCY_KEY_IN_PROGRESS"
    headers = {"Retry-After": "1"}


class IdempotencyKeys:
    def __init__(self, app: ASGIApp, *, lease_s: float = LEASE_S, ttl_s: float = KEY_TTL_S) -> None:
        self.app = app
        self.lease_s = lease_s
        self.ttl_s = ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Without the header (the reservation POST's usual case) this scan is all it costs.
        for name, _value in scope["headers"]:
            if name == _HEADER:
                break
        else:
            await self.app(scope, receive, send)
            return
        keys = [value for name, value in scope["headers"] if name == _HEADER]
        credentials = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(keys) > 1 or not _KEY.fullmatch(keys[0]):
            error = IdempotencyKeyInvalid(SEVERAL if len(keys) > 1 else INVALID)
            await error_response(error)(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        request = RequestKey(
            # Only to the same credentials: an admin's answer is not replayed to anyone else.
            scope=hashlib.sha256(b"\n".join(credentials)).digest() if credentials else b"",
            key=keys[0].decode("ascii"),
            fingerprint=_fingerprint(scope, body),
        )
        store = KeyStore(scope["app"].state.resources.engine)
        try:
            claim = await store.claim(request, lease_s=self.lease_s, ttl_s=self.ttl_s)
        except Exception as exc:
            server = outage_of(exc)
            if server is None:
                raise
            log.warning("idempotency_store_unavailable", error=type(exc).__name__)
            unavailable = Unavailable(f"{server} is unavailable right now; the request was not run")
            await error_response(unavailable)(scope, receive, send)
            return
        if isinstance(claim, Claimed):
            await self._run(scope, _replaying(body, receive), send, store, request, claim.lease_id)
            return
        if isinstance(claim, Answer):
            await _replay(claim, send)
        elif isinstance(claim, InProgress):
            await error_response(IdempotencyKeyInProgress(IN_PROGRESS))(scope, receive, send)
        else:
            await error_response(IdempotencyKeyReused(REUSED))(scope, receive, send)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        store: KeyStore,
        request: RequestKey,
        lease_id: bytes,
    ) -> None:
        keeper = asyncio.create_task(self._keep_lease(store, request, lease_id))
        captured = _Captured()
        try:
            await self.app(scope, receive, captured.send)
        except Exception:
            await _quietly("release", store.release(request, lease_id))
            raise
        finally:
            # Also on cancellation, where the key is left to its lease running out.
            keeper.cancel()
        answer = captured.answer()
        if answer is not None and answer.status < 500 and answer.status not in _NOT_RUN:
            if await _quietly("record", store.finish(request, lease_id, answer)) is False:
                log.warning("idempotency_lease_lost", status=answer.status)
        else:
            await _quietly("release", store.release(request, lease_id))
        await captured.send_to(send)

    async def _keep_lease(self, store: KeyStore, request: RequestKey, lease_id: bytes) -> None:
        """Renew the lease while the request runs, so that only a dead process loses its key."""
        while True:
            await asyncio.sleep(self.lease_s / 3)  # a period, not a wait for some condition
            renewed = await _quietly("renew", store.renew(request, lease_id, lease_s=self.lease_s))
            if renewed is False:
                return


async def _quietly(step: str, action: Any) -> bool | None:
    """Run a store call whose failure must not change the client's answer."""
    try:
        result: bool = await action
    except Exception as exc:
        log.warning("idempotency_store_failed", step=step, error=type(exc).__name__)
        return None
    return result


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The app's ``receive``: the body already read, then the client's own messages."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _fingerprint(scope: Scope, body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (
        scope["method"].encode(),
        scope["path"].encode("utf-8", "surrogateescape"),
        scope["query_string"],
        body,
    ):
        # Length-prefixed, so that no two requests run together into the same bytes.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


class _Captured:
    """The app's answer, held until it is recorded."""

    __slots__ = ("chunks", "start")

    def __init__(self) -> None:
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def answer(self) -> Answer | None:
        if self.start is None:
            return None
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in self.start.get("headers", ())
            if name.lower() in _REPLAYED_HEADERS
        ]
        return Answer(self.start["status"], headers, b"".join(self.chunks))

    async def send_to(self, send: Send) -> None:
        if self.start is None:
            return
        await send(self.start)
        await send({"type": "http.response.body", "body": b"".join(self.chunks)})


async def _replay(answer: Answer, send: Send) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
