"""``reservations-tools loadtest`` against a real service (``reservations-tools up`` in a
temporary folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brokerq.server import free_port
from reservations_tools.loadtest import Outcomes, RunResult, scenario
from reservations_tools.loadtest.checks import checks
from reservations_tools.loadtest.holds import FAST_POLL_S, Client, HoldsResult, Sample, look_after
from reservations_tools.loadtest.holds_checks import analyse, holds_checks
from reservations_tools.loadtest.runner import _answered
from reservations_tools.loadtest.setup import Progress
from reservations_tools.loadtest.soak import (
    Sample as SoakSample,
)
from reservations_tools.loadtest.soak import (
    SoakPlan,
    SoakResult,
    run_soak,
    soak_checks,
)
from reservations_tools.loadtest.soak_report import soak_plot

from ._ops_fixtures import UpProcess, make_data_dir, service_env

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def up() -> Iterator[UpProcess]:
    data = make_data_dir()
    service = UpProcess(data, free_port(), workers=2)
    try:
        service.start()
        yield service
        assert service.stop() == 0
    finally:
        service.kill_everything()
        shutil.rmtree(data, ignore_errors=True)


def _loadtest(up: UpProcess, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = up.data_dir / "lt-figures.json"
    out.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "reservations_tools", "loadtest", "--base-url", up.base_url,
         "--json", str(out), *args],
        env=service_env(up.data_dir, COLUMNS="160"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    figures = json.loads(out.read_text()) if out.exists() else {}
    return result, figures


def test_burst_in_small_holds_every_invariant(up: UpProcess) -> None:
    plot = up.data_dir / "burst.png"
    result, figures = _loadtest(
        up, "--scenario", "burst", "--requests", "500", "--tickets", "20",
        "--connections", "20", "--plot", str(plot), "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout
    assert figures["ok"] is True
    assert (figures["requests"], figures["users"], figures["accepted"]) == (500, 450, 500)
    assert figures["reserved"] == 20 and figures["pending"] == 0
    assert figures["reserved"] + figures["rejected"] <= 500
    assert figures["post_ms"]["p99"] is not None and figures["accepted_rps"] > 0
    names = {c["name"]: c["ok"] for c in figures["checks"]}
    assert names["no user reserved twice"] and names["every request final, none lost"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_in_small_and_users_reused_by_the_next_run(up: UpProcess) -> None:
    args = ("--scenario", "seed", "--requests", "300", "--tickets", "10", "--connections", "50")
    first, figures = _loadtest(up, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert figures["reserved"] == 10 and figures["rejected"] == 290
    assert figures["reasons"] == {"SOLD_OUT": 290}
    assert (up.data_dir / "loadtest" / "seed.png").exists()

    second, again = _loadtest(up, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reusing 300 users" in second.stdout
    assert again["event_id"] != figures["event_id"] and again["reserved"] == 10


def test_loadtest_without_a_service_fails_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reservations_tools", "loadtest", "--base-url",
         f"http://127.0.0.1:{free_port()}", "--requests", "10", "--tickets", "1"],
        capture_output=True, text=True, timeout=60, check=False,
        env=service_env(Path("data"), COLUMNS="200"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "not healthy" in result.stdout


def _result(reserved_users: list[int], outcomes: Outcomes, n: int = 10) -> RunResult:
    """A finished run as the runner would report it, with the service's answers given."""
    return RunResult(
        scenario=scenario("seed").with_overrides(requests=n, tickets=3),
        base_url="http://127.0.0.1:1",
        event_id=1,
        user_ids=list(range(1, n + 1)),
        starts_s=np.linspace(0, 1, n),
        latencies_s=np.full(n, 0.01),
        statuses=np.full(n, 202, dtype=np.int32),
        job_ids=[f"job-{i}" for i in range(n)],
        monitor_t_s=np.array([0.5, 1.5]),
        monitor_final=np.array([5, n]),
        monitor_reserved=np.array([3, 3]),
        fire_duration_s=1.0,
        last_response_s=1.01,
        all_final_s=1.5,
        outcomes=outcomes,
        event={"reservedTickets": len(reserved_users), "remainingTickets": 3 - len(reserved_users)},
        reserved_user_ids=reserved_users,
        sampled_jobs={"RESERVED": 3, "REJECTED": 7},
    )


