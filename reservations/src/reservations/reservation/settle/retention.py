"""The retention pass: a deployment that keeps its size as it lives.

Run by the workers every ``RETENTION_INTERVAL`` (60 s), one worker at a time, beside the
maintenance pass (``recovery.py``):

- ``forget_past_gates``: the gate (Redis) of an event that took place is dropped once none of its
  requests is in flight (or an hour after the event, whatever is counted): its state would
  otherwise stay in Redis for ever. The gate is a cache of PostgreSQL: a request that still comes
  for the event builds it again from PostgreSQL, and the next pass drops it again. The event's
  gate checkpoint goes with it (it is there to count requests lost with Redis, and nothing is in
  flight).
- ``drop_outcomes``: the outcomes of an event that took place more than
  ``RESERVATION_RETENTION_DAYS`` ago are deleted: its request rows and its reservations. The event
  row stays (closed, so that a late request is refused rather than sold a seat). Deleted in
  batches by the event's indexes, an event at a time, each batch its own short transaction.
  Left alone until the next pass: an event with a hold still running or requests in its waitlist
  (the maintenance pass ends those), and rows written less than 15 minutes ago (a request's
  message can still come back to a worker until then, and must find its row).
- ``drop_dead_letters``: dead letters of requests that are final (FAILED ones are kept for an
  operator) are deleted once older than the retention, so they do not add up for ever.

A status URL of a deleted outcome answers 410 ``OUTCOME_DELETED`` (``service.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.log import get_logger

from ..gate import AdmissionGate
from ..models import RequestStatus
from ..repository import ReservationRepository
from .recovery import DELIVERED_HOLD_MS

if TYPE_CHECKING:
    from brokerq import Channel
    from reservations.channels import ReserveEvent

__all__ = [
    "ENDED_GATE_GRACE",
    "RetentionReport",
    "drop_dead_letters",
    "drop_outcomes",
    "forget_past_gates",
    "retention_loop",
    "retention_pass",
]

log = get_logger(__name__)
T = TypeVar("T")

# A past event's gate goes after this even with requests counted in flight (a marker Redis lost
# would keep the count up for ever; by now a request in flight is long final or lost).
ENDED_GATE_GRACE = timedelta(hours=1)
# A row written more recently may still be needed by a redelivery of its request's message.
REDELIVERY_GUARD = timedelta(milliseconds=DELIVERED_HOLD_MS)
_EVENT_PAGE = 500
_EVENTS_PER_PASS = 50
_DELETE_BATCH = 5_000
_DEAD_PAGE = 1000

_PAST_EVENTS = text(
    """
    SELECT id, date FROM events
    WHERE date < now() AND date >= now() - CAST(:retention AS interval) AND id > :after
    ORDER BY id LIMIT :limit
    """
)

# Events past the retention that still have outcomes, and nothing running: no hold, no line.
_EXPIRED_EVENTS = text(
    """
    SELECT e.id FROM events e
    WHERE e.date < now() - CAST(:retention AS interval)
      AND (EXISTS (SELECT 1 FROM reservation_requests q WHERE q.event_id = e.id)
           OR EXISTS (SELECT 1 FROM reservations r WHERE r.event_id = e.id))
      AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.event_id = e.id AND r.status = 'HELD')
      AND NOT EXISTS (
          SELECT 1 FROM reservation_requests q WHERE q.event_id = e.id AND q.status = 'WAITING')
    ORDER BY e.date LIMIT :limit
    """
)

_CLOSE = text(
    "UPDATE events SET closed_at = coalesce(closed_at, now()), updated_at = now() WHERE id = :id"
)

_DELETE_REQUESTS = text(
    """
    DELETE FROM reservation_requests WHERE id IN (
        SELECT id FROM reservation_requests
        WHERE event_id = :event_id AND processed_at < now() - CAST(:guard AS interval)
          AND status NOT IN ('PENDING', 'WAITING')
        LIMIT :limit)
    """
)

_DELETE_RESERVATIONS = text(
    """
    DELETE FROM reservations WHERE id IN (
        SELECT id FROM reservations
        WHERE event_id = :event_id AND status <> 'HELD'
          AND coalesce(cancelled_at, reserved_at) < now() - CAST(:guard AS interval)
        LIMIT :limit)
    """
)

_DELETE_CHECKPOINTS = text("DELETE FROM gate_checkpoints WHERE event_id = ANY(CAST(:ids AS int[]))")


@dataclass(slots=True)
class RetentionReport:
    gates_forgotten: int = 0
    events_dropped: int = 0
    """Events whose outcomes were deleted (all of them, or what was old enough)."""
    requests_deleted: int = 0
    reservations_deleted: int = 0
    dead_letters_deleted: int = 0


async def forget_past_gates(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
) -> int:
    """Drop the gates of the events that took place (within the retention: older ones went with
    their outcomes) and have nothing in flight; returns how many were dropped."""
    forgotten = 0
    after = 0
    now = datetime.now(UTC)
    while True:
        async with session_factory() as session:
            rows = (
                await session.execute(
                    _PAST_EVENTS, {"retention": retention, "after": after, "limit": _EVENT_PAGE}
                )
            ).all()
        if not rows:
            break
        after = rows[-1].id
        counters = await gate.counters_many([row.id for row in rows])
        done = [
            row.id
            for row in rows
            if (found := counters[row.id]) is not None
            and (found.pending == 0 or row.date < now - ENDED_GATE_GRACE)
        ]
        for event_id in done:
            await gate.forget_event(event_id)
        if done:
            async with session_factory() as session, session.begin():
                await session.execute(_DELETE_CHECKPOINTS, {"ids": done})
        forgotten += len(done)
        if len(rows) < _EVENT_PAGE:
            break
    if forgotten:
        log.info("past_event_gates_dropped", count=forgotten)
    return forgotten


async def drop_outcomes(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
    report: RetentionReport | None = None,
) -> RetentionReport:
    """Delete the request rows and reservations of events that took place more than
    ``retention`` ago, in batches, up to ``_EVENTS_PER_PASS`` events a pass."""
    report = report or RetentionReport()
    async with session_factory() as session:
        event_ids = list(
            (
                await session.execute(
                    _EXPIRED_EVENTS, {"retention": retention, "limit": _EVENTS_PER_PASS}
                )
            ).scalars()
        )
    for event_id in event_ids:
        async with session_factory() as session, session.begin():
            await session.execute(_CLOSE, {"id": event_id})
            await session.execute(_DELETE_CHECKPOINTS, {"ids": [event_id]})
        # A request for the long-past event may have built its gate again.
        await gate.forget_event(event_id)
        report.requests_deleted += await _delete_batches(
            session_factory, _DELETE_REQUESTS, event_id
        )
        report.reservations_deleted += await _delete_batches(
            session_factory, _DELETE_RESERVATIONS, event_id
        )
        report.events_dropped += 1
    if event_ids:
        log.info(
            "outcomes_dropped",
            events=len(event_ids),
            requests=report.requests_deleted,
            reservations=report.reservations_deleted,
        )
    return report


async def _delete_batches(
    session_factory: async_sessionmaker[AsyncSession], statement: object, event_id: int
) -> int:
    deleted = 0
    while True:
        async with session_factory() as session, session.begin():
            result = await session.execute(
                statement,  # type: ignore[call-overload]
                {"event_id": event_id, "guard": REDELIVERY_GUARD, "limit": _DELETE_BATCH},
            )
        count = int(result.rowcount or 0)
        deleted += count
        if count < _DELETE_BATCH:
            return deleted


async def drop_dead_letters(
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
) -> int:
    """Delete the dead letters older than ``retention`` whose requests are final (FAILED ones
    included); returns how many. The oldest come first, so the scan stops at the first page
    that holds a younger one."""
    cutoff_ms = time.time_ns() // 1_000_000 - int(retention / timedelta(milliseconds=1))
    deleted = 0
    offset = 0
    while True:
        page = await channel.dead_letters(limit=_DEAD_PAGE, offset=offset)
        old = [letter for letter in page if letter.dead_at_ms < cutoff_ms]
        ids = list({letter.data.requestId for letter in old if letter.data is not None})
        async with session_factory() as session:
            rows = await ReservationRepository(session).requests(ids)
        final = {row.id for row in rows if row.status not in _NOT_FINAL}
        # An undecodable letter has no request to wait for.
        delete = [d.id for d in old if d.data is None or d.data.requestId in final]
        if delete:
            deleted += await channel.delete_dead(delete)
        if len(old) < len(page) or len(page) < _DEAD_PAGE:
            break
        offset += len(page) - len(delete)
    if deleted:
        log.info("dead_letters_dropped", count=deleted)
    return deleted


_NOT_FINAL = (RequestStatus.PENDING, RequestStatus.WAITING)


async def retention_pass(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
) -> RetentionReport:
    """One of each step, dead letters before the outcomes they are checked against; a step that
    fails is logged and the others still run."""
    report = RetentionReport()
    report.gates_forgotten = await _step(
        "past gates", forget_past_gates(gate, session_factory, retention=retention)
    )
    report.dead_letters_deleted = await _step(
        "dead letters", drop_dead_letters(channel, session_factory, retention=retention)
    )
    await _step(
        "outcomes", drop_outcomes(gate, session_factory, retention=retention, report=report)
    )
    return report


async def _step(name: str, run: Awaitable[T]) -> T | int:
    try:
        return await run
    except Exception as exc:
        log.warning("retention_step_failed", step=name, error=type(exc).__name__)
        return 0


async def retention_loop(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
    interval_s: float = 60.0,
) -> None:
    """Run ``retention_pass`` every ``interval_s``, in one worker at a time."""
    while True:
        await asyncio.sleep(interval_s)  # a period, not a wait for some condition
        try:
            if await gate.try_lock("retention", int(interval_s * 1000)):
                await retention_pass(gate, channel, session_factory, retention=retention)
        except Exception as exc:
            log.warning("retention_failed", error=type(exc).__name__)
