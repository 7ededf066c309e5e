"""The SQL of reservations and request outcomes, including the workers' batch write.

The batch write keeps the invariants in PostgreSQL, not in the caller: the outcome row keyed by the
request id is claimed first (a redelivered request finds it and changes nothing), event rows are
locked in id order, the ticket counter moves with a conditional UPDATE in the same transaction as
the reservation rows, a CHECK keeps it within capacity and a partial unique index keeps one live
reservation per user and event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import (
    LIVE_STATUSES,
    GateCheckpoint,
    GateRelease,
    RejectReason,
    RequestStatus,
    Reservation,
    ReservationRequest,
    ReservationStatus,
    ServiceKey,
)

__all__ = [
    "CapacityConflict",
    "ClaimRow",
    "Decision",
    "EndedHold",
    "EventLock",
    "HoldTimer",
    "ReservationRepository",
    "Winner",
]


# An IN list of at most this many ids per query.
_IN_CHUNK = 10_000


class CapacityConflict(RuntimeError):
    """The conditional ticket update matched fewer events than planned; the batch must roll back."""


@dataclass(frozen=True, slots=True)
class ClaimRow:
    request_id: str
    message_id: str | None
    """None for a failure recorded without its message (a dead letter may not have one)."""
    event_id: int
    user_id: int
    seq: int
    status: RequestStatus
    reason: RejectReason | None
    accepted_at: datetime
    error: str | None = None
    """The class of the error, for a FAILED outcome only."""
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    status: RequestStatus
    reason: RejectReason | None
    reservation_id: int | None


@dataclass(frozen=True, slots=True)
class EventLock:
    """A live event, locked for the rest of the transaction."""

    left: int
    """Seats not taken."""
    hold_seconds: int | None
    waitlist: bool = False
    closed: bool = False
    max_per_user: int = 1


@dataclass(frozen=True, slots=True)
class Winner:
    request_id: str
    event_id: int
    user_id: int
    hold_seconds: int | None
    """None: RESERVED at once; else HELD for this long."""
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class HoldTimer:
    """When a HELD reservation is due to expire."""

    reservation_id: int
    event_id: int
    expires_at: datetime
    due_in_ms: int
    """How long until then, by PostgreSQL's clock (the clock the expiry is checked against)."""


@dataclass(frozen=True, slots=True)
class EndedHold:
    """A hold that stopped taking a seat (expired or released)."""

    reservation_id: int
    event_id: int
    user_id: int
    holder: str
    quantity: int = 1