def test_checks_pass_on_a_correct_run_and_catch_overselling_and_double_booking() -> None:
    good = _result([1, 2, 3], Outcomes(reserved=3, rejected=7, accepted=10))
    good.checks = checks(good)
    assert good.ok, [c for c in good.checks if not c.ok]

    oversold = _result([1, 2, 3, 4], Outcomes(reserved=4, rejected=6, accepted=10))
    failed = {c.name for c in checks(oversold) if not c.ok}
    assert "exactly 3 reserved" in failed and "no event over its capacity" in failed

    twice = _result([1, 1, 2], Outcomes(reserved=3, rejected=7, accepted=10))
    assert "no user reserved twice" in {c.name for c in checks(twice) if not c.ok}

    lost = _result([1, 2, 3], Outcomes(reserved=3, rejected=5, pending=2, accepted=10))
    assert "every request final, none lost" in {c.name for c in checks(lost) if not c.ok}


def test_outcomes_parse_the_service_shape() -> None:
    parsed = Outcomes.parse(
        {"eventId": 1, "accepted": 12, "final": 10, "pending": 2, "reserved": 3, "rejected": 7,
         "byReason": {"SOLD_OUT": 6, "DUPLICATE": 1}}
    )  # fmt: skip
    assert (parsed.final, parsed.pending, parsed.accepted) == (10, 2, 12)
    assert parsed.reasons == {"SOLD_OUT": 6, "DUPLICATE": 1}


def test_checks_count_overselling_and_double_booking_per_event() -> None:
    """Three events of 3 tickets: a user may hold a ticket for each of two events, but not two
    for one; an event over its capacity fails the run even when the total is right."""
    r = _result([], Outcomes(reserved=9, rejected=1, accepted=10))
    r.event_ids = [1, 2, 3]
    r.users_per_event = {1: 4, 2: 3, 3: 3}
    r.events = {e: {"reservedTickets": 3, "remainingTickets": 0} for e in r.event_ids}
    r.reserved_by_event = {1: [1, 2, 3], 2: [4, 5, 6], 3: [7, 8, 1]}
    r.reserved_user_ids = [u for users in r.reserved_by_event.values() for u in users]
    assert (r.expected_reserved, r.oversold, r.double_booked) == (9, 0, 0)
    assert all(c.ok for c in checks(r)), [c for c in checks(r) if not c.ok]

    r.reserved_by_event = {1: [1, 2, 3, 4], 2: [4, 5], 3: [7, 8, 8]}
    r.reserved_user_ids = [u for users in r.reserved_by_event.values() for u in users]
    assert (r.oversold, r.double_booked) == (1, 1)
    failed = {c.name for c in checks(r) if not c.ok}
    assert failed == {"no event over its capacity", "no user reserved twice"}


def test_answers_are_the_outcomes_of_a_system_that_decides_in_the_request() -> None:
    statuses = np.array([201, 409, 409, 0, 201, 503], dtype=np.int32)
    bodies = [b'{"id":1}', b'{"reason":"SOLD_OUT"}', b'{"reason":"DUPLICATE"}', None,
              b'{"id":2}', b"busy"]  # fmt: skip
    ends = np.array([0.3, 0.1, 0.5, 0.9, 0.2, 0.4])
    answered = _answered(statuses, bodies, ends)
    assert answered.outcomes == Outcomes(
        pending=0, reserved=2, rejected=2, accepted=4,
        reasons={"SOLD_OUT": 1, "DUPLICATE": 1},
    )  # fmt: skip
    assert answered.all_final_s == 0.5
    assert answered.t_s.tolist() == [0.1, 0.2, 0.3, 0.5]
    assert answered.final.tolist() == [1, 2, 3, 4]
    assert answered.reserved.tolist() == [0, 1, 2, 2]

    r = _result([1, 2], answered.outcomes, n=6)
    r.statuses = statuses
    r.final_on_answer = True
    assert r.accepted == 4 and r.errors == 2  # a 409 is an outcome; no answer or a 503 is not


