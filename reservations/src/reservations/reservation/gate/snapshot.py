"""What PostgreSQL knows about an event, to build (or rebuild) its gate, and the gate learning
about a new event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from brokerq import RedisError
from reservations.event.service import EventService
from reservations.log import get_logger

from ..repository import ReservationRepository
from .gate import LOSS_SEQ_GAP, AdmissionGate, EventSnapshot

__all__ = ["event_snapshot", "opening_sale"]

log = get_logger(__name__)


async def event_snapshot(session: AsyncSession, event_id: int) -> EventSnapshot | None:
    """The gate state of an event as PostgreSQL knows it.

    With a checkpoint, the gate existed before and Redis lost it: the rebuilt gate counts on
    from the checkpoint (the requests lost with Redis stay counted as accepted, so they show
    as lost rather than vanish) and numbers new requests past any the lost gate handed out.
    """
    event = await EventService(session).find(event_id)
    repository = ReservationRepository(session)
    if event is None:
        return None
    holders = await repository.holders(event_id)
    counts, last_seq = await repository.request_stats(event_id)
    checkpoint = await repository.checkpoint(event_id)
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
        capacity=event.max_tickets, holders=holders, last_seq=last_seq, accepted=accepted,
        waitlist=event.waitlist, max_per_user=event.max_per_user,
    )  # fmt: skip


@asynccontextmanager
async def opening_sale(
    gate: AdmissionGate,
    event_id: int,
    capacity: int,
    *,
    waitlist: bool = False,
    max_per_user: int = 1,
) -> AsyncIterator[None]:
    """Around the commit of a new event: gate state left under its id (a database reset) goes
    before the event is visible, so that it cannot meet a request's; after the commit the gate
    knows the event before the first request of a drop, which would otherwise load it from
    PostgreSQL (a request that came first has seeded it already, and that stays).

    Without Redis the event is still created: the gate loads it on the first request.
    """
    with _optional(event_id):
        await gate.forget_event(event_id)
    yield
    with _optional(event_id):
        await gate.seed(event_id, EventSnapshot(capacity, {}, 0, 0, waitlist, max_per_user))


@contextmanager
def _optional(event_id: int) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        log.warning("event_gate_seed_failed", event_id=event_id, error=type(exc).__name__)
