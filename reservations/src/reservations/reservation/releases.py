"""Seats handed back to the admission gate through the outbox (``gate_releases``).

When PostgreSQL frees a seat (a cancellation, a hold that expired or was released, a request that
failed for good), the same transaction writes the seat's release to the outbox. After the commit
the gate releases the seat (a compare-and-delete on its holder, so a late or repeated release
never frees someone else's) and the outbox rows are deleted. What Redis does not confirm stays in
the outbox, for the maintenance pass (``settle/reconcile.apply_releases``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .gate import AdmissionGate
from .repository import ReservationRepository

__all__ = ["Seat", "hand_back"]

Seat = tuple[int, int, str]
"""(event id, user id, holder): the gate holds the seat under the holder's request id."""


async def hand_back(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    seats: Sequence[Seat],
    release_ids: Sequence[int],
) -> None:
    """Release the seats in the gate, then take their releases out of the outbox (a crash in
    between leaves them to ``apply_releases``, which finds them released)."""
    if not seats:
        return
    by_event: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for event_id, user_id, holder in seats:
        by_event[event_id].append((user_id, holder))
    for event_id, held in by_event.items():
        await gate.release_many(event_id, held)
    async with session_factory() as session, session.begin():
        await ReservationRepository(session).delete_releases(release_ids)
