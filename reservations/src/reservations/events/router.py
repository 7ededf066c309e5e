from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, status
from redis.exceptions import RedisError

from reservations.auth import ADMIN_RESPONSES, AdminDep
from reservations.camel import IdPath
from reservations.deps import ResourcesDep, SessionDep
from reservations.log import get_logger
from reservations.reservations.admission import EventSnapshot

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
    # Gate state under a new id is stale (a database reset): gone before the event is visible,
    # so that it cannot meet a request's.
    async with _gate_optional(event.id):
        await resources.gate.forget_event(event.id)
    await session.commit()
    # Ready before the first request of a drop, which would otherwise load it from PostgreSQL;
    # a request that came first has seeded it already, and this leaves that alone.
    async with _gate_optional(event.id):
        await resources.gate.seed(event.id, EventSnapshot(event.max_tickets, {}, 0, 0))
    return EventService.to_read(event)


@router.get("/{event_id}", response_model=EventRead)
async def get_event(event_id: IdPath, session: SessionDep) -> EventRead:
    return EventService.to_read(await EventService(session).get(event_id))


@asynccontextmanager
async def _gate_optional(event_id: int) -> AsyncIterator[None]:
    # Without Redis the event is still created: the gate loads it on the first request.
    try:
        yield
    except RedisError as exc:
        log.warning("event_gate_seed_failed", event_id=event_id, error=type(exc).__name__)
