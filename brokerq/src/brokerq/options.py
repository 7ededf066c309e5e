"""Channel options: processing modes, durations and the limits that keep them sane."""

from __future__ import annotations

import enum
import re
from datetime import timedelta

from .errors import ChannelError

__all__ = ["Duration", "Processing", "check_channel_name", "duration_ms"]

Duration = str | int | float | timedelta
"""``"250ms"``, ``"1s"``, ``"5m"``, ``"2h"``, ``"1d"``, a number of seconds, or a ``timedelta``."""

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
DEFAULT_DEDUP_MS = 5 * 60 * 1000

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


class Processing(enum.Enum):
    AT_LEAST_ONCE = "at_least_once"
    """Every message is delivered until a handler returns; a crash may deliver it again."""
    EXACTLY_ONCE = "exactly_once"
    """As at-least-once, and a produce whose deduplication key was already accepted within the
    deduplication interval is acknowledged and dropped."""


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
