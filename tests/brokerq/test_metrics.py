"""brokerq's fast histogram against prometheus_client's own Histogram."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from brokerq.metrics import HANDLER_SECONDS, FastHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
NAME = "handler_seconds"

Samples = set[tuple[str, tuple[tuple[str, str], ...], float]]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_exposition_is_the_one_of_a_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    durations = FastHistogram(NAME, "doc", ["channel", "outcome"], BUCKETS)
    ours.register(durations)
    reference = Histogram(NAME, "doc", ["channel", "outcome"], buckets=BUCKETS, registry=theirs)
    # Bounds themselves, values between them, zero, and past the last bound.
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 1.0, 2.5, 29.9, 30.0, 31.0, 500.0]
    for channel, outcome in [("a", "ok"), ("a", "retry"), ("b/c", "ok")]:
        observe = durations.recorder(channel, outcome)
        for v in values if outcome == "ok" else values[:3]:
            observe(v)
            reference.labels(channel, outcome).observe(v)
    assert samples(ours) == samples(theirs)


def test_observe_by_label_values_is_the_same_series_as_its_recorder() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    latency = FastHistogram("h_seconds", "doc", ["method", "route", "status"], (0.001, 0.1, 1))
    ours.register(latency)
    reference = Histogram(
        "h_seconds", "doc", ["method", "route", "status"], buckets=(0.001, 0.1, 1), registry=theirs
    )
    for i, seconds in enumerate([0.0005, 0.001, 0.001001, 0.05, 0.1, 0.7, 1.0, 3.0, 42.0]):
        labels = ("GET", "/a" if i % 2 else "/b", "200")
        if i % 3:
            latency.observe(labels, seconds)
        else:
            latency.recorder(*labels)(seconds)
        reference.labels(*labels).observe(seconds)
    assert samples(ours) == samples(theirs)
    # A value equal to a bound counts in that bucket ("less than or equal").
    b = (("le", "0.1"), ("method", "GET"), ("route", "/b"), ("status", "200"))
    assert ("h_seconds_bucket", b, 3.0) in samples(ours)


def test_label_values_must_match_the_label_names() -> None:
    latency = FastHistogram("h_seconds", "doc", ["method", "route"], (1,))
    with pytest.raises(ValueError, match=r"has labels \['method', 'route'\]"):
        latency.observe(("GET",), 0.1)
    with pytest.raises(ValueError, match="has labels"):
        latency.recorder("GET", "/a", "200")


def test_observations_from_several_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    durations = FastHistogram(NAME, "doc", ["channel", "outcome"], BUCKETS)
    registry.register(durations)

    def work() -> None:
        observe = durations.recorder("ch", "ok")
        for _ in range(20_000):
            observe(0.002)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {name: value for name, labels, value in samples(registry) if "le" not in dict(labels)}
    assert counts[f"{NAME}_count"] == 80_000


def test_the_handler_histogram_is_one() -> None:
    assert isinstance(HANDLER_SECONDS, FastHistogram)
    assert HANDLER_SECONDS.labelnames == ["channel", "outcome"]
