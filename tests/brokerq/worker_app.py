"""A worker process for tests: ``brokerq worker tests.brokerq.worker_app:make_worker``.

It reports to the Redis list ``events:<channel>`` when a handler starts and finishes, so a test
can wait for those events instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

from brokerq import BrokerQueue, Message, Worker
from brokerq.redis import RedisAdapter


def make_worker() -> Worker:
    url = os.environ["BQ_TEST_REDIS_URL"]
    name = os.environ["BQ_TEST_CHANNEL"]
    mode = os.environ["BQ_TEST_MODE"]
    queue = BrokerQueue(RedisAdapter(url))
    channel = queue.channel(
        name,
        int,
        lease=os.environ.get("BQ_TEST_LEASE", "2s"),
        max_attempts=int(os.environ.get("BQ_TEST_MAX_ATTEMPTS", "5")),
    )
    events = aioredis.Redis.from_url(url)

    async def handler(msg: Message[int]) -> None:
        await events.rpush(f"events:{name}", f"start:{msg.id}:{msg.tries}:{os.getpid()}")
        if mode == "hang":
            await asyncio.Event().wait()
        if mode == "poison" and msg.data == 13:
            os._exit(3)  # a crash no handler can catch, like a segfault in a C extension
        await asyncio.sleep(float(os.environ.get("BQ_TEST_WORK_S", "0")))
        await events.rpush(f"events:{name}", f"done:{msg.id}:{msg.tries}:{os.getpid()}")

    worker = Worker(queue, grace="20s")
    worker.add(channel, handler, max_parallel=int(os.environ.get("BQ_TEST_PARALLEL", "1")))
    return worker
