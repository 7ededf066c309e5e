"""What the two fault-harness test modules share: a data folder, a run of scenarios on a small
burst, and the invariants every scenario must keep.

The single-server scenarios (``test_faults.py``) and the Redis failovers
(``test_faults_failover.py``) are two modules so that the suite's workers can run them side by
side, each on a deployment of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reservations_tools.faults.burst import BurstResult
from reservations_tools.faults.cli import run_scenarios
from reservations_tools.faults.scenarios import SCENARIOS, Scenario

REQUESTS = 1000
# The holds scenarios' seats are held this long: a few rounds of holds in seconds.
HOLD_S = 2


@pytest.fixture(scope="module")
def faults_dir() -> Iterator[Path]:
    """A data folder for a module's deployment. Not pytest's tmp_path: its parent is private to
    root, and PostgreSQL runs as an unprivileged user when the suite runs as root."""
    path = Path(tempfile.mkdtemp(prefix="reservations-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def run(scenarios: list[Scenario], where: Path) -> dict[str, BurstResult]:
    ran = await run_scenarios(
        scenarios, requests=REQUESTS, tickets=40, data_dir=where, hold_seconds=HOLD_S
    )
    return {scenario.name: result for scenario, result in ran}


def invariants_hold(name: str, result: BurstResult) -> None:
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert failed == []
    # A holds run sends one request per user: the users made for the bursts, 90% of REQUESTS.
    holds = next(s for s in SCENARIOS if s.name == name).holds
    assert result.accepted == (int(REQUESTS * 0.9) if holds else REQUESTS)
