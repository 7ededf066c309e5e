"""Each fault of the reliability table, on a small burst: the invariants must hold after it.

All scenarios run once, one after the other on one deployment, in a module fixture; each test
then checks one scenario's result. The full-size runs (100,000 requests) are
``reservations-tools faults``; see docs/reliability.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reservations_tools.faults.burst import BurstResult
from reservations_tools.faults.cli import run_scenarios
from reservations_tools.faults.scenarios import SCENARIOS

REQUESTS = 1000
# The holds scenarios' seats are held this long: a few rounds of holds in seconds.
HOLD_S = 2
# One deployment and the bursts with their faults (ten seconds without PostgreSQL, leases of
# killed workers running out): minutes, not seconds, on a busy two-core machine.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and PostgreSQL runs as an
    # unprivileged user when the suite runs as root.
    path = Path(tempfile.mkdtemp(prefix="reservations-faults-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def results(data_dir: Path) -> dict[str, BurstResult]:
    ran = await run_scenarios(
        SCENARIOS, requests=REQUESTS, tickets=40, data_dir=data_dir, hold_seconds=HOLD_S
    )
    return {scenario.name: result for scenario, result in ran}


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_invariants_hold_through_the_fault(name: str, results: dict[str, BurstResult]) -> None:
    result = results[name]
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert failed == []
    # A holds run sends one request per user: the users made for the bursts, 90% of REQUESTS.
    holds = next(s for s in SCENARIOS if s.name == name).holds
    assert result.accepted == (int(REQUESTS * 0.9) if holds else REQUESTS)
