"""The SQL of idempotency keys: claim a key, keep its lease, record or release its answer.

Every statement runs on its own (autocommit), so no transaction or connection is held while the
request runs: a request in progress is known by its row and its lease, not by a lock, and any API
process of the cluster sees the same rows. Times are PostgreSQL's ``now()``: one clock for all.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = [
    "KEY_TTL_S",
    "LEASE_S",
    "Answer",
    "Claimed",
    "InProgress",
    "KeyStore",
    "Mismatch",
    "RequestKey",
    "delete_expired",
]

KEY_TTL_S = 24 * 3600
"""How long a key is honoured after its first use (Stripe's 24 h); then it is free again."""
LEASE_S = 30.0
"""How long a request in progress is presumed alive without its process renewing the lease
(every third of it while the request runs): a retry after that runs the request again."""

# Every attempt but the last can lose a race with a request releasing the key.
_CLAIM_ATTEMPTS = 3
_DELETE_BATCH = 5000
_DELETE_BATCHES_PER_CALL = 20


@dataclass(frozen=True, slots=True)
class RequestKey:
    scope: bytes
    key: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request holds the key: it runs, then records or releases its answer."""

    lease_id: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """The recorded answer of the key's first request: replay it."""

    status: int
    headers: list[list[str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another request with this key is running."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used with another request (method, path, query or body)."""


Claim = Claimed | Answer | InProgress | Mismatch

# One round trip: take the key, or read what holds it. The SELECT sees the row as it was before
# the statement (or not at all, if another request inserted it meanwhile: then the caller tries
# again).
_CLAIM = text(
    """
    WITH claimed AS (
        INSERT INTO idempotency_keys AS k (scope, key, fingerprint, lease_id, locked_until)
        VALUES (:scope, :key, :fingerprint, :lease_id, now() + make_interval(secs => :lease_s))
        ON CONFLICT (scope, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, lease_id = EXCLUDED.lease_id,
                locked_until = EXCLUDED.locked_until, status = NULL, headers = NULL,
                body = NULL, created_at = now()
            -- Past its time to live the key is free again. In progress past its lease, the
            -- process that ran it is presumed dead: the same request may run again.
            WHERE k.created_at < now() - make_interval(secs => :ttl_s)
               OR (k.status IS NULL AND k.locked_until < now()
                   AND k.fingerprint = EXCLUDED.fingerprint)
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM claimed) AS claimed, k.fingerprint, k.status, k.headers, k.body
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN idempotency_keys AS k ON k.scope = :scope AND k.key = :key
    """
).columns(headers=JSONB)

# Each of these touches the row only while this request holds its lease.
_RENEW = text(
    """
    UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => :lease_s)
    WHERE scope = :scope AND key = :key AND lease_id = :lease_id AND status IS NULL
    """
)
_FINISH = text(
    """
    UPDATE idempotency_keys SET status = :status, headers = :headers, body = :body,
        locked_until = NULL
    WHERE scope = :scope AND key = :key AND lease_id = :lease_id AND status IS NULL
    """
).bindparams(bindparam("headers", type_=JSONB))
_RELEASE = text(
    """
    DELETE FROM idempotency_keys
    WHERE scope = :scope AND key = :key AND lease_id = :lease_id AND status IS NULL
    """
)
_DELETE_EXPIRED = text(
    """
    DELETE FROM idempotency_keys WHERE (scope, key) IN (
        SELECT scope, key FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => :ttl_s)
        LIMIT :batch FOR UPDATE SKIP LOCKED)
    """
)


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        # One statement per round trip, without BEGIN and COMMIT around it.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def claim(self, request: RequestKey, *, lease_s: float, ttl_s: float) -> Claim:
        lease_id = secrets.token_bytes(16)
        params = {
            "scope": request.scope, "key": request.key, "fingerprint": request.fingerprint,
            "lease_id": lease_id, "lease_s": lease_s, "ttl_s": float(ttl_s),
        }  # fmt: skip
        for _ in range(_CLAIM_ATTEMPTS):
            async with self._engine.connect() as conn:
                row = (await conn.execute(_CLAIM, params)).one()
            if row.claimed:
                return Claimed(lease_id)
            if row.fingerprint is None:
                continue  # released, or inserted after this statement began: look again
            if row.fingerprint != request.fingerprint:
                return Mismatch()
            if row.status is None:
                return InProgress()
            return Answer(row.status, row.headers or [], row.body or b"")
        return InProgress()

    async def renew(self, request: RequestKey, lease_id: bytes, *, lease_s: float) -> bool:
        return await self._mine(_RENEW, request, lease_id, lease_s=lease_s)

    async def finish(self, request: RequestKey, lease_id: bytes, answer: Answer) -> bool:
        """Record the answer; False if the lease was lost (another process took the key over)."""
        return await self._mine(
            _FINISH, request, lease_id, status=answer.status, headers=answer.headers,
            body=answer.body,
        )  # fmt: skip

    async def release(self, request: RequestKey, lease_id: bytes) -> bool:
        """Free the key, so that a retry runs the request again."""
        return await self._mine(_RELEASE, request, lease_id)

    async def _mine(
        self, statement: TextClause, request: RequestKey, lease_id: bytes, **values: object
    ) -> bool:
        params = {"scope": request.scope, "key": request.key, "lease_id": lease_id, **values}
        async with self._engine.connect() as conn:
            result = await conn.execute(statement, params)
        return bool(result.rowcount)


async def delete_expired(
    session_factory: async_sessionmaker[AsyncSession], *, ttl_s: float = KEY_TTL_S
) -> int:
    """Delete the keys past their time to live, a batch per transaction; returns how many."""
    deleted = 0
    for _ in range(_DELETE_BATCHES_PER_CALL):
        async with session_factory() as session:
            result = await session.execute(
                _DELETE_EXPIRED, {"ttl_s": float(ttl_s), "batch": _DELETE_BATCH}
            )
            await session.commit()
        count = cast("CursorResult[Any]", result).rowcount
        deleted += count
        if count < _DELETE_BATCH:
            break
    return deleted
