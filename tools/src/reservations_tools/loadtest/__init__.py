"""``reservations-tools loadtest``: drive a running service over HTTP and check its promises."""

from .runner import Outcomes, RunResult, run_loadtest, wait_healthy
from .scenario import SCENARIOS, Scenario, scenario
from .setup import Check, LoadTestError, Progress

__all__ = [
    "SCENARIOS",
    "Check",
    "LoadTestError",
    "Outcomes",
    "Progress",
    "RunResult",
    "Scenario",
    "run_loadtest",
    "scenario",
    "wait_healthy",
]
