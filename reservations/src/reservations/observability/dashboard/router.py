"""The queue dashboard: a static page at ``/admin/queue`` and the JSON it polls.

The page itself holds no data and is served to anyone; everything under ``/admin/queue/api``
needs the admin token when one is configured (the page asks for it and sends it as a bearer
token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from reservations.auth import require_admin
from reservations.deps import ResourcesDep
from reservations.resources import Resources

from .data import MAX_DEAD_LETTERS, DashboardState, collect_overview, dead_letter_json

__all__ = ["PREFIX", "router"]

PREFIX = "/admin/queue"
STATIC = Path(__file__).parent / "static"
_FILES = {"app.js": "text/javascript", "style.css": "text/css"}

MAX_LIMIT = 1000
# Redis reads a page of dead letters by index, a signed 64-bit integer: the page's last index,
# offset + limit - 1, must fit one whatever the limit.
MAX_OFFSET = 2**63 - MAX_LIMIT

router = APIRouter(prefix=PREFIX, tags=["dashboard"])
api = APIRouter(prefix="/api", dependencies=[Depends(require_admin)])


class DeadLetterAction(BaseModel):
    channel: str = Field(min_length=1, max_length=200)
    ids: list[str] | None = Field(
        default=None, max_length=10_000, description="the dead letters to act on; null for all"
    )


def _state(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.queue_dashboard
    return state


StateDep = Annotated[DashboardState, Depends(_state)]


@router.get("", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in _FILES:
        raise HTTPException(status_code=404, detail="not found")
    return FileResponse(STATIC / name, media_type=_FILES[name])


@api.get("/overview")
async def overview(state: StateDep, resources: ResourcesDep) -> JSONResponse:
    """Counts, rates and history per channel, their dead letters, and the events' tickets."""
    return JSONResponse(await collect_overview(state, resources))


async def _known_channel(state: DashboardState, resources: Resources, name: str) -> None:
    if name not in await state.channel_names(resources):
        raise HTTPException(status_code=404, detail=f"no channel named {name!r}")


@api.get("/dead-letters")
async def dead_letters(
    state: StateDep,
    resources: ResourcesDep,
    channel: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_DEAD_LETTERS,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[dict[str, Any]]:
    """A page of the channel's dead letters, the oldest first."""
    await _known_channel(state, resources, channel)
    letters = await state.channel(resources, channel).dead_letters(limit=limit, offset=offset)
    return [dead_letter_json(d) for d in letters]


@api.post("/redrive")
async def redrive(
    action: DeadLetterAction, state: StateDep, resources: ResourcesDep
) -> dict[str, int]:
    """Put dead letters back on their channel with a fresh try count."""
    await _known_channel(state, resources, action.channel)
    moved = await state.channel(resources, action.channel).redrive(action.ids)
    return {"moved": moved}


@api.post("/delete-dead")
async def delete_dead(
    action: DeadLetterAction, state: StateDep, resources: ResourcesDep
) -> dict[str, int]:
    """Delete dead letters for good."""
    await _known_channel(state, resources, action.channel)
    deleted = await state.channel(resources, action.channel).delete_dead(action.ids)
    return {"deleted": deleted}


router.include_router(api)
