"""SAQ peer: the four benchmark workloads (runs in bench/peers/saq's own environment).

Configuration: ``Worker(concurrency=--parallel)`` (one blocking BLMOVE loop per slot, SAQ's
design), jobs enqueued with ``ttl=-1`` so a finished job is deleted rather than kept for 600 s
(nothing to keep from a no-op), ``max_concurrent_ops`` of the queue raised to the number of
concurrent producers (its default 20 throttles enqueue), a redis-py client without socket timeout
(SAQ's blocking dequeue waits longer than redis-py's default 5 s socket timeout) and a
larger pool (redis-py 8's default of 100 connections is too few for 100 slots). SAQ has no batch
enqueue API. An ``after_process`` hook counts acknowledgements (it runs after the job is finished
in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version
from typing import Any

from redis.asyncio import Redis
from saq import Queue, Worker

from bench import common

MODULE = "bench.peers.saq.runner"
# redis-py 8 caps a pool at 100 connections; SAQ holds one per worker slot in BLMOVE.
MAX_CONNECTIONS = 2000
EXTRA = {"lib": "saq", "version": version("saq"), "redis_py": version("redis")}


def make_queue(url: str, ops: int) -> Queue:
    from saq.queue.redis import RedisQueue

    return RedisQueue(
        Redis.from_url(url, socket_timeout=None, max_connections=MAX_CONNECTIONS),
        name=common.QUEUE_NAME,
        max_concurrent_ops=ops,
    )


async def run_worker(queue: Queue, parallel: int, handler: Any, after: Any) -> Any:
    worker = Worker(
        queue,
        functions=[("noop", handler)],
        concurrency=parallel,
        after_process=after,
        dequeue_timeout=1.0,
    )
    worker.SIGNALS = []  # the benchmark stops the worker itself
    task = asyncio.create_task(worker.start())

    async def stop() -> None:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)

    return stop


async def main(args: Any) -> dict[str, Any]:
    queue = make_queue(args.url, max(20, args.concurrency))
    await queue.connect()

    async def produce_one(i: int) -> None:
        await queue.enqueue("noop", data=common.message(i), ttl=-1)

    try:
        if args.workload == "produce":
            elapsed = await common.produce_concurrently(produce_one, args.n, args.concurrency)
            return common.throughput_result(args, elapsed, **EXTRA)
        if args.workload == "produce_batch":
            return {"workload": args.workload, "unsupported": "no batch enqueue API", **EXTRA}
        if args.workload == "consume":
            await common.produce_concurrently(produce_one, args.n, args.concurrency)
            acks = common.Counter(args.n)

            async def noop(ctx: Any, *, data: dict[str, Any]) -> None:
                return None

            async def after(ctx: Any) -> None:
                acks.hit()

            consumer_queue = make_queue(args.url, 20)
            await consumer_queue.connect()
            t0 = asyncio.get_running_loop().time()
            stop = await run_worker(consumer_queue, args.parallel, noop, after)
            try:
                await acks.wait(args.timeout)
                elapsed = asyncio.get_running_loop().time() - t0
            finally:
                await stop()
                await consumer_queue.disconnect()
            return common.throughput_result(args, elapsed, parallel=args.parallel, **EXTRA)

        async def start_consumer(rec: common.LatencyRecorder) -> Any:
            async def handler(ctx: Any, *, data: dict[str, Any]) -> None:
                rec.record(data)

            stop = await run_worker(queue, args.parallel, handler, None)
            return stop

        return await common.run_latency(args, MODULE, start_consumer, EXTRA)
    finally:
        with contextlib.suppress(Exception):
            await queue.disconnect()


async def producer_setup(args: Any) -> Any:
    queue = make_queue(args.url, max(20, args.concurrency))
    await queue.connect()

    async def produce_one(msg: dict[str, Any]) -> None:
        await queue.enqueue("noop", data=msg, ttl=-1)

    return produce_one, queue.disconnect


if __name__ == "__main__":
    a = common.parse_args()
    if a.role == "producer":
        common.producer_main(lambda: producer_setup(a), a)
    else:
        common.emit(asyncio.run(main(a)))
