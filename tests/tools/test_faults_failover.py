"""The fault harness's Redis failovers (Redis Cluster, Sentinel) on a small burst, on a deployment
of their own: two of the six (see ``FAILOVERS``); all six with ``reservations-tools faults``
(docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reservations_tools.faults.burst import BurstResult
from reservations_tools.faults.scenarios import SCENARIOS

from ._faults import REQUESTS, faults_dir, invariants_hold, run

# Two of the six, to keep the suite's time: a Cluster takeover of the event's gate and one on
# Sentinel without acknowledgement; the service's own failover tests cover the rest
# (tests/reservations/reservation/test_cluster_failover.py, test_sentinel.py).
FAILOVERS = [
    s
    for s in SCENARIOS
    if s.name in ("cluster-gate-primary-killed", "sentinel-primary-killed-noack")
]
pytestmark = pytest.mark.timeout(1200)
__all__ = ["faults_dir"]  # a fixture, used by name


@pytest.fixture(scope="module")
async def results(faults_dir: Path) -> dict[str, BurstResult]:
    return await run(FAILOVERS, faults_dir)


@pytest.mark.parametrize("name", [s.name for s in FAILOVERS])
def test_invariants_hold_through_a_failover(name: str, results: dict[str, BurstResult]) -> None:
    invariants_hold(name, results[name])


@pytest.mark.parametrize("name", [s.name for s in FAILOVERS if s.replicas_ack])
def test_with_replicas_acknowledging_no_accepted_request_is_lost(
    name: str, results: dict[str, BurstResult]
) -> None:
    # Every accepted request was asked about, not a sample, and none answered 410.
    result = results[name]
    assert [c.detail for c in result.checks if c.name == "no accepted request lost"] == [
        f"0 of {REQUESTS:,} answered 202 lost"
    ]
    assert result.lost_seen == 0
