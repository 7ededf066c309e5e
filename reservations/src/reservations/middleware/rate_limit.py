"""A per-client rate limit for reservation requests, shared by every API process or per process.

Shared (the default, ``SharedRateLimiter``): the ``limits`` library's moving window, kept in
Redis, so that a client over its limit is refused by whichever API process it reaches. A window
of ``burst`` requests over the time the rate takes to send that many: the long-run rate and the
burst are the configured ones. One Redis round trip per reservation POST, on a connection of its
own. If Redis does not answer, the request goes on (the gate's own Redis call then answers 503).

Per process (``RESERVATION_RATE_LIMIT_SCOPE=process``, ``RateLimiter``): GCRA in the API
process, one number per client, the theoretical arrival time of its next request; no Redis round
trip, but with N processes behind a balancer a client gets up to N times the rate.

The client is the peer address uvicorn reports, which is the ``X-Forwarded-For`` address for
requests from a proxy listed in ``FORWARDED_ALLOW_IPS``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reservations.log import get_logger

log = get_logger(__name__)

__all__ = ["Limiter", "RateLimit", "RateLimiter", "SharedRateLimiter", "parse_rate"]

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


class Limiter(Protocol):
    limit: RateLimit

    async def acquire(self, client: str) -> float | None:
        """None when the client's request may go (and is counted), else the seconds to wait."""
        ...

    async def close(self) -> None: ...


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

    async def acquire(self, client: str) -> float | None:
        return self.check(client)

    async def close(self) -> None:
        pass

    def _forget_idle(self, now: float) -> None:
        # A client whose arrival time has passed has its whole burst back: nothing to remember.
        self._tat = {c: t for c, t in self._tat.items() if t > now}
        if len(self._tat) >= _MAX_CLIENTS:
            self._tat.clear()

    @staticmethod
    def retry_after(wait_s: float) -> int:
        """Whole seconds for the ``Retry-After`` header, never 0."""
        return max(1, math.ceil(wait_s))


_NAMESPACE = "rsv-rate"


class SharedRateLimiter:
    """The limit in Redis, for every API process at once (``limits``' moving window)."""

    def __init__(self, limit: RateLimit, redis_url: str) -> None:
        from limits import RateLimitItemPerSecond
        from limits.aio.strategies import MovingWindowRateLimiter

        self.limit = limit
        # ``burst`` requests in any window of the time ``burst`` requests take at the rate.
        window_s = max(1, math.ceil(limit.burst * limit.interval_s))
        self._item = RateLimitItemPerSecond(limit.burst, window_s, namespace=_NAMESPACE)
        self._storage = _storage(redis_url)
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def acquire(self, client: str) -> float | None:
        try:
            if await self._limiter.hit(self._item, client):
                return None
            stats = await self._limiter.get_window_stats(self._item, client)
        except Exception as exc:
            # Redis is the gate's too: its call answers 503 if Redis is gone.
            log.warning("rate_limit_unavailable", error=type(exc).__name__)
            return None
        return max(0.0, stats.reset_time - time.time())

    async def close(self) -> None:
        # The client's connections belong to its storage; nothing else holds them.
        client: Any = getattr(self._storage, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def _storage(redis_url: str) -> Any:
    """``limits``' asynchronous Redis storage, through redis-py, for a service Redis URL."""
    from limits.aio.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage

    scheme, sep, rest = redis_url.partition("://")
    if scheme in ("redis+cluster", "rediss+cluster"):
        # Each client's window is one key: one slot, wherever it lands.
        return RedisClusterStorage(
            f"async+redis+cluster://{rest.split('?')[0].rstrip('/')}",
            implementation="redispy",
            key_prefix=_NAMESPACE,
            ssl=scheme == "rediss+cluster",
        )
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        if scheme == "rediss+sentinel":
            raise ValueError("a shared rate limit over Sentinel with TLS is not supported")
        return RedisSentinelStorage(
            f"async+redis+sentinel://{rest}", implementation="redispy", key_prefix=_NAMESPACE
        )
    return RedisStorage(
        f"async+{scheme}{sep}{rest}", implementation="redispy", key_prefix=_NAMESPACE
    )
