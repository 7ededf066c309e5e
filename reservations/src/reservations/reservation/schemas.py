from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from pydantic import Field

from reservations.camel import CamelModel, IdField
from reservations.event.schemas import MAX_PER_USER

from .models import RejectReason, RequestStatus, ReservationStatus

QuantityField = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_PER_USER,
        description="seats asked for, all or none; at most the event's `maxPerUser`",
    ),
]


class ReservationCreate(CamelModel):
    user_id: IdField
    event_id: IdField
    quantity: QuantityField = 1


class ReservationRead(CamelModel):
    id: int
    user_id: int
    event_id: int
    status: ReservationStatus = Field(
        description="HELD: won in an event sold with holds, the seat is the holder's until "
        "`expiresAt` unless confirmed (RESERVED) or released (RELEASED) before; EXPIRED: not "
        "confirmed in time. RESERVED and HELD take a seat, the others gave it back"
    )
    reserved_at: datetime
    cancelled_at: datetime | None = Field(
        default=None, description="when it gave its seat back (cancelled, expired or released)"
    )
    expires_at: datetime | None = Field(
        default=None, description="for a hold: when it ends unless confirmed before"
    )
    confirmed_at: datetime | None = None
    quantity: int = Field(default=1, description="seats it takes")


class ReservationPage(CamelModel):
    items: list[ReservationRead]
    total: int
    limit: int
    offset: int


class JobData(msgspec.Struct, rename="camel", frozen=True):
    user_id: int
    event_id: int


class JobAccepted(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """The 202 body: the seed's BullMQ job object, plus where to follow the request.

    A msgspec struct rather than a pydantic model: it is encoded once per accepted request, on
    the hot path; the OpenAPI document gets its schema from ``JOB_ACCEPTED_SCHEMA``.
    """

    name: str
    data: JobData
    opts: dict[str, Any]
    id: str
    progress: int = 0
    returnvalue: None = None
    stacktrace: None = None
    priority: int = 0
    attempts_started: int = 0
    attempts_made: int = 0
    timestamp: int
    queue_qualified_name: str
    message_id: str
    status: RequestStatus = RequestStatus.PENDING
    status_url: str
    hold_token: str
    """Confirms or releases the hold this request may win (events sold with holds): send it as
    the ``Hold-Token`` header. Given only here."""


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references resolved in place (for the OpenAPI document,
    whose references point elsewhere)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


JOB_ACCEPTED_SCHEMA = _inline(msgspec.json.schema(JobAccepted))


class RequestOutcome(CamelModel):
    job_id: str
    user_id: int
    event_id: int
    status: RequestStatus
    reason: RejectReason | None = Field(
        default=None,
        description="why a REJECTED request was refused; FAILED: its processing failed on every "
        "attempt (see `error`), it holds no place and may be sent again",
    )
    quantity: int = Field(default=1, description="seats asked for")
    reservation_id: int | None = None
    reservation_status: ReservationStatus | None = Field(
        default=None,
        description="for a HELD request: where its hold is now (HELD until confirmed, "
        "released or expired)",
    )
    hold_expires_at: datetime | None = Field(
        default=None, description="for a HELD request: when its hold ends unless confirmed"
    )
    seq: int | None = Field(default=None, description="arrival order at the gate, per event")
    error: str | None = Field(
        default=None,
        max_length=128,
        description="for reason FAILED, the class of the error that failed its last attempt",
    )
    position: int | None = Field(
        default=None,
        ge=1,
        description="while PENDING: the request's place among its event's pending requests, in "
        "arrival order (1: the next of them to be settled). Requests of other events share the "
        "queue and are not counted. While WAITING: its place in the event's waitlist (1: the "
        "next seat that comes back is its). null once final, and when its place is not known "
        "(queued before the service kept lines)",
    )
    estimated_wait_seconds: float | None = Field(
        default=None,
        ge=0,
        description="while PENDING: about how many seconds until the request is settled, if "
        "the event's requests keep being settled at the pace they were lately: `position` "
        "divided by that pace (requests settled per second of waiting, weighted to the last "
        "10 s or so; the workers' share given to other events' requests is already in it). An "
        "estimate, not a promise: rough in the first second of settling, and rising while none "
        "of the event's requests is settled. null once final, and when there is no pace to go "
        "by: none of the event's requests was settled while others waited in the last minute "
        "(before the event's first batches, with the workers stopped, or when its requests are "
        "settled as fast as they come)",
    )


class EventOutcomes(CamelModel):
    event_id: int
    accepted: int = Field(description="requests accepted (202) for this event")
    final: int = Field(
        description="requests with a final outcome: reserved or rejected (rejected includes "
        "FAILED, requests whose processing failed on every attempt)"
    )
    pending: int = Field(description="requests accepted and not yet processed")
    waiting: int = Field(
        default=0,
        description="requests in the event's waitlist (processed, not final: each gets the "
        "next seat that comes back, in arrival order)",
    )
    lost: int = Field(
        default=0,
        description="accepted requests the queue's storage lost before processing (Redis data "
        "loss); their status URLs answer 410 and their clients must send them again",
    )
    reserved: int
    held: int = Field(
        default=0,
        description="requests that won a hold (events sold with holds); their reservations "
        "may since have been confirmed, released or expired",
    )
    rejected: int
    by_reason: dict[str, int]


class RequestLostBody(CamelModel):
    """410: the request was accepted, then lost with Redis's data; send it again."""

    status_code: int = 410
    error: str = "REQUEST_LOST"
    message: str
    job_id: str
    user_id: int
    event_id: int
    status: RequestStatus = RequestStatus.LOST
    accepted_at: datetime
