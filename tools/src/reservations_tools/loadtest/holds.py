"""The ``holds`` scenario: an event sold with holds and a waitlist, every request followed by
its client to its end.

The event has ``tickets`` seats, each won seat held ``hold_seconds``, and a waitlist. Each of
``requests`` distinct users sends one reservation request (the burst, over ``connections``
keep-alive connections, as in the other scenarios), then its client follows the request on its
status URL:

- a request that wins a seat is HELD; its client learns it by polling, then confirms the seat
  after a think time drawn uniformly from 0 to ``think_max_s`` (half the hold by default), or,
  for the ``never_confirm`` share of the clients (drawn with the run's seeded RNG), never does:
  its hold expires and the seat goes to the head of the line, whose client must notice in turn;
- a request that finds the event sold out is WAITING, with its place in line (``position``).

When a client looks: first as soon as its 202 arrives; then by its place in line ``p`` (a
WAITING answer's ``position``; for a PENDING answer, its arrival number ``seq`` minus the seats,
the place it will take behind a full house):

- the head, ``p`` up to the number of seats: a wave of expiring holds can reach it at any moment,
  so it looks every ``0.2 s * sqrt(p)``, at most every quarter of the hold (2.5 s of 10 s): the
  first in line five times a second, and a client given a seat notices within a quarter of its
  hold, which leaves it the think time and some. A PENDING request there looks again after its
  ``estimatedWaitSeconds``, within the same bounds.
- further back: a seat comes back at most once per hold (nobody releases in this scenario), so
  the line moves at most ``tickets`` places per ``hold_seconds``; a client ``k * tickets`` or
  more places behind the head (``k = (p - 1) // tickets``) cannot reach a seat sooner than ``k``
  holds from now, and looks again only then. Far back that is after the run: such a client looks
  once, and learns its end from the close.

So about ``tickets`` clients are at the head, looking ``4 * tickets / hold_seconds`` times a
second at most (400/s with the defaults). The head polling every 200 ms down to twice the seats
would be 10,000 GETs a second with 1,000 seats, more than the service answers on a small machine.
The first looks are the larger load: one per request, and a look at a WAITING request costs the
service more than its POST (a count of the requests ahead of it in line, on top of the API's own
work), so that with the requests processed as fast as they come, nearly every first look finds
its request WAITING, and the service answers them at a few hundred a second.

The load generator follows the clients on 32 connections. What is due waits for one in two
lines, each in order of time: the clients whose timing matters (those at the head of the line as
last seen, and the confirmations), then the others (first looks, far back); every fourth free
connection goes to the others first, so that first looks, the earliest arrivals' first, keep
coming while the head takes most of the connections. So a backlog of first looks delays the
clients that could get a seat by about one look's time, not by the backlog. First looks still
waiting when the run ends are not made: those requests are far back and the close ends them (a
sample of them is read back after it).

The run ends when every seat is RESERVED (confirmed), or once every request was processed and no
hold is left that could expire (the line cannot move any more), or ``final_timeout_s`` after the
sending. Then the load test closes the sale (``POST /event/{id}/close``), so that every request
still in line ends REJECTED with EVENT_CLOSED, reads every reservation of the event (in pages),
the outcome counts and the status of every request that got a seat and of a sample of the
others, and checks what ``holds_checks.py`` says.

A monitor samples the event meanwhile on its own connection (every 0.25 s, or four times as long
as its last sample took): the outcome counts (pending, waiting), ``reservedTickets`` and the
numbers of HELD and RESERVED reservations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .holds_checks import holds_checks
from .holds_result import Client, HoldsResult, Sample
from .http import Connection, HttpError, Pool, bearer, parse_base_url
from .runner import _cached_users, _fire, _save_users, wait_healthy
from .scenario import Scenario
from .setup import LoadTestError, Progress, bounded, create_users, expect, first_int

__all__ = ["Client", "HoldsResult", "Sample", "look_after", "run_holds"]

_decode = msgspec.json.Decoder().decode

FAST_POLL_S = 0.2
"""The first in line's pace: the head looks every ``FAST_POLL_S * sqrt(position)``."""
_SETUP_CONNECTIONS = 32
_LOOK_CONNECTIONS = 32
_ROUTINE_TURN = 4  # every 4th free connection goes to the routine line first
_MONITOR_INTERVAL_S = 0.25
_MONITOR_DUTY = 0.2
_MONITOR_PATIENCE_S = 30.0
_RETRY_S = 0.2
_GIVE_UP_S = 120.0  # with ``retry``: how long a POST is sent again after its first failure
_SAMPLE = 2_000
_PAGE = 1000

