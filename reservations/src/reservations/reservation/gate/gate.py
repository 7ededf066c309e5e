"""The ingress gate: decides each request's fate in arrival order, atomically, in Redis.

Several workers with parallel handlers cannot preserve arrival order, so order is fixed before the
queue: one Lua call per request gives it a per-event sequence number, remembers which users were
admitted and counts their seats against the event's capacity. Requests are admitted in arrival
order while their seats fit; later ones are decided SOLD_OUT (WAITLISTED for an event with a
waitlist), DUPLICATE (the user holds seats already) or OVER_LIMIT (more seats than the event
allows one request) right there, and the decision travels in the message. PostgreSQL remains the
authority: workers re-check everything there, and an admitted request that fails (user or event
gone) hands its admission back.

The gate is a cache of PostgreSQL that decides fast; it must converge to PostgreSQL whatever
happens between the two (see ``reconcile.py``): a missing event is re-seeded from PostgreSQL, a
seat freed in PostgreSQL is handed back through an outbox until Redis confirms, and a periodic
pass corrects the admitted users of an event in either direction, one compare-and-set per user.

Keys, all under ``rsv:``. An event's keys share the hash tag ``{<id>}``: on Redis Cluster they
live in one slot, so each script is one atomic call on one node, and events spread over the
primaries.
- ``event:{<id>}``               hash: cap, taken (seats held), mpu (most seats one request may
                                 ask), wl (1: the event has a waitlist), seq (last sequence
                                 number), accepted (requests answered 202), pending (accepted and
                                 not yet final), reg (the event is in the registry, see below),
                                 and the event's settle rate (rate_n, rate_s, rate_at, rate_from:
                                 see ``finish.lua`` and ``settle_rate``)
- ``event:{<id>}:admitted``      hash: user id -> request id holding their seats, ``<id>*<n>`` for
                                 n seats (the holder makes every release a compare-and-delete)
- ``event:{<id>}:line``          sorted set: the event's requests accepted and not yet final,
                                 scored by seq (a request's rank is its place in line); added with
                                 the marker, removed with it
- ``event:{<id>}:unfinished``    sorted set: the same requests, scored by when the workers'
                                 recovery may look at them (see ``recovery.py``)
- ``event:{<id>}:req:<request id>``  a request that is queued and not yet final (expires as a
                                 safety net)
- ``events``                     sorted set: the registry of events that may have unfinished
                                 requests, for recovery (``admit.lua``, ``retire.lua``)
- ``user:<id>``                  the user exists (see ``users.py``)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from brokerq.redis import Acknowledged, Commands, Script
from reservations.channels import Admission

from .users import KEY_PREFIX, KnownUsers

__all__ = [
    "EVENTS_KEY",
    "AdmissionGate",
    "EventKeys",
    "GateCounters",
    "GateResult",
    "PendingRequest",
    "Place",
    "Verdict",
    "event_keys",
    "request_of",
    "settle_rate",
]

PENDING_TTL_S = 7 * 24 * 3600
# A gate rebuilt after Redis lost it starts numbering this far past the last number PostgreSQL or
# the checkpoint knows, so that requests numbered after the checkpoint and lost keep unique numbers.
LOSS_SEQ_GAP = 1_000_000

# The settle rate's time constant: requests settled this long ago weigh 1/e of the latest ones.
RATE_TIME_CONSTANT_S = 10.0
# Until this much settling time is measured, the rate counts it as this long: a cautious figure
# rather than one batch over the milliseconds between two workers' commits.
RATE_MIN_SPAN_S = 1.0
# A rate measured longer ago than this says nothing of the workers' pace now (they may be down).
RATE_STALE_S = 60.0
# Requests looked at from the head of a line for leftovers (see ``prune_lines``).
PRUNE_HEAD = 100

_SEED_CHUNK = 1000
_FINISH_CHUNK = 500
_MGET_CHUNK = 5000


class Verdict(enum.StrEnum):
    ADMITTED = "ADMITTED"
    SOLD_OUT = "SOLD_OUT"
    WAITLISTED = "WAITLISTED"
    OVER_LIMIT = "OVER_LIMIT"
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
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class Place:
    """A pending request's place in its event's line."""

    position: int
    """1 for the next of the event's pending requests to be settled."""
    rate: float | None
    """Requests per second at which the event's requests have been settled lately, or None when
    there is no recent measure (see ``settle_rate``)."""

    @property
    def wait_s(self) -> float | None:
        """Seconds until this request is settled, if the pace holds."""
        return None if self.rate is None else self.position / self.rate


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """What PostgreSQL knows about an event, to rebuild its gate state."""

    capacity: int
    holders: Mapping[int, str]
    """User id -> the request id of their live reservation (the seats' holder), with
    ``*<n>`` for a reservation of n seats."""
    last_seq: int
    accepted: int
    waitlist: bool = False
    max_per_user: int = 1


