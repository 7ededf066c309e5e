"""Prometheus metrics: per-process counters and handler durations, and the broker's own counts.

Consumers and channels record into the default registry as they work. Queue depths and broker
counters live in the broker, so ``export_channel_stats`` reads them (one call per channel) and
sets gauges; call it before generating a scrape, e.g. in a ``/metrics`` endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .queue import BrokerQueue

__all__ = [
    "BROKER_EVENTS",
    "CHANNEL_LAG",
    "CHANNEL_MESSAGES",
    "DEDUPLICATED",
    "HANDLER_SECONDS",
    "LOST_LEASES",
    "PRODUCED",
    "export_channel_stats",
]

HANDLER_SECONDS = Histogram(
    "brokerq_handler_duration_seconds",
    "Time a handler took, by channel and outcome (ok, retry, dead, undecodable).",
    ["channel", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PRODUCED = Counter(
    "brokerq_produced_messages", "Messages this process stored, by channel.", ["channel"]
)
DEDUPLICATED = Counter(
    "brokerq_deduplicated_messages",
    "Exactly-once produces of this process dropped as duplicates, by channel.",
    ["channel"],
)
LOST_LEASES = Counter(
    "brokerq_lost_leases",
    "Messages this process was handling when another consumer took them over.",
    ["channel"],
)
CHANNEL_MESSAGES = Gauge(
    "brokerq_channel_messages",
    "Messages in the broker by channel and state (waiting, in_flight, delayed, dead).",
    ["channel", "state"],
)
BROKER_EVENTS = Gauge(
    "brokerq_channel_events",
    "Broker-wide counters by channel and event (produced, processed, retried, redelivered, "
    "dead_lettered); monotonic unless the channel is purged.",
    ["channel", "event"],
)
CHANNEL_LAG = Gauge(
    "brokerq_channel_lag_seconds", "Age of the message at the head of the queue.", ["channel"]
)

_STATES = ("waiting", "in_flight", "delayed", "dead")
_EVENTS = ("produced", "processed", "retried", "redelivered", "dead_lettered")


async def export_channel_stats(queue: BrokerQueue, channels: Iterable[str] | None = None) -> None:
    """Read every channel's counts from the broker into the gauges above."""
    names = list(channels) if channels is not None else await queue.channels()
    for name in names:
        stats = await queue.adapter.stats(name)
        for state in _STATES:
            CHANNEL_MESSAGES.labels(name, state).set(getattr(stats, state))
        for event in _EVENTS:
            BROKER_EVENTS.labels(name, event).set(getattr(stats, event))
        CHANNEL_LAG.labels(name).set(stats.lag_ms / 1000)
