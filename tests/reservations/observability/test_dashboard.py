"""The dashboard's JSON: counts, rates and history per channel, dead letters with their actions,
events' tickets; and the sampler that keeps the history."""

from __future__ import annotations

from typing import Any

from brokerq import ChannelStats
from reservations.observability.dashboard.sampler import ChannelSampler
from reservations.worker import consuming

from ..helpers import create_event, create_user, eventually
from ._fixtures import TEST_CHANNEL, Job, Observed, failing_handler, observed

__all__ = ["observed"]


async def overview(o: Observed) -> dict[str, Any]:
    r = await o.client.get("/admin/queue/api/overview")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def channel(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in body["channels"] if c["name"] == name)
    return found


async def test_overview_shows_a_real_run(observed: Observed) -> None:
    client = observed.client
    event_id = await create_event(client, "Overview night", 3)
    users = [await create_user(client, n) for n in range(5)]
    async with consuming(observed.resources, max_parallel=8):
        for user_id in users:
            assert (await client.post(f"/reservation/{event_id}/{user_id}")).status_code == 202
        await eventually(
            lambda: observed.resources.channel.stats(), lambda s: s.processed == 5,
            what="five requests processed",
        )  # fmt: skip
    test_channel = observed.test_channel()
    await test_channel.produce(Job(7, fail=True))
    consumer = await test_channel.consume(failing_handler)
    try:
        await eventually(test_channel.stats, lambda s: s.dead == 1, what="a dead letter")
    finally:
        await consumer.close()

    body = await overview(observed)
    assert [c["name"] for c in body["channels"]] == ["reservation-queue", TEST_CHANNEL]
    queue = channel(body, "reservation-queue")
    assert {k: queue[k] for k in ("waiting", "in_flight", "delayed", "dead", "produced",
                                  "processed")} == {
        "waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0, "produced": 5, "processed": 5,
    }  # fmt: skip
    assert queue["dead_letters"] == []
    [event] = body["events"]
    assert event == {
        "id": event_id, "name": "Overview night", "date": event["date"], "capacity": 3,
        "reserved": 3, "remaining": 0, "pending": 0, "lost": 0,
    }  # fmt: skip
    api_event = (await client.get(f"/event/{event_id}")).json()
    assert (event["reserved"], event["remaining"]) == (
        api_event["reservedTickets"],
        api_event["remainingTickets"],
    )
    test = channel(body, TEST_CHANNEL)
    assert test["dead"] == 1
    [letter] = test["dead_letters"]
    assert letter["tries"] == 2
    assert letter["error"].startswith("RuntimeError: job 7 refused")
    assert letter["payload"] == '{"n":7,"fail":true}'
    assert letter["decodes"] is True
    assert body["errors"] == []


async def test_throughput_comes_from_the_change_between_polls(observed: Observed) -> None:
    test_channel = observed.test_channel()
    first = channel(await overview(observed), "reservation-queue")
    assert first["series"] == []
    await test_channel.produce_many([Job(n) for n in range(20)])
    consumer = await test_channel.consume(failing_handler, max_parallel=10)
    try:
        await eventually(test_channel.stats, lambda s: s.processed == 20, what="20 processed")
    finally:
        await consumer.close()
    # The sampler keeps at most one sample a second: poll until a second sample exists.
    body = await eventually(
        lambda: overview(observed), lambda b: len(channel(b, TEST_CHANNEL)["series"]) >= 1,
        what="a second sample",
    )  # fmt: skip
    test = channel(body, TEST_CHANNEL)
    assert test["processed"] == 20
    points = test["series"]
    assert set(points[-1]) == {"at_ms", "processed_per_s", "produced_per_s", "lag_ms", "waiting"}
    # Everything was processed before the first sample of the test channel: no rate yet.
    assert all(p["processed_per_s"] == 0 for p in points)


async def test_redrive_and_delete_dead_letters(observed: Observed) -> None:
    client = observed.client
    test_channel = observed.test_channel()
    for n in range(3):
        await test_channel.produce(Job(n, fail=True))
    consumer = await test_channel.consume(failing_handler)
    try:
        await eventually(test_channel.stats, lambda s: s.dead == 3, what="three dead letters")
    finally:
        await consumer.close()
    r = await client.get("/admin/queue/api/dead-letters", params={"channel": TEST_CHANNEL})
    assert r.status_code == 200
    ids = [d["id"] for d in r.json()]
    assert len(ids) == 3

    r = await client.post("/admin/queue/api/redrive", json={"channel": TEST_CHANNEL,
                                                           "ids": [ids[0]]})  # fmt: skip
    assert r.json() == {"moved": 1}
    r = await client.post("/admin/queue/api/delete-dead", json={"channel": TEST_CHANNEL,
                                                               "ids": [ids[1]]})  # fmt: skip
    assert r.json() == {"deleted": 1}
    stats = await test_channel.stats()
    assert (stats.dead, stats.waiting) == (1, 1)
    r = await client.post("/admin/queue/api/redrive", json={"channel": TEST_CHANNEL, "ids": None})
    assert r.json() == {"moved": 1}
    stats = await test_channel.stats()
    assert (stats.dead, stats.waiting) == (0, 2)


async def test_unknown_channels_and_bad_input_are_refused(observed: Observed) -> None:
    client = observed.client
    r = await client.post("/admin/queue/api/redrive", json={"channel": "nope", "ids": None})
    assert r.status_code == 404
    r = await client.get("/admin/queue/api/dead-letters", params={"channel": "nope"})
    assert r.status_code == 404
    r = await client.post("/admin/queue/api/redrive", json={"ids": None})
    assert r.status_code == 422


def _stats(name: str, produced: int, processed: int, lag_ms: int = 0) -> ChannelStats:
    return ChannelStats(name, 0, 0, 0, 0, produced, processed, 0, 0, 0, lag_ms)


def test_sampler_rates_window_and_coalescing() -> None:
    sampler = ChannelSampler(window_ms=10_000, min_interval_ms=1000)
    sampler.record(0, _stats("a", 0, 0))
    sampler.record(2000, _stats("a", 40, 20, lag_ms=5))
    sampler.record(4000, _stats("a", 40, 60))
    assert [(p.at_ms, p.processed_per_s, p.produced_per_s) for p in sampler.series("a")] == [
        (2000, 10.0, 20.0),
        (4000, 20.0, 0.0),
    ]
    assert sampler.rate("a") == (15.0, 10.0)
    # A poll closer than min_interval to the sample before the newest replaces the newest.
    sampler.record(4500, _stats("a", 40, 70))
    sampler.record(4800, _stats("a", 40, 76))
    assert [(p.at_ms, p.processed_per_s) for p in sampler.series("a")][-1] == (4800, 20.0)
    assert len(sampler.series("a")) == 3
    # A counter that went down (a purged channel) gives 0, not a negative rate.
    sampler.record(6000, _stats("a", 0, 0))
    assert sampler.series("a")[-1].processed_per_s == 0
    # Samples older than the window are dropped.
    sampler.record(13_000, _stats("a", 0, 0))
    assert [p.at_ms for p in sampler.series("a")] == [4800, 6000, 13_000]
    assert sampler.series("unknown") == []
    assert sampler.rate("unknown") == (0.0, 0.0)