def test_holds_in_small_keeps_every_invariant(up: UpProcess) -> None:
    """Seats held 1 s, half the holders never confirm: the seats pass down the line as holds
    expire, until every seat is confirmed; then the close ends the line."""
    plot = up.data_dir / "holds.png"
    result, figures = _loadtest(
        up, "--scenario", "holds", "--requests", "300", "--tickets", "20",
        "--hold-seconds", "1", "--never-confirm", "0.5", "--connections", "20",
        "--final-timeout", "60", "--plot", str(plot), "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout
    assert figures["ok"] is True
    assert [c["name"] for c in figures["checks"] if not c["ok"] and not c["target"]] == []
    assert (figures["accepted"], figures["failed"]) == (300, 0)
    assert figures["end_reason"] == "every seat confirmed"
    assert figures["reservations"]["RESERVED"] == figures["confirmed"] == 20
    # Holds expired, and each seat went to the line in the transaction that freed it.
    assert figures["expired"] > 0
    assert figures["promotions"] == figures["expired_given_at_once"] == figures["expired"]
    assert figures["closed_out"] == 300 - 20 - figures["promotions"]
    assert figures["outcomes"]["byReason"] == {"EVENT_CLOSED": figures["closed_out"]}
    assert figures["live_max"] == figures["sampled_reserved_tickets_max"] == 20
    assert figures["expiry_to_seat_ms"]["max"] is not None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


_T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float | None) -> str | None:
    return None if seconds is None else (_T0 + timedelta(seconds=seconds)).isoformat()


def _seat(
    reservation_id: int, user: int, status: str, reserved: float,
    cancelled: float | None = None, confirmed: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": reservation_id, "userId": user, "eventId": 1, "status": status,
        "reservedAt": _at(reserved), "cancelledAt": _at(cancelled),
        "expiresAt": _at(reserved + 1.0), "confirmedAt": _at(confirmed),
    }  # fmt: skip


def _holds_result(seats: list[dict[str, Any]]) -> HoldsResult:
    """A finished holds run over 2 seats and 6 requests (user n sent the n-th, seq n), with
    the reservations given; the requests without a seat were closed out of the line."""
    n = 6
    scenario_ = scenario("holds").with_overrides(requests=n, tickets=2, hold_seconds=1)
    seated = {s["userId"]: s for s in seats}
    clients = [
        Client(user_id=u, never_confirm=u not in seated or seated[u]["status"] != "RESERVED",
               think_s=0.1, job_id=f"job-{u}", token="t", seq=u,
               confirm=200 if u in seated and seated[u]["status"] == "RESERVED" else 0)
        for u in range(1, n + 1)
    ]  # fmt: skip
    live = sum(1 for s in seats if s["status"] in ("HELD", "RESERVED"))
    closed = n - len(seated)
    read_back = {
        u - 1: (
            {"status": "HELD", "seq": u, "reservationId": seated[u]["id"],
             "reservationStatus": seated[u]["status"]}
            if u in seated else {"status": "REJECTED", "reason": "EVENT_CLOSED", "seq": u}
        )
        for u in range(1, n + 1)
    }  # fmt: skip
    return HoldsResult(
        scenario=scenario_, base_url="http://127.0.0.1:1", event_id=1,
        wall0=_T0.timestamp() - 0.1, clients=clients,
        starts_s=np.linspace(0, 0.05, n), latencies_s=np.full(n, 0.01),
        statuses=np.full(n, 202, dtype=np.int32), fire_duration_s=0.06, last_response_s=0.07,
        client_cpu_s=0.01, setup_s=0.1, samples=[Sample(0.4, 0.5, 0, 4, live, 1, 1)],
        look_times_s=np.array([0.2, 0.4]), confirm_times_s=np.array([0.6]), look_errors=0,
        retried=0, lost_seen=0, fault_at_s=None,
        first_seen={"WAITING": 4, "HELD": 2}, look_ms={"WAITING": np.array([5.0])},
        end_reason="every seat confirmed", ended_s=2.0, all_processed_s=0.5, closed={},
        outcomes={"accepted": n, "final": n, "pending": 0, "waiting": 0, "rejected": closed,
                  "byReason": {"EVENT_CLOSED": closed} if closed else {}},
        event={"reservedTickets": live, "remainingTickets": 2 - live, "closedAt": _at(3.0)},
        reservations=seats, read_back=read_back,
    )  # fmt: skip