class GateCounters(msgspec.Struct, frozen=True):
    capacity: int
    admitted: int
    """Seats taken: reserved in PostgreSQL, or admitted and not yet written (a request for n
    seats takes n)."""
    accepted: int
    last_seq: int
    pending: int
    """Requests accepted and not yet final."""


class EventKeys(NamedTuple):
    """The keys of one event's gate state."""

    state: str
    admitted: str
    line: str
    unfinished: str

    def marker(self, request_id: str) -> str:
        return f"{self.state}:req:{request_id}"


def event_keys(event_id: int) -> EventKeys:
    """Every key derived from an event id comes from here: they share the hash tag ``{<id>}``,
    one Redis Cluster slot."""
    base = f"{KEY_PREFIX}event:{{{event_id}}}"
    return EventKeys(base, f"{base}:admitted", f"{base}:line", f"{base}:unfinished")


def _marker_key(event_id: int, request_id: str) -> str:
    return event_keys(event_id).marker(request_id)


EVENTS_KEY = f"{KEY_PREFIX}events"


def request_of(holder: str) -> str:
    """The request id in a seat holder (``<request id>`` or ``<request id>*<n>``)."""
    return holder.partition("*")[0]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _script(name: str) -> Script:
    return Script.from_resource(__package__ or __name__, f"lua/{name}.lua")


_ADMIT = _script("admit")
_UNDO = _script("undo")
_RELEASE = _script("release")
_RESTORE = _script("restore")
_FINISH = _script("finish")
_SEED = _script("seed")
_CATCH_UP = _script("catch_up")
_RETIRE = _script("retire")
_UNREGISTER = _script("unregister")


