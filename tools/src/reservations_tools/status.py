"""``reservations-tools status``: the queue channel's counts and each event's tickets, as Rich
tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["collect_status", "render_status"]


async def _channel_stats(redis_url: str, queue_engine: str, shards: int) -> list[dict[str, Any]]:
    from brokerq import BrokerQueue
    from reservations.channels import queue_adapter, reservation_channel

    queue = BrokerQueue(queue_adapter(queue_engine, redis_url))
    try:
        stats = await reservation_channel(queue, shards=shards).stats()
    finally:
        await queue.close()
    return [
        {
            "channel": stats.channel,
            "waiting": stats.waiting,
            "in_flight": stats.in_flight,
            "delayed": stats.delayed,
            "dead": stats.dead,
            "produced": stats.produced,
            "processed": stats.processed,
            "retried": stats.retried,
            "redelivered": stats.redelivered,
            "dead_lettered": stats.dead_lettered,
            "lag_ms": stats.lag_ms,
        }
    ]


async def _events(
    database_url: str, redis_url: str, event_ids: list[int], limit: int
) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from brokerq.redis import open_commands
    from reservations.db import create_engine, create_session_factory
    from reservations.event.models import Event
    from reservations.reservation.gate import AdmissionGate
    from reservations.reservation.service import ReservationService

    engine = create_engine(database_url, pool_size=1)
    redis = open_commands(redis_url, socket_timeout=10)
    try:
        query = select(Event.id, Event.name, Event.max_tickets, Event.reserved)
        if event_ids:
            query = query.where(Event.id.in_(event_ids))
        query = query.order_by(Event.id.desc()).limit(limit)
        async with create_session_factory(engine)() as session:
            rows = (await session.execute(query)).all()
            service = ReservationService(session, AdmissionGate(redis))
            outcomes = await service.outcomes_many([row.id for row in rows])
    finally:
        await redis.close()
        await engine.dispose()
    return [
        {
            "id": row.id,
            "name": row.name,
            "capacity": row.max_tickets,
            "reserved": row.reserved,
            "remaining": row.max_tickets - row.reserved,
            "accepted": outcomes[row.id].accepted,
            "pending": outcomes[row.id].pending,
            "lost": outcomes[row.id].lost,
        }
        for row in rows
    ]


async def collect_status(
    redis_url: str,
    database_url: str | None,
    event_ids: list[int],
    limit: int,
    queue_engine: str = "redis",
    shards: int = 1,
) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (also what ``status --json`` prints)."""
    report: dict[str, Any] = {"channels": [], "events": [], "errors": []}
    try:
        report["channels"] = await _channel_stats(redis_url, queue_engine, shards)
    except Exception as exc:
        report["errors"].append(f"queue: {exc}")
    if database_url is None:
        report["errors"].append(
            "events: DATABASE_URL is not set and no 'reservations-tools up' runs"
        )
    else:
        try:
            report["events"] = await _events(database_url, redis_url, event_ids, limit)
        except Exception as exc:
            report["errors"].append(f"events: {exc}")
    return report


def render_status(report: dict[str, Any], console: Console) -> None:
    # One column per channel and one row per count: fits a narrow terminal.
    columns = ("waiting", "in_flight", "delayed", "dead", "produced", "processed", "retried",
               "redelivered", "dead_lettered", "lag_ms")  # fmt: skip
    channels = Table(title="queue channels", header_style="bold")
    channels.add_column("count")
    for row in report["channels"]:
        channels.add_column(row["channel"], justify="right")
    for name in columns:
        channels.add_row(name.replace("_", " "), *(f"{row[name]:,}" for row in report["channels"]))
    console.print(channels)

    events = Table(title="events", header_style="bold")
    for name, justify in (("id", "right"), ("name", "left"), ("capacity", "right"),
                          ("reserved", "right"), ("remaining", "right"), ("accepted", "right"),
                          ("pending", "right"), ("lost", "right")):  # fmt: skip
        events.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in report["events"]:
        remaining = f"{row['remaining']:,}"
        if row["remaining"] == 0:
            remaining = f"[red]{remaining}[/] (sold out)"
        lost = f"{row['lost']:,}"
        if row["lost"]:
            lost = f"[bold red]{lost}[/]"
        events.add_row(str(row["id"]), row["name"], f"{row['capacity']:,}", f"{row['reserved']:,}",
                       remaining, f"{row['accepted']:,}", f"{row['pending']:,}", lost)  # fmt: skip
    console.print(events)
    if any(row["lost"] for row in report["events"]):
        console.print(
            "[bold red]Redis lost accepted requests[/] (a flush, a restart without its "
            "append-only file, or a failover): their clients get 410 from their status URLs "
            "and must send them again."
        )
    for error in report["errors"]:
        console.print(f"[yellow]{error}[/]")
