"""Request ids that prove the service issued them.

A request id (the job id a client polls) carries when it was accepted, for which event and user,
and a MAC under a key every API process shares (made by the migrations, kept in PostgreSQL). If
Redis loses a queued request, neither Redis nor PostgreSQL knows its id any more; the MAC still
tells a lost request (answered 410, "send it again") from an id that never existed (404).

The same key makes each request's hold token (``hold_token``), the proof of being the sender that
confirming or releasing a hold asks for.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
from dataclasses import dataclass
from hashlib import sha256

__all__ = ["IssuedRequest", "RequestIds"]

# accepted_at_ms (6 bytes: until the year 10889), event id, user id, 10 random bytes.
_PAYLOAD = struct.Struct(">6sII10s")
_MAC_BYTES = 12
# base64url of 24 + 12 bytes, no padding
ID_LENGTH = 48
_TOKEN_BYTES = 18


@dataclass(frozen=True, slots=True)
class IssuedRequest:
    event_id: int
    user_id: int
    accepted_at_ms: int


class RequestIds:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the request id key must be at least 16 bytes")
        self._key = key

    def new(self, *, event_id: int, user_id: int, accepted_at_ms: int) -> str:
        payload = _PAYLOAD.pack(
            accepted_at_ms.to_bytes(6, "big"), event_id, user_id, os.urandom(10)
        )
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode()

    def verify(self, request_id: str) -> IssuedRequest | None:
        """What the id says, if this service issued it; None for anything else."""
        if len(request_id) != ID_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(request_id.encode("ascii"))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return None
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        accepted, event_id, user_id, _ = _PAYLOAD.unpack(payload)
        return IssuedRequest(event_id, user_id, int.from_bytes(accepted, "big"))

    def hold_token(self, request_id: str) -> str:
        """The secret that lets a request's sender confirm or release the hold it wins: given
        only in the request's 202 answer, and derived, so that nothing needs storing."""
        mac = hmac.new(self._key, b"hold\x00" + request_id.encode(), sha256).digest()
        return base64.urlsafe_b64encode(mac[:_TOKEN_BYTES]).decode().rstrip("=")

    def check_hold_token(self, request_id: str, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.hold_token(request_id).encode())

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, sha256).digest()[:_MAC_BYTES]