class AdmissionGate:
    """The gate on Redis (one server, Sentinel's primary or a Cluster), through brokerq's
    ``Commands``: every API request's admission shares them, many in flight at once."""

    def __init__(self, redis: Commands, *, replicated: Acknowledged | None = None) -> None:
        """``replicated``: admissions run through it, answered only once replicas hold them
        (``brokerq.redis.acknowledged_by``), for Redis Cluster, where the event's primary is
        not the queue's and the queue's ``WAIT`` does not speak for it."""
        self.redis = redis
        self.users = KnownUsers(redis)
        self._replicated = replicated
        self._seeding: dict[int, asyncio.Future[bool]] = {}

    async def admit(
        self,
        *,
        event_id: int,
        user_id: int,
        request_id: str,
        accepted_at_ms: int,
        quantity: int = 1,
    ) -> GateResult:
        # A user's key is in another slot than the event's: asked first, not in the script (a
        # user once known stays known, see ``users.py``).
        if not await self.users.exists(user_id):
            return GateResult(Verdict.NO_USER, 0)
        event = event_keys(event_id)
        keys = [event.state, event.admitted, event.marker(request_id), event.unfinished, event.line]
        registration = 0
        while True:
            args: list[str | int] = [
                user_id, request_id, accepted_at_ms, event_id, PENDING_TTL_S, quantity,
                registration,
            ]  # fmt: skip
            if self._replicated is None:
                verdict, seq = await _ADMIT.run(self.redis, keys, args)
            else:
                verdict, seq = await self._replicated.run(_ADMIT, keys, args)
            if verdict not in (b"UNREGISTERED", "UNREGISTERED") or registration:
                return GateResult(Verdict(_text(verdict)), int(seq))
            # The event's first request since recovery last found it idle: into the registry
            # first, so that recovery can find the request once it is unfinished.
            registration = int(float(await self.redis.call("ZINCRBY", EVENTS_KEY, 1, event_id)))

    async def undo(self, *, event_id: int, user_id: int, request_id: str) -> None:
        event = event_keys(event_id)
        keys = [event.state, event.admitted, event.marker(request_id), event.unfinished, event.line]
        await _UNDO.run(self.redis, keys, [user_id, request_id])

    async def release(self, *, event_id: int, user_id: int, request_id: str | None = None) -> bool:
        """Hand back ``user_id``'s seat if ``request_id`` holds it (or anyone, when None)."""
        return await self.release_many(event_id, [(user_id, request_id)]) == 1

    async def release_many(self, event_id: int, seats: Sequence[tuple[int, str | None]]) -> int:
        """Compare-and-delete each (user id, holder) seat; returns how many were released."""
        if not seats:
            return 0
        args = [v for user_id, holder in seats for v in (user_id, holder or "")]
        event = event_keys(event_id)
        return int(await _RELEASE.run(self.redis, [event.admitted, event.state], args))

    async def restore_many(self, event_id: int, seats: Mapping[int, str]) -> int:
        """Give a seat to each user that does not hold one; returns how many were given."""
        if not seats:
            return 0
        args = [v for user_id, holder in seats.items() for v in (user_id, holder)]
        event = event_keys(event_id)
        return int(await _RESTORE.run(self.redis, [event.admitted, event.state], args))

    async def holders(self, event_id: int) -> dict[int, str]:
        """User id -> request id of every seat the gate counts for the event."""
        return (await self.holders_many([event_id]))[event_id]

    async def holders_many(self, event_ids: Sequence[int]) -> dict[int, dict[int, str]]:
        """``holders`` of several events, in one round trip."""
        replies = await self.redis.call_many(("HGETALL", event_keys(e).admitted) for e in event_ids)
        return {
            event_id: {int(user): _text(holder) for user, holder in _fields(raw)}
            for event_id, raw in zip(event_ids, replies, strict=True)
        }

    async def seed(self, event_id: int, snapshot: EventSnapshot) -> bool:
        event = event_keys(event_id)
        seats = list(snapshot.holders.items())
        for start in range(0, len(seats), _SEED_CHUNK):
            await self.redis.call_many(
                ("HSETNX", event.admitted, user_id, holder)
                for user_id, holder in seats[start : start + _SEED_CHUNK]
            )
        args = [
            snapshot.capacity, snapshot.last_seq, snapshot.accepted, int(snapshot.waitlist),
            snapshot.max_per_user,
        ]  # fmt: skip
        return bool(await _SEED.run(self.redis, [event.state, event.admitted], args))

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

    async def catch_up(self, event_id: int, *, accepted: int, seq: int) -> bool:
        """Move the event's counters up to a checkpoint they fell behind; True if they moved."""
        args = [accepted, seq, LOSS_SEQ_GAP]
        return bool(await _CATCH_UP.run(self.redis, [event_keys(event_id).state], args))

    async def forget_event(self, event_id: int) -> None:
        """Drop the event's gate state (its counters, seats and line); its unfinished requests
        stay for recovery."""
        event = event_keys(event_id)
        await self.redis.call("DEL", event.state, event.admitted, event.line)

    async def counters(self, event_id: int) -> GateCounters | None:
        return (await self.counters_many([event_id]))[event_id]

    async def counters_many(self, event_ids: Sequence[int]) -> dict[int, GateCounters | None]:
        """The counters of each event, None where the gate does not know it; one round trip."""
        replies = await self.redis.call_many(
            command
            for event in map(event_keys, event_ids)
            for command in (
                ("HMGET", event.state, "cap", "accepted", "seq", "pending", "taken"),
                ("HLEN", event.admitted),
            )
        )
        found: dict[int, GateCounters | None] = {}
        for i, event_id in enumerate(event_ids):
            (cap, accepted, seq, pending, taken), holders = replies[2 * i], replies[2 * i + 1]
            found[event_id] = (
                None
                if cap is None
                else GateCounters(
                    capacity=int(cap),
                    # A gate from before quantities counts one seat per holder.
                    admitted=int(holders if taken is None else taken),
                    accepted=int(accepted or 0),
                    last_seq=int(seq or 0),
                    pending=max(0, int(pending or 0)),
                )
            )
        return found

    async def pending(self, event_id: int, request_id: str) -> PendingRequest | None:
        raw = await self.redis.call("GET", _marker_key(event_id, request_id))
        return None if raw is None else _parse_marker(request_id, _text(raw))

    async def pending_many(self, requests: Iterable[tuple[str, int]]) -> dict[str, PendingRequest]:
        """The markers of (request id, event id) pairs that have one, by request id."""
        pairs = list(requests)
        found: dict[str, PendingRequest] = {}
        for start in range(0, len(pairs), _MGET_CHUNK):
            chunk = pairs[start : start + _MGET_CHUNK]
            # One GET each: markers of different events are in different Cluster slots.
            raw = await self.redis.call_many(("GET", _marker_key(e, r)) for r, e in chunk)
            for (request_id, _), value in zip(chunk, raw, strict=True):
                if value is not None:
                    found[request_id] = _parse_marker(request_id, _text(value))
        return found

    async def finished(self, requests: Iterable[tuple[str, int]]) -> None:
        """(request id, event id) pairs whose outcomes are final in PostgreSQL."""
        for event_id, ids in _by_event(requests).items():
            for start in range(0, len(ids), _FINISH_CHUNK):
                chunk = ids[start : start + _FINISH_CHUNK]
                event = event_keys(event_id)
                keys = [event.state, event.line, event.unfinished, *map(event.marker, chunk)]
                await _FINISH.run(self.redis, keys, [RATE_TIME_CONSTANT_S, *chunk])

    async def place(self, event_id: int, request_id: str) -> Place | None:
        """Where a pending request stands in its event's line; None if it is not in it (final,
        or queued before the line existed)."""
        event = event_keys(event_id)
        rank, (settled, span_s, at_ms, from_ms), (seconds, micros) = await self.redis.call_many(
            [
                ("ZRANK", event.line, request_id),
                ("HMGET", event.state, "rate_n", "rate_s", "rate_at", "rate_from"),
                ("TIME",),  # Redis's clock, which wrote the rate's times
            ]
        )
        if rank is None:
            return None
        rate = None
        if settled is not None and span_s is not None and at_ms is not None:
            rate = settle_rate(
                settled=float(settled),
                span_s=float(span_s),
                at_ms=float(at_ms),
                from_ms=None if from_ms is None else float(from_ms),
                now_ms=int(seconds) * 1000 + int(micros) / 1000,
            )
        return Place(position=int(rank) + 1, rate=rate)

    async def first_pending_seq(self, event_id: int, *, excluding: Collection[str]) -> int | None:
        """The arrival order of the event's first request still in its line (accepted and not
        yet written), leaving out ``excluding``; None if there is none."""
        raw = await self.redis.call(
            "ZRANGE", event_keys(event_id).line, 0, len(excluding), "WITHSCORES"
        )
        for member, score in _scored(raw):
            if member not in excluding:
                return int(score)
        return None

    async def prune_lines(self, event_ids: Sequence[int]) -> int:
        """Take out of the events' lines the requests whose markers are gone; returns how many.

        The scripts add and remove a request's marker and its place in line together, so only a
        marker that expired or was evicted leaves a place behind (or a worker of a version that
        knew no lines): it would count ahead of every later request for ever. Only the head of
        each line is looked at: such a place stays behind while the requests around it are
        settled, so it reaches the head. A marker once gone never comes back, so this cannot race
        with the scripts.
        """
        lines = [event_keys(event_id).line for event_id in event_ids]
        heads = [
            [_text(r) for r in raw]
            for raw in await self.redis.call_many(
                ("ZRANGE", line, 0, PRUNE_HEAD - 1) for line in lines
            )
        ]
        live = await self.pending_many(
            (r, event_id) for event_id, head in zip(event_ids, heads, strict=True) for r in head
        )
        gone = [
            (line, [r for r in head if r not in live])
            for line, head in zip(lines, heads, strict=True)
        ]
        commands = [("ZREM", line, *ids) for line, ids in gone if ids]
        return sum(int(n) for n in await self.redis.call_many(commands)) if commands else 0

    async def forget_unfinished(self, requests: Iterable[tuple[str, int]]) -> None:
        """Stop watching (request id, event id) pairs whose markers are gone (nothing is left
        to rebuild them)."""
        commands = [
            ("ZREM", event_keys(event_id).unfinished, *ids)
            for event_id, ids in _by_event(requests).items()
        ]
        if commands:
            await self.redis.call_many(commands)

    async def unfinished_before(self, before_ms: int, *, limit: int) -> list[tuple[str, int]]:
        """(request id, event id) of requests accepted and not final whose recovery time is
        before ``before_ms``, oldest first, from every registered event.

        Events with none left unfinished leave the registry on the way (``retire.lua``), so
        that it holds only events with requests in flight."""
        raw = await self.redis.call("ZRANGE", EVENTS_KEY, 0, -1)
        event_ids = [int(_text(e)) for e in raw]
        if not event_ids:
            return []
        replies = await self.redis.call_many(
            command
            for event in map(event_keys, event_ids)
            for command in (
                ("ZRANGEBYSCORE", event.unfinished, "-inf", f"({before_ms}", "WITHSCORES",
                 "LIMIT", 0, limit),
                ("ZCARD", event.unfinished),
            )
        )  # fmt: skip
        found: list[tuple[float, str, int]] = []
        idle: list[int] = []
        for i, event_id in enumerate(event_ids):
            due, count = replies[2 * i], replies[2 * i + 1]
            found.extend((score, member, event_id) for member, score in _scored(due))
            if int(count) == 0:
                idle.append(event_id)
        for event_id in idle:
            await self._retire(event_id)
        found.sort()
        return [(request_id, event_id) for _, request_id, event_id in found[:limit]]

    async def _retire(self, event_id: int) -> None:
        event = event_keys(event_id)
        registration = await _RETIRE.run(self.redis, [event.state, event.unfinished], [])
        if registration is not None:
            await _UNREGISTER.run(self.redis, [EVENTS_KEY], [event_id, _text(registration)])

    async def hold_unfinished(self, requests: Iterable[tuple[str, int]], until_ms: int) -> None:
        """Keep recovery away from these (request id, event id) pairs until ``until_ms``: a
        worker has them (the queue retries them on its own), or recovery just queued them
        again. Only requests still unfinished are touched."""
        commands = [
            ("ZADD", event_keys(event_id).unfinished, "XX",
             *[v for request_id in ids for v in (until_ms, request_id)])
            for event_id, ids in _by_event(requests).items()
        ]  # fmt: skip
        if commands:
            await self.redis.call_many(commands)

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """A best-effort lock that expires by itself (for periodic jobs, not for correctness)."""
        key = f"{KEY_PREFIX}lock:{name}"
        return await self.redis.call("SET", key, b"1", "NX", "PX", ttl_ms) is not None


