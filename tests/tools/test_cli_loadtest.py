"""``reservations-tools loadtest`` against a real service (``reservations-tools up`` in a
temporary folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brokerq.server import free_port
from reservations_tools.loadtest import Outcomes, RunResult, scenario
from reservations_tools.loadtest.checks import checks
from reservations_tools.loadtest.runner import _answered

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
