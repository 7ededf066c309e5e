from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Event


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: Event) -> Event:
        self.session.add(event)
        await self.session.flush()
        await self.session.refresh(event)
        return event

    async def get(self, event_id: int) -> Event | None:
        result = await self.session.execute(
            select(Event).where(Event.id == event_id, Event.deleted_at.is_(None))
        )
        return result.scalar_one_or_none()

    async def name_taken(self, name: str) -> bool:
        result = await self.session.execute(select(Event.id).where(Event.name == name))
        return result.first() is not None

    async def capacities(self, *, after_id: int, limit: int) -> list[tuple[int, int, int]]:
        """(id, capacity, reserved) of live events with ids above ``after_id``, by id."""
        rows = await self.session.execute(
            select(Event.id, Event.max_tickets, Event.reserved)
            .where(Event.id > after_id, Event.deleted_at.is_(None))
            .order_by(Event.id)
            .limit(limit)
        )
        return [(row.id, row.max_tickets, row.reserved) for row in rows]
