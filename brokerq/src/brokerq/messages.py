"""The values brokerq hands back: produce results, envelopes, statistics and dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ChannelStats", "DeadLetter", "Message", "ProduceResult"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProduceResult:
    id: str
    """The stored message's id; for a duplicate, the id of the message that was accepted first."""
    deduplicated: bool = False
    """True when an exactly-once produce matched an earlier one in its window and was dropped."""


@dataclass(frozen=True, slots=True)
class Message(Generic[T]):
    """What a handler gets when it asks for the envelope (annotates its argument ``Message[T]``)."""

    data: T
    id: str
    """Unique per message and stable across redeliveries: the idempotency key for side effects."""
    tries: int
    """1 on the first delivery, 2 on the first retry, and so on."""
    channel: str
    produced_at_ms: int
    headers: Mapping[str, str] = field(default_factory=dict)
    """What the producer passed as ``headers=``, e.g. a trace context."""


@dataclass(frozen=True, slots=True)
class ChannelStats:
    channel: str
    waiting: int
    in_flight: int
    delayed: int
    """Delayed messages, and failed ones waiting for their retry backoff."""
    dead: int
    produced: int
    processed: int
    retried: int
    redelivered: int
    """Messages taken back from a consumer whose lease expired (crashed or hung)."""
    dead_lettered: int
    lag_ms: int
    """Age of the message at the head of the queue; 0 when nothing waits."""


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[T]):
    id: str
    payload: bytes
    data: T | None
    """The decoded message, or None when the payload does not decode."""
    error: str
    tries: int
    dead_at_ms: int
    produced_at_ms: int
