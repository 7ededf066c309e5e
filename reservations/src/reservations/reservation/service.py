"""Reservation rules that are not the hot path: reading reservations and request outcomes,
counting an event's outcomes, cancelling, and confirming or releasing holds (a seat given back
reaches the gate through the outbox, ``releases.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.errors import Conflict, Forbidden, Gone, NotFound, Unauthorized
from reservations.event.service import EventService
from reservations.log import get_logger

from .gate import AdmissionGate, GateCounters
from .models import RejectReason, RequestStatus, Reservation, ReservationRequest, ReservationStatus
from .repository import ReservationRepository
from .request_ids import RequestIds
from .schemas import EventOutcomes, RequestOutcome
from .settle.holds import schedule
from .waitlist import Filled, fill, granted

if TYPE_CHECKING:
    from brokerq import Channel
    from reservations.channels import HoldExpiry

__all__ = [
    "OutcomeDeleted",
    "RequestLost",
    "ReservationService",
    "SeatBack",
    "event_outcomes",
    "load_request_ids",
]

log = get_logger(__name__)


class ReservationService:
    def __init__(
        self,
        session: AsyncSession,
        gate: AdmissionGate,
        request_ids: RequestIds | None = None,
        *,
        timers: Channel[HoldExpiry] | None = None,
        retention: timedelta | None = None,
    ) -> None:
        self.session = session
        # How long after its event an outcome is kept (``settle/retention.py``); None: for ever.
        self.retention = retention
        self.gate = gate
        self.request_ids = request_ids
        # Where the timers of holds given from a waitlist go (a seat freed here may make one).
        self.timers = timers
        self.repository = ReservationRepository(session)

    # -- reading -------------------------------------------------------------------------------

    async def find_for(self, *, event_id: int, user_id: int) -> Reservation:
        reservation = await self.repository.find_for(event_id=event_id, user_id=user_id)
        if reservation is None:
            raise NotFound(f"user {user_id} has no reservation for event {event_id}")
        return reservation

    async def get(self, reservation_id: int) -> Reservation:
        reservation = await self.repository.get(reservation_id)
        if reservation is None:
            raise NotFound(f"reservation {reservation_id} does not exist")
        return reservation

    async def list_for_event(
        self, event_id: int, *, limit: int, offset: int, status: ReservationStatus | None = None
    ) -> tuple[list[Reservation], int]:
        await EventService(self.session).get(event_id)
        return await self.repository.list_for_event(
            event_id, limit=limit, offset=offset, status=status
        )

    async def outcome(self, request_id: str) -> RequestOutcome:
        if "\x00" in request_id:
            # PostgreSQL text cannot hold NUL, so no request has such an id; asking the database
            # would fail with a 500.
            raise NotFound(f"no reservation request with job id {request_id!r}")
        # Only ids this service issued name an event, where their markers are.
        issued = None if self.request_ids is None else self.request_ids.verify(request_id)
        # The pending marker first: a worker removes it only after committing the outcome, so
        # reading in this order never misses a request in between.
        pending = None if issued is None else await self.gate.pending(issued.event_id, request_id)
        # Its place before PostgreSQL too: a request that leaves the line meanwhile is final there.
        place = None if pending is None else await self.gate.place(pending.event_id, request_id)
        row = await self.repository.request(request_id)
        if row is None and pending is not None:
            wait_s = None if place is None else place.wait_s
            return RequestOutcome(
                job_id=request_id, user_id=pending.user_id, event_id=pending.event_id,
                status=RequestStatus.PENDING, reason=None, reservation_id=None, seq=pending.seq,
                quantity=pending.quantity,
                position=None if place is None else place.position,
                estimated_wait_seconds=None if wait_s is None else round(wait_s, 3),
            )  # fmt: skip
        if row is None:
            if issued is None:
                raise NotFound(f"no reservation request with job id {request_id!r}")
            await self._check_not_deleted(request_id, issued.event_id)
            # Ours, accepted, and neither queued nor final: Redis lost it. Recorded, so that the
            # answer stays the same and the loss is counted.
            row = await self.repository.record_lost(
                request_id=request_id, event_id=issued.event_id, user_id=issued.user_id,
                accepted_at=datetime.fromtimestamp(issued.accepted_at_ms / 1000, tz=UTC),
            )  # fmt: skip
            log.warning("reservation_request_lost", request_id=request_id, event_id=row.event_id)
        if row.status == RequestStatus.LOST:
            raise RequestLost(row)
        if row.status == RequestStatus.WAITING:
            return RequestOutcome(
                job_id=row.id, user_id=row.user_id, event_id=row.event_id,
                status=RequestStatus.WAITING, seq=row.seq, quantity=row.quantity,
                position=await self.repository.waiting_position(row.event_id, row.seq),
            )  # fmt: skip
        hold = None
        if row.status == RequestStatus.HELD and row.reservation_id is not None:
            hold = await self.repository.get(row.reservation_id)
        return RequestOutcome(
            job_id=row.id, user_id=row.user_id, event_id=row.event_id,
            status=RequestStatus(row.status),
            reason=RejectReason(row.reason) if row.reason else None,
            reservation_id=row.reservation_id, seq=row.seq, error=row.error,
            quantity=row.quantity,
            reservation_status=None if hold is None else ReservationStatus(hold.status),
            hold_expires_at=None if hold is None else hold.expires_at,
        )  # fmt: skip

    async def _check_not_deleted(self, request_id: str, event_id: int) -> None:
        """Raise ``OutcomeDeleted`` when the request's event took place longer ago than outcomes
        are kept: its outcome was deleted, not lost (nor recorded lost now)."""
        if self.retention is None:
            return
        event = await EventService(self.session).find(event_id)
        if event is not None and event.date < datetime.now(UTC) - self.retention:
            raise OutcomeDeleted(request_id, event_id, self.retention)

    async def outcomes(self, event_id: int) -> EventOutcomes:
        await EventService(self.session).get(event_id)
        # Redis before PostgreSQL: a request finishing in between is then counted as final and
        # as pending (lost would go negative, and is clamped), never as neither (a false loss).
        counters = await self.gate.counters(event_id)
        counts, _ = await self.repository.request_stats(event_id)
        return event_outcomes(event_id, counters, counts)

    async def outcomes_many(self, event_ids: Sequence[int]) -> dict[int, EventOutcomes]:
        """``outcomes`` of several events at once (events the gate does not know count as seen
        by PostgreSQL alone)."""
        counters = await self.gate.counters_many(event_ids)
        stats = await self.repository.request_stats_many(event_ids)
        return {e: event_outcomes(e, counters[e], stats[e]) for e in event_ids}

    async def lost_recently(self, *, within: timedelta = timedelta(days=1)) -> int:
        """Requests lost with Redis among the events that took requests within ``within``."""
        since = datetime.now(UTC) - within
        event_ids = await self.repository.recently_checkpointed(since=since, limit=1000)
        if not event_ids:
            return 0
        return sum(o.lost for o in (await self.outcomes_many(event_ids)).values())

    # -- cancelling ----------------------------------------------------------------------------

    async def cancel(self, reservation_id: int) -> tuple[Reservation, SeatBack]:
        """Cancel in the database, with the gate's release in the same transaction's outbox; the
        seat goes to the head of the event's waitlist, if it has one.

        The caller commits, then calls ``handed_back`` with what this returns.
        """
        reservation = await self.repository.get(reservation_id, for_update=True)
        if reservation is None:
            raise NotFound(f"reservation {reservation_id} does not exist")
        if not await self.repository.cancel(reservation):
            raise Conflict(f"reservation {reservation_id} is already {reservation.status}")
        release_id = await self.repository.add_release(
            event_id=reservation.event_id,
            user_id=reservation.user_id,
            holder=reservation.request_id or "db",
        )
        return reservation, SeatBack([release_id], await self._fill(reservation.event_id))

    async def _fill(self, event_id: int) -> Filled:
        filled = await fill(self.repository, self.gate, [event_id])
        if self.timers is not None:
            await schedule(self.timers, filled.timers)
        return filled

    # -- waitlists -----------------------------------------------------------------------------

    async def leave_line(self, request_id: str) -> RequestOutcome:
        """Take a waiting request out of its event's line: REJECTED with reason LEFT_LINE. Its
        id is the proof of being its sender (it is given only in the 202 answer)."""
        if not await self.repository.leave_line(request_id):
            outcome = await self.outcome(request_id)  # 404 / 410 for an id that is not waiting
            raise Conflict(
                f"reservation request {request_id} is {outcome.status}, not WAITING: only a "
                "request in a waitlist can leave it"
                + (" (release its hold instead)" if outcome.status == RequestStatus.HELD else "")
            )
        return await self.outcome(request_id)

    async def close(self, event_id: int) -> list[str]:
        """Close the event's sale: no more seats are given, and its waiting requests end with
        EVENT_CLOSED (returned). Holds and reservations already made stay."""
        if not await self.repository.close_event(event_id):
            raise NotFound(f"event {event_id} does not exist")
        return await self.repository.end_waiting(event_id, RejectReason.EVENT_CLOSED)

    # -- holds ---------------------------------------------------------------------------------

    async def confirm(self, reservation_id: int, *, token: str | None, admin: bool) -> Reservation:
        """HELD -> RESERVED, by its holder (or an operator), before the hold ends. Confirming a
        confirmed hold again changes nothing (a client's retry)."""
        reservation = await self._hold(reservation_id, token=token, admin=admin)
        if reservation.status == ReservationStatus.RESERVED and reservation.confirmed_at:
            return reservation
        if reservation.status == ReservationStatus.EXPIRED:
            raise Conflict(
                f"the hold of reservation {reservation_id} ended at "
                f"{_iso(reservation.expires_at)}, unconfirmed; its seat went back on sale"
            )
        if reservation.status != ReservationStatus.HELD:
            raise Conflict(
                f"reservation {reservation_id} is {reservation.status}: only a HELD reservation "
                "can be confirmed"
            )
        if not await self.repository.confirm(reservation):
            raise Conflict(
                f"the hold of reservation {reservation_id} ended at "
                f"{_iso(reservation.expires_at)}; its seat is back on sale"
            )
        return reservation

    async def release(
        self, reservation_id: int, *, token: str | None, admin: bool
    ) -> tuple[Reservation, SeatBack]:
        """HELD -> RELEASED, by its holder (or an operator): the seat goes to the head of the
        event's waitlist, or back on sale. The caller commits, then calls ``handed_back`` with
        what this returns."""
        reservation = await self._hold(reservation_id, token=token, admin=admin)
        if reservation.status != ReservationStatus.HELD:
            raise Conflict(
                f"reservation {reservation_id} is {reservation.status}: only a HELD reservation "
                "can be released"
            )
        ended = await self.repository.end_holds(
            [reservation_id], ended=ReservationStatus.RELEASED, due_only=False
        )
        # The row's lock is ours since ``_hold``: it cannot have changed in between.
        assert [h.reservation_id for h in ended] == [reservation_id]
        seats = [(h.event_id, h.user_id, h.holder) for h in ended]
        release_ids = await self.repository.add_releases(seats)
        await self.session.refresh(reservation)
        return reservation, SeatBack(release_ids, await self._fill(reservation.event_id))

    async def _hold(self, reservation_id: int, *, token: str | None, admin: bool) -> Reservation:
        """The reservation, locked, if the caller is its holder (or an operator)."""
        reservation = await self.repository.get(reservation_id, for_update=True)
        if reservation is None:
            raise NotFound(f"reservation {reservation_id} does not exist")
        if admin:
            return reservation
        if token is None:
            raise Unauthorized(
                "send the Hold-Token header given in your reservation request's 202 answer "
                "(holdToken), or the admin token"
            )
        if (
            self.request_ids is None
            or reservation.request_id is None
            or not self.request_ids.check_hold_token(reservation.request_id, token)
        ):
            raise Forbidden(f"this Hold-Token is not the one of reservation {reservation_id}")
        return reservation

    async def handed_back(self, reservation: Reservation, back: SeatBack) -> None:
        """After the commit that freed its seat: let the next arrival have it (or the gate
        count whom the waitlist gave it to).

        If Redis does not confirm, the release stays in the outbox and the workers' maintenance
        pass applies it once Redis answers (``reconcile.apply_releases``).
        """
        try:
            await granted(self.gate, back.filled.grants)
            await self.gate.release(
                event_id=reservation.event_id,
                user_id=reservation.user_id,
                request_id=reservation.request_id or "db",
            )
            await self.repository.delete_releases(back.release_ids)
            await self.session.commit()
        except Exception as exc:
            log.warning(
                "admission_release_deferred",
                reservation_id=reservation.id,
                error=type(exc).__name__,
            )


@dataclass(frozen=True, slots=True)
class SeatBack:
    """A seat freed in a transaction: its release in the gate's outbox, and whom the event's
    waitlist gave it to."""

    release_ids: list[int]
    filled: Filled


def _iso(moment: datetime | None) -> str:
    return "an unknown time" if moment is None else moment.isoformat()


class RequestLost(Gone):
    """A request this service accepted and Redis lost before it was processed."""

    code = "REQUEST_LOST"

    def __init__(self, row: ReservationRequest) -> None:
        accepted_at = row.accepted_at.isoformat()
        super().__init__(
            f"reservation request {row.id} (user {row.user_id}, event {row.event_id}, accepted "
            f"at {accepted_at}) was lost by the queue's storage before it was processed: it "
            "holds no place and will not be processed; send it again"
        )
        self.details = {
            "jobId": row.id,
            "userId": row.user_id,
            "eventId": row.event_id,
            "status": RequestStatus.LOST.value,
            "acceptedAt": accepted_at,
        }


class OutcomeDeleted(Gone):
    """A request of an event that took place longer ago than outcomes are kept: its outcome
    was deleted with the event's other outcomes."""

    code = "OUTCOME_DELETED"

    def __init__(self, request_id: str, event_id: int, retention: timedelta) -> None:
        days = retention / timedelta(days=1)
        super().__init__(
            f"reservation request {request_id} was for event {event_id}, which took place more "
            f"than {days:g} days ago: its outcome is no longer kept (RESERVATION_RETENTION_DAYS)"
        )
        self.details = {"jobId": request_id, "eventId": event_id}


def event_outcomes(
    event_id: int,
    counters: GateCounters | None,
    counts: dict[tuple[str, str | None], int],
) -> EventOutcomes:
    """An event's outcome counts from the gate's counters and PostgreSQL's final outcomes.

    Lost requests are those the gate counted as accepted that are neither final nor pending
    (Redis lost them), or at least as many as clients found lost by asking.
    """
    final = lost_seen = reserved = held = waiting = 0
    by_reason: dict[str, int] = {}
    for (status, reason), n in counts.items():
        if status == RequestStatus.LOST:
            lost_seen += n
            continue
        if status == RequestStatus.WAITING:
            waiting += n
            continue
        final += n
        if status == RequestStatus.RESERVED:
            reserved += n
        elif status == RequestStatus.HELD:
            held += n
        else:
            key = reason or "UNKNOWN"
            by_reason[key] = by_reason.get(key, 0) + n
    pending = counters.pending if counters else 0
    accepted = counters.accepted if counters else 0
    lost = max(lost_seen, accepted - final - pending - waiting)
    return EventOutcomes(
        event_id=event_id, accepted=final + pending + waiting + lost, final=final, pending=pending,
        waiting=waiting,
        lost=lost, reserved=reserved, held=held, rejected=final - reserved - held,
        by_reason=by_reason,
    )  # fmt: skip


async def load_request_ids(session_factory: async_sessionmaker[AsyncSession]) -> RequestIds:
    async with session_factory() as session:
        key = await ReservationRepository(session).key("request_id")
    if key is None:
        raise RuntimeError("the request id key is missing: run the migrations")
    return RequestIds(key)
