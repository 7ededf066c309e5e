"""The queue-less design: what a careful team might build instead of a queue.

FastAPI + asyncpg, no Redis, no workers: ``POST /reservation/{eventId}/{userId}`` decides the
reservation in the request, in one statement (so one transaction and one round trip): a
conditional update of the event's counter (``reserved < max_tickets``) and the insert of the
reservation, which a unique key on (event, user) and the foreign keys guard. The answer is the
final outcome: 201 with the reservation, 409 with the reason (``SOLD_OUT``, ``DUPLICATE``), 404
for an unknown event or user. PostgreSQL keeps every invariant: the counter cannot pass the
capacity (the update's condition, re-checked on the latest row version under its row lock, and a
check constraint), one user cannot hold two reservations for one event (the unique key).

Run with uvicorn (uvloop + httptools); ``DATABASE_URL`` names the database, ``POOL_SIZE`` the
connections per process. The schema is ``schema.sql`` beside this file (the benchmark applies it).
The set-up and read endpoints (users, events, an event's reservations, health) are the ones the
load driver uses, shaped as the service's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]

RESERVE = """
WITH ticket AS (
    UPDATE events SET reserved = reserved + 1
    WHERE id = $1 AND reserved < max_tickets
    RETURNING id
)
INSERT INTO reservations (event_id, user_id)
SELECT id, $2 FROM ticket
RETURNING id, reserved_at
"""
# Only when no ticket was taken: say why (rare next to the reservations themselves).
WHY_NOT = """
SELECT EXISTS (SELECT 1 FROM events WHERE id = $1) AS event,
       EXISTS (SELECT 1 FROM users WHERE id = $2) AS user,
       EXISTS (SELECT 1 FROM reservations WHERE event_id = $1 AND user_id = $2) AS held
"""


class Camel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class UserCreate(Camel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


class EventCreate(Camel):
    name: str = Field(min_length=1, max_length=200)
    date: datetime
    location: str = Field(min_length=1, max_length=200)
    max_tickets: int = Field(alias="maxTickets", ge=0, le=2**31 - 1)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("POOL_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=size, max_size=size
    )
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(title="queue-less reservations", lifespan=lifespan)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _rejected(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": "REJECTED", "reason": reason, "detail": detail}, status)


@app.post("/reservation/{event_id}/{user_id}", status_code=201)
async def reserve(event_id: Id, user_id: Id, request: Request) -> Any:
    async with _pool(request).acquire() as conn:
        try:
            row = await conn.fetchrow(RESERVE, event_id, user_id)
        except asyncpg.UniqueViolationError:
            return _rejected(409, "DUPLICATE", f"user {user_id} already holds a ticket")
        except asyncpg.ForeignKeyViolationError:
            return _rejected(404, "UNKNOWN_USER", f"user {user_id} does not exist")
        if row is None:
            why = await conn.fetchrow(WHY_NOT, event_id, user_id)
    if row is not None:
        return JSONResponse(
            {
                "id": row["id"],
                "eventId": event_id,
                "userId": user_id,
                "status": "RESERVED",
                "reservedAt": row["reserved_at"].isoformat(),
            },
            201,
        )
    if not why["event"]:
        return _rejected(404, "UNKNOWN_EVENT", f"event {event_id} does not exist")
    if not why["user"]:
        return _rejected(404, "UNKNOWN_USER", f"user {user_id} does not exist")
    if why["held"]:
        return _rejected(409, "DUPLICATE", f"user {user_id} already holds a ticket")
    return _rejected(409, "SOLD_OUT", f"event {event_id} is sold out")


@app.post("/user", status_code=201)
async def create_user(body: UserCreate, request: Request) -> dict[str, int]:
    try:
        user_id = await _pool(request).fetchval(
            "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", body.name, body.email
        )
    except asyncpg.UniqueViolationError:
        raise HTTPException(409, f"a user with email {body.email!r} exists") from None
    return {"id": user_id}


@app.get("/user/{user_id}")
async def get_user(user_id: Id, request: Request) -> dict[str, Any]:
    row = await _pool(request).fetchrow(
        "SELECT id, name, email, created_at FROM users WHERE id = $1", user_id
    )
    if row is None:
        raise HTTPException(404, f"user {user_id} does not exist")
    return {"id": row["id"], "name": row["name"], "email": row["email"],
            "createdAt": row["created_at"]}  # fmt: skip


@app.post("/event", status_code=201)
async def create_event(body: EventCreate, request: Request) -> dict[str, int]:
    try:
        event_id = await _pool(request).fetchval(
            "INSERT INTO events (name, date, location, max_tickets) VALUES ($1, $2, $3, $4) "
            "RETURNING id",
            body.name, body.date, body.location, body.max_tickets,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise HTTPException(409, f"an event named {body.name!r} exists") from None
    return {"id": event_id}


@app.get("/event/{event_id}")
async def get_event(event_id: Id, request: Request) -> dict[str, Any]:
    row = await _pool(request).fetchrow("SELECT * FROM events WHERE id = $1", event_id)
    if row is None:
        raise HTTPException(404, f"event {event_id} does not exist")
    return {
        "id": row["id"],
        "name": row["name"],
        "date": row["date"],
        "location": row["location"],
        "maxTickets": row["max_tickets"],
        "reservedTickets": row["reserved"],
        "remainingTickets": row["max_tickets"] - row["reserved"],
        "createdAt": row["created_at"],
    }


@app.get("/event/{event_id}/reservations")
async def event_reservations(
    event_id: Id,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: str | None = None,
) -> dict[str, Any]:
    if status not in (None, "RESERVED"):
        return {"items": [], "total": 0, "limit": limit, "offset": offset}
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, user_id, reserved_at FROM reservations WHERE event_id = $1 "
            "ORDER BY id LIMIT $2 OFFSET $3",
            event_id, limit, offset,
        )  # fmt: skip
        total = await conn.fetchval(
            "SELECT count(*) FROM reservations WHERE event_id = $1", event_id
        )
    items = [
        {"id": r["id"], "userId": r["user_id"], "status": "RESERVED",
         "reservedAt": r["reserved_at"]}
        for r in rows
    ]  # fmt: skip
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@app.get("/reservation")
async def find_reservation(
    request: Request,
    event_id: Annotated[int, Query(alias="eventId", ge=1, le=2**63 - 1)],
    user_id: Annotated[int, Query(alias="userId", ge=1, le=2**63 - 1)],
) -> dict[str, Any]:
    row = await _pool(request).fetchrow(
        "SELECT id, reserved_at FROM reservations WHERE event_id = $1 AND user_id = $2",
        event_id, user_id,
    )  # fmt: skip
    if row is None:
        raise HTTPException(404, f"user {user_id} holds no reservation for event {event_id}")
    return {"id": row["id"], "userId": user_id, "status": "RESERVED",
            "reservedAt": row["reserved_at"]}  # fmt: skip


@app.get("/health")
async def health(request: Request) -> dict[str, str]:
    await _pool(request).fetchval("SELECT 1")
    return {"status": "ok"}
