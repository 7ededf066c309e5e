"""What waiting for a replica costs writes to one slot, as the service's admissions to one event
on Redis Cluster with ``REDIS_REPLICAS_ACK=1``: a shared ``WAIT`` against one ``WAIT`` per write.

Starts a local Redis Cluster of 3 primaries with a replica each (``brokerq.server.RedisCluster``,
persistence off). ``--concurrency`` tasks run a small admission-like script (``INCR`` a counter
and ``SADD`` a member, keys of one hash tag, so one primary) ``--writes`` times in all, over one
connection of their own to that primary, three ways, alternating, ``--runs`` of each:

- ``no ack``: the script alone;
- ``WAIT per write``: the script, then ``WAIT 1`` on the same connection, each writer for
  itself (what brokerq did before the confirmations were shared);
- ``shared WAIT``: ``brokerq.redis.acknowledged_by`` (a writer joins the next ``WAIT`` out).

Reports medians: writes a second, ``WAIT`` calls per write (from the primary's ``INFO
commandstats``) and the ratios against ``no ack``. The replica is on loopback: across a network
each ``WAIT`` also takes the round trip.

    uv run python -m bench.acked_writes [--writes 20000] [--runs 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from brokerq.redis import Connection, Script, acknowledged_by, connect, open_commands
from brokerq.server import RedisCluster

ADMIT = Script(
    "admit",
    "local n = redis.call('INCR', KEYS[1]) redis.call('SADD', KEYS[2], ARGV[1]) return n",
)
KEYS = ["bench:{event}:taken", "bench:{event}:holders"]
MODES = ("no ack", "WAIT per write", "shared WAIT")


async def _wait_calls(connection: Connection) -> int:
    stats = (await connection.call("INFO", "commandstats")).decode()
    line = next((x for x in stats.splitlines() if x.startswith("cmdstat_wait:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


async def _drive(write: Callable[[int], Awaitable[object]], writes: int, tasks: int) -> float:
    counter = iter(range(writes))

    async def writer() -> None:
        for i in counter:
            await write(i)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(tasks)))
    return time.perf_counter() - started


async def _run(
    url: str, primary_url: str, mode: str, args: argparse.Namespace
) -> tuple[float, float]:
    commands = open_commands(url)
    own = await connect(primary_url)
    stats = await connect(primary_url)
    acknowledged = acknowledged_by(
        commands, url=url, password=None, options={}, wanted=1, timeout_ms=5000
    )

    async def bare(i: int) -> object:
        return await ADMIT.run(own, KEYS, [i])

    async def each(i: int) -> object:
        reply = await ADMIT.run(own, KEYS, [i])
        if int(await own.call("WAIT", 1, 5000)) < 1:
            raise RuntimeError("the replica did not confirm")
        return reply

    async def shared(i: int) -> object:
        return await acknowledged.run(ADMIT, KEYS, [i])

    write = {"no ack": bare, "WAIT per write": each, "shared WAIT": shared}[mode]
    try:
        await stats.call("DEL", *KEYS)
        await write(-1)  # connections open, script loaded
        waits_before = await _wait_calls(stats)
        seconds = await _drive(write, args.writes, args.concurrency)
        waits = await _wait_calls(stats) - waits_before
    finally:
        await acknowledged.close()
        await commands.close()
        await own.close()
        await stats.close()
    return args.writes / seconds, waits / args.writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisCluster(Path(tmp), size=3, replicas=1) as cluster,
    ):
        primary = cluster.primary_for(KEYS[0])
        print(
            f"{args.writes:,} writes a run to one slot, {args.concurrency} tasks, "
            f"{args.runs} runs of each, load average {load_before[0]:.2f}",
            flush=True,
        )
        results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for run in range(args.runs):
            for mode in MODES:
                rate, waits = asyncio.run(_run(cluster.url, primary.url, mode, args))
                results[mode].append((rate, waits))
                print(f"  run {run + 1} {mode}: {rate:,.0f} writes/s, {waits:.3f} WAIT a write")
    load_after = os.getloadavg()
    base = statistics.median(rate for rate, _ in results["no ack"])
    print("\n| mode | writes/s (median) | vs no ack | WAIT calls per write |")
    print("| --- | ---: | ---: | ---: |")
    for mode in MODES:
        rate = statistics.median(r for r, _ in results[mode])
        waits = statistics.median(w for _, w in results[mode])
        print(f"| {mode} | {rate:,.0f} | {rate / base:.2f}x | {waits:.3f} |")
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after")


if __name__ == "__main__":
    main()
