"""The ``soak`` scenario: a steady stream of requests for a long time, over events that open and
take place one after another, watching that the deployment does not grow or slow as it lives.

Every ``event_every_s`` a new event goes on sale, taking place ``event_life_s`` later; requests
arrive at ``rate`` a second (an open loop: sent on a clock, not when the last one is answered),
each for one of the events still on sale and a user drawn from a fixed pool. Every
``sample_every_s`` the run reads Redis's ``used_memory``, PostgreSQL's ``pg_database_size`` and
the request rows' count, and counts the requests accepted since the last sample.

The deployment should run with a short retention, so that the past events' gates and outcomes
are dropped within the run: ``RESERVATION_RETENTION_DAYS=0.0105`` (15 minutes, the shortest
allowed) and ``RETENTION_INTERVAL=10``. After a warm-up (the first events' lives, or a tenth of
the run), the samples are cut in thirds, and the checks compare the last third with the first:
Redis's memory and the accepted rate must each stay within ``FLAT_TOLERANCE`` (10 %).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .http import HttpError, Pool, bearer
from .runner import _cached_users, _save_users
from .setup import Check, LoadTestError, Progress, create_users, expect, first_int

__all__ = ["FLAT_TOLERANCE", "Sample", "SoakPlan", "SoakResult", "run_soak", "servers_of"]

# Steady state holds the same things at any time (the events on sale, the requests in flight,
# the queue's deduplication window), so its size moves only with their mix: a tenth is well
# above that noise (a few per cent in runs here) and well below a leak of one event's gate per
# event over a run.
FLAT_TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class SoakPlan:
    minutes: float = 30.0
    rate: float = 1_000.0
    users: int = 20_000
    tickets: int = 200
    event_every_s: float = 15.0
    event_life_s: float = 60.0
    sample_every_s: float = 5.0
    connections: int = 64
    warmup: float | None = None
    """Seconds left out of the comparison at the start; None: the first events' lives and a
    retention pass (``event_life_s`` + 60 s), or a tenth of the run if longer."""

    @property
    def duration_s(self) -> float:
        return self.minutes * 60

    @property
    def warmup_s(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return max(self.event_life_s + 60.0, self.duration_s / 10)


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    redis_bytes: int
    redis_keys: int
    pg_bytes: int
    request_rows: int
    accepted_rps: float
    open_events: int


@dataclass(slots=True)
class SoakResult:
    plan: SoakPlan
    base_url: str
    samples: list[Sample] = field(default_factory=list)
    accepted: int = 0
    failed: int = 0
    resent: int = 0
    """POSTs sent a second time after their connection was reset (see ``post``)."""
    events: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if not c.target)

    @property
    def targets_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.target)

    def thirds(self) -> tuple[list[Sample], list[Sample]]:
        """The first and the last third of the samples after the warm-up."""
        steady = [s for s in self.samples if s.t_s >= self.plan.warmup_s]
        third = max(len(steady) // 3, 1)
        return steady[:third], steady[-third:]


def servers_of(data_dir: Path) -> tuple[str, str]:
    """The database and Redis URLs of the ``reservations-tools up`` running in ``data_dir``,
    or of ``DATABASE_URL`` / ``REDIS_URL``."""
    import os

    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if database_url and redis_url:
        return database_url, redis_url
    try:
        run = json.loads((data_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoadTestError(
            f"the soak reads Redis's and PostgreSQL's size: set DATABASE_URL and REDIS_URL, or "
            f"run `reservations-tools up` with this data dir ({data_dir})"
        ) from exc
    return str(run["database_url"]), str(run["redis_url"])


class _Meter:
    """Reads the servers' sizes."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        from brokerq.redis import Connection
        from reservations.db import create_engine

        self._engine = create_engine(database_url, pool_size=1)
        self._redis = Connection(redis_url, socket_timeout=10)

    async def read(self) -> tuple[int, int, int, int]:
        from sqlalchemy import text

        info = await self._redis.call("INFO", "memory")
        text_info = info.decode() if isinstance(info, bytes) else str(info)
        used = next(
            int(line.split(":", 1)[1])
            for line in text_info.splitlines()
            if line.startswith("used_memory:")
        )
        keys = int(await self._redis.call("DBSIZE"))
        async with self._engine.connect() as conn:
            size = int(await conn.scalar(text("SELECT pg_database_size(current_database())")))
            rows = int(
                await conn.scalar(
                    text(
                        "SELECT n_live_tup FROM pg_stat_user_tables "
                        "WHERE relname = 'reservation_requests'"
                    )
                )
                or 0
            )
        return used, keys, size, rows

    async def close(self) -> None:
        await self._redis.close()
        await self._engine.dispose()


