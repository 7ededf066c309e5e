"""``/metrics``: queue depths and broker counters at scrape time, API latency by route template,
handler durations; and a worker's own metrics port."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from brokerq.metrics import FastHistogram
from brokerq.server import free_port
from reservations.observability import start_worker_metrics
from reservations.observability.http import REQUEST_SECONDS

from ..helpers import create_event, create_user, eventually
from ._fixtures import (
    TEST_CHANNEL,
    Job,
    Observed,
    failing_handler,
    observed,
)

__all__ = ["observed"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, method: str, route: str, status: int) -> float:
    return value(
        samples, "http_request_duration_seconds_count", method=method, route=route,
        status=str(status),
    )  # fmt: skip


async def test_request_latency_is_labelled_by_route_template_and_status(
    observed: Observed,
) -> None:
    client = observed.client
    before = await scrape(client)
    user_id = await create_user(client, 1)
    event_id = await create_event(client, "Metrics night", 5)
    assert (await client.get(f"/event/{event_id}")).status_code == 200
    assert (await client.get("/event/424242")).status_code == 404
    assert (await client.get("/no/such/path/123")).status_code == 404
    # The hot path, served by the fast lane before routing, is labelled by its documented route.
    assert (await client.post(f"/reservation/{event_id}/{user_id}")).status_code == 202
    after = await scrape(client)

    def delta(method: str, route: str, status: int) -> float:
        return requests(after, method, route, status) - requests(before, method, route, status)

    assert delta("POST", "/user", 201) == 1
    assert delta("POST", "/event", 201) == 1
    assert delta("GET", "/event/{event_id}", 200) == 1
    assert delta("GET", "/event/{event_id}", 404) == 1
    assert delta("GET", "<unmatched>", 404) == 1
    assert delta("POST", "/reservation/{event_id}/{user_id}", 202) == 1
    # No raw path ever becomes a label.
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("http_")}
    assert not any(r and any(ch.isdigit() for ch in r) for r in routes), routes
    labels = {"method": "POST", "route": "/reservation/{event_id}/{user_id}", "status": "202"}
    assert value(after, "http_request_duration_seconds_bucket", **labels, le="+Inf") >= 1


async def test_queue_depths_rates_and_dead_letters_are_read_at_scrape_time(
    observed: Observed,
) -> None:
    client = observed.client
    user_id = await create_user(client, 1)
    event_id = await create_event(client, "Depth check", 5)
    for _ in range(2):
        r = await client.post(f"/reservation/{event_id}/{user_id}")
        assert r.status_code == 202
    channel = observed.test_channel()
    await channel.produce(Job(1))
    await channel.produce(Job(2, fail=True))
    consumer = await channel.consume(failing_handler, max_parallel=2)
    try:
        await eventually(
            channel.stats, lambda s: s.dead == 1 and s.processed == 1, what="one done, one dead"
        )
    finally:
        await consumer.close()

    samples = await scrape(client)
    # No reservation worker runs: both requests wait in the service's channel.
    queue = "reservation-queue"
    assert value(samples, "brokerq_channel_messages", channel=queue, state="waiting") == 2
    assert value(samples, "brokerq_channel_messages", channel=queue, state="in_flight") == 0
    assert value(samples, "brokerq_channel_events", channel=queue, event="produced") == 2
    assert value(samples, "brokerq_channel_lag_seconds", channel=queue) >= 0
    assert value(samples, "brokerq_channel_messages", channel=TEST_CHANNEL, state="dead") == 1
    assert value(samples, "brokerq_channel_events", channel=TEST_CHANNEL, event="processed") == 1
    assert value(samples, "brokerq_channel_events", channel=TEST_CHANNEL, event="retried") == 1
    assert (
        value(samples, "brokerq_channel_events", channel=TEST_CHANNEL, event="dead_lettered") == 1
    )
    # This process ran the test channel's handler, so its durations are here.
    for outcome in ("ok", "retry", "dead"):
        count = value(samples, "brokerq_handler_duration_seconds_count", channel=TEST_CHANNEL,
                      outcome=outcome)  # fmt: skip
        assert count >= 1, outcome
    assert value(samples, "brokerq_produced_messages_total", channel=queue) >= 2


async def test_a_worker_serves_its_own_metrics_port() -> None:
    port = free_port()
    server, thread = start_worker_metrics(port, addr="127.0.0.1")
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        names = {family.name for family in text_string_to_metric_families(r.text)}
        assert {"brokerq_handler_duration_seconds", "brokerq_lost_leases"} <= names
    finally:
        server.shutdown()
        server.server_close()
        await asyncio.to_thread(thread.join, 10)


def test_api_latency_is_recorded_by_brokerqs_fast_histogram() -> None:
    # Its exposition is checked against prometheus_client's Histogram in tests/brokerq.
    assert isinstance(REQUEST_SECONDS, FastHistogram)
    assert REQUEST_SECONDS.labelnames == ["method", "route", "status"]
