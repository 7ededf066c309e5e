from __future__ import annotations

from datetime import datetime

from pydantic import Field

from reservations.camel import CamelModel, Integer, Text, UtcDateTime

MAX_TICKETS = 10_000_000
MAX_HOLD_SECONDS = 86_400
MAX_PER_USER = 100


class EventCreate(CamelModel):
    name: Text = Field(min_length=1, max_length=200)
    date: UtcDateTime
    location: Text = Field(min_length=1, max_length=200)
    max_tickets: Integer = Field(ge=0, le=MAX_TICKETS)
    hold_seconds: Integer | None = Field(
        default=None,
        ge=1,
        le=MAX_HOLD_SECONDS,
        description="sell with holds: a request that wins a seat holds it (HELD) this many "
        "seconds, until its sender confirms it (RESERVED) or releases it; unconfirmed, the seat "
        "goes back on sale when the hold expires. null (the default): a request that wins a "
        "seat is RESERVED at once",
    )
    max_per_user: Integer = Field(
        default=1,
        ge=1,
        le=MAX_PER_USER,
        description="the most seats one user may hold for the event: one reservation per user, "
        "of up to this many seats (a request's `quantity`). 1 (the default): one seat each, as "
        "the seed",
    )
    waitlist: bool = Field(
        default=False,
        description="requests that find the event sold out wait in line (WAITING) instead of "
        "being refused: a seat that comes back (a hold expired or released, a cancellation) "
        "goes to the first of them, in arrival order. They wait until then, or until the event "
        "takes place or is closed, or they leave the line",
    )


class EventRead(CamelModel):
    id: int
    name: str
    date: datetime
    location: str
    max_tickets: int
    reserved_tickets: int
    remaining_tickets: int
    hold_seconds: int | None = None
    max_per_user: int = 1
    waitlist: bool = False
    closed_at: datetime | None = Field(
        default=None, description="when an operator closed the sale; null while on sale"
    )
    created_at: datetime
    updated_at: datetime
