"""What spreading one channel over shards gives on Redis Cluster: messages a second, and each
primary's Redis CPU.

Starts a local Redis Cluster of 3 primaries (``brokerq.server.RedisCluster``, slots split evenly,
persistence off). Then, alternating a channel of 1 shard and one of ``--shards`` (``--runs`` of
each), a fresh channel takes N messages: single produces from ``--concurrency`` tasks, the
partition key an event id out of ``--events`` (as the reservation channel's), while one consumer
(``--parallel`` slots, a no-op handler) in the same process takes them. Each primary's CPU is
read from ``INFO cpu`` (``used_cpu_sys + used_cpu_user``) before and after a run, from the first
produce to the last acknowledgement. Reports medians: messages a second, and per primary (the
busiest first) its CPU per 1,000 messages and its share of the run (CPU seconds / wall seconds),
and this process's CPU (the client: producers and consumer).

On a machine with few cores the one client process, not Redis, limits the rate; what K primaries
give follows from each primary's CPU per message (``docs/scaling.md``).

    uv run python -m bench.shards [--messages 50000] [--runs 3] [--shards 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import redis

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter
from brokerq.server import RedisCluster


class Reservation(msgspec.Struct):
    userId: int
    eventId: int


@dataclass(frozen=True)
class Run:
    shards: int
    rate: float
    """Messages a second, first produce to last acknowledgement."""
    primary_ms: list[float]
    """Each primary's Redis CPU per 1,000 messages, busiest first."""
    primary_share: list[float]
    """Each primary's Redis CPU seconds per wall second, busiest first."""
    client_ms: float
    """This process's CPU per 1,000 messages."""


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _event_id(message: Reservation) -> int:
    return message.eventId


async def _run(
    url: str, probes: list[redis.Redis], name: str, shards: int, args: argparse.Namespace
) -> Run:
    for probe in probes:
        probe.flushall()
    queue = BrokerQueue(RedisAdapter(url))
    ch = queue.channel(name, Reservation, shards=shards, partition_key=_event_id)
    total = args.messages
    handled = 0
    all_handled = asyncio.Event()

    async def handler(_: Reservation) -> None:
        nonlocal handled
        handled += 1
        if handled == total:
            all_handled.set()

    numbers = iter(range(total))

    async def producer() -> None:
        for n in numbers:
            await ch.produce(Reservation(userId=n, eventId=n % args.events))

    before = [_cpu(p) for p in probes]
    client_before = time.process_time()
    started = time.perf_counter()
    consumer = await ch.consume(handler, max_parallel=args.parallel)
    await asyncio.gather(*(producer() for _ in range(args.concurrency)))
    await all_handled.wait()
    await consumer.close()  # sends the last acknowledgements
    elapsed = time.perf_counter() - started
    client = time.process_time() - client_before
    used = sorted((_cpu(p) - b for p, b in zip(probes, before, strict=True)), reverse=True)
    stats = await ch.stats()
    await queue.close()
    if (stats.processed, stats.waiting, stats.in_flight) != (total, 0, 0):
        raise RuntimeError(f"run {name} left the channel at {stats}")
    return Run(
        shards=shards,
        rate=total / elapsed,
        primary_ms=[u / total * 1e6 for u in used],
        primary_share=[u / elapsed for u in used],
        client_ms=client / total * 1e6,
    )


async def _bench(url: str, ports: list[int], args: argparse.Namespace) -> list[Run]:
    probes = [redis.Redis(port=port) for port in ports]
    runs = []
    try:
        for i in range(args.runs):
            for shards in (1, args.shards):
                run = await _run(url, probes, f"bench/shards/{i}-{shards}", shards, args)
                print(
                    f"  run {i + 1}, {shards} shard(s): {run.rate:,.0f} msg/s, primaries "
                    + ", ".join(f"{ms:.0f} ms" for ms in run.primary_ms)
                    + f" CPU per 1,000, client {run.client_ms:.0f} ms per 1,000",
                    flush=True,
                )
                runs.append(run)
    finally:
        for probe in probes:
            probe.close()
    return runs


def _median_of(runs: list[Run], shards: int) -> dict[str, object]:
    mine = [r for r in runs if r.shards == shards]
    primaries = len(mine[0].primary_ms)
    return {
        "rate": statistics.median(r.rate for r in mine),
        "ms": [statistics.median(r.primary_ms[i] for r in mine) for i in range(primaries)],
        "share": [statistics.median(r.primary_share[i] for r in mine) for i in range(primaries)],
        "client": statistics.median(r.client_ms for r in mine),
    }


def _table(runs: list[Run], shards: list[int]) -> str:
    lines = [
        "| shards | messages/s | Redis CPU per 1,000 messages, per primary (busiest first) "
        "| share of the run, per primary | all primaries per 1,000 | client CPU per 1,000 |",
        "| ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for k in shards:
        m = _median_of(runs, k)
        ms: list[float] = m["ms"]  # type: ignore[assignment]
        share: list[float] = m["share"]  # type: ignore[assignment]
        lines.append(
            f"| {k} | {m['rate']:,.0f} | {' / '.join(f'{x:.1f} ms' for x in ms)} | "
            f"{' / '.join(f'{x:.0%}' for x in share)} | {sum(ms):.1f} ms | "
            f"{m['client']:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=3, help="the shard count set against 1")
    parser.add_argument("--concurrency", type=int, default=100, help="producing tasks")
    parser.add_argument("--parallel", type=int, default=100, help="the consumer's slots")
    parser.add_argument("--events", type=int, default=1000, help="distinct partition keys")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp,
        RedisCluster(Path(tmp), size=3) as cluster,
    ):
        print(
            f"{args.messages:,} messages a run, 3 primaries, {args.runs} runs of each, "
            f"load average {load_before[0]:.2f}",
            flush=True,
        )
        runs = asyncio.run(_bench(cluster.url, [n.port for n in cluster.nodes], args))
    load_after = os.getloadavg()
    print(
        f"\nmedians of {args.runs} alternating runs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after\n"
    )
    print(_table(runs, [1, args.shards]))


if __name__ == "__main__":
    main()
