"""A per-client rate limit for reservation requests (GCRA, in the API process).

GCRA keeps one number per client, the theoretical arrival time of its next request, so a check
is a dictionary look-up and no Redis round trip on the hot path. The limit is per API process:
with N processes behind a balancer a client gets up to N times the rate. The client is the peer
address uvicorn reports, which is the ``X-Forwarded-For`` address for requests from a proxy
listed in ``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter", "parse_rate"]

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)s?\s*", re.I)
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
# Forget idle clients once this many are tracked, so that a scan of addresses cannot grow the
# table without bound.
_MAX_CLIENTS = 100_000


@dataclass(frozen=True)
class RateLimit:
    count: int
    period_s: float
    burst: int

    @property
    def interval_s(self) -> float:
        return self.period_s / self.count

    def __str__(self) -> str:
        return f"{self.count} per {self.period_s:g} s (burst {self.burst})"


def parse_rate(text: str, burst: int | None = None) -> RateLimit:
    """``"20/s"``, ``"600/min"``, ``"5/10s"``: ``count`` requests per period."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"rate {text!r} is not of the form '<count>/<unit>', e.g. '20/s', '600/min'"
        )
    count = int(match[1])
    period = int(match[2] or 1) * _UNIT_S[match[3].lower()]
    if count < 1 or period < 1:
        raise ValueError(f"rate {text!r} must allow at least one request per period")
    if burst is not None and burst < 1:
        raise ValueError(f"burst {burst} must be at least 1")
    return RateLimit(count=count, period_s=float(period), burst=burst or count)


class RateLimiter:
    """``check(client)`` answers None when the request may go, else the seconds to wait."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._interval = limit.interval_s
        self._tolerance = limit.interval_s * (limit.burst - 1)
        self._clock = clock
        self._tat: dict[str, float] = {}

    def check(self, client: str) -> float | None:
        now = self._clock()
        tat = max(self._tat.get(client, now), now)
        wait = tat - self._tolerance - now
        if wait > 0:
            return wait
        if len(self._tat) >= _MAX_CLIENTS and client not in self._tat:
            self._forget_idle(now)
        self._tat[client] = tat + self._interval
        return None

    def _forget_idle(self, now: float) -> None:
        # A client whose arrival time has passed has its whole burst back: nothing to remember.
        self._tat = {c: t for c, t in self._tat.items() if t > now}
        if len(self._tat) >= _MAX_CLIENTS:
            self._tat.clear()

    @staticmethod
    def retry_after(wait_s: float) -> int:
        """Whole seconds for the ``Retry-After`` header, never 0."""
        return max(1, math.ceil(wait_s))
