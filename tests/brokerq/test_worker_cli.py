"""The worker entry point and the command line, in process (test_redis runs real processes)."""

from __future__ import annotations

import asyncio
import time

from typer.testing import CliRunner

from brokerq import BrokerQueue, ConsumerState, Worker
from brokerq.cli import app
from brokerq.memory import MemoryAdapter
from brokerq.redis import RedisAdapter
from brokerq.shards import shard_names


async def test_worker_runs_its_consumers_until_stopped() -> None:
    queue = BrokerQueue(MemoryAdapter())
    orders = queue.channel("orders", int)
    mails = queue.channel("mails", str)
    got: list[object] = []
    both = asyncio.Event()

    async def handle(item: object) -> None:
        got.append(item)
        if len(got) == 2:
            both.set()

    worker = Worker(queue)
    worker.add(orders, handle, max_parallel=2)
    worker.add(mails, handle)
    running = asyncio.create_task(worker.run(install_signal_handlers=False))
    await orders.produce(1)
    await mails.produce("hello")
    await asyncio.wait_for(both.wait(), 5)
    worker.stop()
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert sorted(map(str, got)) == ["1", "hello"]
    assert [c.state for c in worker.consumers] == [ConsumerState.STOPPED] * 2
    assert queue.closed


def test_stats_command_prints_every_channel(redis_server) -> None:
    name = f"cli-{time.monotonic_ns()}"

    async def fill() -> None:
        queue = BrokerQueue(RedisAdapter(redis_server.url))
        await queue.channel(name, int).produce_many([1, 2, 3])
        await queue.close()

    asyncio.run(fill())
    result = CliRunner().invoke(app, ["stats", "--url", redis_server.url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if name in line]
    assert row.split("│")[2].strip() == "3"  # waiting


def test_stats_command_adds_up_a_sharded_channel_or_shows_its_shards(redis_server) -> None:
    name = f"cli-sharded-{time.monotonic_ns()}"

    async def fill() -> None:
        queue = BrokerQueue(RedisAdapter(redis_server.url))
        await queue.channel(name, int, shards=3).produce_many(list(range(7)))  # 3, 2, 2
        await queue.close()

    asyncio.run(fill())
    env = {"COLUMNS": "250"}
    result = CliRunner().invoke(app, ["stats", "--url", redis_server.url], env=env)
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if name in line]
    assert row.split("│")[1].strip() == name
    assert row.split("│")[2].strip() == "7"  # waiting, over the three shards
    options = ["stats", "--url", redis_server.url, "--shards", "--channel", name]
    result = CliRunner().invoke(app, options, env=env)
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if name in line]
    assert sorted((r[1].strip(), r[2].strip()) for r in rows) == sorted(
        zip(shard_names(name, 3), ["3", "2", "2"], strict=True)
    )


def test_worker_command_rejects_a_bad_target() -> None:
    result = CliRunner().invoke(app, ["worker", "no-colon"])
    assert result.exit_code != 0
    assert "module:attribute" in result.output


async def test_metrics_count_what_this_process_did_and_what_the_broker_holds() -> None:
    from prometheus_client import REGISTRY

    from brokerq.metrics import export_channel_stats

    name = f"metrics-{time.monotonic_ns()}"
    queue = BrokerQueue(MemoryAdapter())
    ch = queue.channel(name, int, max_attempts=1)
    await ch.produce_many([1, 2, 3])
    await ch.produce(4, delay="1h")

    async def handler(n: int) -> None:
        if n == 2:
            raise ValueError("two")

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    await export_channel_stats(queue)

    def value(metric: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(metric, {"channel": name, **labels})

    assert value("brokerq_produced_messages_total") == 4
    assert value("brokerq_handler_duration_seconds_count", outcome="ok") == 2
    assert value("brokerq_handler_duration_seconds_count", outcome="dead") == 1
    assert value("brokerq_channel_messages", state="dead") == 1
    assert value("brokerq_channel_messages", state="delayed") == 1
    assert value("brokerq_channel_events", event="processed") == 2
    await queue.close()
