"""``reservations-tools fill``: give a database the history of a deployment that has lived.

Past events, each sold out, with the request rows and reservations their sales left, written
straight in SQL (``generate_series``), not through the API: millions of rows take minutes instead
of hours. The rows look like the service's own: request ids in the service's format (the
acceptance time first, then the event, the user and random bytes; the MAC is random, so these ids
do not verify), a tenth of each event's requests RESERVED with their reservation, the others
REJECTED as sold out, accepted the day before the event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["FillPlan", "fill", "fill_database"]

_USERS = text(
    """
    INSERT INTO users (name, email)
    SELECT 'fill user ' || g, 'fill-' || g || '@fill.invalid'
    FROM generate_series(1, :users) AS g
    ON CONFLICT (email) DO NOTHING
    """
)

_FIRST_USER = text("SELECT min(id) FROM users WHERE email LIKE 'fill-%@fill.invalid'")

_EVENTS = text(
    """
    INSERT INTO events (name, date, location, max_tickets, reserved, created_at, updated_at)
    SELECT 'fill ' || :tag || ' ' || g,
           now() - make_interval(days => :days) * g / :events - interval '1 hour',
           'Filled', :tickets, :tickets, now(), now()
    FROM generate_series(1, :events) AS g
    RETURNING id
    """
)

# One statement per chunk of events: the ids are made once (the CTE is used twice, so it is
# materialised), the winners' reservations are inserted and their ids joined back.
_REQUESTS = text(
    """
    WITH req AS (
        SELECT e.id AS event_id, g AS seq,
               CAST(:first_user + (e.id * 7919 + g) % :users AS int) AS user_id,
               e.date - interval '1 day' + g * interval '3 ms' AS accepted_at
        FROM events AS e, generate_series(1, :per_event) AS g
        WHERE e.id = ANY(CAST(:ids AS int[]))
    ), made AS (
        SELECT req.*, translate(encode(
            substring(int8send(CAST(extract(epoch FROM accepted_at) * 1000 AS bigint)) FROM 3)
            || int4send(event_id) || int4send(user_id)
            || substring(decode(md5(random()::text) || md5(random()::text), 'hex') FROM 1 FOR 22),
            'base64'), '+/', '-_') AS id
        FROM req
    ), won AS (
        INSERT INTO reservations (event_id, user_id, status, request_id, reserved_at)
        SELECT event_id, user_id, 'RESERVED', id, accepted_at + interval '40 ms'
        FROM made WHERE seq <= :tickets
        RETURNING id AS reservation_id, request_id
    )
    INSERT INTO reservation_requests
        (id, message_id, event_id, user_id, seq, status, reason, reservation_id, accepted_at,
         processed_at)
    SELECT made.id, CAST(extract(epoch FROM accepted_at) * 1000 AS bigint) || '-0',
           made.event_id, made.user_id, made.seq,
           CASE WHEN made.seq <= :tickets THEN 'RESERVED' ELSE 'REJECTED' END,
           CASE WHEN made.seq <= :tickets THEN NULL ELSE 'SOLD_OUT' END,
           won.reservation_id, made.accepted_at, made.accepted_at + interval '40 ms'
    FROM made LEFT JOIN won ON won.request_id = made.id
    """
)


@dataclass(frozen=True, slots=True)
class FillPlan:
    requests: int = 5_000_000
    per_event: int = 1_000
    tickets: int = 100
    users: int = 100_000
    days: int = 60
    """The events took place over this many days before now."""
    events_per_statement: int = 200

    @property
    def events(self) -> int:
        return -(-self.requests // self.per_event)


async def fill(connection: AsyncConnection, plan: FillPlan, progress: Callable[[int], None]) -> int:
    """Write the plan's past events and their rows, committing a chunk at a time; returns the
    request rows written. ``progress`` gets the running count after each chunk."""
    if plan.users < plan.per_event:
        raise ValueError("each event needs as many users as requests (one request per user)")
    await connection.execute(_USERS, {"users": plan.users})
    first_user = await connection.scalar(_FIRST_USER)
    tag = str(time.time_ns())
    result = await connection.execute(
        _EVENTS, {"tag": tag, "events": plan.events, "days": plan.days, "tickets": plan.tickets}
    )
    event_ids = list(result.scalars())
    await connection.commit()
    written = 0
    for start in range(0, len(event_ids), plan.events_per_statement):
        chunk = event_ids[start : start + plan.events_per_statement]
        await connection.execute(
            _REQUESTS,
            {
                "ids": chunk,
                "first_user": first_user,
                "users": plan.users,
                "per_event": plan.per_event,
                "tickets": plan.tickets,
            },
        )
        await connection.commit()
        written += len(chunk) * plan.per_event
        progress(written)
    return written


async def fill_database(database_url: str, plan: FillPlan, progress: Callable[[int], None]) -> int:
    """``fill``, then VACUUM ANALYZE, as a database that has lived has been vacuumed."""
    from reservations.db import create_engine

    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            written = await fill(connection, plan, progress)
        async with engine.connect() as connection:
            vacuum = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("users", "events", "reservations", "reservation_requests"):
                await vacuum.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        await engine.dispose()
    return written
