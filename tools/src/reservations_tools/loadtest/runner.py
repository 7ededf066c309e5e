"""Drive a running reservation service over HTTP and check what it promises.

One run: create an event with ``tickets`` tickets (or ``events`` of them) and the users through
the API, then fire the reservation POSTs over ``connections`` keep-alive connections (closed loop),
while a monitor polls ``GET /event/{id}/outcomes`` to see the requests become final. Then check the
invariants against the outcome counts, the events, the reservation lists and a sample of the
individual requests.

A system that decides a reservation in the request and answers its final outcome (201 reserved,
409 rejected with a ``reason``) is driven with ``final_on_answer``: its outcomes are its answers,
and no monitor polls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .checks import checks
from .http import Connection, HttpError, Pool, parse_base_url
from .result import Outcomes, RunResult
from .scenario import Scenario
from .setup import (
    Check,
    LoadTestError,
    Progress,
    bounded,
    create_event,
    create_users,
    expect,
)

__all__ = ["Check", "LoadTestError", "Outcomes", "Progress", "RunResult", "run_loadtest"]

_decode = msgspec.json.Decoder().decode

# The outcome counts are an aggregate query in the service: poll often enough to time the outcomes
# (50 ms), but while the requests are being sent, keep at most a fifth of one connection busy (the
# pause is four times the last poll, up to 0.5 s), so that the monitor's own load stays small.
_MONITOR_INTERVAL_S = 0.05
_MONITOR_DUTY = 0.2
_MONITOR_MAX_PAUSE_S = 0.5
_SETUP_CONNECTIONS = 32
_JOB_SAMPLE = 2_000
# With many events, the monitor polls them side by side on this many connections: while the
# requests are sent, one event per connection and round (in turn, so the sums lag), afterwards
# every event not yet final in each round. Waiting for the outcomes, a round follows the last one
# after the pause above, or after up to 5% of the wait so far when rounds are slow (many events
# on a system that takes minutes): "all final" is then seen to within 5%.
_MONITOR_CONNECTIONS = 8
_RESEND_PAUSE_S = 0.05
_MONITOR_WAIT_SHARE = 0.05


def _job_id(body: bytes) -> str | None:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("jobId", data.get("id"))
    return None if value is None else str(value)


async def wait_healthy(base_url: str, timeout_s: float = 10.0) -> None:
    """Poll ``GET /health`` until it answers 200, or raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with Pool(base_url, 1) as pool:
        while time.monotonic() < deadline:
            try:
                resp = await pool.get("/health")
            except (OSError, HttpError) as exc:
                last = str(exc)
            else:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
            await asyncio.sleep(0.1)
    raise LoadTestError(f"service at {base_url} not healthy after {timeout_s:.0f}s: {last}")


async def _event(
    pool: Pool, run_id: str, scenario: Scenario, admin_token: str | None, index: int = 0
) -> int:
    suffix = f" #{index + 1}" if scenario.events > 1 else ""
    name = f"loadtest {scenario.name} {run_id}{suffix}"
    return await create_event(pool, name=name, tickets=scenario.tickets, admin_token=admin_token)


