"""Holds' ends: a HELD seat goes back on sale when its hold expires.

An event created with ``holdSeconds`` sells with holds: the workers' batch write (``batch.py``)
makes a won request's reservation HELD until ``expires_at`` and, in the same transaction, queues
the hold's timer, a ``HoldExpiry`` message on the hold channel delayed until then. The timer is
queued before the commit, so no hold exists without one (a batch that rolls back leaves a timer
that finds nothing to expire). A worker receives due timers in batches and, in one transaction,
expires the holds still HELD past their end by PostgreSQL's clock (the clock confirmations are
checked against), gives their seats to the heads of the events' waitlists (``waitlist.py``) or
back on sale, and writes their releases to the outbox; then the gate takes them back
(``releases.py``). A timer delivered before its hold's end (the worker's clock is
not PostgreSQL's) is queued again for the rest.

A confirmation and an expiry at the same instant are decided by the hold's row lock: both change
only a HELD row, under that lock, and the confirmation only before ``expires_at``.

A timer lost with Redis's data (a restart without persistence) would leave its hold HELD for ever,
so the maintenance pass ends holds more than ``BACKSTOP_LATE_S`` past their end: a backstop, not
the way holds end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import HoldExpiry
from reservations.log import get_logger

from ..gate import AdmissionGate
from ..models import ReservationStatus
from ..releases import hand_back
from ..repository import EndedHold, HoldTimer, ReservationRepository
from ..waitlist import fill, granted

if TYPE_CHECKING:
    from brokerq import Channel, Message

__all__ = ["BACKSTOP_LATE_S", "HoldExpirer", "end_holds", "expire_overdue", "schedule"]

log = get_logger(__name__)

# A timer found early goes again at least this much later (whatever the clocks say).
_MIN_DELAY_MS = 5
BACKSTOP_LATE_S = 30.0
"""A hold this far past its end has lost its timer: the maintenance pass ends it."""
_BACKSTOP_BATCH = 1000


async def schedule(channel: Channel[HoldExpiry], timers: Sequence[HoldTimer]) -> None:
    """Queue each hold's timer, due at its end; returns once the queue has them all. The delay
    is measured by PostgreSQL's clock, so that this machine's clock cannot make a timer early (a
    tight loop of early timers) or late."""
    if not timers:
        return
    await asyncio.gather(
        *(
            channel.produce(
                HoldExpiry(reservationId=t.reservation_id, eventId=t.event_id, expiresAtMs=_ms(t)),
                delay=f"{max(_MIN_DELAY_MS, t.due_in_ms)}ms",
            )
            for t in timers
        )
    )


def _ms(timer: HoldTimer) -> int:
    return int(timer.expires_at.timestamp() * 1000)


async def end_holds(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    reservation_ids: Sequence[int],
    *,
    ended: ReservationStatus,
    due_only: bool,
    timers: Channel[HoldExpiry] | None = None,
) -> tuple[list[EndedHold], list[HoldTimer]]:
    """End the holds among ``reservation_ids`` that are still HELD (and, with ``due_only``, past
    their end) and give their seats to the events' waitlists, or back on sale: in PostgreSQL,
    then in the gate. Returns the holds ended and the ones still HELD. ``timers``: where the
    timers of holds given from the waitlists go."""
    async with session_factory() as session, session.begin():
        repository = ReservationRepository(session)
        holds = await repository.end_holds(reservation_ids, ended=ended, due_only=due_only)
        seats = [(h.event_id, h.user_id, h.holder) for h in holds]
        release_ids = await repository.add_releases(seats)
        filled = await fill(repository, gate, sorted({h.event_id for h in holds}))
        if timers is not None:
            await schedule(timers, filled.timers)
        still_held = await repository.holds(reservation_ids) if due_only else []
    if holds:
        log.info("holds_ended", status=ended.value, count=len(holds), given=len(filled.grants))
    try:
        await granted(gate, filled.grants)
        await hand_back(gate, session_factory, seats, release_ids)
    except Exception as exc:
        log.warning("holds_gate_release_deferred", count=len(seats), error=type(exc).__name__)
    return holds, still_held


class HoldExpirer:
    """The brokerq batch handler of the hold channel: expires the holds whose timers are due."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        gate: AdmissionGate,
        channel: Channel[HoldExpiry],
    ) -> None:
        self.session_factory = session_factory
        self.gate = gate
        self.channel = channel

    async def handle(self, messages: list[Message[HoldExpiry]]) -> dict[str, Exception]:
        ids = [m.data.reservationId for m in messages]
        try:
            _, early = await end_holds(
                self.session_factory, self.gate, ids, ended=ReservationStatus.EXPIRED,
                due_only=True, timers=self.channel,
            )  # fmt: skip
            # Not due yet by PostgreSQL's clock: the timer goes again, for the rest.
            await schedule(self.channel, early)
        except Exception as exc:
            log.warning("holds_expiry_failed", count=len(ids), error=type(exc).__name__)
            return {m.id: exc for m in messages}
        return {}


async def expire_overdue(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    timers: Channel[HoldExpiry] | None = None,
    *,
    late_s: float = BACKSTOP_LATE_S,
) -> int:
    """The backstop: end holds more than ``late_s`` past their end (their timers were lost);
    returns how many."""
    async with session_factory() as session:
        ids = await ReservationRepository(session).overdue_holds(late=late_s, limit=_BACKSTOP_BATCH)
    if not ids:
        return 0
    holds, _ = await end_holds(
        session_factory, gate, ids, ended=ReservationStatus.EXPIRED, due_only=True, timers=timers
    )
    if holds:
        log.warning("holds_expired_by_backstop", count=len(holds))
    return len(holds)
