"""The accept side: a reservation request is given its place in line at the gate and queued.

``POST /reservation/{eventId}/{userId}`` comes here from the router (or the fast lane): one Redis
call decides the request's fate in arrival order (``gate/``), a second queues it on the
reservation channel (``reservations.channels``) for a worker to settle (``settle/``), and the
client gets 202 with the job id. PostgreSQL is read only when the gate does not know the user or
the event yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerq import ReplicationError
from reservations.channels import Admission, ReserveEvent
from reservations.errors import NotFound, Unavailable
from reservations.log import get_logger
from reservations.observability.tracing import produce_span
from reservations.outage import outage_of
from reservations.user.service import UserService

from .gate import AdmissionGate, GateResult, Verdict, event_snapshot
from .request_ids import RequestIds

if TYPE_CHECKING:
    from brokerq import Channel

__all__ = ["Accepted", "NotReplicated", "accept"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    request_id: str
    message_id: str
    event_id: int
    user_id: int
    accepted_at_ms: int
    admission: Admission
    seq: int
    quantity: int = 1


async def accept(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    request_ids: RequestIds,
    *,
    event_id: int,
    user_id: int,
    quantity: int = 1,
) -> Accepted:
    """Decide the request's place at the gate and queue it."""
    accepted_at_ms = time.time_ns() // 1_000_000
    request_id = request_ids.new(event_id=event_id, user_id=user_id, accepted_at_ms=accepted_at_ms)
    try:
        # A session that costs nothing unless the gate needs PostgreSQL.
        async with _LazySession(session_factory) as session:
            result = await _admit(
                session, gate, event_id, user_id, request_id, accepted_at_ms, quantity
            )
    except ReplicationError as exc:
        # Admitted on the event's primary, not confirmed by its replicas (REDIS_REPLICAS_ACK on
        # a Cluster): never queued, so not accepted. The undo goes the same way: a failover now
        # loses both, or neither.
        log.warning("admission_not_replicated", request_id=request_id, replicas=exc.acknowledged)
        await _undo(gate, event_id, user_id, request_id)
        raise Unavailable(
            "Redis's replicas did not confirm the admission in time; the request was not "
            "accepted, try again"
        ) from exc
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
        seq=result.seq, acceptedAtMs=accepted_at_ms, quantity=quantity,
    )  # fmt: skip
    try:
        # The trace context travels in the message's headers to the worker.
        with produce_span(channel.name) as headers:
            produced = await channel.produce(message, headers=headers)
    except ReplicationError as exc:
        # Queued on the primary, not confirmed by its replicas: it may still be processed, so
        # its place stays (undoing it could free a seat that the request then takes).
        log.warning("reservation_not_replicated", request_id=request_id, replicas=exc.acknowledged)
        raise NotReplicated(request_id) from exc
    except Exception as exc:
        # Not queued means not accepted: hand the place back so no ticket is held for nobody.
        log.error("reservation_queue_failed", request_id=request_id, error=type(exc).__name__)
        await _undo(gate, event_id, user_id, request_id)
        raise Unavailable(
            "the reservation queue is unavailable; the request was not accepted"
        ) from exc
    return Accepted(
        request_id=request_id, message_id=produced.id, event_id=event_id, user_id=user_id,
        accepted_at_ms=accepted_at_ms, admission=admission, seq=result.seq, quantity=quantity,
    )  # fmt: skip


async def _undo(gate: AdmissionGate, event_id: int, user_id: int, request_id: str) -> None:
    """Hand the place back: no ticket is held for a request that was not accepted."""
    try:
        await gate.undo(event_id=event_id, user_id=user_id, request_id=request_id)
    except Exception as exc:
        log.error("admission_undo_failed", request_id=request_id, error=type(exc).__name__)


async def _admit(
    session: AsyncSession,
    gate: AdmissionGate,
    event_id: int,
    user_id: int,
    request_id: str,
    accepted_at_ms: int,
    quantity: int,
) -> GateResult:
    result = None
    for _ in range(3):
        result = await gate.admit(
            event_id=event_id, user_id=user_id, request_id=request_id,
            accepted_at_ms=accepted_at_ms, quantity=quantity,
        )  # fmt: skip
        if result.verdict is Verdict.NO_USER:
            if not await UserService(session).exists(user_id):
                raise NotFound(f"user {user_id} does not exist")
            await gate.users.remember(user_id)
        elif result.verdict is Verdict.NO_EVENT:
            if not await gate.seed_once(event_id, lambda: event_snapshot(session, event_id)):
                raise NotFound(f"event {event_id} does not exist")
        else:
            break
    assert result is not None
    if result.verdict in (Verdict.NO_USER, Verdict.NO_EVENT):
        raise Unavailable("the admission state keeps disappearing; try again")
    return result


class NotReplicated(Unavailable):
    """Queued on Redis's primary, but not confirmed by ``REDIS_REPLICAS_ACK`` replicas in time."""

    code = "NOT_REPLICATED"

    def __init__(self, request_id: str) -> None:
        status_url = f"/reservation/requests/{request_id}"
        super().__init__(
            "the request was queued but Redis's replicas did not confirm it in time: a failover "
            f"now could lose it. It may still be processed: follow {status_url} (404 or 410 "
            "there: send it again)"
        )
        self.details = {"jobId": request_id, "statusUrl": status_url}


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
