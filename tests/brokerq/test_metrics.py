"""brokerq's handler histogram against prometheus_client's own Histogram."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from brokerq.metrics import HandlerDurations

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
NAME = "handler_seconds"


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_exposition_is_the_one_of_a_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    durations = HandlerDurations(NAME, "doc", BUCKETS)
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


def test_observations_from_several_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    durations = HandlerDurations(NAME, "doc", BUCKETS)
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
