"""A holds run that rides out a fault: the load test's ``holds`` scenario (seats held, a
waitlist, clients that confirm or let their holds expire) with the fault injected as the first
holds end, and its checks, plus the harness's own: the queue drains and the gate agrees with
PostgreSQL.

Its clients retry what a part of the service down leaves unanswered (a POST that got no answer or
a 5xx, a confirmation, a look), as the burst's do (``burst.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from reservations_tools.loadtest.holds import run_holds
from reservations_tools.loadtest.holds_checks import analyse, percentiles
from reservations_tools.loadtest.scenario import scenario as loadtest_scenario
from reservations_tools.loadtest.setup import Check

from .burst import BurstResult, FaultContext, drained, gate_agrees

__all__ = ["run_holds_burst"]

# Checked first, in the order of the report's columns (``cli.markdown``).
_FIRST = (
    "RESERVED seats = confirmations",
    "no user holds two seats; every seat is the run's",
    "every request final after the close",
)


async def run_holds_burst(
    base_url: str,
    redis_url: Callable[[], str],
    users: list[int],
    *,
    tickets: int,
    hold_seconds: int,
    fault: Callable[[FaultContext], Awaitable[None]] | None = None,
    admin_token: str | None = None,
    seed: int = 7,
) -> BurstResult:
    """One request from each of ``users`` for ``tickets`` seats held ``hold_seconds``, with the
    fault run when the first holds end; then the holds checks, the queue and the gate."""
    chosen = loadtest_scenario("holds").with_overrides(
        requests=len(users), tickets=tickets, hold_seconds=hold_seconds
    )
    started = time.perf_counter()

    async def inject(event_id: int) -> None:
        assert fault is not None
        await fault(FaultContext(base_url, event_id, admin_token))

    r = await run_holds(
        base_url, chosen, seed=seed, admin_token=admin_token, user_ids=users,
        fault=None if fault is None else inject, retry=True, sample=500,
    )  # fmt: skip
    a = analyse(r)
    live = [s.user_id for s in a.seats if s.status in ("HELD", "RESERVED")]
    agrees, gate_detail = await gate_agrees(redis_url, r.event_id, live)
    stats = await drained(redis_url)
    stuck = stats.waiting + stats.in_flight + stats.delayed
    harness = [
        Check(
            "no message stuck or dead",
            stuck == 0 and stats.dead == 0,
            f"waiting {stats.waiting}, in flight {stats.in_flight}, delayed {stats.delayed}, "
            f"dead {stats.dead}",
        ),
        Check("gate agrees with PostgreSQL", agrees, gate_detail),
    ]
    by_name = {c.name: c for c in r.checks}
    first = [by_name[name] for name in _FIRST]
    rest = [c for c in r.checks if c.name not in _FIRST and not c.target]
    back = percentiles(a.expiry_to_seat_s)["p99"]
    return BurstResult(
        requests=len(users),
        tickets=tickets,
        accepted=r.accepted,
        retried=r.retried,
        lost=max(int(r.outcomes.get("lost") or 0), 0),
        lost_seen=r.lost_seen,
        fault_at_s=r.fault_at_s,
        all_final_s=r.ended_s,
        seconds=time.perf_counter() - started,
        checks=first + harness + rest,
        note=f"{r.end_reason}; {len(a.promoted):,} seats back to the line, p99 "
        + ("-" if math.isnan(back) else f"{back * 1000:,.0f} ms")
        + " after the hold's end"
        + (
            f", {a.stamps_inverted} timed before the seat handed on before them"
            if a.stamps_inverted
            else ""
        ),
    )
