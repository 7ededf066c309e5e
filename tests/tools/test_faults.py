"""Each fault of the reliability table, on a small burst: the invariants must hold after it.

All scenarios run once, one after the other on one deployment, in a module fixture; each test
then checks one scenario's result. The full-size runs (100,000 requests) are
``reservations-tools faults``; see docs/reliability.md.

The Redis failovers (Redis Cluster, Sentinel) run on a deployment of their own: two of the six
here (see ``FAILOVERS``), all six with ``reservations-tools faults``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reservations_tools.faults.burst import BurstResult
from reservations_tools.faults.cli import run_scenarios
from reservations_tools.faults.scenarios import SCENARIOS, Scenario

# Two of the six, to keep the suite's time: a Cluster takeover of the event's gate and one on
# Sentinel without acknowledgement; the service's own failover tests cover the rest
# (tests/reservations/reservation/test_cluster_failover.py, test_sentinel.py).
FAILOVERS = [
    s
    for s in SCENARIOS
    if s.name in ("cluster-gate-primary-killed", "sentinel-primary-killed-noack")
]
ON_ONE_SERVER = [s for s in SCENARIOS if s.topology == "single"]
REQUESTS = 1000
# The holds scenarios' seats are held this long: a few rounds of holds in seconds.
HOLD_S = 2
# One deployment and the bursts with their faults (ten seconds without PostgreSQL, leases of
# killed workers running out): minutes, not seconds, on a busy two-core machine.
pytestmark = pytest.mark.timeout(1200)


@contextmanager
def _data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and PostgreSQL runs as an
    # unprivileged user when the suite runs as root.
    path = Path(tempfile.mkdtemp(prefix="reservations-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    with _data_dir() as path:
        yield path


@pytest.fixture(scope="module")
def failover_dir() -> Iterator[Path]:
    with _data_dir() as path:
        yield path


async def _run(scenarios: list[Scenario], where: Path) -> dict[str, BurstResult]:
    ran = await run_scenarios(
        scenarios, requests=REQUESTS, tickets=40, data_dir=where, hold_seconds=HOLD_S
    )
    return {scenario.name: result for scenario, result in ran}


@pytest.fixture(scope="module")
async def results(data_dir: Path) -> dict[str, BurstResult]:
    return await _run(ON_ONE_SERVER, data_dir)


@pytest.fixture(scope="module")
async def failover_results(failover_dir: Path) -> dict[str, BurstResult]:
    return await _run(FAILOVERS, failover_dir)


def _invariants_hold(name: str, result: BurstResult) -> None:
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert failed == []
    # A holds run sends one request per user: the users made for the bursts, 90% of REQUESTS.
    holds = next(s for s in SCENARIOS if s.name == name).holds
    assert result.accepted == (int(REQUESTS * 0.9) if holds else REQUESTS)


@pytest.mark.parametrize("name", [s.name for s in ON_ONE_SERVER])
def test_invariants_hold_through_the_fault(name: str, results: dict[str, BurstResult]) -> None:
    _invariants_hold(name, results[name])


@pytest.mark.parametrize("name", [s.name for s in FAILOVERS])
def test_invariants_hold_through_a_failover(
    name: str, failover_results: dict[str, BurstResult]
) -> None:
    _invariants_hold(name, failover_results[name])


@pytest.mark.parametrize("name", [s.name for s in FAILOVERS if s.replicas_ack])
def test_with_replicas_acknowledging_no_accepted_request_is_lost(
    name: str, failover_results: dict[str, BurstResult]
) -> None:
    # Every accepted request was asked about, not a sample, and none answered 410.
    result = failover_results[name]
    assert [c.detail for c in result.checks if c.name == "no accepted request lost"] == [
        f"0 of {REQUESTS:,} answered 202 lost"
    ]
    assert result.lost_seen == 0
