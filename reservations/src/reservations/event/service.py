"""Event rules. The ticket counter (``reserved``) is changed only by the reservations domain's
repository, in the same transaction as the reservation rows it counts."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from reservations.errors import Conflict, NotFound

from .models import Event
from .repository import EventRepository
from .schemas import EventCreate, EventRead


class EventService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repository = EventRepository(session)

    async def create(self, data: EventCreate) -> Event:
        if await self.repository.name_taken(data.name):
            raise Conflict(f"an event named {data.name!r} already exists")
        event = Event(
            name=data.name,
            date=data.date,
            location=data.location,
            max_tickets=data.max_tickets,
            reserved=0,
            hold_seconds=data.hold_seconds,
            waitlist=data.waitlist,
            max_per_user=data.max_per_user,
        )
        try:
            async with self.session.begin_nested():
                return await self.repository.add(event)
        except IntegrityError:
            raise Conflict(f"an event named {data.name!r} already exists") from None

    async def get(self, event_id: int) -> Event:
        event = await self.repository.get(event_id)
        if event is None:
            raise NotFound(f"event {event_id} does not exist")
        return event

    async def find(self, event_id: int) -> Event | None:
        return await self.repository.get(event_id)

    async def capacities(
        self, *, after_id: int, limit: int, upcoming: bool = False
    ) -> list[tuple[int, int, int]]:
        """(id, capacity, reserved) of live events (``upcoming``: not taken place yet), a page
        at a time."""
        return await self.repository.capacities(after_id=after_id, limit=limit, upcoming=upcoming)

    @staticmethod
    def to_read(event: Event) -> EventRead:
        return EventRead(
            id=event.id,
            name=event.name,
            date=event.date,
            location=event.location,
            max_tickets=event.max_tickets,
            reserved_tickets=event.reserved,
            remaining_tickets=event.max_tickets - event.reserved,
            hold_seconds=event.hold_seconds,
            waitlist=event.waitlist,
            max_per_user=event.max_per_user,
            closed_at=event.closed_at,
            created_at=event.created_at,
            updated_at=event.updated_at,
        )