_CLAIM = text(
    """
    INSERT INTO reservation_requests
        (id, message_id, event_id, user_id, seq, status, reason, error, accepted_at, quantity)
    SELECT * FROM unnest(
        CAST(:ids AS varchar[]), CAST(:message_ids AS varchar[]), CAST(:event_ids AS int[]),
        CAST(:user_ids AS int[]), CAST(:seqs AS bigint[]), CAST(:statuses AS varchar[]),
        CAST(:reasons AS varchar[]), CAST(:errors AS varchar[]),
        CAST(:accepted AS timestamptz[]), CAST(:quantities AS int[]))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)

_ADD_RELEASES = text(
    """
    INSERT INTO gate_releases (event_id, user_id, holder)
    SELECT * FROM unnest(
        CAST(:event_ids AS int[]), CAST(:user_ids AS int[]), CAST(:holders AS varchar[]))
    RETURNING id
    """
)

_LOCK_EVENTS = text(
    """
    SELECT id, max_tickets, reserved, hold_seconds, waitlist, closed_at, max_per_user FROM events
    WHERE id = ANY(CAST(:ids AS int[])) AND deleted_at IS NULL
    ORDER BY id
    FOR UPDATE
    """
)

# FOR KEY SHARE: a user cannot be deleted under a reservation being written for them.
_LIVE_USERS = text(
    """
    SELECT id FROM users
    WHERE id = ANY(CAST(:ids AS int[])) AND deleted_at IS NULL
    ORDER BY id
    FOR KEY SHARE
    """
)

_HELD = text(
    """
    SELECT r.event_id, r.user_id FROM reservations r
    JOIN unnest(CAST(:event_ids AS int[]), CAST(:user_ids AS int[])) AS p(event_id, user_id)
      ON r.event_id = p.event_id AND r.user_id = p.user_id
    WHERE r.status IN ('HELD', 'RESERVED')
    """
)

# A hold's time runs from the transaction's start: at most the batch's write is taken off it.
_INSERT_RESERVATIONS = text(
    """
    INSERT INTO reservations (event_id, user_id, status, request_id, expires_at, quantity)
    SELECT e, u, CASE WHEN h IS NULL THEN 'RESERVED' ELSE 'HELD' END, r,
           now() + make_interval(secs => h), n
    FROM unnest(
        CAST(:event_ids AS int[]), CAST(:user_ids AS int[]), CAST(:request_ids AS varchar[]),
        CAST(:holds AS int[]), CAST(:quantities AS int[])) AS p(e, u, r, h, n)
    RETURNING id, request_id, expires_at,
        CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000 AS bigint) AS due_in_ms
    """
)

# The holds' rows first, in id order, then their events' (as a cancellation does): a batch write
# locks events and never an existing reservation, so no order of these can deadlock.
_END_HOLDS = text(
    """
    WITH ending AS (
        SELECT id FROM reservations
        WHERE id = ANY(CAST(:ids AS int[])) AND status = 'HELD'
          AND (NOT CAST(:due_only AS boolean) OR expires_at <= clock_timestamp())
        ORDER BY id
        FOR UPDATE
    )
    UPDATE reservations AS r SET status = CAST(:ended AS varchar), cancelled_at = now()
    FROM ending WHERE r.id = ending.id
    RETURNING r.id, r.event_id, r.user_id, r.request_id, r.quantity
    """
)

_LOCK_EVENT_ROWS = text(
    "SELECT id FROM events WHERE id = ANY(CAST(:ids AS int[])) ORDER BY id FOR UPDATE"
)

_GIVE_BACK = text(
    """
    UPDATE events AS e SET reserved = e.reserved - p.n, updated_at = now()
    FROM unnest(CAST(:event_ids AS int[]), CAST(:counts AS int[])) AS p(id, n)
    WHERE e.id = p.id
    """
)

_WAITING = text(
    """
    SELECT q.event_id, q.user_id FROM reservation_requests q
    JOIN unnest(CAST(:event_ids AS int[]), CAST(:user_ids AS int[])) AS p(event_id, user_id)
      ON q.event_id = p.event_id AND q.user_id = p.user_id
    WHERE q.status = 'WAITING' AND q.id <> ALL(CAST(:excluding AS varchar[]))
    """
)

# SKIP LOCKED is not wanted: the caller holds the event's lock, so no other promotion runs; a
# request leaving the line meanwhile is waited for, and then not taken.
_NEXT_WAITING = text(
    """
    SELECT id, user_id, seq, quantity FROM reservation_requests
    WHERE event_id = :event_id AND status = 'WAITING'
      AND (CAST(:below AS bigint) IS NULL OR seq < CAST(:below AS bigint))
    ORDER BY seq
    LIMIT :limit OFFSET :offset
    FOR UPDATE
    """
)

_END_WAITING = text(
    """
    UPDATE reservation_requests
    SET status = 'REJECTED', reason = CAST(:reason AS varchar), processed_at = now()
    WHERE status = 'WAITING' AND event_id = :event_id
    RETURNING id
    """
)

_LEAVE_LINE = text(
    """
    UPDATE reservation_requests
    SET status = 'REJECTED', reason = 'LEFT_LINE', processed_at = now()
    WHERE status = 'WAITING' AND id = :id
    RETURNING id
    """
)

_END_WAITING_PAST_EVENTS = text(
    """
    UPDATE reservation_requests AS q
    SET status = 'REJECTED', reason = 'EVENT_ENDED', processed_at = now()
    FROM events AS e
    WHERE q.status = 'WAITING' AND q.event_id = e.id AND e.date < now()
    RETURNING q.id
    """
)

_CONFIRM = text(
    """
    UPDATE reservations SET status = 'RESERVED', confirmed_at = now()
    WHERE id = :id AND status = 'HELD' AND expires_at > clock_timestamp()
    RETURNING confirmed_at
    """
)

_TAKE_TICKETS = text(
    """
    UPDATE events AS e SET reserved = e.reserved + p.n, updated_at = now()
    FROM unnest(CAST(:event_ids AS int[]), CAST(:counts AS int[])) AS p(id, n)
    WHERE e.id = p.id AND e.reserved + p.n <= e.max_tickets
    RETURNING e.id
    """
)

_RECORD = text(
    """
    UPDATE reservation_requests AS q
    SET status = p.status, reason = p.reason, reservation_id = p.reservation_id,
        processed_at = now()
    FROM unnest(CAST(:ids AS varchar[]), CAST(:statuses AS varchar[]),
                CAST(:reasons AS varchar[]), CAST(:reservation_ids AS int[]))
        AS p(id, status, reason, reservation_id)
    WHERE q.id = p.id
    """
)


class ReservationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- reading -----------------------------------------------------------------------------

    async def get(self, reservation_id: int, *, for_update: bool = False) -> Reservation | None:
        query = select(Reservation).where(Reservation.id == reservation_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def find_for(self, *, event_id: int, user_id: int) -> Reservation | None:
        """The live reservation of a user for an event, else their most recent cancelled one."""
        query = (
            select(Reservation)
            .where(Reservation.event_id == event_id, Reservation.user_id == user_id)
            .order_by(Reservation.status.in_(LIVE_STATUSES).desc(), Reservation.id.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_for_event(
        self, event_id: int, *, limit: int, offset: int, status: ReservationStatus | None
    ) -> tuple[list[Reservation], int]:
        conditions = [Reservation.event_id == event_id]
        if status is not None:
            conditions.append(Reservation.status == status)
        total = await self.session.scalar(
            select(func.count()).where(*conditions).select_from(Reservation)
        )
        rows = await self.session.execute(
            select(Reservation)
            .where(*conditions)
            .order_by(Reservation.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows.scalars()), int(total or 0)

    async def holders(self, event_id: int) -> dict[int, str]:
        """User id -> the request id of their live reservation ("db" for one made otherwise),
        with ``*<n>`` for n seats: the gate's form (``gate.py``)."""
        return (await self.holders_many([event_id]))[event_id]

    async def holders_many(self, event_ids: Sequence[int]) -> dict[int, dict[int, str]]:
        """``holders`` of several events, in one query."""
        rows = await self.session.execute(
            select(
                Reservation.event_id,
                Reservation.user_id,
                Reservation.request_id,
                Reservation.quantity,
            ).where(
                Reservation.event_id.in_(event_ids),
                Reservation.status.in_(LIVE_STATUSES),
            )
        )
        found: dict[int, dict[int, str]] = {event_id: {} for event_id in event_ids}
        for event_id, user_id, request_id, quantity in rows:
            holder = request_id or "db"
            found[event_id][user_id] = holder if quantity == 1 else f"{holder}*{quantity}"
        return found

    async def request(self, request_id: str) -> ReservationRequest | None:
        return await self.session.get(ReservationRequest, request_id)

    async def requests(self, request_ids: Sequence[str]) -> list[ReservationRequest]:
        found: list[ReservationRequest] = []
        for start in range(0, len(request_ids), _IN_CHUNK):
            rows = await self.session.execute(
                select(ReservationRequest).where(
                    ReservationRequest.id.in_(request_ids[start : start + _IN_CHUNK])
                )
            )
            found.extend(rows.scalars())
        return found

    async def request_stats(self, event_id: int) -> tuple[dict[tuple[str, str | None], int], int]:
        """Final outcomes of an event's requests by (status, reason), and the highest seq seen."""
        rows = await self.session.execute(
            select(ReservationRequest.status, ReservationRequest.reason, func.count())
            .where(ReservationRequest.event_id == event_id)
            .group_by(ReservationRequest.status, ReservationRequest.reason)
        )
        counts = {(status, reason): int(n) for status, reason, n in rows}
        last_seq = await self.session.scalar(
            select(func.coalesce(func.max(ReservationRequest.seq), 0)).where(
                ReservationRequest.event_id == event_id
            )
        )
        return counts, int(last_seq or 0)

    async def record_lost(
        self, *, request_id: str, event_id: int, user_id: int, accepted_at: datetime
    ) -> ReservationRequest:
        """Make LOST the final outcome of a request Redis lost, unless it has one already."""
        await self.session.execute(
            pg_insert(ReservationRequest)
            .values(
                id=request_id,
                event_id=event_id,
                user_id=user_id,
                seq=0,
                status=RequestStatus.LOST.value,
                accepted_at=accepted_at,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = await self.session.get(ReservationRequest, request_id, populate_existing=True)
        assert row is not None
        return row

    async def key(self, name: str) -> bytes | None:
        return await self.session.scalar(select(ServiceKey.value).where(ServiceKey.name == name))

    async def request_stats_many(
        self, event_ids: Sequence[int]
    ) -> dict[int, dict[tuple[str, str | None], int]]:
        """Final outcomes by (status, reason) of each event's requests."""
        rows = await self.session.execute(
            select(
                ReservationRequest.event_id,
                ReservationRequest.status,
                ReservationRequest.reason,
                func.count(),
            )
            .where(ReservationRequest.event_id.in_(event_ids))
            .group_by(
                ReservationRequest.event_id, ReservationRequest.status, ReservationRequest.reason
            )
        )
        stats: dict[int, dict[tuple[str, str | None], int]] = {e: {} for e in event_ids}
        for event_id, status, reason, n in rows:
            stats[event_id][(status, reason)] = int(n)
        return stats

    async def recently_checkpointed(self, *, since: datetime, limit: int) -> list[int]:
        """Events whose gate was seen since ``since``: the ones taking requests lately."""
        rows = await self.session.execute(
            select(GateCheckpoint.event_id)
            .where(GateCheckpoint.updated_at >= since)
            .order_by(GateCheckpoint.updated_at.desc())
            .limit(limit)
        )
        return list(rows.scalars())

    # -- the gate's checkpoints ------------------------------------------------------------------

    async def checkpoint(self, event_id: int) -> GateCheckpoint | None:
        return await self.session.get(GateCheckpoint, event_id)

    async def checkpoints(self, event_ids: Sequence[int]) -> dict[int, GateCheckpoint]:
        rows = await self.session.execute(
            select(GateCheckpoint).where(GateCheckpoint.event_id.in_(event_ids))
        )
        return {row.event_id: row for row in rows.scalars()}

    async def save_checkpoints(self, counters: Sequence[tuple[int, int, int]]) -> None:
        """(event id, accepted, seq) as the gate counts them; never moves a checkpoint back."""
        if not counters:
            return
        statement = pg_insert(GateCheckpoint).values(
            [{"event_id": e, "accepted": a, "seq": q} for e, a, q in counters]
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["event_id"],
                set_={
                    "accepted": func.greatest(GateCheckpoint.accepted, statement.excluded.accepted),
                    "seq": func.greatest(GateCheckpoint.seq, statement.excluded.seq),
                    "updated_at": func.now(),
                },
            )
        )

    # -- the gate's outbox ---------------------------------------------------------------------

    async def add_release(self, *, event_id: int, user_id: int, holder: str | None) -> int:
        release_id: int | None = await self.session.scalar(
            insert(GateRelease)
            .values(event_id=event_id, user_id=user_id, holder=holder)
            .returning(GateRelease.id)
        )
        assert release_id is not None
        return release_id

    async def add_releases(self, seats: Sequence[tuple[int, int, str]]) -> list[int]:
        """(event id, user id, holder) seats to release, in one statement; their outbox ids."""
        if not seats:
            return []
        result = await self.session.execute(
            _ADD_RELEASES,
            {
                "event_ids": [e for e, _, _ in seats],
                "user_ids": [u for _, u, _ in seats],
                "holders": [h for _, _, h in seats],
            },
        )
        return [row[0] for row in result]

    async def releases(self, *, limit: int) -> list[GateRelease]:
        """Releases not yet confirmed by the gate, oldest first; locked, skipping any another
        pass is applying."""
        rows = await self.session.execute(
            select(GateRelease)
            .order_by(GateRelease.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows.scalars())

    async def delete_releases(self, release_ids: Sequence[int]) -> None:
        if release_ids:
            await self.session.execute(delete(GateRelease).where(GateRelease.id.in_(release_ids)))

    # -- cancelling ----------------------------------------------------------------------------

    async def cancel(self, reservation: Reservation) -> bool:
        """Mark it cancelled and give its ticket back, both or neither."""
        result = await self.session.execute(
            update(Reservation)
            .where(Reservation.id == reservation.id, Reservation.status.in_(LIVE_STATUSES))
            .values(status=ReservationStatus.CANCELLED, cancelled_at=func.now())
            .returning(Reservation.cancelled_at)
        )
        row = result.first()
        if row is None:
            return False
        await self.session.execute(
            text(
                "UPDATE events SET reserved = reserved - :n, updated_at = now() "
                "WHERE id = :id AND reserved >= :n"
            ),
            {"id": reservation.event_id, "n": reservation.quantity},
        )
        reservation.status = ReservationStatus.CANCELLED
        reservation.cancelled_at = row[0]
        return True

    # -- the workers' batch ------------------------------------------------------------------

    async def claim(self, rows: Sequence[ClaimRow]) -> set[str]:
        """Insert the outcome rows; returns the ids that were new (the others are done already,
        and keep their outcome).

        A row is PENDING for the batch to decide, or already final: a gate rejection, or FAILED
        with its error for a request whose processing failed for good (``settle/failed.py``).
        A concurrent transaction claiming the same id makes this wait for it, then skip the id.
        """
        if not rows:
            return set()
        result = await self.session.execute(
            _CLAIM,
            {
                "ids": [r.request_id for r in rows],
                "message_ids": [r.message_id for r in rows],
                "event_ids": [r.event_id for r in rows],
                "user_ids": [r.user_id for r in rows],
                "seqs": [r.seq for r in rows],
                "statuses": [r.status.value for r in rows],
                "reasons": [r.reason.value if r.reason else None for r in rows],
                "errors": [r.error for r in rows],
                "accepted": [r.accepted_at for r in rows],
                "quantities": [r.quantity for r in rows],
            },
        )
        return {row[0] for row in result}

    async def lock_events(self, event_ids: Sequence[int]) -> dict[int, EventLock]:
        """Lock the live events among ``event_ids``, in id order."""
        result = await self.session.execute(_LOCK_EVENTS, {"ids": sorted(set(event_ids))})
        return {
            row.id: EventLock(
                row.max_tickets - row.reserved,
                row.hold_seconds,
                row.waitlist,
                row.closed_at is not None,
                row.max_per_user,
            )
            for row in result
        }

    async def live_users(self, user_ids: Sequence[int]) -> set[int]:
        result = await self.session.execute(_LIVE_USERS, {"ids": sorted(set(user_ids))})
        return {row[0] for row in result}

    async def held(self, pairs: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which (event id, user id) pairs already hold a live reservation."""
        if not pairs:
            return set()
        result = await self.session.execute(
            _HELD,
            {"event_ids": [e for e, _ in pairs], "user_ids": [u for _, u in pairs]},
        )
        return {(row[0], row[1]) for row in result}

    async def insert_reservations(
        self, winners: Sequence[Winner]
    ) -> dict[str, tuple[int, datetime | None, int | None]]:
        """Insert the winners' reservations (HELD for a winner with a hold time, else RESERVED)
        and take their tickets.

        Returns request id -> (reservation id, the hold's end or None, milliseconds until then by
        PostgreSQL's clock). Raises
        ``CapacityConflict`` if any event would go over capacity (which the caller's plan under
        the event locks rules out).
        """
        if not winners:
            return {}
        result = await self.session.execute(
            _INSERT_RESERVATIONS,
            {
                "request_ids": [w.request_id for w in winners],
                "event_ids": [w.event_id for w in winners],
                "user_ids": [w.user_id for w in winners],
                "holds": [w.hold_seconds for w in winners],
                "quantities": [w.quantity for w in winners],
            },
        )
        ids = {row.request_id: (row.id, row.expires_at, row.due_in_ms) for row in result}
        per_event: dict[int, int] = {}
        for winner in winners:
            per_event[winner.event_id] = per_event.get(winner.event_id, 0) + winner.quantity
        taken = await self.session.execute(
            _TAKE_TICKETS,
            {"event_ids": list(per_event), "counts": list(per_event.values())},
        )
        if len(taken.all()) != len(per_event):
            raise CapacityConflict(f"capacity exceeded for one of events {sorted(per_event)}")
        return ids

    # -- holds ---------------------------------------------------------------------------------

    async def confirm(self, reservation: Reservation) -> bool:
        """HELD -> RESERVED if the hold has not ended; the caller holds the row's lock."""
        confirmed_at = await self.session.scalar(_CONFIRM, {"id": reservation.id})
        if confirmed_at is None:
            return False
        reservation.status = ReservationStatus.RESERVED
        reservation.confirmed_at = confirmed_at
        return True

    async def end_holds(
        self, reservation_ids: Sequence[int], *, ended: ReservationStatus, due_only: bool
    ) -> list[EndedHold]:
        """End the HELD ones among ``reservation_ids`` (with ``due_only``, only those past their
        expiry by PostgreSQL's clock) and give their seats back; the rest are left alone."""
        if not reservation_ids:
            return []
        rows = await self.session.execute(
            _END_HOLDS,
            {"ids": sorted(set(reservation_ids)), "ended": ended.value, "due_only": due_only},
        )
        holds = [
            EndedHold(row.id, row.event_id, row.user_id, row.request_id or "db", row.quantity)
            for row in rows
        ]
        per_event: dict[int, int] = {}
        for hold in holds:
            per_event[hold.event_id] = per_event.get(hold.event_id, 0) + hold.quantity
        if per_event:
            await self.session.execute(_LOCK_EVENT_ROWS, {"ids": sorted(per_event)})
            await self.session.execute(
                _GIVE_BACK, {"event_ids": list(per_event), "counts": list(per_event.values())}
            )
        return holds

    # -- waitlists -----------------------------------------------------------------------------

    async def waiting(
        self, pairs: Sequence[tuple[int, int]], *, excluding: Sequence[str] = ()
    ) -> set[tuple[int, int]]:
        """Which (event id, user id) pairs have a request in the event's waitlist, other than
        the requests ``excluding``."""
        if not pairs:
            return set()
        result = await self.session.execute(
            _WAITING,
            {
                "event_ids": [e for e, _ in pairs],
                "user_ids": [u for _, u in pairs],
                "excluding": list(excluding),
            },
        )
        return {(row[0], row[1]) for row in result}

    async def next_waiting(
        self, event_id: int, *, limit: int, offset: int = 0, below_seq: int | None = None
    ) -> list[tuple[str, int, int]]:
        """(request id, user id, quantity) of the event's waitlist, in order, from its
        ``offset``-th, only those that arrived before ``below_seq``; locked."""
        rows = await self.session.execute(
            _NEXT_WAITING,
            {"event_id": event_id, "limit": limit, "offset": offset, "below": below_seq},
        )
        return [(row.id, row.user_id, row.quantity) for row in rows]

    async def lines_to_fill(self, *, limit: int) -> list[int]:
        """Open events with a waitlist, free seats and someone waiting."""
        rows = await self.session.execute(
            text(
                "SELECT e.id FROM events e WHERE e.waitlist AND e.closed_at IS NULL "
                "AND e.deleted_at IS NULL AND e.reserved < e.max_tickets AND EXISTS ("
                "SELECT 1 FROM reservation_requests q "
                "WHERE q.event_id = e.id AND q.status = 'WAITING') ORDER BY e.id LIMIT :limit"
            ),
            {"limit": limit},
        )
        return list(rows.scalars())

    async def waiting_position(self, event_id: int, seq: int) -> int:
        """1 for the first of the event's waitlist."""
        ahead = await self.session.scalar(
            select(func.count())
            .select_from(ReservationRequest)
            .where(
                ReservationRequest.event_id == event_id,
                ReservationRequest.status == RequestStatus.WAITING,
                ReservationRequest.seq < seq,
            )
        )
        return int(ahead or 0) + 1

    async def end_waiting(self, event_id: int, reason: RejectReason) -> list[str]:
        """Take every waiting request of the event out of its line, with ``reason`` as their
        final outcome; returns their ids."""
        rows = await self.session.execute(
            _END_WAITING, {"reason": reason.value, "event_id": event_id}
        )
        return list(rows.scalars())

    async def leave_line(self, request_id: str) -> bool:
        """LEFT_LINE for the request if it is waiting; False if it is not (any more)."""
        return (await self.session.execute(_LEAVE_LINE, {"id": request_id})).first() is not None

    async def end_waiting_past_events(self) -> list[str]:
        """EVENT_ENDED for every waiting request of an event that has taken place."""
        return list((await self.session.execute(_END_WAITING_PAST_EVENTS)).scalars())

    async def close_event(self, event_id: int) -> bool:
        """Close the sale (locks the event); False if there is no such live event."""
        row = await self.session.execute(
            text(
                "UPDATE events SET closed_at = coalesce(closed_at, now()), updated_at = now() "
                "WHERE id = :id AND deleted_at IS NULL RETURNING id"
            ),
            {"id": event_id},
        )
        return row.first() is not None

    async def holds(self, reservation_ids: Sequence[int]) -> list[HoldTimer]:
        """The ones among ``reservation_ids`` still HELD, with their ends."""
        if not reservation_ids:
            return []
        due_in_ms = func.extract("epoch", Reservation.expires_at - func.clock_timestamp()) * 1000
        rows = await self.session.execute(
            select(Reservation.id, Reservation.event_id, Reservation.expires_at, due_in_ms).where(
                Reservation.id.in_(reservation_ids), Reservation.status == ReservationStatus.HELD
            )
        )
        return [
            HoldTimer(r.id, r.event_id, r.expires_at, int(r[3]))
            for r in rows
            if r.expires_at is not None
        ]

    async def overdue_holds(self, *, late: float, limit: int) -> list[int]:
        """HELD reservations more than ``late`` seconds past their expiry, oldest first."""
        rows = await self.session.execute(
            select(Reservation.id)
            .where(
                Reservation.status == ReservationStatus.HELD,
                Reservation.expires_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, late),
            )
            .order_by(Reservation.expires_at)
            .limit(limit)
        )
        return list(rows.scalars())

    async def record(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        await self.session.execute(
            _RECORD,
            {
                "ids": [d.request_id for d in decisions],
                "statuses": [d.status.value for d in decisions],
                "reasons": [d.reason.value if d.reason else None for d in decisions],
                "reservation_ids": [d.reservation_id for d in decisions],
            },
        )
