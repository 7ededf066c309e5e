"""Re-queue requests that were admitted but never queued.

The API admits a request (one Redis call) and then queues it (another). An API process that dies
between the two leaves a request that was never answered with 202 but holds a gate place, and
would stay PENDING for ever. The gate records every admitted request, with what is needed to
rebuild its message, until a worker has written its outcome; a worker periodically takes those
older than any normal delay and queues them again. A request that was in fact queued is then
delivered twice, which the request id already makes harmless.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import Admission, ReserveEvent
from reservations.log import get_logger

from .admission import AdmissionGate, PendingRequest
from .models import RequestStatus
from .repository import ReservationRepository

if TYPE_CHECKING:
    from brokerq import Channel

__all__ = ["RECOVERY_GRACE_MS", "recovery_loop", "requeue_unfinished"]

log = get_logger(__name__)

# Well past the normal time from admission to outcome; the queue's current lag is added to it.
RECOVERY_GRACE_MS = 30_000
_BATCH = 500


async def requeue_unfinished(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    older_than_ms: int,
) -> int:
    """Queue again the unfinished requests admitted more than ``older_than_ms`` ago; returns
    how many were queued. Ones already final only have their leftovers cleared."""
    now_ms = time.time_ns() // 1_000_000
    ids = await gate.unfinished_before(now_ms - older_than_ms, limit=_BATCH)
    if not ids:
        return 0
    async with session_factory() as session:
        final = {row.id: row for row in await ReservationRepository(session).requests(ids)}
    cleared: list[str] = []
    again: list[PendingRequest] = []
    for request_id in ids:
        pending = await gate.pending(request_id)
        row = final.get(request_id)
        if row is not None:
            # Final, but the worker died before clearing up after its commit.
            if (
                pending is not None
                and pending.admission is Admission.ADMITTED
                and row.status == RequestStatus.REJECTED
            ):
                await gate.release(
                    event_id=row.event_id, user_id=row.user_id, request_id=request_id
                )
            cleared.append(request_id)
        elif pending is None:
            # The marker expired; nothing is left to rebuild the message from.
            cleared.append(request_id)
        else:
            again.append(pending)
    await gate.finished(cleared)
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
        await gate.touch_unfinished([p.request_id for p in again], now_ms)
        log.warning(
            "unfinished_requests_requeued",
            count=len(again),
            request_ids=[p.request_id for p in again][:20],
        )
    return len(again)


async def recovery_loop(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    interval_s: float = 10.0,
) -> None:
    """Run ``requeue_unfinished`` every ``interval_s``, in one worker at a time."""
    while True:
        await asyncio.sleep(interval_s)  # a period, not a wait for some condition
        try:
            if not await gate.try_lock("recovery", int(interval_s * 1000)):
                continue
            stats = await channel.stats()
            await requeue_unfinished(
                gate, channel, session_factory, older_than_ms=RECOVERY_GRACE_MS + stats.lag_ms
            )
        except Exception as exc:
            log.warning("recovery_failed", error=type(exc).__name__)
