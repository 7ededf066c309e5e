"""Each fault of the reliability table, on a small burst: the invariants must hold after it.

All scenarios on one Redis run once, one after the other on one deployment, in a module fixture;
each test then checks one scenario's result. The Redis failovers are ``test_faults_failover.py``.
The full-size runs (100,000 requests) are ``reservations-tools faults``; see
docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reservations_tools.faults.burst import BurstResult
from reservations_tools.faults.scenarios import SCENARIOS

from ._faults import faults_dir, invariants_hold, run

ON_ONE_SERVER = [s for s in SCENARIOS if s.topology == "single"]
# One deployment and the bursts with their faults (ten seconds without PostgreSQL, leases of
# killed workers running out): minutes, not seconds, on a busy two-core machine.
pytestmark = pytest.mark.timeout(1200)
__all__ = ["faults_dir"]  # a fixture, used by name


@pytest.fixture(scope="module")
async def results(faults_dir: Path) -> dict[str, BurstResult]:
    return await run(ON_ONE_SERVER, faults_dir)


@pytest.mark.parametrize("name", [s.name for s in ON_ONE_SERVER])
def test_invariants_hold_through_the_fault(name: str, results: dict[str, BurstResult]) -> None:
    invariants_hold(name, results[name])
