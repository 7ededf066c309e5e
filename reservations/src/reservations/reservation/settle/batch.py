"""Settling a batch of reservation requests in PostgreSQL, where the invariants live.

A worker receives a batch of queued requests (``reservations.worker``) and hands it here: one
transaction claims each request's outcome row (a redelivery finds its row and changes nothing),
locks the events in id order, decides in arrival order who gets a ticket, writes the
reservations and moves the ticket counters; then the gate is told what PostgreSQL decided. In an
event sold with holds a winner's reservation is HELD, and its timer is queued before the commit
(``holds.py``). In an event with a waitlist every request joins the line and the free seats go to
its head (``reservation/waitlist.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import Admission, HoldExpiry, ReserveEvent
from reservations.log import get_logger

from ..gate import AdmissionGate
from ..models import RejectReason, RequestStatus
from ..repository import ClaimRow, Decision, HoldTimer, ReservationRepository, Winner
from ..waitlist import Filled, fill, granted
from . import first_per_request
from .holds import schedule

if TYPE_CHECKING:
    from brokerq import Channel

__all__ = ["Incoming", "process_batch"]

log = get_logger(__name__)

_ADMISSION_REASON = {
    Admission.SOLD_OUT: RejectReason.SOLD_OUT,
    Admission.DUPLICATE: RejectReason.DUPLICATE,
    Admission.OVER_LIMIT: RejectReason.OVER_LIMIT,
}
_DECIDED_HERE = (Admission.ADMITTED, Admission.WAITLISTED)
WAITING = RequestStatus.WAITING


@dataclass(frozen=True, slots=True)
class Incoming:
    message_id: str
    data: ReserveEvent


async def process_batch(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    batch: Sequence[Incoming],
    *,
    timers: Channel[HoldExpiry] | None = None,
) -> dict[str, Decision]:
    """Finish a batch of requests in one transaction; returns the decision per request id.

    Requests already finished (redeliveries) are not changed; their recorded decision is returned.
    ``timers``: the hold channel, where the timers of the holds written go (None: none are
    queued, and only the maintenance pass's backstop ends those holds).
    """
    items = first_per_request(batch)

    async with session_factory() as session, session.begin():
        repository = ReservationRepository(session)
        claimed = await repository.claim([_claim_row(item) for item in items])
        fresh = [item for item in items if item.data.requestId in claimed]
        decisions, holds = await _decide(repository, fresh)
        # Gate rejections were claimed with their final outcome, and requests for the line
        # claimed WAITING: only what differs from the claim is written again.
        await repository.record(
            [
                decision
                for i in fresh
                if i.data.admission in _DECIDED_HERE
                and (decision := decisions[i.data.requestId]).status
                is not _claimed_status(i.data.admission, None)
            ]
        )
        waiting = sorted(
            {i.data.eventId for i in fresh if decisions[i.data.requestId].status is WAITING}
        )
        filled = Filled()
        if waiting:
            # This batch's requests are still in the gate's line until after the commit.
            written = {i.data.requestId for i in items}
            filled = await fill(repository, gate, waiting, written_here=written)
        decisions.update((d.request_id, d) for d in filled.decisions)
        if timers is not None:
            await schedule(timers, [*holds, *filled.timers])

    done_before = [item.data.requestId for item in items if item.data.requestId not in claimed]
    if done_before:
        async with session_factory() as session:
            for row in await ReservationRepository(session).requests(done_before):
                decisions[row.id] = Decision(
                    request_id=row.id, status=RequestStatus(row.status),
                    reason=RejectReason(row.reason) if row.reason else None,
                    reservation_id=row.reservation_id,
                )  # fmt: skip

    await granted(gate, filled.grants)
    await _after_commit(gate, items, decisions)
    return decisions


def _claimed_status(admission: Admission, reason: RejectReason | None) -> RequestStatus:
    if reason is not None:
        return RequestStatus.REJECTED
    # Nearly every request of a sold-out event with a waitlist ends up in line: written so at
    # once, it needs no second write (the few that do not are recorded below).
    return WAITING if admission is Admission.WAITLISTED else RequestStatus.PENDING


def _claim_row(item: Incoming) -> ClaimRow:
    data = item.data
    reason = _ADMISSION_REASON.get(data.admission)
    return ClaimRow(
        request_id=data.requestId,
        message_id=item.message_id,
        event_id=data.eventId,
        user_id=data.userId,
        seq=data.seq,
        status=_claimed_status(data.admission, reason),
        reason=reason,
        accepted_at=datetime.fromtimestamp(data.acceptedAtMs / 1000, tz=UTC),
        quantity=data.quantity,
    )


async def _decide(
    repository: ReservationRepository, fresh: Sequence[Incoming]
) -> tuple[dict[str, Decision], list[HoldTimer]]:
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
        return decisions, []

    # Locks first (events in id order), then reads: the plan below cannot be invalidated.
    events = await repository.lock_events([i.data.eventId for i in admitted])
    left = {event_id: event.left for event_id, event in events.items()}
    users = await repository.live_users([i.data.userId for i in admitted])
    pairs = [(i.data.eventId, i.data.userId) for i in admitted]
    held = await repository.held(pairs)
    lines = [p for p in pairs if p[0] in events and events[p[0]].waitlist]
    # In line already counts as holding: one place per user, in a seat or in line.
    if lines:
        # Requests for the line were claimed WAITING just now: only others count.
        held |= await repository.waiting(lines, excluding=[i.data.requestId for i in admitted])

    winners: list[Winner] = []
    for item in sorted(admitted, key=lambda i: (i.data.eventId, i.data.seq)):
        data = item.data
        pair = (data.eventId, data.userId)
        if data.eventId not in left:
            reason: RejectReason | None = RejectReason.UNKNOWN_EVENT
        elif data.userId not in users:
            reason = RejectReason.UNKNOWN_USER
        elif events[data.eventId].closed:
            reason = RejectReason.EVENT_CLOSED
        elif data.quantity > events[data.eventId].max_per_user:
            reason = RejectReason.OVER_LIMIT
        elif pair in held:
            reason = RejectReason.DUPLICATE
        elif events[data.eventId].waitlist:
            # Into the line, behind everyone before it; ``fill`` then seats its head.
            reason = None
            held.add(pair)
            decisions[data.requestId] = Decision(data.requestId, WAITING, None, None)
            continue
        elif left[data.eventId] < data.quantity:
            reason = RejectReason.SOLD_OUT
        else:
            reason = None
            held.add(pair)
            left[data.eventId] -= data.quantity
            hold_s = events[data.eventId].hold_seconds
            winners.append(Winner(data.requestId, data.eventId, data.userId, hold_s, data.quantity))
        if reason is not None:
            decisions[data.requestId] = Decision(
                data.requestId, RequestStatus.REJECTED, reason, None
            )

    written = await repository.insert_reservations(winners)
    holds: list[HoldTimer] = []
    for winner in winners:
        reservation_id, expires_at, due_in_ms = written[winner.request_id]
        status = RequestStatus.RESERVED
        if expires_at is not None:
            status = RequestStatus.HELD
            holds.append(HoldTimer(reservation_id, winner.event_id, expires_at, due_in_ms or 0))
        decisions[winner.request_id] = Decision(winner.request_id, status, None, reservation_id)
    return decisions, holds


async def _after_commit(
    gate: AdmissionGate, items: Sequence[Incoming], decisions: dict[str, Decision]
) -> None:
    """Hand back admissions the database refused (or sent to the line: a seat the gate counted
    may have gone to someone earlier in it), and drop the pending markers.

    Runs again on a redelivery, and both steps are idempotent, so a crash between the commit and
    this point leaves nothing behind for long.
    """
    for item in items:
        decision = decisions.get(item.data.requestId)
        if (
            decision is not None
            and item.data.admission is Admission.ADMITTED
            and decision.status in (RequestStatus.REJECTED, WAITING)
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
