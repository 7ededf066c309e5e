"""The ingress gate: decides each request's fate in arrival order, atomically, in Redis.

Several workers with parallel handlers cannot preserve arrival order, so order is fixed before the
queue: one Lua call per request gives it a per-event sequence number, remembers which users were
admitted and counts admissions against the event's capacity. The first ``maxTickets`` distinct users
to arrive are admitted; later ones are decided SOLD_OUT or DUPLICATE right there, and the decision
travels in the message. PostgreSQL remains the authority: workers re-check everything there, and an
admitted request that fails (user or event gone) hands its admission back.

The state per event is recoverable: when it is missing, the API re-seeds it from PostgreSQL.

Keys, all under ``rsv:``:
- ``event:<id>``           hash: cap, count (admitted and not released), seq, accepted
- ``event:<id>:admitted``  hash: user id -> request id holding the admission ("db" when re-seeded)
- ``user:<id>``            the user exists (see ``reservations.cache``)
- ``req:<request id>``     a request that is queued and not yet final (expires as a safety net)
- ``unfinished``           sorted set: request ids admitted and not yet final, by arrival time;
                           the workers re-queue any left behind by an API that died between
                           admitting a request and queueing it (see ``recovery.py``)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from reservations.cache import KEY_PREFIX, user_key
from reservations.channels import Admission

__all__ = ["AdmissionGate", "GateResult", "PendingRequest", "Verdict"]

PENDING_TTL_S = 7 * 24 * 3600

_ADMIT = """
if redis.call('EXISTS', KEYS[3]) == 0 then return {'NO_USER', 0} end
local cap = redis.call('HGET', KEYS[1], 'cap')
if not cap then return {'NO_EVENT', 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[1], 'accepted', 1)
local verdict
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  verdict = 'DUPLICATE'
elseif tonumber(redis.call('HGET', KEYS[1], 'count') or '0') >= tonumber(cap) then
  verdict = 'SOLD_OUT'
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'count', 1)
  verdict = 'ADMITTED'
end
local marker = ARGV[4] .. ':' .. ARGV[1] .. ':' .. seq .. ':' .. ARGV[3] .. ':' .. verdict
redis.call('SET', KEYS[4], marker, 'EX', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
return {verdict, seq}
"""

# Undo an admission whose message could not be queued: the request was never accepted.
_UNDO = """
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'accepted', -1) end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  if tonumber(redis.call('HGET', KEYS[1], 'count') or '0') > 0 then
    redis.call('HINCRBY', KEYS[1], 'count', -1)
  end
end
return 1
"""

# Give an admission back (cancelled reservation, or admitted request rejected by the database).
# ARGV[2] = the request id that must hold it, or '' for whoever holds it.
_RELEASE = """
local holder = redis.call('HGET', KEYS[2], ARGV[1])
if not holder then return 0 end
if ARGV[2] ~= '' and holder ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'count') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'count', -1)
end
return 1
"""

# Seed an event's state unless another request seeded it first. The admitted users are written
# (HSETNX) before this runs; nothing is admitted meanwhile because the event hash is missing.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'cap', ARGV[1], 'count', ARGV[2], 'seq', ARGV[3], 'accepted', ARGV[4])
return 1
"""

_SEED_CHUNK = 1000


class Verdict(enum.StrEnum):
    ADMITTED = "ADMITTED"
    SOLD_OUT = "SOLD_OUT"
    DUPLICATE = "DUPLICATE"
    NO_USER = "NO_USER"
    NO_EVENT = "NO_EVENT"

    def admission(self) -> Admission:
        return Admission(self.value)


@dataclass(frozen=True, slots=True)
class GateResult:
    verdict: Verdict
    seq: int


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request_id: str
    event_id: int
    user_id: int
    seq: int
    accepted_at_ms: int
    admission: Admission


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """What PostgreSQL knows about an event, to rebuild its gate state."""

    capacity: int
    reserved_user_ids: Sequence[int]
    last_seq: int
    final_requests: int


class GateCounters(msgspec.Struct, frozen=True):
    capacity: int
    admitted: int
    accepted: int
    last_seq: int


def _event_key(event_id: int) -> str:
    return f"{KEY_PREFIX}event:{event_id}"


def _admitted_key(event_id: int) -> str:
    return f"{KEY_PREFIX}event:{event_id}:admitted"


def _pending_key(request_id: str) -> str:
    return f"{KEY_PREFIX}req:{request_id}"


UNFINISHED_KEY = f"{KEY_PREFIX}unfinished"