_POLL = 0
_CONFIRM = 1


def look_after(place: int, seats: int, hold_s: float) -> float:
    """Seconds until a client at ``place`` in line looks at its status again (module doc)."""
    place = max(place, 1)
    if place <= seats:
        return min(hold_s / 4, max(FAST_POLL_S, FAST_POLL_S * math.sqrt(place)))
    return ((place - 1) // seats) * hold_s


class _Run:
    """The clients of one run: their scheduled looks and confirmations, on a few connections."""

    def __init__(
        self,
        base_url: str,
        scenario: Scenario,
        event_id: int,
        clients: list[Client],
        t0: float,
        *,
        retry: bool = False,
    ) -> None:
        self.host, self.port, self.prefix = parse_base_url(base_url)
        self.scenario = scenario
        self.event_id = event_id
        self.clients = clients
        self.t0 = t0
        self.seats = scenario.tickets
        self.hold_s = float(scenario.hold_seconds or 1)
        # The two lines of what is due (see the module doc): (due, tie, client, action).
        self._urgent: list[tuple[float, int, int, int]] = []
        self._routine: list[tuple[float, int, int, int]] = []
        self._tie = itertools.count()
        self._wake = asyncio.Event()
        self._ready: asyncio.Queue[tuple[float, int, int, int] | None] = asyncio.Queue(maxsize=1)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.look_times: list[float] = []
        self.confirm_times: list[float] = []
        self.look_errors = 0
        self.retry = retry
        self._failing: dict[int, float] = {}  # when each POST sent again first failed
        self.retried = 0  # POSTs sent again
        self.lost_seen = 0  # requests whose status URL answered 410 (lost with Redis's data)
        self.first_looks = 0  # clients that have looked at least once
        self.first_seen: Counter[str] = Counter()  # what the clients' first looks found
        self.look_ms: dict[str, list[float]] = {}  # each look's latency, by the status it found

    # -- scheduling ----------------------------------------------------------------------------

    def at(self, due: float, index: int, action: int, *, urgent: bool) -> None:
        if due < self._earliest():
            self._wake.set()  # the dispatcher sleeps until the old earliest time: wake it
        heapq.heappush(
            self._urgent if urgent else self._routine, (due, next(self._tie), index, action)
        )

    def _earliest(self) -> float:
        return min(h[0][0] if h else math.inf for h in (self._urgent, self._routine))

    def answered(self, index: int, status: int, body: bytes | None) -> bool:
        """The answer to a client's POST: note its job and look at once. True: send it again
        (with ``retry``, a request that got no answer or a 5xx was not accepted)."""
        if self.retry and (status == 0 or status >= 500):
            now = time.perf_counter()
            if now - self._failing.setdefault(index, now) < _GIVE_UP_S:
                self.retried += 1
                self.clients[index].retries += 1
                return True
        if not 200 <= status < 300 or body is None:
            return False
        try:
            data = _decode(body)
        except msgspec.DecodeError:
            return False
        client = self.clients[index]
        client.job_id = str(data.get("id") or data.get("jobId"))
        client.token = data.get("holdToken")
        client.status = "PENDING"
        self.at(time.perf_counter(), index, _POLL, urgent=False)
        return False

    def start(self, lanes: int) -> None:
        self._tasks.append(asyncio.create_task(self._dispatch()))
        for _ in range(lanes):
            self._tasks.append(asyncio.create_task(self._lane(Connection(self.host, self.port))))

    async def stop(self) -> None:
        """Stop dispatching; each connection finishes the request it is in."""
        self._stopping = True
        self._wake.set()
        if not self._tasks:
            return
        dispatcher, *lanes = self._tasks
        await dispatcher
        for _ in lanes:
            await self._ready.put(None)
        await asyncio.gather(*lanes)
        self._tasks = []

    async def _dispatch(self) -> None:
        turn = 0
        while not self._stopping:
            now = time.perf_counter()
            lines = (self._urgent, self._routine)
            if turn % _ROUTINE_TURN == _ROUTINE_TURN - 1:
                lines = (self._routine, self._urgent)
            for line in lines:
                if line and line[0][0] <= now:
                    turn += 1
                    # Blocks while every connection is busy.
                    await self._ready.put(heapq.heappop(line))
                    break
            else:
                self._wake.clear()
                earliest = self._earliest()
                if math.isinf(earliest):
                    await self._wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), earliest - now)

    async def _lane(self, conn: Connection) -> None:
        try:
            while (item := await self._ready.get()) is not None:
                _, _, index, action = item
                if action == _POLL:
                    await self._look(conn, index)
                else:
                    await self._confirm(conn, index)
        finally:
            conn.close()

    # -- a client's acts -----------------------------------------------------------------------

    async def _look(self, conn: Connection, index: int) -> None:
        client = self.clients[index]
        path = f"{self.prefix}/reservation/requests/{client.job_id}"
        began = time.perf_counter()
        try:
            resp = await conn.request("GET", path)
        except (OSError, HttpError):
            conn.close()
            resp = None
        now = time.perf_counter()
        self.look_times.append(now - self.t0)
        if resp is not None and resp.status == 410:
            # Accepted, then lost with Redis's data: it holds no place (the client would send it
            # again; this one counts it).
            client.status = "LOST"
            self.lost_seen += 1
            return
        if resp is None or resp.status != 200:
            self.look_errors += 1
            self.at(now + _RETRY_S, index, _POLL, urgent=client.urgent)
            return
        data = resp.json()
        if client.looks == 0:
            self.first_looks += 1
            self.first_seen[str(data.get("status"))] += 1
        client.looks += 1
        self.look_ms.setdefault(str(data.get("status")), []).append((now - began) * 1000.0)
        self._seen(index, client, data, now)

    def _seen(self, index: int, client: Client, data: dict[str, Any], now: float) -> None:
        client.status = status = str(data.get("status"))
        seq = data.get("seq")
        if isinstance(seq, int):
            client.seq = seq
        quarter = self.hold_s / 4
        if status == "PENDING":
            place = client.seq - self.seats if client.seq > 0 else 0
            client.urgent = place <= self.seats
            if client.urgent:
                wait = data.get("estimatedWaitSeconds")
                pause = FAST_POLL_S if not isinstance(wait, int | float) else float(wait)
                pause = min(quarter, max(FAST_POLL_S, pause))
            else:
                pause = look_after(place, self.seats, self.hold_s)
            self.at(now + pause, index, _POLL, urgent=client.urgent)
        elif status == "WAITING":
            client.saw_waiting = True
            position = data.get("position")
            place = position if isinstance(position, int) else max(client.seq - self.seats, 1)
            client.urgent = place <= self.seats
            pause = look_after(place, self.seats, self.hold_s)
            self.at(now + pause, index, _POLL, urgent=client.urgent)
        elif status == "HELD":
            client.reservation_id = first_int(data, "reservationId")
            client.hold_status = data.get("reservationStatus")
            client.held_seen_s = now - self.t0
            if client.hold_status == "HELD" and not client.never_confirm:
                self.at(now + client.think_s, index, _CONFIRM, urgent=True)
        else:  # RESERVED or REJECTED: final
            client.reason = data.get("reason")
            client.reservation_id = first_int(data, "reservationId")

    async def _confirm(self, conn: Connection, index: int) -> None:
        client = self.clients[index]
        path = f"{self.prefix}/reservation/{client.reservation_id}/confirm"
        try:
            resp = await conn.request("POST", path, None, {"Hold-Token": client.token or ""})
        except (OSError, HttpError):
            conn.close()
            # A confirmation is idempotent: send it again.
            self.at(time.perf_counter() + _RETRY_S, index, _CONFIRM, urgent=True)
            return
        now = time.perf_counter()
        self.confirm_times.append(now - self.t0)
        if self.retry and resp.status >= 500:
            self.at(now + _RETRY_S, index, _CONFIRM, urgent=True)
            return
        client.confirm = resp.status
        if resp.status == 200:
            client.confirmed_s = now - self.t0


