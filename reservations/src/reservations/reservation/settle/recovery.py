"""The workers' maintenance pass: recover requests the API admitted but never queued, keep the
dead letters free of requests that are final, keep the gate in line with PostgreSQL, and delete
idempotency keys past their 24 h.

The API admits a request (one Redis call) and then queues it (another). An API process that dies
between the two leaves a request that was never answered with 202 but holds a gate place, and
would stay PENDING for ever. The gate records every accepted request until a worker has written
its outcome (the ``unfinished`` set); a worker takes those older than any normal delay and queues
them again. A request that was in fact queued is then delivered twice, which the request id makes
harmless.

Only requests no worker has seen are queued again: a worker that receives a request holds it
away from recovery for ``DELIVERED_HOLD_MS``, far longer than the queue keeps retrying it, so a
request that fails and waits for its retry is never copied (each copy would end in the dead
letters of its own). A request whose message reached the dead letters is left there, for an
operator to inspect and redrive.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import Admission, ReserveEvent
from reservations.idempotency.store import delete_expired
from reservations.log import get_logger

from ..gate import AdmissionGate
from ..models import RequestStatus
from ..repository import ReservationRepository
from .reconcile import apply_releases, reconcile_events

if TYPE_CHECKING:
    from brokerq import Channel

__all__ = [
    "DELIVERED_HOLD_MS",
    "RECOVERY_GRACE_MS",
    "clear_final_dead_letters",
    "maintenance_loop",
    "maintenance_pass",
    "requeue_unfinished",
]

log = get_logger(__name__)
T = TypeVar("T")

# Well past the normal time from admission to outcome; the queue's current lag is added to it.
RECOVERY_GRACE_MS = 30_000
# Longer than the queue keeps retrying a message (10 attempts, leases of 10 s, backoff to 30 s).
DELIVERED_HOLD_MS = 15 * 60_000
_BATCH = 500
_DEAD_SCAN = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def requeue_unfinished(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    older_than_ms: int,
) -> int:
    """Queue again the unfinished requests admitted more than ``older_than_ms`` ago that no
    worker holds; returns how many were queued. Ones already final only have their leftovers
    cleared."""
    now_ms = _now_ms()
    ids = await gate.unfinished_before(now_ms - older_than_ms, limit=_BATCH)
    if not ids:
        return 0
    markers = await gate.pending_many(ids)
    async with session_factory() as session:
        final = {row.id: row for row in await ReservationRepository(session).requests(ids)}
    cleared: list[tuple[str, int]] = []
    gone: list[str] = []
    again = []
    for request_id in ids:
        pending = markers.get(request_id)
        row = final.get(request_id)
        if row is not None:
            # Final, but the worker died before clearing up after its commit.
            if (
                pending is not None
                and pending.admission is Admission.ADMITTED
                and row.status != RequestStatus.RESERVED
            ):
                await gate.release(
                    event_id=row.event_id, user_id=row.user_id, request_id=request_id
                )
            cleared.append((request_id, row.event_id))
        elif pending is None:
            gone.append(request_id)  # the marker expired; nothing is left to rebuild it from
        else:
            again.append(pending)
    await gate.finished(cleared)
    await gate.forget_unfinished(gone)
    if again:
        dead = await _dead_request_ids(channel)
        held = [p.request_id for p in again if p.request_id in dead]
        again = [p for p in again if p.request_id not in dead]
        # In the dead letters: the queue has the message, and an operator decides.
        await gate.hold_unfinished(held, now_ms + DELIVERED_HOLD_MS)
    if again:
        await channel.produce_many(
            [
                ReserveEvent(
                    userId=p.user_id,
                    eventId=p.event_id,
                    requestId=p.request_id,
                    admission=p.admission,
                    seq=p.seq,
                    acceptedAtMs=p.accepted_at_ms,
                )
                for p in again
            ]
        )
        # Back of the line: looked at again only if no worker has received the copy by then.
        await gate.hold_unfinished([p.request_id for p in again], now_ms)
        log.warning(
            "unfinished_requests_requeued",
            count=len(again),
            request_ids=[p.request_id for p in again][:20],
        )
    return len(again)


async def _dead_request_ids(channel: Channel[ReserveEvent]) -> set[str]:
    letters = await channel.dead_letters(limit=_DEAD_SCAN)
    return {letter.data.requestId for letter in letters if letter.data is not None}


async def clear_final_dead_letters(
    channel: Channel[ReserveEvent], session_factory: async_sessionmaker[AsyncSession]
) -> int:
    """Delete dead letters whose requests are final (a redelivery that failed after its
    outcome was written, a request finished by a redrive's twin): they need nobody's attention."""
    letters = [letter for letter in await channel.dead_letters(limit=_DEAD_SCAN) if letter.data]
    if not letters:
        return 0
    async with session_factory() as session:
        rows = await ReservationRepository(session).requests(
            [letter.data.requestId for letter in letters if letter.data]
        )
    final = {row.id for row in rows if row.status != RequestStatus.PENDING}
    ids = [letter.id for letter in letters if letter.data and letter.data.requestId in final]
    if ids:
        deleted = await channel.delete_dead(ids)
        log.info("final_dead_letters_cleared", count=deleted)
        return deleted
    return 0


async def maintenance_pass(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    pass_number: int | None = None,
) -> None:
    """One of each: apply the gate's outbox, reconcile the gate, delete expired idempotency keys,
    recover requests, clear dead letters of final requests. A step that fails is logged and the
    others still run.
    ``pass_number`` (see ``reconcile_events``) is None for a pass that checks every event in
    full."""
    await _step("releases", lambda: apply_releases(gate, session_factory))
    await _step(
        "reconcile", lambda: reconcile_events(gate, session_factory, pass_number=pass_number)
    )
    await _step("idempotency keys", lambda: delete_expired(session_factory))
    stats = await _step("stats", channel.stats)
    if stats is None:
        return
    grace_ms = RECOVERY_GRACE_MS + stats.lag_ms
    await _step(
        "recovery",
        lambda: requeue_unfinished(gate, channel, session_factory, older_than_ms=grace_ms),
    )
    if stats.dead:
        await _step("dead letters", lambda: clear_final_dead_letters(channel, session_factory))


async def _step(name: str, run: Callable[[], Awaitable[T]]) -> T | None:
    try:
        return await run()
    except Exception as exc:
        log.warning("maintenance_step_failed", step=name, error=type(exc).__name__)
        return None


async def maintenance_loop(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    interval_s: float = 5.0,
) -> None:
    """Run ``maintenance_pass`` every ``interval_s``, in one worker at a time."""
    for pass_number in itertools.count():
        await asyncio.sleep(interval_s)  # a period, not a wait for some condition
        try:
            if await gate.try_lock("maintenance", int(interval_s * 1000)):
                await maintenance_pass(gate, channel, session_factory, pass_number=pass_number)
        except Exception as exc:
            log.warning("maintenance_failed", error=type(exc).__name__)
