"""arq peer: the four benchmark workloads (runs in bench/peers/arq's own environment).

Configuration (arq has no bulk enqueue and polls its queue instead of blocking):
``Worker(max_jobs=--parallel, poll_delay=POLL_DELAY, keep_result=0)``, job results not kept
(nothing to keep from a no-op), an ``after_job_end`` hook counts acknowledgements (it runs once
arq has recorded the end of the job in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from bench import common

MODULE = "bench.peers.arq.runner"
POLL_DELAY = 0.005  # arq's default is 0.5 s, far too slow for a throughput or latency benchmark
EXTRA = {"lib": "arq", "version": version("arq"), "redis_py": version("redis")}


def settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def noop(ctx: dict[str, Any], data: dict[str, Any]) -> None:
    return None


def make_worker(url: str, parallel: int, function: Any, after_job_end: Any) -> Worker:
    return Worker(
        functions=[func(function, name="noop")],
        redis_settings=settings(url),
        max_jobs=parallel,
        poll_delay=POLL_DELAY,
        keep_result=0,
        handle_signals=False,
        after_job_end=after_job_end,
    )


async def run_worker(worker: Worker) -> Any:
    task = asyncio.create_task(worker.main())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker.close()

    return stop


async def main(args: Any) -> dict[str, Any]:
    pool = await create_pool(settings(args.url))

    async def produce_one(i: int) -> None:
        await pool.enqueue_job("noop", common.message(i))

    try:
        if args.workload == "produce":
            elapsed = await common.produce_concurrently(produce_one, args.n, args.concurrency)
            return common.throughput_result(args, elapsed, **EXTRA)
        if args.workload == "produce_batch":
            return {"workload": args.workload, "unsupported": "no batch enqueue API", **EXTRA}
        if args.workload == "consume":
            await common.produce_concurrently(produce_one, args.n, args.concurrency)
            acks = common.Counter(args.n)

            async def after_job_end(ctx: dict[str, Any]) -> None:
                acks.hit()

            t0 = asyncio.get_running_loop().time()
            worker = make_worker(args.url, args.parallel, noop, after_job_end)
            stop = await run_worker(worker)
            try:
                await acks.wait(args.timeout)
                elapsed = asyncio.get_running_loop().time() - t0
            finally:
                await stop()
            return common.throughput_result(args, elapsed, parallel=args.parallel, **EXTRA)

        async def start_consumer(rec: common.LatencyRecorder) -> Any:
            async def handler(ctx: dict[str, Any], data: dict[str, Any]) -> None:
                rec.record(data)

            return await run_worker(make_worker(args.url, args.parallel, handler, None))

        return await common.run_latency(args, MODULE, start_consumer, EXTRA)
    finally:
        await pool.aclose()


async def producer_setup(args: Any) -> Any:
    pool = await create_pool(settings(args.url))

    async def produce_one(msg: dict[str, Any]) -> None:
        await pool.enqueue_job("noop", msg)

    return produce_one, pool.aclose


if __name__ == "__main__":
    a = common.parse_args()
    if a.role == "producer":
        common.producer_main(lambda: producer_setup(a), a)
    else:
        common.emit(asyncio.run(main(a)))
