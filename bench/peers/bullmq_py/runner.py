"""PyPI ``bullmq`` (the Python port) peer: the four benchmark workloads, in its own environment.

Configuration: ``Worker(concurrency=--parallel)``, jobs with ``removeOnComplete: True`` (as for
Node BullMQ), ``Queue.addBulk`` for batches, the ``completed`` worker event counts
acknowledgements (emitted after the job is moved to completed in Redis).

Two sharp edges of bullmq 3.4.4 with redis-py 8, handled here: the client must have
``decode_responses=True`` (otherwise job data comes back empty, silently), and it must not keep
redis-py 8's default 5 s socket timeout (the worker's blocking BZPOPMIN waits up to 5 s plus
round-trip, so the read times out and the worker logs connection errors and retries). We pass our
own pooled client (``socket_timeout=None``); variant ``single`` instead passes connection options,
which makes the port create one single-connection client per Queue/Worker connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version
from typing import Any

from bullmq import Queue, Worker
from redis.asyncio import Redis

from bench import common

MODULE = "bench.peers.bullmq_py.runner"
EXTRA = {"lib": "bullmq (PyPI)", "version": version("bullmq"), "redis_py": version("redis")}
JOB_OPTS = {"removeOnComplete": True, "removeOnFail": True}


def connection(url: str, variant: str) -> Any:
    if variant == "single":
        from urllib.parse import urlparse

        u = urlparse(url)
        return {"host": u.hostname, "port": u.port, "socket_timeout": None}
    return Redis.from_url(url, decode_responses=True, socket_timeout=None, max_connections=2000)


def make_queue(url: str, variant: str) -> Queue:
    return Queue(
        common.QUEUE_NAME,
        {"connection": connection(url, variant), "defaultJobOptions": JOB_OPTS},
    )


async def run_worker(url: str, variant: str, parallel: int, processor: Any, on_done: Any) -> Any:
    worker = Worker(
        common.QUEUE_NAME,
        processor,
        {"connection": connection(url, variant), "concurrency": parallel, "autorun": False},
    )
    if on_done is not None:
        worker.on("completed", on_done)
    task = asyncio.create_task(worker.run())

    async def stop() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.close(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    return stop


async def main(args: Any) -> dict[str, Any]:
    queue = make_queue(args.url, args.variant)
    extra = {**EXTRA, "connection": args.variant or "pool"}

    async def produce_one(i: int) -> None:
        await queue.add("noop", common.message(i))

    async def produce_batch(ids: range) -> None:
        await queue.addBulk([{"name": "noop", "data": common.message(i)} for i in ids])

    try:
        if args.workload == "produce":
            elapsed = await common.produce_concurrently(produce_one, args.n, args.concurrency)
            return common.throughput_result(args, elapsed, **extra)
        if args.workload == "produce_batch":
            elapsed = await common.produce_in_batches(produce_batch, args.n, args.batch)
            return common.throughput_result(args, elapsed, batch=args.batch, **extra)
        if args.workload == "consume":
            await common.produce_in_batches(produce_batch, args.n, args.batch)
            acks = common.Counter(args.n)
            seen = 0

            async def noop(job: Any, token: str) -> None:
                nonlocal seen
                if job.data:  # guards against the silent empty-data sharp edge
                    seen += 1

            def on_completed(job: Any, result: Any) -> None:
                acks.hit()

            t0 = asyncio.get_running_loop().time()
            stop = await run_worker(args.url, args.variant, args.parallel, noop, on_completed)
            try:
                await acks.wait(args.timeout)
                elapsed = asyncio.get_running_loop().time() - t0
            finally:
                await stop()
            if seen != args.n:
                raise RuntimeError(f"handler saw data in {seen}/{args.n} jobs")
            return common.throughput_result(args, elapsed, parallel=args.parallel, **extra)

        async def start_consumer(rec: common.LatencyRecorder) -> Any:
            async def handler(job: Any, token: str) -> None:
                rec.record(job.data)

            return await run_worker(args.url, args.variant, args.parallel, handler, None)

        return await common.run_latency(args, MODULE, start_consumer, extra)
    finally:
        with contextlib.suppress(Exception):
            await queue.close()


async def producer_setup(args: Any) -> Any:
    queue = make_queue(args.url, args.variant)

    async def produce_one(msg: dict[str, Any]) -> None:
        await queue.add("noop", msg)

    return produce_one, queue.close


if __name__ == "__main__":
    a = common.parse_args()
    if a.role == "producer":
        common.producer_main(lambda: producer_setup(a), a)
    else:
        common.emit(asyncio.run(main(a)))