async def _open_event(pool: Pool, token: str | None, name: str, plan: SoakPlan) -> int:
    date = datetime.now(UTC) + timedelta(seconds=plan.event_life_s)
    body = {
        "name": name,
        "date": date.isoformat(),
        "location": "soak",
        "maxTickets": plan.tickets,
    }
    data = await expect(await pool.post("/event", body, bearer(token)), "POST /event", 200, 201)
    event_id = first_int(data, "id")
    if event_id is None:
        raise LoadTestError(f"POST /event answered without an id: {data!r}")
    return event_id


async def run_soak(
    base_url: str,
    plan: SoakPlan,
    progress: Progress,
    *,
    database_url: str,
    redis_url: str,
    seed: int | None = None,
    users_cache: Path | None = None,
    admin_token: str | None = None,
) -> SoakResult:
    rng = random.Random(seed)
    result = SoakResult(plan, base_url)
    meter = _Meter(database_url, redis_url)
    async with Pool(base_url, plan.connections) as pool, Pool(base_url, 2) as admin:
        users = await _cached_users(pool, users_cache, plan.users, rng, progress)
        if not users:
            users = await create_users(pool, f"soak-{time.time_ns()}", plan.users, progress)
            _save_users(users_cache, users)
        tag = time.time_ns()
        # (event id, when its sale ends on the monotonic clock)
        on_sale: list[tuple[int, float]] = []
        accepted_since = 0
        in_flight: set[asyncio.Task[None]] = set()
        limit = asyncio.Semaphore(plan.connections * 8)

        async def post(path: str) -> int:
            """The answer's status, 0 for none. A keep-alive connection the API closed after
            its idle timeout, reused at that moment, is reset before the request is read: sent
            once more on a new connection, as HTTP clients do."""
            for attempt in range(2):
                try:
                    return (await pool.post(path)).status
                except (OSError, HttpError):
                    if attempt == 0:
                        result.resent += 1
            return 0

        async def send(event_id: int, user_id: int) -> None:
            nonlocal accepted_since
            try:
                if await post(f"/reservation/{event_id}/{user_id}") == 202:
                    result.accepted += 1
                    accepted_since += 1
                else:
                    result.failed += 1
            finally:
                limit.release()

        async def open_events() -> None:
            while True:
                event_id = await _open_event(
                    admin, admin_token, f"soak {tag} {result.events}", plan
                )
                # Sold until a second before it takes place.
                on_sale.append((event_id, time.monotonic() + plan.event_life_s - 1.0))
                result.events += 1
                await asyncio.sleep(plan.event_every_s)  # the scenario's clock

        async def sample(t0: float) -> None:
            nonlocal accepted_since
            last = time.monotonic()
            while True:
                await asyncio.sleep(plan.sample_every_s)  # the scenario's clock
                now = time.monotonic()
                counted, accepted_since = accepted_since, 0
                used, keys, size, rows = await meter.read()
                open_now = sum(1 for _, until in on_sale if until > now)
                result.samples.append(
                    Sample(now - t0, used, keys, size, rows, counted / (now - last), open_now)
                )
                last = now
                progress.advance(int(now - t0))

        progress.phase("soaking (s)", int(plan.duration_s))
        progress.measure("start")
        t0 = time.monotonic()
        opener = asyncio.create_task(open_events())
        sampler = asyncio.create_task(sample(t0))
        sent = 0
        try:
            while (elapsed := time.monotonic() - t0) < plan.duration_s:
                due = int(elapsed * plan.rate) - sent
                now = time.monotonic()
                live = [event_id for event_id, until in on_sale if until > now]
                for _ in range(due if live else 0):
                    await limit.acquire()
                    task = asyncio.create_task(send(rng.choice(live), rng.choice(users)))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    sent += 1
                await asyncio.sleep(0.01)  # the sending clock's tick
        finally:
            opener.cancel()
            sampler.cancel()
            await asyncio.gather(opener, sampler, *in_flight, return_exceptions=True)
            await meter.close()
        progress.measure("end")
    result.checks = soak_checks(result)
    return result


