from __future__ import annotations

from sqlalchemy import func, select
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

    async def capacities(
        self, *, after_id: int, limit: int, upcoming: bool = False
    ) -> list[tuple[int, int, int]]:
        """(id, capacity, reserved) of live events with ids above ``after_id``, by id; with
        ``upcoming``, only those that have not taken place yet."""
        conditions = [Event.id > after_id, Event.deleted_at.is_(None)]
        if upcoming:
            conditions.append(Event.date >= func.now())
        rows = await self.session.execute(
            select(Event.id, Event.max_tickets, Event.reserved)
            .where(*conditions)
            .order_by(Event.id)
            .limit(limit)
        )
        return [(row.id, row.max_tickets, row.reserved) for row in rows]
