"""What a load test run measured: the outcome counts it polled and every figure of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scenario import Scenario
from .setup import Check, LoadTestError

__all__ = ["Outcomes", "RunResult"]


@dataclass(slots=True)
class Outcomes:
    """``GET /event/{id}/outcomes``: the event's request outcomes counted by status and reason."""

    pending: int = 0
    reserved: int = 0
    rejected: int = 0
    accepted: int | None = None  # as the service's admission gate counted them
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> int:
        return self.reserved + self.rejected

    @classmethod
    def total(cls, parts: list[Outcomes]) -> Outcomes:
        """The sum of several events' outcomes (``accepted`` only when every event says it)."""
        reasons: dict[str, int] = {}
        for part in parts:
            for key, n in part.reasons.items():
                reasons[key] = reasons.get(key, 0) + n
        accepted = [p.accepted for p in parts]
        return cls(
            pending=sum(p.pending for p in parts),
            reserved=sum(p.reserved for p in parts),
            rejected=sum(p.rejected for p in parts),
            accepted=None if None in accepted else sum(a for a in accepted if a is not None),
            reasons=reasons,
        )

    @classmethod
    def parse(cls, data: Any) -> Outcomes:
        if not isinstance(data, dict):
            raise LoadTestError(f"unexpected outcomes payload: {str(data)[:300]}")
        try:
            reasons = {str(k): int(v) for k, v in (data.get("byReason") or {}).items()}
            accepted = data.get("accepted")
            return cls(
                pending=int(data.get("pending", 0)),
                reserved=int(data.get("reserved", 0)),
                rejected=int(data.get("rejected", 0)),
                accepted=None if accepted is None else int(accepted),
                reasons=reasons,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise LoadTestError(f"unexpected outcomes payload: {str(data)[:300]}") from exc


@dataclass
class RunResult:
    scenario: Scenario
    base_url: str
    event_id: int
    user_ids: list[int]
    # Per POST, in send order: start (s since the first send), latency (s), HTTP status
    # (0: no answer).
    starts_s: np.ndarray
    latencies_s: np.ndarray
    statuses: np.ndarray
    job_ids: list[str | None]
    # The monitor's samples: time (s since the first send), final count, reserved count.
    monitor_t_s: np.ndarray
    monitor_final: np.ndarray
    monitor_reserved: np.ndarray
    fire_duration_s: float
    last_response_s: float
    all_final_s: float | None
    outcomes: Outcomes
    event: dict[str, Any]
    reserved_user_ids: list[int]
    sampled_jobs: dict[str, int]
    checks: list[Check] = field(default_factory=list)
    setup_s: float = 0.0
    sampled_final_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    client_cpu_s: float = 0.0  # CPU the load generator used while sending (its own cost)
    # With several events: every event's id, distinct users sent to it, GET /event answer and
    # reserved users (``event_id``, ``event`` and ``reserved_user_ids`` are then the first event's,
    # the first event's and all of them).
    event_ids: list[int] = field(default_factory=list)
    users_per_event: dict[int, int] = field(default_factory=dict)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    reserved_by_event: dict[int, list[int]] = field(default_factory=dict)
    final_on_answer: bool = False  # a 409 answer is a final outcome, not a failure

    @property
    def accepted_mask(self) -> np.ndarray:
        ok: np.ndarray = (self.statuses >= 200) & (self.statuses < 300)
        if self.final_on_answer:
            ok |= self.statuses == 409
        return ok

    @property
    def accepted(self) -> int:
        return int(self.accepted_mask.sum())

    @property
    def errors(self) -> int:
        return int(self.scenario.requests - self.accepted)

    @property
    def expected_final(self) -> int:
        ids = [j for j, ok in zip(self.job_ids, self.accepted_mask, strict=True) if ok and j]
        return len(set(ids)) if len(ids) == self.accepted else self.accepted

    @property
    def expected_reserved(self) -> int:
        if self.users_per_event:
            return sum(min(self.scenario.tickets, n) for n in self.users_per_event.values())
        return min(self.scenario.tickets, len(set(self.user_ids)))

    def _reserved_lists(self) -> list[list[int]]:
        return list(self.reserved_by_event.values()) or [self.reserved_user_ids]

    @property
    def oversold(self) -> int:
        """Reservations beyond an event's capacity, summed over the events."""
        return sum(max(0, len(users) - self.scenario.tickets) for users in self._reserved_lists())

    @property
    def double_booked(self) -> int:
        """Reservations of a user who already holds one for the same event."""
        return sum(len(users) - len(set(users)) for users in self._reserved_lists())

    @property
    def first_to_all_final_s(self) -> float | None:
        """From the first POST sent to every outcome final."""
        if self.all_final_s is None or self.starts_s.size == 0:
            return None
        return self.all_final_s - float(self.starts_s.min())

    @property
    def accepted_rps(self) -> float:
        return self.accepted / self.fire_duration_s if self.fire_duration_s > 0 else 0.0

    def post_percentiles_ms(self) -> dict[str, float]:
        lat = self.latencies_s[self.statuses > 0] * 1000.0
        if lat.size == 0:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                    "max": float("nan")}  # fmt: skip
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(lat.max())}

    def time_to_final_s(self) -> np.ndarray:
        """Estimated time from each accepted POST's answer to its outcome being final.

        The k-th answered request (in answer order) is paired with the k-th final outcome seen by
        the monitor: requests are served first come, first served, so this is the queueing delay
        as seen from outside, to within the monitor's polling interval.
        """
        mask = self.accepted_mask
        accepted_at = np.sort((self.starts_s + self.latencies_s)[mask])
        if accepted_at.size == 0 or self.monitor_t_s.size == 0:
            return np.empty(0)
        final = np.maximum.accumulate(self.monitor_final)
        scale = accepted_at.size / max(self.expected_final, 1)
        # k-th request (1-based) is final when the final count reaches ceil(k / scale).
        ks = np.ceil(np.arange(1, accepted_at.size + 1) / scale)
        idx = np.searchsorted(final, ks, side="left")
        seen = idx < final.size
        final_at = np.full(accepted_at.size, np.nan)
        final_at[seen] = self.monitor_t_s[idx[seen]]
        delays: np.ndarray = np.clip(final_at - accepted_at, 0.0, None)
        return delays

    @property
    def final_source(self) -> str:
        if self.sampled_final_ms.size:
            return f"service clock, {self.sampled_final_ms.size:,} sampled requests"
        return "estimated from the outcome counts"

    def final_percentiles_ms(self) -> dict[str, float]:
        """Accepted-to-final percentiles: exact by the service's clock for the sampled requests
        when the service reports the times, else the estimate of ``time_to_final_s``."""
        if self.sampled_final_ms.size:
            ttf = self.sampled_final_ms
        else:
            ttf = self.time_to_final_s()
            ttf = ttf[~np.isnan(ttf)] * 1000.0
        if ttf.size == 0:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                    "max": float("nan")}  # fmt: skip
        p50, p95, p99 = np.percentile(ttf, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(ttf.max())}

    @property
    def final_after_last_s(self) -> float | None:
        if self.all_final_s is None:
            return None
        return max(0.0, self.all_final_s - self.last_response_s)

    @property
    def outcomes_per_s(self) -> float:
        end = self.all_final_s if self.all_final_s is not None else float("nan")
        return self.outcomes.final / end if end and end > 0 else float("nan")

    @property
    def reservations_per_s(self) -> float:
        """Reservations written per second, from the first send to the last reservation seen."""
        if self.monitor_reserved.size == 0 or self.outcomes.reserved == 0:
            return float("nan")
        reserved = np.maximum.accumulate(self.monitor_reserved)
        idx = int(np.searchsorted(reserved, reserved[-1], side="left"))
        t = float(self.monitor_t_s[idx])
        return float(reserved[-1]) / t if t > 0 else float("nan")

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if not c.target)

    @property
    def targets_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.target)