class _Monitor:
    """Samples the event's counts on its own connection until stopped."""

    def __init__(self, base_url: str, event_id: int, t0: float) -> None:
        host, port, self._prefix = parse_base_url(base_url)
        self._conn = Connection(host, port)
        self._event = event_id
        self._t0 = t0
        self.samples: list[Sample] = []
        self._fresh = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None

    async def _get(self, path: str) -> Any:
        resp = await self._conn.request("GET", f"{self._prefix}{path}")
        if resp.status != 200:
            raise LoadTestError(f"GET {path}: HTTP {resp.status}: {resp.body[:300]!r}")
        return resp.json()

    async def sample(self) -> Sample:
        event = self._event
        asked_s = time.perf_counter() - self._t0
        outcomes = await self._get(f"/event/{event}/outcomes")
        t_s = time.perf_counter() - self._t0
        seats = await self._get(f"/event/{event}")
        held = await self._get(f"/event/{event}/reservations?status=HELD&limit=1")
        reserved = await self._get(f"/event/{event}/reservations?status=RESERVED&limit=1")
        sample = Sample(
            asked_s=asked_s,
            t_s=t_s,
            pending=int(outcomes.get("pending", 0)),
            waiting=int(outcomes.get("waiting", 0)),
            reserved_tickets=int(seats["reservedTickets"]),
            held=int(held["total"]),
            reserved=int(reserved["total"]),
        )
        self.samples.append(sample)
        return sample

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                await self.sample()
            except (OSError, HttpError, LoadTestError, KeyError, TypeError, ValueError) as exc:
                self._conn.close()
                self.error = f"{type(exc).__name__}: {exc}"
            self._fresh.set()
            took = time.perf_counter() - began
            pause = max(_MONITOR_INTERVAL_S, took * (1 - _MONITOR_DUTY) / _MONITOR_DUTY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def next(self) -> Sample | None:
        """The next sample taken from now on (None if none could be taken)."""
        self._fresh.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._fresh.wait(), _MONITOR_PATIENCE_S)
            return self.samples[-1] if self.samples else None
        return None

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._conn.close()


