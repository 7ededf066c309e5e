from __future__ import annotations

from fastapi import APIRouter, status

from reservations.auth import ADMIN_RESPONSES, AdminDep
from reservations.camel import IdPath
from reservations.deps import ResourcesDep, SessionDep
from reservations.log import get_logger

from .schemas import EventCreate, EventRead
from .service import EventService

router = APIRouter(prefix="/event", tags=["event"])
log = get_logger(__name__)


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
    await session.commit()
    try:
        # Ready before the first request of a drop, which would otherwise load it from here.
        await resources.gate.seed_new_event(event.id, event.max_tickets)
    except Exception as exc:
        # The gate loads it on the first request instead.
        log.warning("event_gate_seed_failed", event_id=event.id, error=type(exc).__name__)
    return EventService.to_read(event)


@router.get("/{event_id}", response_model=EventRead)
async def get_event(event_id: IdPath, session: SessionDep) -> EventRead:
    return EventService.to_read(await EventService(session).get(event_id))