class _Monitor:
    """Polls the events' outcome counts until stopped; its figures are the sums over the events.

    One event is polled on one connection; many are polled side by side on a few connections
    (see ``_MONITOR_CONNECTIONS``), and once the sending is over an event whose requests are all
    final is no longer polled (its counts cannot change), so the last polls are quick.
    """

    def __init__(self, base_url: str, event_ids: list[int], t0: float) -> None:
        host, port, prefix = parse_base_url(base_url)
        lanes = min(_MONITOR_CONNECTIONS, len(event_ids))
        self._conns = [Connection(host, port) for _ in range(lanes)]
        self._prefix = prefix
        self._active = list(event_ids)
        self._next = 0  # where the next round of a partial poll starts in ``_active``
        self._latest: dict[int, Outcomes] = {}
        self._t0 = t0
        self.t: list[float] = []
        self.final: list[int] = []
        self.reserved: list[int] = []
        self.last = Outcomes()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _poll_lane(self, conn: Connection, todo: list[int]) -> None:
        while todo:
            event_id = todo.pop()
            path = f"{self._prefix}/event/{event_id}/outcomes"
            resp = await conn.request("GET", path)
            if resp.status != 200:
                raise LoadTestError(f"GET {path}: HTTP {resp.status}: {resp.body[:300]!r}")
            self._latest[event_id] = Outcomes.parse(resp.json())

    async def poll(self, partial: bool = False) -> Outcomes:
        """Poll every event still polled, or with ``partial`` the next one per connection."""
        if partial and len(self._active) > len(self._conns):
            start = self._next % len(self._active)
            todo = (self._active[start:] + self._active[:start])[: len(self._conns)]
            self._next = start + len(todo)
        else:
            todo = list(self._active)
        todo.reverse()
        # Every lane runs to its end before an error is raised: a lane left running would still
        # hold a request on its connection when the next poll uses it.
        results = await asyncio.gather(
            *(self._poll_lane(c, todo) for c in self._conns), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        outcomes = Outcomes.total(list(self._latest.values()))
        self.t.append(time.perf_counter() - self._t0)
        self.final.append(outcomes.final)
        self.reserved.append(outcomes.reserved)
        self.last = outcomes
        return outcomes

    def settle(self, expected_final: dict[int, int]) -> None:
        """After the sending: stop polling the events whose accepted requests are all final."""
        if len(self._active) < 2:
            return
        self._active = [
            e
            for e in self._active
            if e not in self._latest
            or self._latest[e].pending > 0
            or self._latest[e].final < expected_final.get(e, 0)
        ]

    async def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                await self.poll(partial=True)
            except (OSError, HttpError) as exc:
                self.error = str(exc)
            took = time.perf_counter() - began
            pause = min(
                _MONITOR_MAX_PAUSE_S,
                max(_MONITOR_INTERVAL_S, took * (1 - _MONITOR_DUTY) / _MONITOR_DUTY),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def stop(self) -> None:
        """Stop the background polling (harmless twice); ``poll`` still works afterwards."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


async def _fire(
    base_url: str,
    scenario: Scenario,
    sequence: list[tuple[int, int]],
    t0: float,
    progress: Progress,
    on_answer: Callable[[int, int, bytes | None], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes | None], float, float]:
    """POST every (event id, user id) of ``sequence``; starts, latencies, statuses, bodies,
    the sending's duration and the load generator's CPU while sending. ``on_answer(i, status,
    body)`` is called as each answer arrives (status 0: none); when it returns True the request
    is sent again after a pause (a client retrying a request that got no answer), and only the
    last attempt is recorded."""
    host, port, prefix = parse_base_url(base_url)
    n = len(sequence)
    starts = [0.0] * n
    latencies = [0.0] * n
    statuses = [0] * n
    bodies: list[bytes | None] = [None] * n
    paths = [f"{prefix}/reservation/{event_id}/{user_id}" for event_id, user_id in sequence]
    next_i = 0
    done = 0
    perf = time.perf_counter

    async def run(conn: Connection) -> None:
        nonlocal next_i, done
        try:
            while next_i < n:
                i = next_i
                next_i += 1
                while True:
                    begin = perf()
                    try:
                        resp = await conn.request("POST", paths[i])
                    except (OSError, HttpError):
                        status, body = 0, None
                    else:
                        status, body = resp.status, resp.body
                    end = perf()
                    if on_answer is None or not on_answer(i, status, body):
                        break
                    await asyncio.sleep(_RESEND_PAUSE_S)
                starts[i] = begin - t0
                latencies[i] = end - begin
                statuses[i] = status
                bodies[i] = body
                done += 1
        finally:
            conn.close()

    async def report() -> None:
        while done < n:
            progress.advance(done)
            await asyncio.sleep(0.1)
        progress.advance(done)

    conns = [Connection(host, port) for _ in range(min(scenario.connections, n))]
    # Open the connections before the clock starts: the test measures requests, not handshakes.
    await asyncio.gather(*(c.connect() for c in conns))
    progress.phase("reserving", n)
    reporter = asyncio.create_task(report())
    # The setup's objects (users, paths, ...) are long-lived: keep them out of the collector's
    # full passes, so that the generator's own GC pauses don't show up as service latency.
    gc.collect()
    gc.freeze()
    progress.measure("start")
    first = perf()
    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(run(c) for c in conns))
    finally:
        gc.unfreeze()
    duration = perf() - first
    client_cpu_s = time.process_time() - cpu_before
    await reporter
    status_arr = np.asarray(statuses, dtype=np.int32)
    return (np.asarray(starts), np.asarray(latencies), status_arr, bodies, duration, client_cpu_s)


async def _reservations(pool: Pool, event_id: int) -> list[int]:
    """All user ids holding a reservation for the event, following the pages."""
    users: list[int] = []
    offset = 0
    limit = 1000
    for _ in range(10_000):
        resp = await pool.get(
            f"/event/{event_id}/reservations?status=RESERVED&offset={offset}&limit={limit}"
        )
        data = await expect(resp, "GET /event/{id}/reservations", 200)
        items = data.get("items", data.get("reservations")) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise LoadTestError(f"unexpected reservations page: {str(data)[:300]}")
        users.extend(int(item["userId"]) for item in items)
        if len(items) < limit:
            break
        offset += len(items)
    return users


def _ms_between(data: dict[str, Any]) -> float | None:
    """Accepted-to-final time of one request by the service's own clock, when it says so."""
    for start, end in (("acceptedAt", "processedAt"), ("acceptedAt", "finalAt")):
        a, b = data.get(start), data.get(end)
        if isinstance(a, str) and isinstance(b, str):
            try:
                delta = datetime.fromisoformat(b) - datetime.fromisoformat(a)
            except ValueError:
                return None
            return delta.total_seconds() * 1000.0
    return None


async def _sample_jobs(
    pool: Pool, job_ids: list[str], progress: Progress
) -> tuple[dict[str, int], list[float]]:
    """Fetch each sampled request's outcome: counts by status ('MISSING' for a 404), and the
    accepted-to-final times the service reports, if it reports them."""
    progress.phase(f"checking {len(job_ids)} requests", len(job_ids))
    counts: dict[str, int] = {}
    final_ms: list[float] = []

    async def make(i: int) -> None:
        resp = await pool.get(f"/reservation/requests/{job_ids[i]}")
        if resp.status == 404:
            status = "MISSING"
        else:
            data = await expect(resp, "GET /reservation/requests/{jobId}", 200)
            status = str(data.get("status", "?")).upper()
            if status == "RESERVED" and data.get("reservationId") is None:
                status = "RESERVED_WITHOUT_ID"
            if status in ("RESERVED", "REJECTED"):
                ms = _ms_between(data)
                if ms is not None:
                    final_ms.append(ms)
        counts[status] = counts.get(status, 0) + 1

    await bounded(pool, len(job_ids), make, progress)
    return counts, final_ms


async def _cached_users(
    pool: Pool, cache: Path | None, count: int, rng: random.Random, progress: Progress
) -> list[int]:
    """Users that earlier runs created through the API, if the file has enough of them and a
    sample of them still exists in the service (a reset database makes the file stale)."""
    if cache is None:
        return []
    try:
        known = [int(u) for u in json.loads(cache.read_text())["user_ids"]]  # noqa: ASYNC240
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if len(known) < count:
        return []
    chosen = known[:count]
    for user_id in {chosen[0], chosen[-1], *rng.sample(chosen, min(20, count))}:
        if (await pool.get(f"/user/{user_id}")).status != 200:
            progress.note(f"user cache {cache} is stale; creating users afresh")
            return []
    progress.note(f"reusing {count:,} users created by an earlier run (from {cache})")
    return chosen


def _save_users(cache: Path | None, user_ids: list[int]) -> None:
    if cache is None:
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"user_ids": user_ids}))