def _failed(r: HoldsResult) -> set[str]:
    return {c.name for c in holds_checks(r) if not c.ok}


def test_holds_checks_pass_on_a_correct_run_and_catch_each_broken_promise() -> None:
    good = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 3, "RESERVED", 1.05, confirmed=1.5),  # the seat, handed on at once
    ])  # fmt: skip
    assert _failed(good) == set()
    a = analyse(good)
    assert [p.seq for p in a.promoted] == [3] and a.expired_matched == 1
    assert a.expiry_to_seat_s.tolist() == pytest.approx([0.05])
    assert (a.idle_seat_s, a.first_closed_seq, len(a.closed_out)) == (0.0, 4, 3)

    oversold = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 3, "RESERVED", 1.05, confirmed=1.5),
        _seat(4, 4, "HELD", 0.2),
    ])  # fmt: skip
    assert "never more than 2 seats taken at once" in _failed(oversold)

    # Both seats come back; the later one goes to an earlier arrival than the first one did.
    swapped = _holds_result([
        _seat(1, 1, "EXPIRED", 0.0, cancelled=1.05),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.10),
        _seat(3, 4, "RESERVED", 1.05, confirmed=1.5),
        _seat(4, 3, "RESERVED", 1.10, confirmed=1.6),
    ])  # fmt: skip
    assert _failed(swapped) == {"seats came back to the line in arrival order"}

    # The same seats handed on in line order (reservation ids), by two transactions whose
    # times (their starts) are the other way round: in order.
    crossed = _holds_result([
        _seat(1, 1, "EXPIRED", 0.0, cancelled=1.05),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.10),
        _seat(3, 3, "RESERVED", 1.10, confirmed=1.5),
        _seat(4, 4, "RESERVED", 1.05, confirmed=1.6),
    ])  # fmt: skip
    assert _failed(crossed) == set()
    assert analyse(crossed).stamps_inverted == 1

    passed_over = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 4, "RESERVED", 1.05, confirmed=1.5),  # seq 3 waited, seq 4 got the seat
    ])  # fmt: skip
    assert _failed(passed_over) == {"the requests closed out all came after every promoted one"}

    idle = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 3, "RESERVED", 1.25, confirmed=1.5),  # a fifth of a second late
    ])  # fmt: skip
    assert analyse(idle).idle_seat_s == pytest.approx(0.2)
    assert _failed(idle) == {"no seat left free while requests waited"}

    unconfirmed = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 3, "RESERVED", 1.05, confirmed=1.5),
    ])  # fmt: skip
    unconfirmed.clients[2].confirm = 409
    unconfirmed.event["reservedTickets"] = 1
    assert _failed(unconfirmed) == {
        "RESERVED seats = confirmations", "the event's reservedTickets = live reservations"
    }  # fmt: skip


