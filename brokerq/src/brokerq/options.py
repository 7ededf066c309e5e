"""Channel options: processing modes, durations and the limits that keep them sane.

``ChannelOptions`` is the one declaration of a channel's options; ``BrokerQueue.channel`` takes
them as keywords (typed by ``ChannelOptionsDict``) and checks them here, once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from .errors import ChannelError

__all__ = [
    "ChannelOptions",
    "ChannelOptionsDict",
    "Duration",
    "PartitionKey",
    "Processing",
    "check_channel_name",
    "dedup_window_ms",
    "duration_ms",
]

Duration = str | int | float | timedelta
"""``"250ms"``, ``"1s"``, ``"5m"``, ``"2h"``, ``"1d"``, a number of seconds, or a ``timedelta``."""

PartitionKey = str | bytes | int
"""What picks a message's shard on a sharded channel (``brokerq.shards.partition``)."""

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
DEFAULT_DEDUP_MS = 5 * 60 * 1000
MIN_LEASE_MS = 100
MAX_SHARDS = 128

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


class Processing(enum.Enum):
    AT_LEAST_ONCE = "at_least_once"
    """Every message is delivered until a handler returns; a crash may deliver it again."""
    EXACTLY_ONCE = "exactly_once"
    """As at-least-once, and a produce whose deduplication key was already accepted within the
    deduplication interval is acknowledged and dropped."""


class ChannelOptionsDict(TypedDict, total=False):
    """The keywords of ``BrokerQueue.channel``: the fields of ``ChannelOptions``, each optional.

    Python's typing cannot derive keyword arguments from a dataclass, so the names are written
    here and in ``ChannelOptions``; a test keeps the two the same.
    """

    process: Processing
    deduplication_interval: Duration | None
    lease: Duration
    max_attempts: int
    retry_backoff: Duration
    max_retry_backoff: Duration
    shards: int
    partition_key: Callable[[Any], PartitionKey] | None


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """A channel's options as given, checked on creation, with their durations in milliseconds.

    Raises ``ChannelError`` for an option out of range; ``BrokerQueue.channel`` adds the channel's
    name to the error.
    """

    process: Processing = Processing.AT_LEAST_ONCE
    """``AT_LEAST_ONCE`` or ``EXACTLY_ONCE`` (produces deduplicated within the interval)."""
    deduplication_interval: Duration | None = None
    """Exactly-once only: how long an accepted produce's key is held; 5 minutes when None."""
    lease: Duration = "30s"
    """How long a consumer holds a message unless it renews (it renews every third of this)."""
    max_attempts: int = 5
    """Deliveries of a message before it goes to the dead letters."""
    retry_backoff: Duration = "1s"
    """The first retry's delay; each further retry doubles it, with equal jitter."""
    max_retry_backoff: Duration = "5m"
    """The longest retry delay."""
    shards: int = 1
    """Over how many shards the channel is spread, each its own set of keys (on Redis Cluster,
    its own hash tag and so a primary of its own); 1 keeps the channel in one (see
    ``brokerq.shards``). Producers and consumers must declare the same number."""
    partition_key: Callable[[Any], PartitionKey] | None = None
    """The partition key of a message produced without ``key=``, e.g. ``lambda m: m.event_id``:
    messages with the same key go to the same shard, in order. Not called with one shard."""

    dedup_ms: int = field(init=False, repr=False)
    """The deduplication window; 0 for at-least-once."""
    lease_ms: int = field(init=False, repr=False)
    retry_backoff_ms: int = field(init=False, repr=False)
    max_retry_backoff_ms: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lease_ms = duration_ms(self.lease, what="lease")
        if lease_ms < MIN_LEASE_MS:
            raise ChannelError(f"lease must be at least {MIN_LEASE_MS}ms")
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ChannelError(f"max_attempts must be an int >= 1, got {attempts!r}")
        shards = self.shards
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise ChannelError(f"shards must be an int from 1 to {MAX_SHARDS}, got {shards!r}")
        if self.partition_key is not None and not callable(self.partition_key):
            raise ChannelError(
                f"partition_key must be a function of the message, got {self.partition_key!r}"
            )
        # Frozen: the derived values are set once, here, through object.__setattr__.
        derived = {
            "dedup_ms": dedup_window_ms(self.process, self.deduplication_interval),
            "lease_ms": lease_ms,
            "retry_backoff_ms": duration_ms(self.retry_backoff, what="retry_backoff"),
            "max_retry_backoff_ms": duration_ms(self.max_retry_backoff, what="max_retry_backoff"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def dedup_window_ms(process: Processing, interval: Duration | None) -> int:
    """The deduplication window of a mode and interval (a channel's, or a produce's own)."""
    if not isinstance(process, Processing):
        raise ChannelError(f"process must be a Processing, got {process!r}")
    if process is Processing.AT_LEAST_ONCE:
        if interval is not None:
            raise ChannelError("deduplication_interval needs process=Processing.EXACTLY_ONCE")
        return 0
    if interval is None:
        return DEFAULT_DEDUP_MS
    ms = duration_ms(interval, what="deduplication_interval")
    if ms < 1:
        raise ChannelError("deduplication_interval must be at least 1ms")
    return ms


def duration_ms(value: Duration, *, what: str = "duration") -> int:
    """A duration in whole milliseconds; raises ``ChannelError`` on anything else."""
    if isinstance(value, bool):
        raise ChannelError(f"{what} must be a duration, not {value!r}")
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, int | float):
        ms = float(value) * 1000
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ChannelError(
                f"{what} {value!r} is not a duration like '250ms', '1s', '5m', '2h' or '1d'"
            )
        ms = float(match.group(1)) * _UNITS_MS[match.group(2)]
    else:
        raise ChannelError(f"{what} must be a str, number or timedelta, not {type(value).__name__}")
    if ms < 0:
        raise ChannelError(f"{what} must not be negative, got {value!r}")
    return round(ms)


def check_channel_name(channel: str) -> None:
    # Braces would break the Redis Cluster hash tag that keeps a channel in one slot.
    if not isinstance(channel, str) or not channel or "{" in channel or "}" in channel:
        raise ChannelError(
            f"a channel name is a non-empty str without '{{' or '}}', got {channel!r}"
        )
    if len(channel) > 200:
        raise ChannelError("a channel name has at most 200 characters", channel=channel)
