"""The queue channels of the service, declared once for the API (producer) and the workers.

Every channel option lives here, so producer and consumers cannot disagree about them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from brokerq import Adapter, BrokerQueue
    from brokerq.channel import Channel

__all__ = [
    "HOLD_JOB_NAME",
    "HOLD_QUEUE_NAME",
    "JOB_NAME",
    "QUEUE_NAME",
    "RESERVATION_LEASE",
    "RESERVATION_MAX_ATTEMPTS",
    "Admission",
    "HoldExpiry",
    "ReserveEvent",
    "hold_channel",
    "queue_adapter",
    "reservation_channel",
]

QUEUE_NAME = "reservation-queue"
JOB_NAME = "reserveEvent"
# Live workers renew their leases (every third of it), so the lease is how long a crashed worker's
# messages wait before another worker takes them; shorter risks needless redeliveries when a
# busy machine delays a renewal (harmless, the request id makes them no-ops, but wasted work).
RESERVATION_LEASE = "10s"
RESERVATION_MAX_ATTEMPTS = 10
HOLD_QUEUE_NAME = "reservation-hold-expiry"
HOLD_JOB_NAME = "expireHold"


class Admission(enum.StrEnum):
    """What the ingress gate decided, in arrival order, before the message was queued."""

    ADMITTED = "ADMITTED"
    SOLD_OUT = "SOLD_OUT"
    WAITLISTED = "WAITLISTED"
    """Found the event full, and the event has a waitlist: the worker puts it in line."""
    OVER_LIMIT = "OVER_LIMIT"
    """Asked for more seats than the event's ``maxPerUser``."""
    DUPLICATE = "DUPLICATE"


class ReserveEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One reservation request, as the seed's ``reserveEvent`` job ``{userId, eventId}`` plus what
    the workers need to finish it without asking anyone."""

    userId: int
    eventId: int
    requestId: str
    """The job id the client polls; the idempotency key of the request's outcome row."""
    admission: Admission
    seq: int
    """Arrival order at the gate, per event."""
    acceptedAtMs: int
    quantity: int = 1
    """Seats asked for, all or none."""


class HoldExpiry(msgspec.Struct, frozen=True, kw_only=True):
    """A hold's timer: delayed until the hold's end, when a worker expires it unless it was
    confirmed or released meanwhile (queued in the transaction that writes the hold)."""

    reservationId: int
    eventId: int
    expiresAtMs: int


def queue_adapter(
    engine: str, redis_url: str, *, replicas_ack: int = 0, replicas_ack_timeout_ms: int = 500
) -> Adapter:
    """The queue engine: brokerq's own Redis layout, or BullMQ's (``QUEUE_ENGINE=bullmq``), where
    Node BullMQ producers and workers (the seed's NestJS services) share the queue.
    ``replicas_ack``: a produce waits for that many replicas (brokerq's layout only)."""
    if engine == "bullmq":
        from brokerq.bullmq import BullMQAdapter

        return BullMQAdapter(
            redis_url,
            job_names={QUEUE_NAME: JOB_NAME, HOLD_QUEUE_NAME: HOLD_JOB_NAME},
            remove_on_complete=True,
        )
    from brokerq.redis import RedisAdapter

    return RedisAdapter(
        redis_url,
        replicas_ack=replicas_ack,
        replicas_ack_timeout=f"{replicas_ack_timeout_ms}ms",
    )


def reservation_channel(queue: BrokerQueue, *, shards: int = 1) -> Channel[ReserveEvent]:
    """``shards``: ``RESERVATION_CHANNEL_SHARDS``; every producer and worker passes the same."""
    from brokerq import Processing

    return queue.channel(
        QUEUE_NAME,
        ReserveEvent,
        # Duplicates are harmless: the request id is written with the outcome in one transaction.
        process=Processing.AT_LEAST_ONCE,
        lease=RESERVATION_LEASE,
        max_attempts=RESERVATION_MAX_ATTEMPTS,
        retry_backoff="200ms",
        max_retry_backoff="30s",
        shards=shards,
        # Every produce of an event's requests (accepted, or queued again by recovery) goes to
        # the event's shard: they keep the order of one channel.
        partition_key=_event_id,
    )


def _event_id(message: ReserveEvent) -> int:
    return message.eventId


def hold_channel(queue: BrokerQueue) -> Channel[HoldExpiry]:
    from brokerq import Processing

    return queue.channel(
        HOLD_QUEUE_NAME,
        HoldExpiry,
        # Expiring is a conditional update of the hold's row: a second delivery changes nothing.
        process=Processing.AT_LEAST_ONCE,
        lease=RESERVATION_LEASE,
        max_attempts=RESERVATION_MAX_ATTEMPTS,
        retry_backoff="100ms",
        # A retry waits no longer than the backstop's lag (see ``settle/holds.py``).
        max_retry_backoff="1s",
    )
