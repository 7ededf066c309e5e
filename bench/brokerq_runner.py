"""brokerq: the four benchmark workloads, in the project's own environment.

Every guarantee on: leases (a consumer holds each message under a renewed 30 s lease), acks
written to Redis before a message counts as done, and for ``--variant eo`` EXACTLY_ONCE with
deduplication on (the default 5 min window: every produce is checked against and recorded in the
dedup window). ``--variant alo`` is AT_LEAST_ONCE, ``alo-ack1`` the same with
``replicas_ack=1`` (each produce call waits for a replica: ``WAIT 1 500``). ``--variant
bullmq-alo`` / ``bullmq-eo`` run the same on ``BullMQAdapter``: BullMQ jobs written and moved by
BullMQ's own Lua scripts in batches, with the Node runner's job options ``removeOnComplete`` /
``removeOnFail``; leases are BullMQ job locks, and exactly-once is BullMQ deduplication.

(a) ``produce`` from ``--concurrency`` tasks, (b) ``produce_many`` in batches of ``--batch``,
(c) ``consume(noop, max_parallel=--parallel)``, timed from the ``consume`` call until the
consumer is idle with everything acknowledged (``Consumer.wait_idle``) and the channel's stats
say all N were processed, (d) as every other system.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import msgspec

from bench import common
from brokerq import Adapter, BrokerQueue, Channel, Processing
from brokerq.redis import RedisAdapter

MODULE = "bench.brokerq_runner"


class Event(msgspec.Struct):
    userId: int
    eventId: int


class TimedEvent(msgspec.Struct):
    userId: int
    eventId: int
    ts: float


def extra(args: Any) -> dict[str, Any]:
    info = {
        "lib": "brokerq",
        "version": version("brokerq"),
        "redis_py": version("redis"),
        "mode": args.variant,
    }
    if args.variant.startswith("bullmq-"):
        info.update(engine="bullmq", bullmq_py=version("bullmq"))
    return info


def adapter(url: str, variant: str) -> Adapter:
    if variant.startswith("bullmq-"):
        from brokerq.bullmq import BullMQAdapter

        options = {"removeOnComplete": True, "removeOnFail": True}
        return BullMQAdapter(url, job_name="noop", job_options=options)
    _, ack, replicas = variant.partition("-ack")
    return RedisAdapter(url, replicas_ack=int(replicas) if ack else 0)


def channel(queue: BrokerQueue, name: str, type_: Any, variant: str) -> Channel[Any]:
    process = Processing.EXACTLY_ONCE if variant.endswith("eo") else Processing.AT_LEAST_ONCE
    return queue.channel(name, type_, process=process, lease="30s")


async def main(args: Any) -> dict[str, Any]:
    queue = BrokerQueue(adapter(args.url, args.variant))
    ch = channel(queue, "bench/events", Event, args.variant)
    info = extra(args)

    async def produce_one(i: int) -> None:
        await ch.produce(Event(i, 1))

    async def produce_batch(ids: range) -> None:
        await ch.produce_many([Event(i, 1) for i in ids])

    try:
        if args.workload == "produce":
            elapsed = await common.produce_concurrently(produce_one, args.n, args.concurrency)
            return common.throughput_result(args, elapsed, **info)
        if args.workload == "produce_batch":
            elapsed = await common.produce_in_batches(produce_batch, args.n, args.batch)
            return common.throughput_result(args, elapsed, batch=args.batch, **info)
        if args.workload == "consume":
            await common.produce_in_batches(produce_batch, args.n, args.batch)
            handled = common.Counter(args.n)

            async def noop(event: Event) -> None:
                handled.hit()

            loop = asyncio.get_running_loop()
            t0 = loop.time()
            consumer = await ch.consume(noop, max_parallel=args.parallel)
            try:
                await handled.wait(args.timeout)
                await asyncio.wait_for(consumer.wait_idle(), args.timeout)
                elapsed = loop.time() - t0
            finally:
                await consumer.close()
            stats = await ch.stats()
            if stats.processed < args.n or stats.waiting or stats.in_flight:
                raise RuntimeError(f"not everything acknowledged: {stats}")
            return common.throughput_result(args, elapsed, parallel=args.parallel, **info)

        lat_ch = channel(queue, "bench/latency", TimedEvent, args.variant)

        async def start_consumer(rec: common.LatencyRecorder) -> Any:
            async def handler(event: TimedEvent) -> None:
                rec.record({"userId": event.userId, "ts": event.ts})

            consumer = await lat_ch.consume(handler, max_parallel=args.parallel)
            return consumer.close

        return await common.run_latency(args, MODULE, start_consumer, info)
    finally:
        await queue.close()


async def producer_setup(args: Any) -> Any:
    queue = BrokerQueue(adapter(args.url, args.variant))
    lat_ch = channel(queue, "bench/latency", TimedEvent, args.variant)

    async def produce_one(msg: dict[str, Any]) -> None:
        await lat_ch.produce(TimedEvent(msg["userId"], msg["eventId"], msg["ts"]))

    return produce_one, queue.close


if __name__ == "__main__":
    a = common.parse_args()
    if a.role == "producer":
        common.producer_main(lambda: producer_setup(a), a)
    else:
        common.emit(asyncio.run(main(a)))
