from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from reservations.camel import CamelModel, IdField

from .models import RejectReason, RequestStatus


class ReservationCreate(CamelModel):
    user_id: IdField
    event_id: IdField


class ReservationRead(CamelModel):
    id: int
    user_id: int
    event_id: int
    status: str
    reserved_at: datetime
    cancelled_at: datetime | None = None


class ReservationPage(CamelModel):
    items: list[ReservationRead]
    total: int
    limit: int
    offset: int


class JobData(CamelModel):
    user_id: int
    event_id: int


class JobAccepted(CamelModel):
    """The seed's BullMQ job object, plus where to follow the request."""

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
    status: RequestStatus
    status_url: str


class RequestOutcome(CamelModel):
    job_id: str
    user_id: int
    event_id: int
    status: RequestStatus
    reason: RejectReason | None = None
    reservation_id: int | None = None
    seq: int | None = Field(default=None, description="arrival order at the gate, per event")


class EventOutcomes(CamelModel):
    event_id: int
    accepted: int = Field(description="requests accepted (202) for this event")
    final: int = Field(description="requests with a final outcome: reserved or rejected")
    pending: int = Field(description="requests accepted and not yet final")
    lost: int = Field(
        default=0,
        description="accepted requests the queue's storage lost before processing (Redis data "
        "loss); their status URLs answer 410 and their clients must send them again",
    )
    reserved: int
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
