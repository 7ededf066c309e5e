"""Reservation rules: accepting requests at the API, and finishing them in the workers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.cache import remember_user
from reservations.channels import Admission, ReserveEvent
from reservations.errors import Conflict, Gone, NotFound, Unavailable
from reservations.events.service import EventService
from reservations.log import get_logger
from reservations.observability.tracing import produce_span
from reservations.outage import outage_of
from reservations.users.service import UserService

from .admission import (
    LOSS_SEQ_GAP,
    AdmissionGate,
    EventSnapshot,
    GateCounters,
    GateResult,
    Verdict,
)
from .models import RejectReason, RequestStatus, Reservation, ReservationRequest, ReservationStatus
from .repository import ClaimRow, Decision, ReservationRepository
from .request_ids import RequestIds
from .schemas import EventOutcomes, RequestOutcome

if TYPE_CHECKING:
    from brokerq.channel import Channel

__all__ = ["Accepted", "Incoming", "ReservationService", "load_request_ids", "process_batch"]

log = get_logger(__name__)

_ADMISSION_REASON = {
    Admission.SOLD_OUT: RejectReason.SOLD_OUT,
    Admission.DUPLICATE: RejectReason.DUPLICATE,
}


@dataclass(frozen=True, slots=True)
class Accepted:
    request_id: str
    message_id: str
    event_id: int
    user_id: int
    accepted_at_ms: int
    admission: Admission
    seq: int


class ReservationService:
    def __init__(
        self,
        session: AsyncSession,
        gate: AdmissionGate,
        channel: Channel[ReserveEvent] | None = None,
        request_ids: RequestIds | None = None,
    ) -> None:
        self.session = session
        self.gate = gate
        self.channel = channel
        self.request_ids = request_ids
        self.repository = ReservationRepository(session)

    @classmethod
    async def accept(
        cls,
        session_factory: async_sessionmaker[AsyncSession],
        gate: AdmissionGate,
        channel: Channel[ReserveEvent],
        request_ids: RequestIds,
        *,
        event_id: int,
        user_id: int,
    ) -> Accepted:
        """``request`` without a session up front: the hot path usually needs no database."""
        async with _LazySession(session_factory) as session:
            service = cls(session, gate, channel, request_ids)
            return await service.request(event_id=event_id, user_id=user_id)

    # -- accepting -----------------------------------------------------------------------------

    async def request(self, *, event_id: int, user_id: int) -> Accepted:
        """Decide the request's place at the gate and queue it; PostgreSQL is read only when the
        gate does not know the user or the event yet."""
        assert self.channel is not None, "accepting requests needs the reservation channel"
        assert self.request_ids is not None, "accepting requests needs the request id key"
        accepted_at_ms = time.time_ns() // 1_000_000
        request_id = self.request_ids.new(
            event_id=event_id, user_id=user_id, accepted_at_ms=accepted_at_ms
        )
        try:
            result = await self._admit(event_id, user_id, request_id, accepted_at_ms)
        except Exception as exc:
            server = outage_of(exc)
            if server is None:
                raise
            raise Unavailable(
                f"{server} is unavailable right now; the request was not accepted, try again"
            ) from exc
        admission = result.verdict.admission()
        message = ReserveEvent(
            userId=user_id, eventId=event_id, requestId=request_id, admission=admission,
            seq=result.seq, acceptedAtMs=accepted_at_ms,
        )  # fmt: skip
        try:
            # The trace context travels in the message's headers to the worker.
            with produce_span(self.channel.name) as headers:
                produced = await self.channel.produce(message, headers=headers)
        except Exception as exc:
            # Not queued means not accepted: hand the place back so no ticket is held for nobody.
            log.error("reservation_queue_failed", request_id=request_id, error=type(exc).__name__)
            try:
                await self.gate.undo(event_id=event_id, user_id=user_id, request_id=request_id)
            except Exception as undo_exc:
                log.error(
                    "admission_undo_failed", request_id=request_id, error=type(undo_exc).__name__
                )
            raise Unavailable(
                "the reservation queue is unavailable; the request was not accepted"
            ) from exc
        return Accepted(
            request_id=request_id, message_id=produced.id, event_id=event_id, user_id=user_id,
            accepted_at_ms=accepted_at_ms, admission=admission, seq=result.seq,
        )  # fmt: skip

    async def _admit(
        self, event_id: int, user_id: int, request_id: str, accepted_at_ms: int
    ) -> GateResult:
        result = None
        for _ in range(3):
            result = await self.gate.admit(
                event_id=event_id, user_id=user_id, request_id=request_id,
                accepted_at_ms=accepted_at_ms,
            )  # fmt: skip
            if result.verdict is Verdict.NO_USER:
                if not await UserService(self.session).exists(user_id):
                    raise NotFound(f"user {user_id} does not exist")
                await remember_user(self.gate.redis, user_id)
            elif result.verdict is Verdict.NO_EVENT:
                if not await self.gate.seed_once(event_id, lambda: self.snapshot(event_id)):
                    raise NotFound(f"event {event_id} does not exist")
            else:
                break
        assert result is not None
        if result.verdict in (Verdict.NO_USER, Verdict.NO_EVENT):
            raise Unavailable("the admission state keeps disappearing; try again")
        return result

    async def snapshot(self, event_id: int) -> EventSnapshot | None:
        """The gate state of an event as PostgreSQL knows it.

        With a checkpoint, the gate existed before and Redis lost it: the rebuilt gate counts on
        from the checkpoint (the requests lost with Redis stay counted as accepted, so they show
        as lost rather than vanish) and numbers new requests past any the lost gate handed out.
        """
        event = await EventService(self.session).find(event_id)
        if event is None:
            return None
        holders = await self.repository.holders(event_id)
        counts, last_seq = await self.repository.request_stats(event_id)
        checkpoint = await self.repository.checkpoint(event_id)
        accepted = sum(counts.values())
        if checkpoint is not None:
            accepted = max(accepted, checkpoint.accepted)
            last_seq = max(last_seq, checkpoint.seq) + LOSS_SEQ_GAP
            log.warning(
                "admission_gate_rebuilt_after_loss",
                event_id=event_id,
                checkpoint_accepted=checkpoint.accepted,
                final=sum(counts.values()),
            )
        return EventSnapshot(
            capacity=event.max_tickets, holders=holders, last_seq=last_seq, accepted=accepted
        )

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
        # The pending marker first: a worker removes it only after committing the outcome, so
        # reading in this order never misses a request in between.
        pending = await self.gate.pending(request_id)
        row = await self.repository.request(request_id)
        if row is None and pending is not None:
            return RequestOutcome(
                job_id=request_id, user_id=pending.user_id, event_id=pending.event_id,
                status=RequestStatus.PENDING, reason=None, reservation_id=None, seq=pending.seq,
            )  # fmt: skip
        if row is None:
            issued = None if self.request_ids is None else self.request_ids.verify(request_id)
            if issued is None:
                raise NotFound(f"no reservation request with job id {request_id!r}")
            # Ours, accepted, and neither queued nor final: Redis lost it. Recorded, so that the
            # answer stays the same and the loss is counted.
            row = await self.repository.record_lost(
                request_id=request_id, event_id=issued.event_id, user_id=issued.user_id,
                accepted_at=datetime.fromtimestamp(issued.accepted_at_ms / 1000, tz=UTC),
            )  # fmt: skip
            log.warning("reservation_request_lost", request_id=request_id, event_id=row.event_id)
        if row.status == RequestStatus.LOST:
            raise RequestLost(row)
        return RequestOutcome(
            job_id=row.id, user_id=row.user_id, event_id=row.event_id,
            status=RequestStatus(row.status),
            reason=RejectReason(row.reason) if row.reason else None,
            reservation_id=row.reservation_id, seq=row.seq,
        )  # fmt: skip

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

    async def cancel(self, reservation_id: int) -> tuple[Reservation, int]:
        """Cancel in the database, with the gate's release in the same transaction's outbox.

        The caller commits, then calls ``cancelled`` with the returned release id.
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
        return reservation, release_id

    async def cancelled(self, reservation: Reservation, release_id: int) -> None:
        """After the commit: let the next arrival have the ticket.

        If Redis does not confirm, the release stays in the outbox and the workers' maintenance
        pass applies it once Redis answers (``reconcile.apply_releases``).
        """
        try:
            await self.gate.release(
                event_id=reservation.event_id,
                user_id=reservation.user_id,
                request_id=reservation.request_id or "db",
            )
            await self.repository.delete_releases([release_id])
            await self.session.commit()
        except Exception as exc:
            log.warning(
                "admission_release_deferred",
                reservation_id=reservation.id,
                error=type(exc).__name__,
            )


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


