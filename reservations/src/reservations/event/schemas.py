from __future__ import annotations

from datetime import datetime

from pydantic import Field

from reservations.camel import CamelModel, Integer, Text, UtcDateTime

MAX_TICKETS = 10_000_000


class EventCreate(CamelModel):
    name: Text = Field(min_length=1, max_length=200)
    date: UtcDateTime
    location: Text = Field(min_length=1, max_length=200)
    max_tickets: Integer = Field(ge=0, le=MAX_TICKETS)


class EventRead(CamelModel):
    id: int
    name: str
    date: datetime
    location: str
    max_tickets: int
    reserved_tickets: int
    remaining_tickets: int
    created_at: datetime
    updated_at: datetime