async def _users(
    pool: Pool,
    cache: Path | None,
    count: int,
    rng: random.Random,
    progress: Progress,
    prefix: str,
) -> list[int]:
    """``count`` users: those an earlier run made (``runner._cached_users``), topped up with new
    ones when the cache holds fewer (the other scenarios need 90,000 at most, this one 100,000),
    the cache then holding them all."""
    user_ids = await _cached_users(pool, cache, count, rng, progress)
    if user_ids:
        return user_ids
    known: list[int] = []
    if cache is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            known = [int(u) for u in json.loads(cache.read_text())["user_ids"]]  # noqa: ASYNC240
        known = await _cached_users(pool, cache, len(known), rng, progress) if known else []
    more = await create_users(pool, prefix, count - len(known), progress)
    user_ids = known + more
    _save_users(cache, user_ids)
    return user_ids


async def _create_event(pool: Pool, scenario: Scenario, run_id: str, token: str | None) -> int:
    body = {
        "name": f"loadtest {scenario.name} {run_id}",
        "date": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "location": "loadtest",
        "maxTickets": scenario.tickets,
        "holdSeconds": scenario.hold_seconds,
        "waitlist": True,
    }
    resp = await pool.post("/event", body, bearer(token))
    if resp.status == 401:
        raise LoadTestError(
            "POST /event needs the admin token: pass --admin-token or set ADMIN_TOKEN "
            "(`reservations-tools up` keeps the one it made in <data dir>/admin-token)"
        )
    data = await expect(resp, "POST /event", 200, 201)
    if data.get("holdSeconds") != scenario.hold_seconds or data.get("waitlist") is not True:
        raise LoadTestError(f"the service made no event with holds and a waitlist: {data!r}")
    event_id = first_int(data, "id")
    if event_id is None:
        raise LoadTestError(f"POST /event answered without an id: {data!r}")
    return event_id