def event_outcomes(
    event_id: int,
    counters: GateCounters | None,
    counts: dict[tuple[str, str | None], int],
) -> EventOutcomes:
    """An event's outcome counts from the gate's counters and PostgreSQL's final outcomes.

    Lost requests are those the gate counted as accepted that are neither final nor pending
    (Redis lost them), or at least as many as clients found lost by asking.
    """
    final = lost_seen = reserved = 0
    by_reason: dict[str, int] = {}
    for (status, reason), n in counts.items():
        if status == RequestStatus.LOST:
            lost_seen += n
            continue
        final += n
        if status == RequestStatus.RESERVED:
            reserved += n
        else:
            key = reason or "UNKNOWN"
            by_reason[key] = by_reason.get(key, 0) + n
    pending = counters.pending if counters else 0
    accepted = counters.accepted if counters else 0
    lost = max(lost_seen, accepted - final - pending)
    return EventOutcomes(
        event_id=event_id, accepted=final + pending + lost, final=final, pending=pending,
        lost=lost, reserved=reserved, rejected=final - reserved, by_reason=by_reason,
    )  # fmt: skip


async def load_request_ids(session_factory: async_sessionmaker[AsyncSession]) -> RequestIds:
    async with session_factory() as session:
        key = await ReservationRepository(session).key("request_id")
    if key is None:
        raise RuntimeError("the request id key is missing: run the migrations")
    return RequestIds(key)


