"""Requests whose processing failed for good: a final outcome, and their seats back.

brokerq retries a request that cannot be written up to the channel's ``max_attempts``, then moves
its message to the dead letters. Left there, its client would read PENDING for ever and its seat
at the gate would stay taken. So the request ends REJECTED with reason FAILED and the class of the
error; in the same transaction the release of its seat (if the gate admitted it) goes to the
gate's outbox (``gate_releases``). Then the seat is handed back and the request is finished in the
gate, as for any final outcome; what Redis does not confirm, the maintenance pass does later (the
outbox's releases, the requests left unfinished).

Two writers: the worker, on a message's last attempt (``reservations.worker``), and the
maintenance pass, for dead letters whose request has no final outcome (the worker's write failed
as well, a lease ran out on the last attempt, a BullMQ job allowed fewer attempts than the
channel). The request id is the key of the outcome row, so a request already final keeps its
outcome, and a FAILED one stays FAILED: a redrive of its dead letter finds the final row and
changes nothing, whether or not the cause was fixed meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import Admission, ReserveEvent
from reservations.log import get_logger

from ..gate import AdmissionGate
from ..models import RejectReason, RequestStatus
from ..releases import hand_back
from ..repository import ClaimRow, ReservationRepository
from . import first_per_request

__all__ = ["Failure", "error_class", "record_failures"]

log = get_logger(__name__)

ERROR_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Failure:
    message_id: str | None
    data: ReserveEvent
    error: str
    """The class of the error that failed the request's last attempt."""


def error_class(recorded: str) -> str:
    """The error's class from the error a dead letter records: brokerq writes ``"Class: text"``;
    what it writes otherwise (a lease that ran out) is kept up to its first colon."""
    return recorded.partition(":")[0].strip()[:ERROR_LENGTH] or "unknown"


async def record_failures(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    failures: Sequence[Failure],
) -> set[str]:
    """Make FAILED the final outcome of each request that has none, with its seat's release in
    the same transaction; then hand the seats back and finish the requests in the gate. Returns
    the request ids newly failed. Raises if PostgreSQL refuses the write (nothing is written)."""
    items = first_per_request(failures)

    async with session_factory() as session, session.begin():
        repository = ReservationRepository(session)
        failed = await repository.claim([_row(item) for item in items])
        seats = [
            (item.data.eventId, item.data.userId, item.data.requestId)
            for item in items
            if item.data.requestId in failed and item.data.admission is Admission.ADMITTED
        ]
        release_ids = await repository.add_releases(seats)
    if failed:
        log.warning(
            "reservation_requests_failed",
            count=len(failed),
            request_ids=sorted(failed)[:20],
            errors=sorted({item.error for item in items if item.data.requestId in failed}),
        )

    try:
        await hand_back(gate, session_factory, seats, release_ids)
        # Every one is final now (failed here, or final before): drop their pending markers.
        await gate.finished((item.data.requestId, item.data.eventId) for item in items)
    except Exception as exc:
        log.warning("failed_requests_gate_deferred", count=len(items), error=type(exc).__name__)
    return failed


def _row(failure: Failure) -> ClaimRow:
    data = failure.data
    return ClaimRow(
        request_id=data.requestId,
        message_id=failure.message_id,
        event_id=data.eventId,
        user_id=data.userId,
        seq=data.seq,
        status=RequestStatus.REJECTED,
        reason=RejectReason.FAILED,
        accepted_at=datetime.fromtimestamp(data.acceptedAtMs / 1000, tz=UTC),
        error=failure.error[:ERROR_LENGTH],
    )