_Ask = Callable[..., Awaitable[Any]]


async def _ask(
    pool: Pool,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    retry: bool,
    lost_ok: bool = False,
) -> Any:
    """The JSON of a 200 answer; with ``retry``, no answer or a 5xx is asked again for a while
    (a part of the service may still be coming back after a fault). ``lost_ok``: a 410 (a
    request lost with Redis's data) answers ``{"status": "LOST"}``."""
    deadline = time.monotonic() + _GIVE_UP_S
    while True:
        try:
            resp = await pool.request(method, path, None, headers)
        except (OSError, HttpError):
            if not retry or time.monotonic() > deadline:
                raise
        else:
            if lost_ok and resp.status == 410:
                return {"status": "LOST"}
            if not (retry and resp.status >= 500 and time.monotonic() < deadline):
                return await expect(resp, f"{method} {path}", 200)
        await asyncio.sleep(_RETRY_S)


async def _all_reservations(ask: _Ask, event_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = await ask("GET", f"/event/{event_id}/reservations?limit={_PAGE}&offset={len(items)}")
        items.extend(page["items"])
        if len(page["items"]) < _PAGE:
            return items


async def _read_back(
    pool: Pool, ask: _Ask, clients: list[Client], indexes: list[int], progress: Progress
) -> dict[int, dict[str, Any]]:
    """The status of each of the clients' requests, as a client reads it after the close."""
    progress.phase(f"reading {len(indexes):,} requests back", len(indexes))

    async def read(i: int) -> dict[str, Any]:
        job = clients[indexes[i]].job_id
        data = await ask("GET", f"/reservation/requests/{job}", lost_ok=True)
        return data if isinstance(data, dict) else {}

    answers = await bounded(pool, len(indexes), read, progress)
    return dict(zip(indexes, answers, strict=True))


async def run_holds(
    base_url: str,
    scenario: Scenario,
    progress: Progress | None = None,
    seed: int | None = None,
    users_cache: Path | None = None,
    admin_token: str | None = None,
    *,
    sample: int = _SAMPLE,
    user_ids: list[int] | None = None,
    fault: Callable[[int], Awaitable[None]] | None = None,
    fault_at_s: float | None = None,
    retry: bool = False,
) -> HoldsResult:
    """Run the holds ``scenario`` against the service at ``base_url``; see the module doc.

    ``sample``: how many of the requests that got no seat are read back after the close (all
    those that got one are). ``user_ids``: the users to send the requests for (default: made or
    reused through ``users_cache``). The fault harness passes ``fault``, run (given the event's
    id) once ``fault_at_s`` after the first POST (default: the hold, when the first holds end) and
    awaited before the close, and ``retry``: requests that get no answer or a 5xx are sent
    again, as a client would while a part of the service is down."""

    if scenario.hold_seconds is None:
        raise ValueError("run_holds needs a scenario with hold_seconds")
    progress = progress or Progress()
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:10]
    setup_started = time.perf_counter()
    await wait_healthy(base_url)
    async with Pool(base_url, _SETUP_CONNECTIONS) as pool:
        event_id = await _create_event(pool, scenario, run_id, admin_token)
        progress.note(
            f"event {event_id}: {scenario.tickets:,} seats held {scenario.hold_seconds} s, "
            "with a waitlist"
        )
        if user_ids is None:
            prefix = f"lt-{run_id}"
            user_ids = await _users(pool, users_cache, scenario.requests, rng, progress, prefix)
        else:
            user_ids = list(user_ids[: scenario.requests])
    setup_s = time.perf_counter() - setup_started

    rng.shuffle(user_ids)
    think = scenario.think_s
    clients = [
        Client(user_id=u, never_confirm=rng.random() < scenario.never_confirm,
               think_s=rng.uniform(0.0, think))
        for u in user_ids
    ]  # fmt: skip
    sequence = [(event_id, c.user_id) for c in clients]
    seats = scenario.tickets

    t0 = time.perf_counter()
    wall0 = time.time()
    run = _Run(base_url, scenario, event_id, clients, t0, retry=retry)
    monitor = _Monitor(base_url, event_id, t0)
    end_reason = "timeout"
    all_processed: float | None = None
    faulted: asyncio.Task[None] | None = None
    fault_s = float(scenario.hold_seconds) if fault_at_s is None else fault_at_s
    fault_at: float | None = None

    async def inject(fault: Callable[[int], Awaitable[None]]) -> None:
        nonlocal fault_at
        await asyncio.sleep(max(0.0, t0 + fault_s - time.perf_counter()))
        fault_at = time.perf_counter() - t0
        progress.note(f"fault at {fault_at:.1f} s")
        await fault(event_id)

    try:
        await monitor.sample()
        monitor.start()
        run.start(_LOOK_CONNECTIONS)
        if fault is not None:
            faulted = asyncio.create_task(inject(fault))
        starts, latencies, statuses, _, duration, client_cpu_s = await _fire(
            base_url, scenario, sequence, t0, progress, on_answer=run.answered
        )
        sent_at = time.perf_counter()
        progress.phase("holds and the line: seats confirmed", seats)
        deadline = sent_at + scenario.final_timeout_s
        while time.perf_counter() < deadline:
            s = await monitor.next()
            if s is None or s.asked_s < sent_at - t0:
                continue  # none, or asked for before the last POST was answered
            progress.advance(min(s.reserved, seats))
            if s.pending > 0:
                continue
            if all_processed is None:
                all_processed = s.t_s
            if s.reserved >= seats:
                end_reason = "every seat confirmed"
                break
            if s.held == 0:
                end_reason = "no hold left to expire"
                break
        ended_s = time.perf_counter() - t0
        progress.measure("end")
        if faulted is not None:
            await faulted
            faulted = None
    finally:
        if faulted is not None:
            faulted.cancel()
        await run.stop()
        await monitor.stop()
    if monitor.error:
        progress.note(f"the monitor missed samples: {monitor.error}")
    last_response = float(np.max(starts + latencies)) if len(starts) else 0.0

    async with Pool(base_url, _SETUP_CONNECTIONS) as pool:
        ask = functools.partial(_ask, pool, retry=retry)
        progress.phase("closing the sale", None)
        closed = await ask("POST", f"/event/{event_id}/close", bearer(admin_token))
        outcomes = await ask("GET", f"/event/{event_id}/outcomes")
        event = await ask("GET", f"/event/{event_id}")
        progress.phase("listing reservations", None)
        reservations = await _all_reservations(ask, event_id)
        by_user = {c.user_id: i for i, c in enumerate(clients) if c.job_id}
        seated = {by_user[int(r["userId"])] for r in reservations if int(r["userId"]) in by_user}
        others = [i for i, c in enumerate(clients) if c.job_id and i not in seated]
        # Every request that got a seat, the first 100 others sent (the earliest arrivals, which
        # a slip in the line's order would have passed over) and a random sample of the rest.
        chosen = set(seated) | set(others[:100])
        rest = others[100:]
        chosen |= set(rng.sample(rest, min(sample, len(rest))))
        read_back = await _read_back(pool, ask, clients, sorted(chosen), progress)
    for i, data in read_back.items():
        if clients[i].seq < 0 and isinstance(data.get("seq"), int):
            clients[i].seq = int(data["seq"])

    result = HoldsResult(
        scenario=scenario,
        base_url=base_url,
        event_id=event_id,
        wall0=wall0,
        clients=clients,
        starts_s=starts,
        latencies_s=latencies,
        statuses=statuses,
        fire_duration_s=duration,
        last_response_s=last_response,
        client_cpu_s=client_cpu_s,
        setup_s=setup_s,
        samples=monitor.samples,
        look_times_s=np.asarray(run.look_times),
        confirm_times_s=np.asarray(run.confirm_times),
        look_errors=run.look_errors,
        retried=run.retried,
        fault_at_s=fault_at,
        lost_seen=run.lost_seen,
        first_seen=dict(run.first_seen),
        look_ms={k: np.asarray(v) for k, v in run.look_ms.items()},
        end_reason=end_reason,
        ended_s=ended_s,
        all_processed_s=all_processed,
        closed=closed,
        outcomes=outcomes,
        event=event,
        reservations=reservations,
        read_back=read_back,
    )
    result.checks = holds_checks(result)
    return result