async def run_loadtest(
    base_url: str,
    scenario: Scenario,
    progress: Progress | None = None,
    seed: int | None = None,
    users_cache: Path | None = None,
    admin_token: str | None = None,
    *,
    final_on_answer: bool = False,
    job_sample: int = _JOB_SAMPLE,
) -> RunResult:
    """Run ``scenario`` against the service at ``base_url`` and check it; see the module doc.

    Users are independent of the event, so the ones created by an earlier run against the same
    service can be reused (``users_cache``, a JSON file): a burst run needs 90,000 of them.
    ``final_on_answer``: the system answers each POST with its final outcome (201 reserved, 409
    rejected with a ``reason``): those answers are the outcomes, nothing is polled.
    ``job_sample``: how many accepted requests' outcomes to read one by one (0: none).
    """
    progress = progress or Progress()
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:10]
    setup_started = time.perf_counter()
    await wait_healthy(base_url)
    async with Pool(base_url, _SETUP_CONNECTIONS) as pool:
        if scenario.events == 1:
            event_ids = [await _event(pool, run_id, scenario, admin_token)]
            progress.note(f"event {event_ids[0]}: {scenario.tickets:,} tickets")
        else:
            progress.phase("creating events", scenario.events)
            event_ids = await bounded(
                pool,
                scenario.events,
                lambda i: _event(pool, run_id, scenario, admin_token, i),
                progress,
            )
            progress.note(f"{scenario.events:,} events of {scenario.tickets:,} tickets")
        user_ids = await _cached_users(pool, users_cache, scenario.users, rng, progress)
        if not user_ids:
            user_ids = await create_users(pool, f"lt-{run_id}", scenario.users, progress)
            _save_users(users_cache, user_ids)
    setup_s = time.perf_counter() - setup_started

    pairs = [(event_ids[k % len(event_ids)], user_id) for k, user_id in enumerate(user_ids)]
    sequence = pairs + rng.choices(pairs, k=scenario.repeats)
    rng.shuffle(sequence)
    users_per_event: dict[int, int] = {}
    for event_id, _ in pairs:
        users_per_event[event_id] = users_per_event.get(event_id, 0) + 1

    t0 = time.perf_counter()
    monitor = _Monitor(base_url, event_ids, t0)
    try:
        if not final_on_answer:
            await monitor.poll()
            monitor.start()
        starts, latencies, statuses, bodies, duration, client_cpu_s = await _fire(
            base_url, scenario, sequence, t0, progress
        )
        ends = starts + latencies
        last_response = float(np.max(ends)) if len(starts) else 0.0
        answered: _Answered | None = None
        if final_on_answer:
            # Every answer is final: the answers are the outcomes, in the order they came.
            job_ids: list[str | None] = [None] * len(sequence)
            answered = _answered(statuses, bodies, ends)
            all_final: float | None = answered.all_final_s
            progress.measure("end")
        else:
            job_ids = [
                _job_id(b) if b is not None and 200 <= s < 300 else None
                for b, s in zip(bodies, statuses, strict=True)
            ]
            expected_by_event = _expected_final(sequence, statuses, job_ids)
            expected_final = sum(expected_by_event.values())
            progress.phase("waiting for outcomes", expected_final)
            # The sending is over: poll in step from here, every 50 ms, so that the moment
            # everything is final is seen to within one interval (plus one quick answer from an
            # idle service).
            await monitor.stop()
            waiting = time.perf_counter()
            deadline = waiting + scenario.final_timeout_s
            all_final = None
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    last = await monitor.poll()
                except (OSError, HttpError):
                    last = monitor.last
                progress.advance(last.final)
                if last.final >= expected_final and last.pending == 0 and monitor.t:
                    all_final = monitor.t[-1]
                    break
                monitor.settle(expected_by_event)
                now = time.perf_counter()
                slow = (now - began) * (1 - _MONITOR_DUTY) / _MONITOR_DUTY
                await asyncio.sleep(
                    max(_MONITOR_INTERVAL_S, min(slow, _MONITOR_WAIT_SHARE * (now - waiting)))
                )
            progress.measure("end")
    finally:
        await monitor.stop()
        monitor.close()

    async with Pool(base_url, _SETUP_CONNECTIONS) as pool:
        if answered is not None:
            outcomes = answered.outcomes
            monitor_t_s = answered.t_s
            monitor_final = answered.final
            monitor_reserved = answered.reserved
        else:
            monitor_t_s = np.asarray(monitor.t)
            monitor_final = np.asarray(monitor.final, dtype=np.int64)
            monitor_reserved = np.asarray(monitor.reserved, dtype=np.int64)
            # One last poll on a quiet system, so the counts checked are the settled ones.
            outcomes = Outcomes.total(await _all_outcomes(pool, event_ids, progress))
        progress.phase("reading the events", len(event_ids))
        answers = await bounded(
            pool,
            len(event_ids),
            lambda i: _expect_get(pool, f"/event/{event_ids[i]}", "GET /event/{id}"),
            progress,
        )
        events = {
            e: a if isinstance(a, dict) else {} for e, a in zip(event_ids, answers, strict=True)
        }
        progress.phase("listing reservations", len(event_ids))
        lists = await bounded(
            pool, len(event_ids), lambda i: _reservations(pool, event_ids[i]), progress
        )
        reserved_by_event = dict(zip(event_ids, lists, strict=True))
        with_ids = [j for j in job_ids if j]
        sample = rng.sample(with_ids, min(job_sample, len(with_ids)))
        sampled, sampled_final_ms = await _sample_jobs(pool, sample, progress)

    result = RunResult(
        scenario=scenario,
        base_url=base_url,
        event_id=event_ids[0],
        user_ids=user_ids,
        starts_s=starts,
        latencies_s=latencies,
        statuses=statuses,
        job_ids=job_ids,
        monitor_t_s=monitor_t_s,
        monitor_final=monitor_final,
        monitor_reserved=monitor_reserved,
        fire_duration_s=duration,
        last_response_s=last_response,
        all_final_s=all_final,
        outcomes=outcomes,
        event=events[event_ids[0]],
        reserved_user_ids=[u for users in lists for u in users],
        sampled_jobs=sampled,
        sampled_final_ms=np.asarray(sampled_final_ms),
        client_cpu_s=client_cpu_s,
        setup_s=setup_s,
        event_ids=event_ids,
        users_per_event=users_per_event,
        events=events,
        reserved_by_event=reserved_by_event,
        final_on_answer=final_on_answer,
    )
    result.checks = checks(result)
    return result


