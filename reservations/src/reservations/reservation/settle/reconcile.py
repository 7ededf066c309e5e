"""Bring the admission gate (Redis) back in line with PostgreSQL, which is the authority.

The gate and PostgreSQL are two systems of record that a partial failure can set apart: a
cancellation commits and its release to the gate times out; Redis restarts without its data, or
rolls back its last second; an operator flushes it. The workers' maintenance pass (``recovery.py``)
runs the steps below every ``MAINTENANCE_INTERVAL`` (5 s by default), so the gate agrees with
PostgreSQL again within one interval of Redis answering:

- ``apply_releases``: seats freed in PostgreSQL wait in an outbox (``gate_releases``), written in
  the same transaction, until the gate confirms their release.
- ``reconcile_events``: every live event's gate (of an event still to take place) is compared
  with PostgreSQL. A missing gate is
  rebuilt (counting on from its checkpoint, so that requests lost with Redis show as lost); the
  gate's counters are checkpointed; where the number of seats the gate counts differs from the
  tickets PostgreSQL has reserved, the event's seats are corrected user by user in that pass. A
  drift that leaves the numbers equal (a seat lost and another held by nobody) is found by the
  full comparison every event gets once in ``FULL_CHECK_PASSES`` passes. Places left in an
  event's line by requests whose markers expired or were evicted are taken out (``prune_lines``).

The correction never races live admissions: Redis is read before PostgreSQL (a request finishes in
PostgreSQL before its marker leaves Redis), PostgreSQL is read in one snapshot, and each change is a
compare-and-set on one user's seat, so a seat taken or given meanwhile is left alone. A seat is
taken back only from a request that is final or gone; one is given back only to a user PostgreSQL
says holds a reservation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.event.service import EventService
from reservations.log import get_logger

from ..gate import AdmissionGate, event_snapshot, request_of
from ..repository import ReservationRepository

__all__ = ["ReconcileReport", "apply_releases", "reconcile_events", "reconcile_seats"]

log = get_logger(__name__)

_RELEASE_BATCH = 500
_EVENT_PAGE = 500
FULL_CHECK_PASSES = 10


@dataclass(slots=True)
class ReconcileReport:
    events: int = 0
    rebuilt: int = 0
    """Events whose gate was missing and was seeded from PostgreSQL."""
    caught_up: int = 0
    """Events whose gate had gone back behind its checkpoint (Redis lost its latest writes)."""
    corrected: int = 0
    """Events whose seats were corrected."""
    released: int = 0
    """Seats taken back from requests that are final or gone."""
    restored: int = 0
    """Seats given back to users PostgreSQL says hold a reservation."""
    pruned: int = 0
    """Places in line taken from requests whose markers were gone."""


async def apply_releases(
    gate: AdmissionGate, session_factory: async_sessionmaker[AsyncSession]
) -> int:
    """Apply the outbox's releases to the gate; each row goes once Redis confirmed it.

    A release is a compare-and-delete on the seat's holder, so applying one twice (a crash
    between the gate's confirmation and the commit) takes nothing from anyone else.
    """
    applied = 0
    while True:
        async with session_factory() as session, session.begin():
            repository = ReservationRepository(session)
            rows = await repository.releases(limit=_RELEASE_BATCH)
            by_event: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
            for row in rows:
                by_event[row.event_id].append((row.user_id, row.holder))
            for event_id, seats in by_event.items():
                await gate.release_many(event_id, seats)
            await repository.delete_releases([row.id for row in rows])
        applied += len(rows)
        if len(rows) < _RELEASE_BATCH:
            break
    if applied:
        log.info("admission_releases_applied", count=applied)
    return applied


async def reconcile_events(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    pass_number: int | None = None,
) -> ReconcileReport:
    """Check every live event's gate against PostgreSQL, a page of events at a time.

    An event's seats are compared user by user when the number of seats the gate counts differs
    from PostgreSQL's reserved tickets and no request of the event is in flight (until its queue
    drains, a difference is mostly requests admitted and not yet written), and in any case once
    every ``FULL_CHECK_PASSES`` passes: event ``e`` when ``(pass_number + e) % FULL_CHECK_PASSES
    == 0``, every event when ``pass_number`` is None.
    """
    report = ReconcileReport()
    after = 0
    while True:
        async with session_factory() as session:
            # Events that took place are left to the retention pass, which drops their gates
            # (``retention.py``): checking them here would rebuild every gate it drops, and make
            # each pass cost more as the deployment's past grows.
            events = await EventService(session).capacities(
                after_id=after, limit=_EVENT_PAGE, upcoming=True
            )
        if not events:
            break
        after = events[-1][0]
        report.events += len(events)
        counters = await gate.counters_many([event_id for event_id, _, _ in events])
        pruned = await gate.prune_lines(list(counters))
        if pruned:
            report.pruned += pruned
            log.warning("admission_line_pruned", count=pruned)
        async with session_factory() as session:
            seen = await ReservationRepository(session).checkpoints(list(counters))
        checkpoints: list[tuple[int, int, int]] = []
        suspects: list[int] = []
        for event_id, _, reserved in events:
            found = counters[event_id]
            if found is None:
                if await _rebuild(gate, session_factory, event_id):
                    report.rebuilt += 1
                continue
            last = seen.get(event_id)
            if last is not None and (found.accepted < last.accepted or found.last_seq < last.seq):
                # Redis went back in time: the acceptances it forgot are lost requests.
                if await gate.catch_up(event_id, accepted=last.accepted, seq=last.seq):
                    report.caught_up += 1
                    log.warning(
                        "admission_gate_rolled_back",
                        event_id=event_id,
                        accepted=found.accepted,
                        checkpoint_accepted=last.accepted,
                    )
                continue  # checkpointed and checked at the next pass
            checkpoints.append((event_id, found.accepted, found.last_seq))
            full = pass_number is None or (pass_number + event_id) % FULL_CHECK_PASSES == 0
            if full or (found.admitted != reserved and found.pending == 0):
                suspects.append(event_id)
        if suspects:
            corrections = await reconcile_seats(gate, session_factory, suspects)
            for released, restored in corrections.values():
                report.corrected += 1
                report.released += released
                report.restored += restored
        async with session_factory() as session, session.begin():
            await ReservationRepository(session).save_checkpoints(checkpoints)
    return report


async def _rebuild(
    gate: AdmissionGate, session_factory: async_sessionmaker[AsyncSession], event_id: int
) -> bool:
    async with session_factory() as session:
        return await gate.seed_once(event_id, lambda: event_snapshot(session, event_id))


async def reconcile_seats(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    event_ids: Sequence[int],
) -> dict[int, tuple[int, int]]:
    """Correct the seats of ``event_ids`` in the gate to what PostgreSQL says, in a few round
    trips for all of them; (released, restored) of each event that needed a correction."""
    # Redis first. A marker leaves Redis only after its request's outcome is committed, so a
    # holder without a marker here is final in the PostgreSQL read below, or gone for good.
    seats = await gate.holders_many(event_ids)
    in_flight = await gate.pending_many(
        {(request_of(holder), event_id) for event_id, s in seats.items() for holder in s.values()}
    )
    async with session_factory() as session:
        # One snapshot: the reserved users and the requests' outcomes must agree with each other.
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        repository = ReservationRepository(session)
        reserved = await repository.holders_many(event_ids)
        unreserved = [
            request_of(holder)
            for event_id in event_ids
            for user_id, holder in seats[event_id].items()
            if user_id not in reserved[event_id] and request_of(holder) in in_flight
        ]
        final = {row.id for row in await repository.requests(unreserved)} if unreserved else set()
        await session.rollback()
    corrections: dict[int, tuple[int, int]] = {}
    for event_id in event_ids:
        held, truth = seats[event_id], reserved[event_id]
        release = [
            (user_id, holder)
            for user_id, holder in held.items()
            if user_id not in truth
            and (request_of(holder) in final or request_of(holder) not in in_flight)
        ]
        restore = {user_id: holder for user_id, holder in truth.items() if user_id not in held}
        if not (release or restore):
            continue
        released = await gate.release_many(event_id, release)
        restored = await gate.restore_many(event_id, restore)
        if released or restored:
            corrections[event_id] = (released, restored)
            log.warning(
                "admission_gate_corrected",
                event_id=event_id,
                released=released,
                restored=restored,
            )
    return corrections
