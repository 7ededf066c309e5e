"""What the dashboard shows, as plain JSON-ready data: channels, dead letters, events."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from brokerq import Channel, ChannelStats, DeadLetter

from .sampler import ChannelSampler

if TYPE_CHECKING:
    from reservations.resources import Resources

__all__ = ["DashboardState", "collect_events", "collect_overview", "dead_letter_json"]

MAX_DEAD_LETTERS = 50
MAX_PAYLOAD_CHARS = 4000
MAX_EVENTS = 20
_COUNTS = ("waiting", "in_flight", "delayed", "dead", "produced", "processed", "retried",
           "redelivered", "dead_lettered", "lag_ms")  # fmt: skip


class DashboardState:
    """Per-app state of the dashboard: its samples and the channels it has opened by name."""

    def __init__(self) -> None:
        self.sampler = ChannelSampler()
        self._channels: dict[str, Channel[Any]] = {}

    def channel(self, resources: Resources, name: str) -> Channel[Any]:
        """The service's own channel object for its channel; any other decodes as plain JSON."""
        if name == resources.channel.name:
            return resources.channel
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = resources.queue.channel(name, Any)
        return channel

    async def channel_names(self, resources: Resources) -> list[str]:
        names = set(await resources.queue.channels())
        names.add(resources.channel.name)
        # The service's channel first, then the others by name.
        return sorted(names, key=lambda n: (n != resources.channel.name, n))


def dead_letter_json(letter: DeadLetter[Any]) -> dict[str, Any]:
    payload = letter.payload.decode("utf-8", errors="replace")
    truncated = len(payload) > MAX_PAYLOAD_CHARS
    return {
        "id": letter.id,
        "payload": payload[:MAX_PAYLOAD_CHARS],
        "payload_truncated": truncated,
        "decodes": letter.data is not None,
        "error": letter.error,
        "tries": letter.tries,
        "dead_at_ms": letter.dead_at_ms,
        "produced_at_ms": letter.produced_at_ms,
    }


async def _channel_json(
    state: DashboardState, resources: Resources, stats: ChannelStats
) -> dict[str, Any]:
    processed_per_s, produced_per_s = state.sampler.rate(stats.channel)
    letters: list[dict[str, Any]] = []
    if stats.dead:
        channel = state.channel(resources, stats.channel)
        letters = [dead_letter_json(d) for d in await channel.dead_letters(limit=MAX_DEAD_LETTERS)]
    return {
        "name": stats.channel,
        **{name: getattr(stats, name) for name in _COUNTS},
        "processed_per_s": round(processed_per_s, 2),
        "produced_per_s": round(produced_per_s, 2),
        "series": [asdict(p) for p in state.sampler.series(stats.channel)],
        "dead_letters": letters,
        "dead_letters_shown": len(letters),
    }


async def collect_events(resources: Resources, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The newest events with capacity, reserved and remaining, and their requests pending and
    lost (accepted, then lost with Redis's data).

    The events domain has no listing function, so this is a read-only query of its model here;
    the numbers come from the domains' own ``EventService.to_read`` and request outcomes.
    """
    from reservations.event.models import Event
    from reservations.event.service import EventService
    from reservations.reservation.service import ReservationService

    query = select(Event).where(Event.deleted_at.is_(None)).order_by(Event.id.desc()).limit(limit)
    async with resources.session_factory() as session:
        events = (await session.execute(query)).scalars().all()
        reads = [EventService.to_read(e) for e in events]
        service = ReservationService(session, resources.gate)
        outcomes = await service.outcomes_many([r.id for r in reads])
    return [
        {
            "id": r.id,
            "name": r.name,
            "date": r.date.isoformat(),
            "capacity": r.max_tickets,
            "reserved": r.reserved_tickets,
            "remaining": r.remaining_tickets,
            "pending": outcomes[r.id].pending,
            "lost": outcomes[r.id].lost,
        }
        for r in reads
    ]


async def collect_overview(state: DashboardState, resources: Resources) -> dict[str, Any]:
    """One poll of the dashboard: samples every channel, then answers with the history."""
    now_ms = time.time_ns() // 1_000_000
    channels = []
    for name in await state.channel_names(resources):
        stats = await state.channel(resources, name).stats()
        state.sampler.record(now_ms, stats)
        channels.append(await _channel_json(state, resources, stats))
    errors: list[str] = []
    try:
        events = await collect_events(resources)
    except Exception as exc:
        events = []
        errors.append(f"events: {type(exc).__name__}")
    return {"now_ms": now_ms, "channels": channels, "events": events, "errors": errors}
