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
from typing import Any

from brokerq import BrokerError, BrokerQueue, ChannelStats
from brokerq.redis import RedisAdapter, open_commands
from reservations.channels import QUEUE_NAME
from reservations.reservation.gate import event_keys
from reservations_tools.loadtest.http import Connection, HttpError, Pool
from reservations_tools.loadtest.setup import Check, create_event

__all__ = ["BurstResult", "FaultContext", "drained", "gate_agrees", "run_burst"]

_RETRY_PAUSE_S = 0.05
_GIVE_UP_S = 120.0
_DRAIN_TIMEOUT_S = 90.0
# The workers' maintenance pass runs every 5 s: a few of them.
_GATE_TIMEOUT_S = 30.0


@dataclass(slots=True)
class BurstResult:
    requests: int
    tickets: int
    accepted: int = 0
    retried: int = 0
    """Attempts that got no answer or a 503 and were sent again."""
    refused: int = 0
    """Requests answered with a 4xx (none expected: every user and the event exist)."""
    cancelled: int = 0
    lost: int = 0
    """Accepted requests Redis lost, as the service counts them."""
    lost_seen: int = 0
    """Accepted requests whose status URLs answered 410 (lost) when asked."""
    unconfirmed: int = 0
    """POSTs answered 503 NOT_REPLICATED: queued on Redis's primary, not confirmed by a replica
    (``REDIS_REPLICAS_ACK``); the client sent them again, like any 503."""
    unconfirmed_lost: int = 0
    """Of those, the ones whose status URLs answered 410 (lost) when asked."""
    fault_at_s: float | None = None
    all_final_s: float | None = None
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    """What else the report says of the run."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


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


@dataclass(slots=True)
class FaultContext:
    """What a fault needs to know about the burst it hits, and what it reports back."""

    base_url: str
    event_id: int
    admin_token: str | None
    cancelled: int = 0
    """Reservations the fault cancelled (their tickets must be sold again)."""
    note: str = ""
    """What the fault has to say in the report."""


async def run_burst(
    base_url: str,
    redis_url: Callable[[], str],
    users: list[int],
    *,
    requests: int,
    tickets: int,
    fault: Callable[[FaultContext], Awaitable[None]] | None = None,
    fault_after: float = 0.3,
    connections: int = 64,
    final_timeout_s: float = 180.0,
    seed: int = 7,
    admin_token: str | None = None,
    poll_every_job: bool = False,
    lossless: bool = False,
) -> BurstResult:
    """Fire ``requests`` POSTs (distinct users first, the rest repeats) and run ``fault`` once
    ``fault_after`` of them were sent; then wait for every accepted request to be final or
    reported lost, for the gate to agree with PostgreSQL, and sell every ticket left.

    ``poll_every_job``: ask the status URL of every accepted request (not a sample), to count
    the lost ones as their clients see them. ``lossless``: none of them may be lost (the
    service waits for a replica before it answers 202)."""
    rng = random.Random(seed)
    distinct = users[: min(len(users), requests)]
    sequence = distinct + rng.choices(distinct, k=requests - len(distinct))
    rng.shuffle(sequence)
    async with Pool(base_url, 1) as pool:
        name = f"faults {uuid.uuid4().hex[:8]}"
        event_id = await create_event(
            pool, name=name, tickets=tickets, admin_token=admin_token, location="fault injection"
        )
    context = FaultContext(base_url, event_id, admin_token)
    result = BurstResult(requests=requests, tickets=tickets)
    jobs: set[str] = set()
    unconfirmed: set[str] = set()
    next_i = 0
    fault_task: asyncio.Future[None] | None = None
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
            if resp is not None and resp.status == 503 and b"NOT_REPLICATED" in resp.body:
                unconfirmed.add(str(resp.json()["jobId"]))
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
                    fault_task = asyncio.ensure_future(fault(context))
                await send(conn, sequence[i])
        finally:
            conn.close()

    await asyncio.gather(*(run(Connection(host, int(port))) for _ in range(connections)))
    if fault_task is not None:
        await fault_task
    result.cancelled = context.cancelled

    async with Pool(base_url, 16) as pool:
        deadline = time.monotonic() + final_timeout_s
        while True:
            outcomes = await _get_json(pool, f"/event/{event_id}/outcomes")
            settled = outcomes["final"] + outcomes.get("lost", 0)
            if outcomes["pending"] == 0 and settled >= len(jobs):
                result.all_final_s = time.perf_counter() - started
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        result.lost = int(outcomes.get("lost", 0))
        checked = sorted(jobs) if poll_every_job else rng.sample(sorted(jobs), min(500, len(jobs)))
        answers = await asyncio.gather(*(_job_status(pool, job) for job in checked))
        not_final = sum(1 for status in answers if status not in ("RESERVED", "REJECTED", "LOST"))
        result.lost_seen = sum(1 for status in answers if status == "LOST")
        result.unconfirmed = len(unconfirmed)
        if poll_every_job:
            # The requests answered 503 NOT_REPLICATED were queued too: the service counts
            # those lost with the others.
            maybe = await asyncio.gather(*(_job_status(pool, job) for job in sorted(unconfirmed)))
            result.unconfirmed_lost = sum(1 for status in maybe if status == "LOST")
        if poll_every_job:
            # Every lost request has been asked about: the service's count is now exact.
            outcomes = await _get_json(pool, f"/event/{event_id}/outcomes")
            result.lost = int(outcomes.get("lost", 0))
        live = await _live_reservations(pool, event_id)
        agrees, gate_detail = await gate_agrees(redis_url, event_id, live)
        remaining = tickets - len(live)
        sold_after = await _sell(pool, event_id, remaining) if agrees else 0
        event = await _get_json(pool, f"/event/{event_id}")
        live_after = await _live_reservations(pool, event_id)
    result.seconds = time.perf_counter() - started

    stats = await drained(redis_url)

    want = min(tickets, len(set(distinct)))
    final = outcomes["final"]
    stuck = stats.waiting + stats.in_flight + stats.delayed
    result.checks = [
        Check(
            f"exactly {want:,} reserved",
            outcomes["reserved"] - result.cancelled == want - remaining
            and len(live) + sold_after == len(live_after) == event["reservedTickets"] == want,
            f"{outcomes['reserved']:,} requests reserved, {result.cancelled} cancelled, "
            f"{remaining} sold after the burst; live {len(live_after):,}, "
            f"event {event['reservedTickets']:,}",
        ),
        Check(
            "no user twice",
            len(live_after) == len(set(live_after)),
            f"{len(live_after) - len(set(live_after))} duplicates",
        ),
        # The service may count more requests than the client saw accepted: a 202 lost when
        # the API died was retried by the client. Every one of them must still end final, or be
        # reported lost (Redis lost its data) to its client.
        Check(
            "every accepted request final or reported lost",
            outcomes["pending"] == 0 and final + result.lost >= len(jobs) and not not_final,
            f"{final:,} final, {result.lost:,} lost, {outcomes['pending']:,} pending, "
            f"{len(jobs):,} accepted as the client saw it, {not_final} of {len(checked)} asked "
            "neither final nor lost",
        ),
        Check(
            "no message stuck or dead",
            stuck == 0 and stats.dead == 0,
            f"waiting {stats.waiting}, in flight {stats.in_flight}, delayed {stats.delayed}, "
            f"dead {stats.dead}",
        ),
        Check("gate agrees with PostgreSQL", agrees, gate_detail),
        Check(
            "lost requests counted",
            not poll_every_job or result.lost == result.lost_seen + result.unconfirmed_lost,
            f"the service counts {result.lost:,}, clients found {result.lost_seen:,} of the "
            f"accepted and {result.unconfirmed_lost:,} of those answered 503 NOT_REPLICATED",
        ),
        Check(
            "no accepted request lost",
            not lossless or (poll_every_job and result.lost_seen == 0),
            f"{result.lost_seen:,} of {len(jobs):,} answered 202 lost",
        ),
        Check("no request refused", result.refused == 0, f"{result.refused} refused"),
    ]
    notes = [context.note] if context.note else []
    if result.unconfirmed:
        notes.append(
            f"{result.unconfirmed:,} POSTs answered 503 NOT_REPLICATED and sent again"
            + (f", {result.unconfirmed_lost:,} of them lost" if poll_every_job else "")
        )
    result.note = "; ".join(notes)
    return result


async def drained(redis_url: Callable[[], str]) -> ChannelStats:
    """The reservation queue's counts once it has drained, or after ``_DRAIN_TIMEOUT_S``.

    A killed worker's last messages may be final in the database but unacknowledged: they stay
    in flight until their lease runs out, are delivered again and acknowledged without effect.
    So "nothing stuck" means the queue drains, within a few leases."""
    queue = BrokerQueue(RedisAdapter(redis_url(), socket_timeout=5))
    try:
        channel = queue.channel(QUEUE_NAME, dict)
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while True:
            stats = await channel.stats()
            if stats.waiting + stats.in_flight + stats.delayed == 0:
                return stats
            if time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)
    finally:
        await queue.close()


async def _job_status(pool: Pool, job: str) -> str:
    """A request's status as its client sees it: LOST for a 410."""
    deadline = time.monotonic() + _GIVE_UP_S
    while True:
        try:
            resp = await pool.get(f"/reservation/requests/{job}")
            if resp.status == 200:
                return str(resp.json()["status"])
            if resp.status == 410:
                return "LOST"
        except (OSError, HttpError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET /reservation/requests/{job} kept failing")
        await asyncio.sleep(_RETRY_PAUSE_S)


async def _live_reservations(pool: Pool, event_id: int) -> list[int]:
    """The users holding a live (RESERVED) reservation for the event."""
    users: list[int] = []
    while True:
        page = await _get_json(
            pool,
            f"/event/{event_id}/reservations?status=RESERVED&offset={len(users)}&limit=1000",
        )
        users += [int(item["userId"]) for item in page["items"]]
        if len(page["items"]) < 1000:
            return users


async def gate_agrees(
    redis_url: Callable[[], str], event_id: int, live: list[int]
) -> tuple[bool, str]:
    """Wait (a few maintenance passes at most) for the gate's seats to be the live
    reservations' users."""
    want = set(live)
    deadline = time.monotonic() + _GATE_TIMEOUT_S
    seats: set[int] = set()
    while True:
        # brokerq's commands: one server, the Sentinels' primary or the event's cluster node.
        client = open_commands(redis_url(), socket_timeout=5)
        try:
            raw = await client.call("HKEYS", event_keys(event_id).admitted)
            seats = {int(user) for user in raw}
        except (OSError, BrokerError):
            pass
        finally:
            await client.close()
        if seats == want:
            return True, f"{len(seats):,} seats, as PostgreSQL has them"
        if time.monotonic() > deadline:
            return False, (
                f"after {_GATE_TIMEOUT_S:.0f} s the gate holds {len(seats - want)} seats "
                f"PostgreSQL does not and misses {len(want - seats)}"
            )
        await asyncio.sleep(0.2)


async def _sell(pool: Pool, event_id: int, count: int) -> int:
    """Sell ``count`` tickets to new users; each request must end RESERVED."""
    run_id = uuid.uuid4().hex[:8]
    sold = 0
    for i in range(count):
        body = {"name": f"late-{run_id}-{i}", "email": f"late-{run_id}-{i}@faults.example"}
        user = (await pool.post("/user", body)).json()["id"]
        resp = await pool.post(f"/reservation/{event_id}/{user}")
        if resp.status != 202:
            continue
        job = str(resp.json()["id"])
        deadline = time.monotonic() + _GIVE_UP_S
        status = await _job_status(pool, job)
        while status == "PENDING" and time.monotonic() < deadline:
            await asyncio.sleep(_RETRY_PAUSE_S)
            status = await _job_status(pool, job)
        sold += status == "RESERVED"
    return sold