def test_holds_checks_take_a_retry_that_ends_duplicate_after_a_5xx() -> None:
    """A client whose POST got a 503 sends it again; its first attempt had been admitted after
    all, so the service has one request more, and the retry ends DUPLICATE."""
    r = _holds_result([
        _seat(1, 1, "RESERVED", 0.0, confirmed=0.5),
        _seat(2, 2, "EXPIRED", 0.0, cancelled=1.05),
        _seat(3, 3, "RESERVED", 1.05, confirmed=1.5),
    ])  # fmt: skip
    r.outcomes.update(accepted=7, final=7, rejected=4, byReason={"EVENT_CLOSED": 3, "DUPLICATE": 1})
    r.read_back[5] = {"status": "REJECTED", "reason": "DUPLICATE", "seq": 7}
    r.clients[5].seq = 7
    assert "requests read back agree (6)" in _failed(r)  # nobody sent it again: a real DUPLICATE
    r.clients[5].retries = 1
    r.retried = 1
    assert _failed(r) == set()


def test_a_client_looks_more_often_the_nearer_it_is_to_a_seat() -> None:
    seats, hold = 1000, 10.0
    assert look_after(1, seats, hold) == FAST_POLL_S
    assert look_after(100, seats, hold) == pytest.approx(2.0)
    assert look_after(1000, seats, hold) == hold / 4  # the head notices within a quarter hold
    assert look_after(1001, seats, hold) == hold  # one full house back: not before one hold
    assert look_after(5500, seats, hold) == 5 * hold


def _soak(redis_mb: list[float], rps: list[float]) -> SoakResult:
    plan = SoakPlan(minutes=1, rate=100, sample_every_s=1, warmup=0)
    samples = [
        SoakSample(float(i), int(m * 2**20), 100, 2**30, 1000, r, 3)
        for i, (m, r) in enumerate(zip(redis_mb, rps, strict=True))
    ]
    return SoakResult(plan, "http://test", samples, accepted=6000, failed=0, events=4)


def test_soak_checks_pass_when_flat_and_catch_growth_and_slowdown() -> None:
    steady = _soak([10, 10.5, 10.2, 10.4, 10.1, 10.6, 10.3, 10.2, 10.5], [100] * 9)
    assert all(c.ok for c in soak_checks(steady) if not c.target)
    leaking = _soak([10, 10.2, 10.4, 11, 11.5, 12, 12.5, 13, 13.5], [100] * 9)
    failed = [c.name for c in soak_checks(leaking) if not c.ok and not c.target]
    assert failed == ["Redis memory flat: last third's median within 10% of the first's"]
    slowing = _soak([10] * 9, [100, 100, 100, 95, 90, 85, 80, 80, 80])
    failed = [c.name for c in soak_checks(slowing) if not c.ok and not c.target]
    assert failed == ["accepted req/s flat: last third's median within 10% of the first's"]
    refused = _soak([10] * 9, [100] * 9)
    refused.failed = 1
    assert not all(c.ok for c in soak_checks(refused) if not c.target)


async def test_soak_in_small_samples_the_servers_and_keeps_the_rate(up: UpProcess) -> None:
    run = json.loads((up.data_dir / "run.json").read_text())
    database_url, redis_url = run["database_url"], run["redis_url"]
    plan = SoakPlan(
        minutes=0.2, rate=50, users=50, tickets=5, event_every_s=2, event_life_s=4,
        sample_every_s=0.5, connections=4, warmup=2,
    )  # fmt: skip
    result = await run_soak(
        up.base_url, plan, Progress(), database_url=database_url, redis_url=redis_url, seed=3,
        admin_token=(up.data_dir / "admin-token").read_text().strip(),
    )  # fmt: skip
    assert result.failed == 0 and 500 <= result.accepted <= 600, result
    assert result.events >= 5
    assert len(result.samples) >= 20
    assert all(s.redis_bytes > 0 and s.pg_bytes > 0 for s in result.samples)
    assert result.samples[-1].request_rows >= 0
    first, last = result.thirds()
    assert first and last and first[0].t_s >= 2
    plot = soak_plot(result, up.data_dir / "soak.png")
    assert plot.stat().st_size > 10_000
