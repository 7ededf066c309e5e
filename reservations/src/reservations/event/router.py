from __future__ import annotations

from fastapi import APIRouter, status

from reservations.auth import ADMIN_RESPONSES, AdminDep
from reservations.camel import IdPath
from reservations.deps import ResourcesDep, SessionDep
from reservations.reservation.gate import opening_sale

from .schemas import EventCreate, EventRead
from .service import EventService

router = APIRouter(prefix="/event", tags=["event"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventRead,
    responses=ADMIN_RESPONSES,
)
async def create_event(
    data: EventCreate, session: SessionDep, resources: ResourcesDep, _: AdminDep
) -> EventRead:
    """Put an event on sale (admin token required)."""
    event = await EventService(session).create(data)
    # The reservation side's admission gate learns the event around its commit.
    async with opening_sale(
        resources.gate,
        event.id,
        event.max_tickets,
        waitlist=event.waitlist,
        max_per_user=event.max_per_user,
    ):
        await session.commit()
    return EventService.to_read(event)


@router.get("/{event_id}", response_model=EventRead)
async def get_event(event_id: IdPath, session: SessionDep) -> EventRead:
    return EventService.to_read(await EventService(session).get(event_id))