async def _expect_get(pool: Pool, path: str, what: str) -> Any:
    return await expect(await pool.get(path), what, 200)


async def _all_outcomes(pool: Pool, event_ids: list[int], progress: Progress) -> list[Outcomes]:
    async def make(i: int) -> Outcomes:
        data = await _expect_get(pool, f"/event/{event_ids[i]}/outcomes", "outcomes")
        return Outcomes.parse(data)

    return await bounded(pool, len(event_ids), make, progress)


def _expected_final(
    sequence: list[tuple[int, int]], statuses: np.ndarray, job_ids: list[str | None]
) -> dict[int, int]:
    """Accepted requests per event: distinct job ids when every accepted request has one (a
    system that deduplicates answers a repeat with the first job), else every accepted one."""
    accepted = [i for i, status in enumerate(statuses) if 200 <= status < 300]
    if all(job_ids[i] for i in accepted):
        ids: dict[int, set[str]] = {}
        for i in accepted:
            ids.setdefault(sequence[i][0], set()).add(str(job_ids[i]))
        return {e: len(s) for e, s in ids.items()}
    counts: dict[int, int] = {}
    for i in accepted:
        counts[sequence[i][0]] = counts.get(sequence[i][0], 0) + 1
    return counts


@dataclass(slots=True)
class _Answered:
    """The outcomes of a system that answers each POST with its final outcome."""

    outcomes: Outcomes
    t_s: np.ndarray  # answer times of the final answers, in order
    final: np.ndarray  # final outcomes answered by then
    reserved: np.ndarray  # reservations answered by then
    all_final_s: float | None


def _answered(statuses: np.ndarray, bodies: list[bytes | None], ends: np.ndarray) -> _Answered:
    reserved_mask = (statuses >= 200) & (statuses < 300)
    final_mask = reserved_mask | (statuses == 409)
    reasons: dict[str, int] = {}
    for i in np.flatnonzero(statuses == 409):
        body = bodies[i]
        reason = "UNKNOWN"
        with contextlib.suppress(msgspec.DecodeError):
            data = _decode(body) if body is not None else None
            if isinstance(data, dict) and isinstance(data.get("reason"), str):
                reason = data["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    order = np.argsort(ends[final_mask], kind="stable")
    t_s = ends[final_mask][order]
    reserved = int(reserved_mask.sum())
    outcomes = Outcomes(
        pending=0,
        reserved=reserved,
        rejected=int(final_mask.sum()) - reserved,
        accepted=int(final_mask.sum()),
        reasons=reasons,
    )
    return _Answered(
        outcomes=outcomes,
        t_s=t_s,
        final=np.arange(1, t_s.size + 1, dtype=np.int64),
        reserved=np.cumsum(reserved_mask[final_mask][order], dtype=np.int64),
        all_final_s=float(t_s[-1]) if t_s.size else None,
    )
