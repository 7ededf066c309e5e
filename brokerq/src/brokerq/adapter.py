"""The storage contract every engine implements; the channel and consumer do the bookkeeping.

Times are the broker's (Redis ``TIME`` for Redis), so clients with skewed clocks agree on leases
and delays. A message id is ``"<produced_ms>-<sequence>"``: unique even if the broker's data is
wiped, ordered by arrival within a channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .messages import ChannelStats

__all__ = ["Adapter", "Delivery", "Exchange", "Outgoing", "RawDeadLetter", "Settlement"]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one of these
# is made per produce (and a Delivery per message consumed).
@dataclass(slots=True)
class Outgoing:
    payload: bytes
    priority: int = 0
    delay_ms: int = 0
    dedup_key: str | None = None
    """Set only for exactly-once produces; the message is dropped if the key is held."""
    dedup_ms: int = 0
    options: Mapping[str, Any] | None = None
    """Engine-specific options of this message (e.g. BullMQ job options); only for adapters
    whose ``accepts_options`` is true."""
    headers: bytes | None = None
    """The message's headers as a JSON object (e.g. a W3C ``traceparent``), or None."""
    shard: int = 0
    """On a sharded channel, the shard the channel chose for the message; engines ignore it."""

    @property
    def plain(self) -> bool:
        return (
            self.priority == 0
            and self.delay_ms == 0
            and self.dedup_key is None
            and self.options is None
            and self.headers is None
        )


@dataclass(slots=True)
class Delivery:
    id: str
    payload: bytes
    tries: int
    produced_ms: int | None = None
    """Set by engines whose ids are not ``"<produced_ms>-<sequence>"`` (e.g. BullMQ)."""
    headers: bytes | None = None
    """The headers given at produce, as a JSON object."""

    @property
    def produced_at_ms(self) -> int:
        if self.produced_ms is not None:
            return self.produced_ms
        return int(self.id.partition("-")[0])


@dataclass(slots=True)
class Settlement:
    """What a consumer reports back about messages it holds."""

    acks: list[str] = field(default_factory=list)
    retries: list[tuple[str, int, str]] = field(default_factory=list)
    """(id, delay_ms, error): retried after the delay, or dead-lettered after the last attempt."""
    dead: list[tuple[str, str]] = field(default_factory=list)
    """(id, reason): dead-lettered at once (e.g. a payload that does not decode)."""
    releases: list[str] = field(default_factory=list)
    """Given back untried, e.g. at shutdown; the attempt does not count."""

    def __bool__(self) -> bool:
        return bool(self.acks or self.retries or self.dead or self.releases)

    def extend(self, other: Settlement) -> None:
        self.acks.extend(other.acks)
        self.retries.extend(other.retries)
        self.dead.extend(other.dead)
        self.releases.extend(other.releases)


@dataclass(frozen=True, slots=True)
class Exchange:
    deliveries: list[Delivery]
    lost: list[str]
    """Settled ids this consumer no longer held: its lease had expired and another took over."""
    wait_hint_ms: int
    """Milliseconds until a delayed message is due or a lease expires; -1 when neither."""
    unsent: Settlement | None = None
    """On a sharded channel: the part of the settlement not sent, for the consumer to send with
    a later exchange: that of shards this fetch did not reach, or that failed (``error``)."""
    error: Exception | None = None
    """Why some shards did not answer; the deliveries and ``lost`` are those of the others."""


@dataclass(frozen=True, slots=True)
class RawDeadLetter:
    id: str
    payload: bytes
    error: str
    tries: int
    dead_at_ms: int
    produced_at_ms: int | None = None
    """Set by engines whose ids are not ``"<produced_ms>-<sequence>"`` (e.g. BullMQ)."""


class Adapter(Protocol):
    """Storage operations of one engine. Each is atomic for the channel it names."""

    async def produce(self, channel: str, items: Sequence[Outgoing]) -> list[tuple[str, bool]]:
        """Store the messages in order; for each, (id, deduplicated)."""
        ...

    async def exchange(
        self,
        channel: str,
        consumer: str,
        settle: Settlement,
        fetch: int,
        lease_ms: int,
        max_attempts: int,
    ) -> Exchange:
        """Apply ``settle``, take back expired leases, promote due delayed messages, then lease
        up to ``fetch`` waiting messages to ``consumer``, highest priority and oldest first."""
        ...

    async def renew(
        self, channel: str, consumer: str, ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        """Extend the leases ``consumer`` still holds; returns the ids it no longer holds."""
        ...

    async def wait(self, channel: str, timeout_ms: int) -> None:
        """Return when a message may be waiting, or after ``timeout_ms``."""
        ...

    async def stats(self, channel: str) -> ChannelStats: ...

    async def dead_letters(self, channel: str, offset: int, limit: int) -> list[RawDeadLetter]:
        """Dead letters, oldest first, from position ``offset``; the channel has checked that
        ``offset >= 0``, ``limit >= 1`` and ``offset + limit - 1 <= 2**63 - 1``."""
        ...

    async def redrive(self, channel: str, ids: Sequence[str] | None) -> int:
        """Move dead letters (all when ``ids`` is None) back to waiting with a fresh try count."""
        ...

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int: ...

    async def purge(self, channel: str) -> None:
        """Delete every message of the channel, in any state."""
        ...

    async def channels(self) -> list[str]: ...

    async def close(self) -> None: ...
