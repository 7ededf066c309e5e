"""What one run of the ``holds`` scenario saw: its clients, samples and result (``holds.py``
runs it, ``holds_checks.py`` judges it, ``holds_report.py`` shows it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .scenario import Scenario
from .setup import Check

__all__ = ["Client", "HoldsResult", "Sample", "micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def micros(value: Any) -> int | None:
    """An ISO 8601 time from the service as integer microseconds since the epoch (exact, so that
    times written in one transaction compare equal), None for null."""
    if not isinstance(value, str):
        return None
    return (datetime.fromisoformat(value) - _EPOCH) // _US


@dataclass(slots=True)
class Client:
    """One request and what its client saw of it."""

    user_id: int
    never_confirm: bool
    think_s: float
    job_id: str | None = None
    token: str | None = None
    status: str = ""  # as last seen
    reason: str | None = None
    seq: int = -1
    reservation_id: int | None = None
    hold_status: str | None = None  # the hold's state when its client first saw it
    looks: int = 0
    retries: int = 0  # times its POST was sent again (no answer or a 5xx)
    urgent: bool = False  # at the head of the line as last seen: its looks go first
    saw_waiting: bool = False
    held_seen_s: float = math.nan  # when its client first saw the hold (s since the first POST)
    confirm: int = 0  # HTTP status of its confirmation (0: none sent)
    confirmed_s: float = math.nan


@dataclass(slots=True)
class Sample:
    asked_s: float  # when the outcome counts were asked for (s since the first POST)
    t_s: float  # when they were answered
    pending: int
    waiting: int
    reserved_tickets: int
    held: int  # reservations HELD now
    reserved: int  # reservations RESERVED now


@dataclass
class HoldsResult:
    scenario: Scenario
    base_url: str
    event_id: int
    wall0: float  # the wall clock (s since the epoch) at the first POST: server times map to it
    clients: list[Client]
    starts_s: np.ndarray
    latencies_s: np.ndarray
    statuses: np.ndarray
    fire_duration_s: float
    last_response_s: float
    client_cpu_s: float
    setup_s: float
    samples: list[Sample]
    look_times_s: np.ndarray  # every status look, s since the first POST
    confirm_times_s: np.ndarray
    look_errors: int
    retried: int  # POSTs sent again (``retry``)
    fault_at_s: float | None  # when the fault was injected (s since the first POST)
    lost_seen: int  # requests whose status URL answered 410 (lost with Redis's data)
    first_seen: dict[str, int]  # what the clients' first looks found, by status
    look_ms: dict[str, np.ndarray]  # the looks' latencies, by the status they found
    end_reason: str
    ended_s: float  # when the run was seen to end (s since the first POST)
    all_processed_s: float | None  # when every request was first seen processed
    closed: dict[str, Any]  # the close's answer: the outcome counts then
    outcomes: dict[str, Any]  # the outcome counts read after the close
    event: dict[str, Any]  # GET /event/{id} after the close
    reservations: list[dict[str, Any]]  # every reservation of the event
    read_back: dict[int, dict[str, Any]]  # client index -> its status read after the close
    checks: list[Check] = field(default_factory=list)

    @property
    def seats(self) -> int:
        return self.scenario.tickets

    @property
    def accepted(self) -> int:
        return int(((self.statuses >= 200) & (self.statuses < 300)).sum())

    @property
    def errors(self) -> int:
        return self.scenario.requests - self.accepted

    @property
    def accepted_rps(self) -> float:
        return self.accepted / self.fire_duration_s if self.fire_duration_s > 0 else 0.0

    def server_s(self, us: int) -> float:
        """A service time (microseconds since the epoch) in seconds since the first POST."""
        return us / 1e6 - self.wall0

    def post_percentiles_ms(self) -> dict[str, float]:
        lat = self.latencies_s[self.statuses > 0] * 1000.0
        if lat.size == 0:
            return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(lat.max())}

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if not c.target)

    @property
    def targets_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.target)