class AdmissionGate:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._admit = redis.register_script(_ADMIT)
        self._undo = redis.register_script(_UNDO)
        self._release = redis.register_script(_RELEASE)
        self._seed = redis.register_script(_SEED)
        self._seeding: dict[int, asyncio.Future[bool]] = {}

    async def admit(
        self, *, event_id: int, user_id: int, request_id: str, accepted_at_ms: int
    ) -> GateResult:
        keys = [
            _event_key(event_id),
            _admitted_key(event_id),
            user_key(user_id),
            _pending_key(request_id),
            UNFINISHED_KEY,
        ]
        args: list[str | int] = [user_id, request_id, accepted_at_ms, event_id, PENDING_TTL_S]
        verdict, seq = await self._admit(keys=keys, args=args)
        return GateResult(
            Verdict(verdict.decode() if isinstance(verdict, bytes) else verdict), int(seq)
        )

    async def undo(self, *, event_id: int, user_id: int, request_id: str) -> None:
        keys = [
            _event_key(event_id),
            _admitted_key(event_id),
            _pending_key(request_id),
            UNFINISHED_KEY,
        ]
        await self._undo(keys=keys, args=[user_id, request_id])

    async def release(self, *, event_id: int, user_id: int, request_id: str | None = None) -> bool:
        keys = [_event_key(event_id), _admitted_key(event_id)]
        return bool(await self._release(keys=keys, args=[user_id, request_id or ""]))

    async def seed(self, event_id: int, snapshot: EventSnapshot) -> bool:
        admitted = _admitted_key(event_id)
        users = list(snapshot.reserved_user_ids)
        for start in range(0, len(users), _SEED_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in users[start : start + _SEED_CHUNK]:
                    pipe.hsetnx(admitted, str(user_id), "db")
                await pipe.execute()
        args = [snapshot.capacity, len(users), snapshot.last_seq, snapshot.final_requests]
        return bool(await self._seed(keys=[_event_key(event_id), admitted], args=args))

    async def seed_once(
        self, event_id: int, load: Callable[[], Awaitable[EventSnapshot | None]]
    ) -> bool:
        """Seed the gate for ``event_id`` from ``load()``; False when it finds no such event.

        Requests for an event the gate does not know yet arrive together (a ticket drop): one
        load per event is in flight in this process and the others await it, instead of each
        taking a database connection to read the same snapshot.
        """
        pending = self._seeding.get(event_id)
        if pending is not None:
            with contextlib.suppress(Exception):
                return await asyncio.shield(pending)
            # The first caller's load failed; that error is its to report: try our own.
        future = asyncio.ensure_future(self._seed_from(event_id, load))
        self._seeding[event_id] = future
        try:
            return await asyncio.shield(future)
        finally:
            if self._seeding.get(event_id) is future:
                del self._seeding[event_id]

    async def _seed_from(
        self, event_id: int, load: Callable[[], Awaitable[EventSnapshot | None]]
    ) -> bool:
        snapshot = await load()
        if snapshot is None:
            return False
        await self.seed(event_id, snapshot)
        return True

    async def forget_event(self, event_id: int) -> None:
        await self.redis.delete(_event_key(event_id), _admitted_key(event_id))

    async def counters(self, event_id: int) -> GateCounters | None:
        raw = await self.redis.hgetall(_event_key(event_id))
        if not raw or b"cap" not in raw:
            return None
        return GateCounters(
            capacity=int(raw[b"cap"]),
            admitted=int(raw.get(b"count", 0)),
            accepted=int(raw.get(b"accepted", 0)),
            last_seq=int(raw.get(b"seq", 0)),
        )

    async def pending(self, request_id: str) -> PendingRequest | None:
        raw = await self.redis.get(_pending_key(request_id))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        event_id, user_id, seq, accepted_at_ms, verdict = text.split(":")
        return PendingRequest(
            request_id=request_id,
            event_id=int(event_id),
            user_id=int(user_id),
            seq=int(seq),
            accepted_at_ms=int(accepted_at_ms),
            admission=Admission(verdict),
        )

    async def finished(self, request_ids: Iterable[str]) -> None:
        ids = list(request_ids)
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(*[_pending_key(r) for r in ids])
                pipe.zrem(UNFINISHED_KEY, *ids)
                await pipe.execute()

    async def unfinished_before(self, before_ms: int, *, limit: int) -> list[str]:
        """Request ids admitted before ``before_ms`` and not yet final, oldest first."""
        raw = await self.redis.zrangebyscore(
            UNFINISHED_KEY, "-inf", f"({before_ms}", start=0, num=limit
        )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    async def touch_unfinished(self, request_ids: Sequence[str], now_ms: int) -> None:
        """Move re-queued requests to the back, so they are not re-queued again at once."""
        if request_ids:
            await self.redis.zadd(UNFINISHED_KEY, dict.fromkeys(request_ids, now_ms))

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """A best-effort lock that expires by itself (for periodic jobs, not for correctness)."""
        return bool(await self.redis.set(f"{KEY_PREFIX}lock:{name}", b"1", nx=True, px=ttl_ms))

    async def forget_unfinished(self, request_ids: Sequence[str]) -> None:
        if request_ids:
            await self.redis.zrem(UNFINISHED_KEY, *request_ids)