def _median(samples: list[Sample], field_name: str) -> float:
    return statistics.median(getattr(s, field_name) for s in samples) if samples else float("nan")


def soak_checks(r: SoakResult) -> list[Check]:
    first, last = r.thirds()
    checks = [
        Check(
            "every POST accepted (202)",
            r.failed == 0,
            f"{r.accepted:,} accepted, {r.failed:,} failed ({r.resent:,} sent again after a "
            "connection reset)",
        )
    ]
    if len(first) < 2 or len(last) < 2:
        checks.append(Check("enough samples after the warm-up", False, f"{len(r.samples)} in all"))
        return checks
    for what, name in (("Redis memory", "redis_bytes"), ("accepted req/s", "accepted_rps")):
        a, b = _median(first, name), _median(last, name)
        change = (b - a) / a if a else float("inf")
        ok = change <= FLAT_TOLERANCE if name == "redis_bytes" else change >= -FLAT_TOLERANCE
        checks.append(
            Check(
                f"{what} flat: last third's median within {FLAT_TOLERANCE:.0%} of the first's",
                ok,
                f"{_fmt(name, a)} -> {_fmt(name, b)} ({change:+.1%})",
            )
        )
    rate = _median([*first, *last], "accepted_rps")
    checks.append(
        Check(
            f"accepted at the asked rate ({r.plan.rate:,.0f}/s, within 5 %)",
            rate >= 0.95 * r.plan.rate,
            f"median {rate:,.0f}/s",
            target=True,
        )
    )
    grew_first = first[-1].pg_bytes - first[0].pg_bytes
    grew_last = last[-1].pg_bytes - last[0].pg_bytes
    checks.append(
        Check(
            "PostgreSQL grows less in the last third than in the first (retention)",
            grew_last < grew_first,
            f"{grew_first / 2**20:+,.1f} MB -> {grew_last / 2**20:+,.1f} MB",
            target=True,
        )
    )
    return checks


def _fmt(name: str, value: float) -> str:
    return f"{value / 2**20:,.1f} MB" if name.endswith("bytes") else f"{value:,.0f}/s"


def soak_figures(r: SoakResult) -> dict[str, Any]:
    first, last = r.thirds()
    return {
        "scenario": "soak",
        "base_url": r.base_url,
        "plan": {
            "minutes": r.plan.minutes, "rate": r.plan.rate, "users": r.plan.users,
            "tickets": r.plan.tickets, "event_every_s": r.plan.event_every_s,
            "event_life_s": r.plan.event_life_s, "warmup_s": r.plan.warmup_s,
        },
        "accepted": r.accepted,
        "failed": r.failed,
        "resent": r.resent,
        "events": r.events,
        "first_third": {n: _median(first, n) for n in _FIELDS},
        "last_third": {n: _median(last, n) for n in _FIELDS},
        "samples": [
            {n: getattr(s, n) for n in ("t_s", *_FIELDS, "open_events")} for s in r.samples
        ],
        "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail, "target": c.target} for c in r.checks
        ],
        "ok": r.ok,
        "targets_ok": r.targets_ok,
    }  # fmt: skip


_FIELDS = ("redis_bytes", "redis_keys", "pg_bytes", "request_rows", "accepted_rps")
