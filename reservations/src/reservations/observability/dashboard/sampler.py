"""The last minutes of each channel's counters, kept in memory for the dashboard's charts.

A sample is taken whenever the dashboard's data endpoint is polled (no background task): with no
dashboard open nothing is sampled. Throughput is the change of the broker's ``processed`` counter
between two samples, so it is the whole deployment's, whichever process polls. Each API process
keeps its own samples.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from brokerq import ChannelStats

__all__ = ["ChannelSampler", "Point", "Sample"]

WINDOW_MS = 10 * 60 * 1000
# Polls closer together than this replace the newest sample instead of adding one, so many open
# dashboards cannot grow the history.
MIN_INTERVAL_MS = 1000


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int
    produced: int
    processed: int
    lag_ms: int
    waiting: int


@dataclass(frozen=True, slots=True)
class Point:
    """Rates between two samples, at the later one."""

    at_ms: int
    processed_per_s: float
    produced_per_s: float
    lag_ms: int
    waiting: int


class ChannelSampler:
    def __init__(self, *, window_ms: int = WINDOW_MS, min_interval_ms: int = MIN_INTERVAL_MS):
        self.window_ms = window_ms
        self.min_interval_ms = min_interval_ms
        self._samples: dict[str, deque[Sample]] = {}

    def record(self, at_ms: int, stats: ChannelStats) -> None:
        samples = self._samples.setdefault(stats.channel, deque())
        sample = Sample(at_ms, stats.produced, stats.processed, stats.lag_ms, stats.waiting)
        if len(samples) >= 2 and at_ms - samples[-2].at_ms < self.min_interval_ms:
            samples[-1] = sample
        else:
            samples.append(sample)
        while samples and samples[0].at_ms < at_ms - self.window_ms:
            samples.popleft()

    def series(self, channel: str) -> list[Point]:
        samples = list(self._samples.get(channel, ()))
        return [_point(a, b) for a, b in itertools.pairwise(samples)]

    def rate(self, channel: str, over_ms: int = 60_000) -> tuple[float, float]:
        """(processed/s, produced/s) over the newest ``over_ms`` of samples (0 without two)."""
        samples = self._samples.get(channel)
        if not samples or len(samples) < 2:
            return 0.0, 0.0
        newest = samples[-1]
        oldest = next(s for s in samples if s.at_ms >= newest.at_ms - over_ms)
        if oldest is newest:
            oldest = samples[-2]
        return _per_s(oldest, newest, "processed"), _per_s(oldest, newest, "produced")


def _per_s(a: Sample, b: Sample, counter: str) -> float:
    seconds = (b.at_ms - a.at_ms) / 1000
    if seconds <= 0:
        return 0.0
    # A counter that went down was reset (a purged channel): no negative rates.
    delta: int = getattr(b, counter) - getattr(a, counter)
    return max(0, delta) / seconds


def _point(a: Sample, b: Sample) -> Point:
    return Point(
        at_ms=b.at_ms,
        processed_per_s=_per_s(a, b, "processed"),
        produced_per_s=_per_s(a, b, "produced"),
        lag_ms=b.lag_ms,
        waiting=b.waiting,
    )