class _LazySession:
    """An ``AsyncSession`` that costs nothing unless used: connection checkout happens on first
    use anyway, but creating and closing the session object shows up at thousands per second."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        return cast("AsyncSession", self)

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._factory()
        return getattr(self._session, name)

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()


# -- the workers' side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    message_id: str
    data: ReserveEvent


async def process_batch(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    batch: Sequence[Incoming],
) -> dict[str, Decision]:
    """Finish a batch of requests in one transaction; returns the decision per request id.

    Requests already finished (redeliveries) are not changed; their recorded decision is returned.
    """
    unique: dict[str, Incoming] = {}
    for item in batch:
        unique.setdefault(item.data.requestId, item)
    items = list(unique.values())

    async with session_factory() as session, session.begin():
        repository = ReservationRepository(session)
        claimed = await repository.claim([_claim_row(item) for item in items])
        fresh = [item for item in items if item.data.requestId in claimed]
        decisions = await _decide(repository, fresh)
        # Gate rejections were claimed with their final outcome; only admitted ones changed.
        await repository.record(
            [decisions[i.data.requestId] for i in fresh if i.data.admission is Admission.ADMITTED]
        )

    done_before = [item.data.requestId for item in items if item.data.requestId not in claimed]
    if done_before:
        async with session_factory() as session:
            for row in await ReservationRepository(session).requests(done_before):
                decisions[row.id] = Decision(
                    request_id=row.id, status=RequestStatus(row.status),
                    reason=RejectReason(row.reason) if row.reason else None,
                    reservation_id=row.reservation_id,
                )  # fmt: skip

    await _after_commit(gate, items, decisions)
    return decisions


def _claim_row(item: Incoming) -> ClaimRow:
    data = item.data
    reason = _ADMISSION_REASON.get(data.admission)
    return ClaimRow(
        request_id=data.requestId,
        message_id=item.message_id,
        event_id=data.eventId,
        user_id=data.userId,
        seq=data.seq,
        status=RequestStatus.REJECTED if reason else RequestStatus.PENDING,
        reason=reason,
        accepted_at=datetime.fromtimestamp(data.acceptedAtMs / 1000, tz=UTC),
    )


async def _decide(
    repository: ReservationRepository, fresh: Sequence[Incoming]
) -> dict[str, Decision]:
    decisions: dict[str, Decision] = {}
    admitted: list[Incoming] = []
    for item in fresh:
        gate_reason = _ADMISSION_REASON.get(item.data.admission)
        if gate_reason is None:
            admitted.append(item)
        else:
            decisions[item.data.requestId] = Decision(
                item.data.requestId, RequestStatus.REJECTED, gate_reason, None
            )
    if not admitted:
        return decisions

    # Locks first (events in id order), then reads: the plan below cannot be invalidated.
    left = await repository.lock_events([i.data.eventId for i in admitted])
    users = await repository.live_users([i.data.userId for i in admitted])
    held = await repository.held([(i.data.eventId, i.data.userId) for i in admitted])

    winners: list[tuple[str, int, int]] = []
    for item in sorted(admitted, key=lambda i: (i.data.eventId, i.data.seq)):
        data = item.data
        pair = (data.eventId, data.userId)
        if data.eventId not in left:
            reason: RejectReason | None = RejectReason.UNKNOWN_EVENT
        elif data.userId not in users:
            reason = RejectReason.UNKNOWN_USER
        elif pair in held:
            reason = RejectReason.DUPLICATE
        elif left[data.eventId] <= 0:
            reason = RejectReason.SOLD_OUT
        else:
            reason = None
            held.add(pair)
            left[data.eventId] -= 1
            winners.append((data.requestId, data.eventId, data.userId))
        if reason is not None:
            decisions[data.requestId] = Decision(
                data.requestId, RequestStatus.REJECTED, reason, None
            )

    reservation_ids = await repository.insert_reservations(winners)
    for request_id, _, _ in winners:
        decisions[request_id] = Decision(
            request_id, RequestStatus.RESERVED, None, reservation_ids[request_id]
        )
    return decisions


async def _after_commit(
    gate: AdmissionGate, items: Sequence[Incoming], decisions: dict[str, Decision]
) -> None:
    """Hand back admissions the database refused, and drop the pending markers.

    Runs again on a redelivery, and both steps are idempotent, so a crash between the commit and
    this point leaves nothing behind for long.
    """
    for item in items:
        decision = decisions.get(item.data.requestId)
        if (
            decision is not None
            and item.data.admission is Admission.ADMITTED
            and decision.status is RequestStatus.REJECTED
        ):
            released = await gate.release(
                event_id=item.data.eventId,
                user_id=item.data.userId,
                request_id=item.data.requestId,
            )
            log.info(
                "admitted_request_rejected",
                message_id=item.message_id,
                request_id=item.data.requestId,
                reason=decision.reason,
                released=released,
            )
    await gate.finished(
        (item.data.requestId, item.data.eventId)
        for item in items
        if item.data.requestId in decisions
    )
