"""How many requests one event's admission gate can take per second: the hot-event limit.

One event's gate state is one Redis hash tag (its keys are kept together, ``event_keys``), so on
Redis Cluster it lives on one primary and its scripts run on one core. This drives the gate's
own scripts against a dedicated redis-server, as the API and the workers call them for a burst
on one event (``admit`` per request; ``finish`` per request, in the workers' batches of 64), and
reads the server's CPU (``INFO``) before and after: Redis CPU per request, and the most one event
can take at 100 % of one core. The queue's channel (its own keys) and PostgreSQL are not in it.

    uv run python -m bench.hot_event [--requests 100000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import redis

from brokerq.redis import open_commands
from brokerq.server import RedisServer
from reservations.reservation.gate import AdmissionGate, EventSnapshot, remember_user


async def _drive(url: str, requests: int, concurrency: int, tickets: int) -> dict[str, float]:
    conn = open_commands(url)
    gate = AdmissionGate(conn)
    await gate.seed(1, EventSnapshot(tickets, {}, 0, 0))
    for start in range(0, requests, 5000):
        await asyncio.gather(*(remember_user(conn, u) for u in range(start, start + 5000)))
    probe = redis.Redis.from_url(url)
    before = _cpu(probe)
    started = time.perf_counter()
    ids = [f"r{u:08d}" for u in range(requests)]
    now_ms = time.time_ns() // 1_000_000
    next_user = iter(range(requests))

    async def client() -> None:
        for user in next_user:
            await gate.admit(event_id=1, user_id=user, request_id=ids[user], accepted_at_ms=now_ms)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    admitted = _cpu(probe)
    for start in range(0, requests, 64):
        await gate.finished((r, 1) for r in ids[start : start + 64])
    elapsed = time.perf_counter() - started
    after = _cpu(probe)
    probe.close()
    await conn.close()
    return {
        "admit_us": (admitted - before) / requests * 1e6,
        "finish_us": (after - admitted) / requests * 1e6,
        "elapsed_s": elapsed,
    }


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--tickets", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hot-event-") as tmp, RedisServer(Path(tmp)) as srv:
        result = asyncio.run(_drive(srv.url, args.requests, args.concurrency, args.tickets))
    per_request = result["admit_us"] + result["finish_us"]
    print(
        f"{args.requests:,} requests on one event ({args.tickets:,} tickets), load average "
        f"{os.getloadavg()[0]:.2f}: Redis CPU {result['admit_us']:.1f} us to admit + "
        f"{result['finish_us']:.1f} us to finish = {per_request:.1f} us a request; one core "
        f"takes at most {1e6 / per_request:,.0f} requests/s for one event's gate"
    )


if __name__ == "__main__":
    main()
