"""Waitlists: a seat that comes back goes to the first request waiting for it.

In an event created with ``waitlist``, a request that finds no seat is not refused: the workers
write it WAITING (``settle/batch.py``), in its arrival order (its ``seq``). Whenever a seat comes
back (a hold expired or released, a cancellation) or requests join the line, the transaction that
did it fills the event's free seats from the head of its line (``fill``), under the event's lock,
so that every free seat goes to the earliest waiting request, and none to a later arrival. A
promoted request becomes HELD (an event sold with holds, with its timer) or RESERVED, and its
status URL says so; the gate learns of its seat after the commit (``granted``), and the periodic
reconciliation puts right what Redis missed.

A waiting request is final only when it gets a seat, its sender takes it out of the line
(LEFT_LINE), the event is closed (EVENT_CLOSED) or it takes place (EVENT_ENDED, by the workers'
maintenance pass).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from reservations.log import get_logger

from .gate import AdmissionGate
from .models import RejectReason, RequestStatus
from .releases import Seat
from .repository import Decision, HoldTimer, ReservationRepository, Winner

__all__ = ["SCAN_LIMIT", "Filled", "fill", "granted"]

log = get_logger(__name__)

SCAN_LIMIT = 1000
"""Waiting requests too large for the free seats that a seat passes by, at most: beyond, it
waits for the next fill."""
_PAGE = 100


@dataclass
class Filled:
    """What ``fill`` did: the outcomes of the requests it took from the lines, the timers of the
    holds it made (to queue before the commit) and the seats the gate must learn of (after)."""

    decisions: list[Decision] = field(default_factory=list)
    timers: list[HoldTimer] = field(default_factory=list)
    grants: list[Seat] = field(default_factory=list)


async def fill(
    repository: ReservationRepository,
    gate: AdmissionGate,
    event_ids: Sequence[int],
    *,
    written_here: Collection[str] = (),
) -> Filled:
    """Give the free seats of each of the events with a waitlist to the first waiting requests
    they fit (a request for more seats than are free keeps its place and lets the next ones
    by); the events are locked (in id order) for the rest of the transaction.

    Only requests that arrived before every request of the event still on its way to
    PostgreSQL are seated (the gate's line knows those; ``written_here`` are the ones this
    transaction writes): the workers write requests in the order their batches commit, and a
    later arrival must not take a seat from an earlier one still in the queue. When that one is
    written, its own transaction fills again. If the gate cannot tell, nothing is seated now:
    the maintenance pass fills the lines later (``fill_waitlists``)."""
    filled = Filled()
    events = await repository.lock_events(event_ids)
    for event_id, event in events.items():
        if not event.waitlist or event.closed or event.left <= 0:
            continue
        try:
            horizon = await gate.first_pending_seq(event_id, excluding=written_here)
        except Exception as exc:
            log.warning("waitlist_fill_deferred", event_id=event_id, error=type(exc).__name__)
            continue
        left, offset = event.left, 0
        while left > 0 and offset < SCAN_LIMIT:
            page = await repository.next_waiting(
                event_id, limit=_PAGE, offset=offset, below_seq=horizon
            )
            if not page:
                break
            held = await repository.held([(event_id, user_id) for _, user_id, _ in page])
            winners: list[Winner] = []
            decisions: list[Decision] = []
            for request_id, user_id, quantity in page:
                if left <= 0:
                    break
                if (event_id, user_id) in held:
                    # A seat of their own came since they joined the line (an operator's act).
                    decisions.append(
                        Decision(request_id, RequestStatus.REJECTED, RejectReason.DUPLICATE, None)
                    )
                elif quantity <= left:
                    held.add((event_id, user_id))
                    left -= quantity
                    winners.append(
                        Winner(request_id, event_id, user_id, event.hold_seconds, quantity)
                    )
                else:
                    offset += 1  # does not fit: keeps its place
            written = await repository.insert_reservations(winners)
            for winner in winners:
                reservation_id, expires_at, due_in_ms = written[winner.request_id]
                status = RequestStatus.RESERVED
                if expires_at is not None:
                    status = RequestStatus.HELD
                    filled.timers.append(
                        HoldTimer(reservation_id, event_id, expires_at, due_in_ms or 0)
                    )
                decisions.append(Decision(winner.request_id, status, None, reservation_id))
                filled.grants.append(
                    (event_id, winner.user_id, _holder(winner.request_id, winner.quantity))
                )
            await repository.record(decisions)
            filled.decisions.extend(decisions)
            if len(page) < _PAGE and not winners:
                break
    return filled


def _holder(request_id: str, quantity: int) -> str:
    return request_id if quantity == 1 else f"{request_id}*{quantity}"


async def granted(gate: AdmissionGate, grants: Sequence[Seat]) -> None:
    """After the commit: the gate counts the seats given from the lines. Called before the
    freed seats are released in the gate, so that the gate never shows a free seat that went to
    the line (a new arrival would be admitted ahead of those waiting)."""
    by_event: dict[int, dict[int, str]] = defaultdict(dict)
    for event_id, user_id, holder in grants:
        by_event[event_id][user_id] = holder
    for event_id, seats in by_event.items():
        await gate.restore_many(event_id, seats)
