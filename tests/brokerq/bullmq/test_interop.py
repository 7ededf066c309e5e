"""brokerq's BullMQ adapter against real Node BullMQ (npm, pinned) on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from brokerq import BrokerQueue, Message, Processing
from brokerq.adapter import Settlement
from brokerq.bullmq import BullMQAdapter, bullmq_priority

from ..conftest import until
from .conftest import JOB_NAME, Node, ReserveEvent


def job(user: int, event: int, **opts: object) -> dict[str, object]:
    return {"name": JOB_NAME, "data": {"userId": user, "eventId": event}, "opts": opts}


async def test_jobs_we_produce_are_processed_unchanged_by_a_node_worker(bq, node: Node, name):
    ch = bq.channel(name, ReserveEvent)
    one = await ch.produce(ReserveEvent(1, 10))
    many = await ch.produce_many([ReserveEvent(i, 20) for i in range(2, 5)])
    lines = await node.work(name, 4)
    seen = {line["seen"]: line for line in lines if "seen" in line}
    assert set(seen) == {one.id, *(r.id for r in many)}
    assert seen[one.id]["name"] == JOB_NAME
    assert seen[one.id]["data"] == {"userId": 1, "eventId": 10}
    assert seen[many[2].id]["data"] == {"userId": 4, "eventId": 20}
    assert {line["completed"] for line in lines if "completed" in line} == set(seen)
    info = await node.inspect(name, one.id)
    assert info["counts"]["completed"] == 4
    assert info["jobs"][one.id]["state"] == "completed"
    assert info["jobs"][one.id]["returnvalue"] == {"reserved": 10}
    stats = await ch.stats()
    assert (stats.waiting, stats.in_flight, stats.produced) == (0, 0, 4)


async def test_the_seed_queue_and_job_name_by_channel(redis_server, node: Node):
    adapter = BullMQAdapter(redis_server.url, job_names={"reservation-queue": "reserveEvent"})
    async with BrokerQueue(adapter) as q:
        ch = q.channel("reservation-queue", ReserveEvent)
        await ch.purge()
        r = await ch.produce(ReserveEvent(7, 8))
        lines = await node.work("reservation-queue", 1)
        [seen] = [line for line in lines if "seen" in line]
        assert (seen["seen"], seen["name"], seen["data"]) == (
            r.id,
            "reserveEvent",
            {"userId": 7, "eventId": 8},
        )
        await ch.purge()


async def test_our_worker_processes_jobs_added_by_node_add_and_add_bulk(bq, node: Node, name):
    ids = await node.add(name, [job(1, 7)])
    ids += await node.add(name, [job(i, 8) for i in range(2, 5)])
    assert len(set(ids)) == 4
    ch = bq.channel(name, ReserveEvent)
    got: list[Message[ReserveEvent]] = []

    async def handler(msg: Message[ReserveEvent]) -> None:
        got.append(msg)

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    assert sorted(m.id for m in got) == sorted(ids)
    by_id = {m.id: m for m in got}
    assert by_id[ids[0]].data == ReserveEvent(1, 7)
    assert all(m.tries == 1 for m in got)
    assert all(abs(m.produced_at_ms - time.time() * 1000) < 60_000 for m in got)
    info = await node.inspect(name, *ids)
    assert info["counts"]["completed"] == 4
    assert {j["state"] for j in info["jobs"].values()} == {"completed"}
    assert (await ch.stats()).processed == 4


async def test_node_attempts_and_backoff_drive_our_retries(bq, node: Node, name):
    [flaky] = await node.add(name, [job(1, 1, attempts=3, backoff={"type": "fixed", "delay": 200})])
    [doomed] = await node.add(name, [job(2, 2, attempts=2)])
    ch = bq.channel(name, ReserveEvent, max_attempts=10, retry_backoff="10ms")
    tries: dict[str, list[tuple[int, float]]] = {flaky: [], doomed: []}

    async def handler(msg: Message[ReserveEvent]) -> None:
        tries[msg.id].append((msg.tries, time.monotonic()))
        if msg.id == doomed or msg.tries < 3:
            raise RuntimeError(f"try {msg.tries}")

    consumer = await ch.consume(handler)
    await until(lambda: len(tries[flaky]) == 3 and len(tries[doomed]) == 2, what="attempts")
    await consumer.wait_idle()
    assert [t for t, _ in tries[flaky]] == [1, 2, 3]
    gaps = [b[1] - a[1] for a, b in zip(tries[flaky], tries[flaky][1:], strict=False)]
    assert all(gap >= 0.19 for gap in gaps)  # the job's fixed backoff, not the channel's 10ms
    assert [t for t, _ in tries[doomed]] == [1, 2]  # the job's attempts, not the channel's 10
    info = await node.inspect(name, flaky, doomed)
    assert info["jobs"][flaky]["state"] == "completed"
    assert info["jobs"][flaky]["attemptsMade"] == 3
    assert info["jobs"][doomed]["state"] == "failed"
    assert info["jobs"][doomed]["attemptsMade"] == 2
    assert info["jobs"][doomed]["failedReason"] == "RuntimeError: try 2"


async def test_node_delay_priority_and_job_id_reach_our_worker(bq, node: Node, name):
    ids = await node.add(
        name,
        [job(1, 1, priority=5), job(2, 2), job(3, 3, priority=1), job(4, 4, jobId="order-42")],
    )
    assert ids[3] == "order-42"
    assert await node.add(name, [job(5, 5, jobId="order-42")]) == ["order-42"]  # ignored
    start = time.monotonic()
    [delayed] = await node.add(name, [job(0, 0, delay=1500)])
    ch = bq.channel(name, ReserveEvent)
    got: list[tuple[str, int, float]] = []
    all_in = asyncio.Event()

    async def handler(msg: Message[ReserveEvent]) -> None:
        got.append((msg.id, msg.data.userId, time.monotonic() - start))
        if len(got) == 5:
            all_in.set()

    consumer = await ch.consume(handler, max_parallel=1)
    await asyncio.wait_for(all_in.wait(), 10)
    await consumer.wait_idle()
    # Jobs without a priority first (FIFO), then priority 1 before 5; the delayed one last.
    assert [user for _, user, _ in got] == [2, 4, 3, 1, 0]
    assert ("order-42", 4) in [(i, u) for i, u, _ in got]
    assert got[-1][0] == delayed and got[-1][2] >= 1.49


async def test_our_priorities_keep_their_order_after_the_unprioritized(bq, name):
    ch = bq.channel(name, str)
    for text, priority in [("low", -5), ("normal-1", 0), ("high", 10), ("normal-2", 0),
                           ("top", 1000)]:  # fmt: skip
        await ch.produce(text, priority=priority)
    got: list[str] = []
    consumer = await ch.consume(got.append, max_parallel=1)
    await consumer.wait_idle()
    assert got == ["normal-1", "normal-2", "top", "high", "low"]


async def test_node_remove_on_complete_and_on_fail_are_honoured(bq, node: Node, name):
    [kept, removed] = await node.add(name, [job(1, 1), job(2, 2, removeOnComplete=True)])
    [failed_removed] = await node.add(name, [job(3, 3, removeOnFail=True)])
    ch = bq.channel(name, ReserveEvent, max_attempts=1)

    async def handler(event: ReserveEvent) -> None:
        if event.userId == 3:
            raise RuntimeError("no")

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    info = await node.inspect(name, kept, removed, failed_removed)
    assert info["jobs"][kept]["state"] == "completed"
    assert info["jobs"][removed] is None
    assert info["jobs"][failed_removed] is None
    assert info["counts"]["completed"] == 1 and info["counts"]["failed"] == 0


async def test_our_options_are_bullmq_job_options_to_node(bq, node: Node, name):
    ch = bq.channel(name, ReserveEvent)
    later = await ch.produce(ReserveEvent(1, 1), delay="1h")
    urgent = await ch.produce(ReserveEvent(2, 2), priority=10)
    plain = await ch.produce(ReserveEvent(3, 3))
    custom = await ch.produce(
        ReserveEvent(4, 4),
        options={
            "jobId": "mine-1", "attempts": 3, "backoff": {"type": "fixed", "delay": 50},
            "removeOnComplete": True, "removeOnFail": 10,
        },
    )  # fmt: skip
    assert custom.id == "mine-1"
    info = await node.inspect(name, later.id, urgent.id, plain.id, custom.id)
    jobs = info["jobs"]
    assert (jobs[later.id]["state"], jobs[later.id]["delay"]) == ("delayed", 3_600_000)
    assert jobs[urgent.id]["state"] == "prioritized"
    assert jobs[urgent.id]["priority"] == bullmq_priority(10) == 991
    assert (jobs[plain.id]["state"], jobs[plain.id]["priority"]) == ("waiting", 0)
    opts = jobs["mine-1"]["opts"]
    assert opts["attempts"] == 3 and opts["backoff"] == {"type": "fixed", "delay": 50}
    assert opts["removeOnComplete"] is True and opts["removeOnFail"] == 10
    assert info["counts"] == {**info["counts"], "delayed": 1, "prioritized": 1, "waiting": 2}


async def test_a_node_worker_retries_our_job_with_its_attempts_and_removes_it(bq, node: Node, name):
    ch = bq.channel(name, dict)
    r = await ch.produce(
        {"userId": 1, "eventId": 1, "fail": True},
        options={
            "attempts": 2,
            "backoff": {"type": "fixed", "delay": 50},
            "removeOnComplete": True,
        },
    )
    lines = await node.work(name, 1, "1")  # fails the first attempt only
    assert [line["attemptsMade"] for line in lines if "seen" in line] == [0, 1]
    assert next(line for line in lines if "failed" in line)["final"] is False
    assert {"completed": r.id} in lines
    assert (await node.inspect(name, r.id))["jobs"][r.id] is None


async def test_deduplication_is_shared_with_node(bq, node: Node, name):
    ch = bq.channel(
        name, ReserveEvent, process=Processing.EXACTLY_ONCE, deduplication_interval="1m"
    )
    ours = await ch.produce(ReserveEvent(1, 1), hash="signup:peter")
    dedup = {"id": "signup:peter", "ttl": 60_000}
    assert await node.add(name, [job(9, 9, deduplication=dedup)]) == [ours.id]
    [theirs] = await node.add(name, [job(2, 2, deduplication={"id": "signup:paul", "ttl": 60_000})])
    again = await ch.produce(ReserveEvent(2, 2), hash="signup:paul")
    assert again.deduplicated and again.id == theirs
    content = await ch.produce(ReserveEvent(3, 3))
    assert (await ch.produce(ReserveEvent(3, 3))).id == content.id
    info = await node.inspect(name, ours.id)
    assert info["jobs"][ours.id]["opts"]["deduplication"] == dedup
    assert info["counts"]["waiting"] == 3


async def test_our_dead_letters_are_failed_jobs_to_node_and_back(bq, node: Node, name):
    ch = bq.channel(name, ReserveEvent, max_attempts=2, retry_backoff="20ms")
    r = await ch.produce(ReserveEvent(1, 1))
    fail = True

    async def handler(msg: Message[ReserveEvent]) -> None:
        if fail:
            raise RuntimeError(f"boom {msg.tries}")

    consumer = await ch.consume(handler)
    await until(lambda: _dead(ch, 1), what="dead letter")
    info = await node.inspect(name, r.id)
    assert info["counts"]["failed"] == 1
    [failed] = info["failed"]
    assert (failed["id"], failed["failedReason"], failed["attemptsMade"]) == (
        r.id,
        "RuntimeError: boom 2",
        2,
    )
    assert failed["data"] == {"userId": 1, "eventId": 1}
    [letter] = await ch.dead_letters()
    assert (letter.id, letter.tries, letter.error) == (r.id, 2, "RuntimeError: boom 2")

    fail = False
    assert await ch.redrive() == 1
    await until(lambda: _processed(ch, 1), what="redriven job")
    await consumer.wait_idle()
    info = await node.inspect(name, r.id)
    assert info["jobs"][r.id]["state"] == "completed"
    assert info["counts"]["failed"] == 0


async def test_jobs_node_failed_are_our_dead_letters(bq, node: Node, name):
    ch = bq.channel(name, dict)
    r = await ch.produce({"userId": 5, "eventId": 5, "fail": True})
    await node.work(name, 1)
    [letter] = await ch.dead_letters()
    assert (letter.id, letter.tries, letter.error) == (r.id, 1, "node failure on attempt 1")
    assert letter.data == {"userId": 5, "eventId": 5, "fail": True}
    assert await ch.delete_dead() == 1
    assert (await node.inspect(name))["counts"]["failed"] == 0


async def test_a_stalled_job_is_moved_back_and_fails_after_max_stalled_count(redis_server, name):
    async with BrokerQueue(BullMQAdapter(redis_server.url, max_stalled_count=1)) as q:
        ch = q.channel(name, int, lease="300ms")
        r = await ch.produce(42)
        adapter = q.adapter
        # A consumer that takes the job and dies: never renews, acknowledges or releases it.
        [taken] = (await adapter.exchange(name, "crashed", Settlement(), 1, 300, 5)).deliveries
        assert taken.id == r.id

        async def reclaimed(consumer: str) -> bool:
            ex = await adapter.exchange(name, consumer, Settlement(), 1, 300, 5)
            return [d.id for d in ex.deliveries] == [r.id] and ex.deliveries[0].tries == 1

        # The stalled-jobs check (as Node's worker runs it) moves it back; a stall is not a try.
        await until(lambda: reclaimed("crashed-again"), timeout=5, what="stalled job back")
        assert (await ch.stats()).redelivered == 1

        # Stalled once more than max_stalled_count: failed, as a Node worker would fail it.
        async def failed() -> bool:
            await adapter.exchange(name, "reaper", Settlement(), 1, 300, 5)
            return await _dead(ch, 1)

        await until(failed, timeout=5, what="job failed after stalling twice")
        [letter] = await ch.dead_letters()
        assert letter.error == "job stalled more than allowable limit"


async def test_headers_are_bullmq_telemetry_metadata_both_ways(bq, node: Node, name):
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    ch = bq.channel(name, ReserveEvent)
    ours = await ch.produce(ReserveEvent(1, 1), headers=trace)
    info = await node.inspect(name, ours.id)
    metadata = info["jobs"][ours.id]["opts"]["telemetry"]["metadata"]
    assert json.loads(metadata) == trace
    other = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    [theirs] = await node.add(name, [job(2, 2, telemetry={"metadata": json.dumps(other)})])
    got: dict[str, dict[str, str]] = {}

    async def handler(msg: Message[ReserveEvent]) -> None:
        got[msg.id] = dict(msg.headers)

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    assert got == {ours.id: trace, theirs: other}


async def test_a_node_global_rate_limit_paces_our_worker(bq, node: Node, name):
    await node.run("admin.cjs", name, "ratelimit", "2", "500")
    ch = bq.channel(name, ReserveEvent)
    await ch.produce_many([ReserveEvent(i, 1) for i in range(6)])
    times: list[float] = []
    consumer = await ch.consume(lambda _: times.append(time.monotonic()))
    await until(lambda: len(times) == 6, what="six jobs at two per 500ms")
    await consumer.wait_idle()
    # Two per window: the sixth job waits for the third window at least.
    assert times[-1] - times[0] >= 0.95


async def test_a_queue_paused_by_node_holds_our_worker_until_resumed(bq, node: Node, name):
    ch = bq.channel(name, ReserveEvent)
    await node.run("admin.cjs", name, "pause")
    await ch.produce(ReserveEvent(1, 1))
    got: list[ReserveEvent] = []
    consumer = await ch.consume(got.append)
    await consumer.wait_idle()  # idle: the paused job is not waiting for it
    assert got == [] and (await ch.stats()).waiting == 1
    await node.run("admin.cjs", name, "resume")
    await until(lambda: len(got) == 1, what="job after resume")
    await consumer.wait_idle()


async def test_a_client_that_decodes_responses_is_refused(redis_server):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        BullMQAdapter(client=client)
    await client.aclose()


async def test_produce_options_are_refused_by_engines_without_them(name):
    from brokerq import ChannelError
    from brokerq.memory import MemoryAdapter

    async with BrokerQueue(MemoryAdapter()) as q:
        with pytest.raises(ChannelError, match="options="):
            await q.channel(name, int).produce(1, options={"attempts": 3})


async def _dead(ch, n: int) -> bool:
    return (await ch.stats()).dead == n


async def _processed(ch, n: int) -> bool:
    return (await ch.stats()).processed == n