def settle_rate(
    *, settled: float, span_s: float, at_ms: float, from_ms: float | None, now_ms: float
) -> float | None:
    """Requests per second, from the event's exponentially weighted count ``settled`` over the
    ``span_s`` seconds it took, both as of ``at_ms``; None if that is older than ``RATE_STALE_S``.

    ``from_ms`` is set while requests wait: the time since then, with nothing settled, weighs in
    as such, so that the rate falls when the workers stop rather than hold its last value.
    """
    if now_ms - at_ms > RATE_STALE_S * 1000 or settled <= 0:
        return None
    if from_ms is not None and now_ms > from_ms:
        waited_s = (now_ms - from_ms) / 1000
        keep = math.exp(-waited_s / RATE_TIME_CONSTANT_S)
        settled, span_s = settled * keep, span_s * keep + waited_s
    return settled / max(span_s, RATE_MIN_SPAN_S)


def _scored(reply: Sequence[Any]) -> list[tuple[str, float]]:
    """(member, score) pairs of a ``WITHSCORES`` reply: flat from one server, already paired
    by redis-py's cluster client."""
    if reply and isinstance(reply[0], list | tuple):
        return [(_text(pair[0]), float(pair[1])) for pair in reply]
    return [(_text(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def _fields(reply: Any) -> list[tuple[Any, Any]]:
    """(field, value) pairs of an ``HGETALL`` reply: flat from one server, a dict from
    redis-py's cluster client."""
    if isinstance(reply, dict):
        return list(reply.items())
    return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]


def _by_event(requests: Iterable[tuple[str, int]]) -> dict[int, list[str]]:
    by_event: dict[int, list[str]] = defaultdict(list)
    for request_id, event_id in requests:
        by_event[event_id].append(request_id)
    return by_event


def _parse_marker(request_id: str, text: str) -> PendingRequest:
    event_id, user_id, seq, accepted_at_ms, verdict, *quantity = text.split(":")
    return PendingRequest(
        request_id=request_id,
        event_id=int(event_id),
        user_id=int(user_id),
        seq=int(seq),
        accepted_at_ms=int(accepted_at_ms),
        admission=Admission(verdict),
        quantity=int(quantity[0]) if quantity else 1,
    )
