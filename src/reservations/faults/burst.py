"""A burst of reservation requests that rides out faults, and the invariants checked after it.

A real client retries a request that got no answer (connection refused or reset, 503 while a
dependency is down): so does this one, until it gets an answer. A request is *accepted* once it
got its 202 and job id; everything accepted must end final, and the event must end with exactly
its capacity reserved, no user twice, and nothing left in the queue.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter
from reservations.channels import QUEUE_NAME
from reservations.loadtest.http import Connection, HttpError, Pool, bearer

__all__ = ["BurstResult", "Check", "create_users", "run_burst"]

_RETRY_PAUSE_S = 0.05
_GIVE_UP_S = 120.0
_DRAIN_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class BurstResult:
    requests: int
    tickets: int
    accepted: int = 0
    retried: int = 0
    """Attempts that got no answer or a 503 and were sent again."""
    refused: int = 0
    """Requests answered with a 4xx (none expected: every user and the event exist)."""
    fault_at_s: float | None = None
    all_final_s: float | None = None
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


async def create_users(base_url: str, count: int, connections: int = 32) -> list[int]:
    run_id = uuid.uuid4().hex[:8]
    ids: list[int] = []
    async with Pool(base_url, connections) as pool:

        async def make(i: int) -> None:
            body = {"name": f"fault-{run_id}-{i}", "email": f"fault-{run_id}-{i}@faults.example"}
            resp = await pool.post("/user", body)
            if resp.status != 201 and resp.status != 200:
                raise RuntimeError(f"POST /user answered {resp.status}: {resp.body[:200]!r}")
            ids.append(int(resp.json()["id"]))

        for start in range(0, count, 1000):
            await asyncio.gather(*(make(i) for i in range(start, min(count, start + 1000))))
    return ids


async def _create_event(base_url: str, tickets: int, admin_token: str | None) -> int:
    async with Pool(base_url, 1) as pool:
        body = {
            "name": f"faults {uuid.uuid4().hex[:8]}",
            "date": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "location": "fault injection",
            "maxTickets": tickets,
        }
        resp = await pool.post("/event", body, bearer(admin_token))
        if resp.status != 201:
            raise RuntimeError(f"POST /event answered {resp.status}: {resp.body[:200]!r}")
        return int(resp.json()["id"])


async def _get_json(pool: Pool, path: str) -> Any:
    deadline = time.monotonic() + _GIVE_UP_S
    while True:
        try:
            resp = await pool.get(path)
            if resp.status == 200:
                return resp.json()
        except (OSError, HttpError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET {path} kept failing")
        await asyncio.sleep(_RETRY_PAUSE_S)


async def run_burst(
    base_url: str,
    redis_url: Callable[[], str],
    users: list[int],
    *,
    requests: int,
    tickets: int,
    fault: Callable[[], Awaitable[None]] | None = None,
    fault_after: float = 0.3,
    connections: int = 64,
    final_timeout_s: float = 180.0,
    seed: int = 7,
    admin_token: str | None = None,
) -> BurstResult:
    """Fire ``requests`` POSTs (distinct users first, the rest repeats) and run ``fault`` once
    ``fault_after`` of them were sent; then wait for every accepted request to be final."""
    rng = random.Random(seed)
    distinct = users[: min(len(users), requests)]
    sequence = distinct + rng.choices(distinct, k=requests - len(distinct))
    rng.shuffle(sequence)
    event_id = await _create_event(base_url, tickets, admin_token)
    result = BurstResult(requests=requests, tickets=tickets)
    jobs: set[str] = set()
    next_i = 0
    fault_task: asyncio.Task[None] | None = None
    started = time.perf_counter()
    host, port = base_url.removeprefix("http://").split(":")

    async def send(conn: Connection, user: int) -> None:
        deadline = time.monotonic() + _GIVE_UP_S
        while True:
            try:
                resp = await conn.request("POST", f"/reservation/{event_id}/{user}")
            except (OSError, HttpError):
                conn.close()
                resp = None
            if resp is not None and resp.status == 202:
                jobs.add(str(resp.json()["id"]))
                result.accepted += 1
                return
            if resp is not None and 400 <= resp.status < 500:
                result.refused += 1
                return
            # No answer, or a 5xx while a dependency is down: the request was not accepted.
            result.retried += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"a request got no answer for {_GIVE_UP_S}s")
            await asyncio.sleep(_RETRY_PAUSE_S)

    async def run(conn: Connection) -> None:
        nonlocal next_i, fault_task
        try:
            while next_i < len(sequence):
                i = next_i
                next_i += 1
                if fault is not None and fault_task is None and i >= fault_after * requests:
                    result.fault_at_s = time.perf_counter() - started
                    fault_task = asyncio.create_task(fault())
                await send(conn, sequence[i])
        finally:
            conn.close()

    await asyncio.gather(*(run(Connection(host, int(port))) for _ in range(connections)))
    if fault_task is not None:
        await fault_task

    async with Pool(base_url, 4) as pool:
        deadline = time.monotonic() + final_timeout_s
        while True:
            outcomes = await _get_json(pool, f"/event/{event_id}/outcomes")
            if outcomes["pending"] == 0 and outcomes["reserved"] + outcomes["rejected"] >= len(
                jobs
            ):
                result.all_final_s = time.perf_counter() - started
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        event = await _get_json(pool, f"/event/{event_id}")
        reserved_users: list[int] = []
        while True:
            page = await _get_json(
                pool,
                f"/event/{event_id}/reservations?status=RESERVED"
                f"&offset={len(reserved_users)}&limit=1000",
            )
            reserved_users += [int(item["userId"]) for item in page["items"]]
            if len(page["items"]) < 1000:
                break
        sample = rng.sample(sorted(jobs), min(500, len(jobs)))
        sampled = [await _get_json(pool, f"/reservation/requests/{job}") for job in sample]
    result.seconds = time.perf_counter() - started

    # A killed worker's last messages may be final in the database but unacknowledged: they
    # stay in flight until their lease runs out, are delivered again and acknowledged without
    # effect. So "nothing stuck" means the queue drains, within a few leases.
    queue = BrokerQueue(RedisAdapter(redis_url()))
    try:
        channel = queue.channel(QUEUE_NAME, dict)
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while True:
            stats = await channel.stats()
            if stats.waiting + stats.in_flight + stats.delayed == 0:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await queue.close()

    want = min(tickets, len(set(distinct)))
    final = outcomes["reserved"] + outcomes["rejected"]
    not_final = [s["jobId"] for s in sampled if s["status"] not in ("RESERVED", "REJECTED")]
    stuck = stats.waiting + stats.in_flight + stats.delayed
    result.checks = [
        Check(
            f"exactly {want:,} reserved",
            outcomes["reserved"] == want == len(reserved_users) == event["reservedTickets"],
            f"outcomes {outcomes['reserved']:,}, list {len(reserved_users):,}, "
            f"event {event['reservedTickets']:,}",
        ),
        Check(
            "no user twice",
            len(reserved_users) == len(set(reserved_users)),
            f"{len(reserved_users) - len(set(reserved_users))} duplicates",
        ),
        # The service may count more requests than the client saw accepted: a 202 lost when
        # the API died was retried by the client. Every one of them must still end final.
        Check(
            "every accepted request final",
            outcomes["pending"] == 0 and final >= len(jobs) and not not_final,
            f"{final:,} final, {outcomes['pending']:,} pending, {len(jobs):,} accepted as the "
            f"client saw it, {len(not_final)} of {len(sample)} sampled not final",
        ),
        Check(
            "no message stuck or dead",
            stuck == 0 and stats.dead == 0,
            f"waiting {stats.waiting}, in flight {stats.in_flight}, delayed {stats.delayed}, "
            f"dead {stats.dead}",
        ),
        Check("no request refused", result.refused == 0, f"{result.refused} refused"),
    ]
    return result
