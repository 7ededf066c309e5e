"""Shared pieces of the Python workload runners (standard library only).

Every runner, ours and the peers' (each in its own environment), implements the same four
workloads with the same message and the same measurement, and prints exactly one result line
``BENCH_RESULT {json}`` on stdout for the orchestrator to collect:

* ``produce``: N messages produced one at a time by ``--concurrency`` concurrent tasks;
  wall-clock from the first produce to the last acknowledged produce.
* ``produce_batch``: N messages produced in batches of ``--batch`` (one batch call after another).
* ``consume``: the queue is pre-filled with N messages (not timed), then a consumer with a no-op
  handler drains it; wall-clock from starting the consumer to the last acknowledgement.
* ``latency``: a producer process offers ``--rate`` msg/s on an absolute schedule for
  ``--warmup`` + ``--duration`` seconds while a consumer runs; latency = consumer receive time -
  the send timestamp carried in the message (same host clock); p50/p99 over the messages sent
  after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
WORKLOADS = ("produce", "produce_batch", "consume", "latency")
QUEUE_NAME = "bench"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="one benchmark workload against one queue system")
    p.add_argument("--url", required=True, help="redis://127.0.0.1:PORT/0")
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--n", type=int, default=50_000, help="messages for produce/consume")
    p.add_argument("--concurrency", type=int, default=100, help="concurrent producer tasks")
    p.add_argument("--batch", type=int, default=1000, help="batch size for produce_batch")
    p.add_argument("--parallel", type=int, default=100, help="consumer concurrency")
    p.add_argument("--rate", type=float, default=5000.0, help="offered rate for latency (msg/s)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds for latency")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds for latency")
    p.add_argument("--variant", default="", help="system-specific variant (e.g. brokerq mode)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--role", default="main", choices=("main", "producer"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def message(n: int) -> dict[str, Any]:
    """The benchmark message: a small JSON object."""
    return {"userId": n, "eventId": 1}


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def throughput_result(args: argparse.Namespace, elapsed: float, **extra: Any) -> dict[str, Any]:
    return {
        "workload": args.workload,
        "n": args.n,
        "elapsed_s": elapsed,
        "value": args.n / elapsed,
        "unit": "msg/s",
        **extra,
    }


async def produce_concurrently(
    produce_one: Callable[[int], Awaitable[Any]], n: int, concurrency: int
) -> float:
    """N single produces from ``concurrency`` tasks; returns the elapsed seconds."""

    async def worker(first: int) -> None:
        for i in range(first, n, concurrency):
            await produce_one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(min(concurrency, n))))
    return time.perf_counter() - t0


async def produce_in_batches(
    produce_batch: Callable[[range], Awaitable[Any]], n: int, batch: int
) -> float:
    """N produces in consecutive batches; returns the elapsed seconds."""
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await produce_batch(range(start, min(n, start + batch)))
    return time.perf_counter() - t0


class Counter:
    """Counts acknowledgements and wakes a waiter when ``target`` is reached."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()
        self.done_at = 0.0

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()

    async def wait(self, limit_s: float) -> None:
        try:
            await asyncio.wait_for(self.done.wait(), limit_s)
        except TimeoutError as e:
            raise RuntimeError(f"only {self.count}/{self.target} acknowledged in {limit_s}s") from e


async def wait_until(
    check: Callable[[], Awaitable[bool]], limit_s: float, step: float = 0.001
) -> float:
    """Poll ``check`` until true (bounded by ``limit_s``); returns the perf_counter time."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        if await check():
            return time.perf_counter()
        await asyncio.sleep(step)
    raise RuntimeError(f"condition not reached in {limit_s}s")


# --- latency ---------------------------------------------------------------------------------


class LatencyRecorder:
    """Consumer side of the latency workload: ``record(data)`` at handler entry."""

    def __init__(self, warmup_count: int) -> None:
        self.warmup_count = warmup_count
        self.received = 0
        self.latencies_ms: list[float] = []
        self.expected: int | None = None
        self.all_received = asyncio.Event()
        self.first_at = 0.0
        self.last_at = 0.0

    def record(self, data: dict[str, Any]) -> None:
        now = time.time()
        if not self.received:
            self.first_at = now
        self.last_at = now
        self.received += 1
        if data["userId"] >= self.warmup_count:
            self.latencies_ms.append((now - data["ts"]) * 1000.0)
        if self.expected is not None and self.received >= self.expected:
            self.all_received.set()

    async def wait_for(self, sent: int, limit_s: float) -> None:
        self.expected = sent
        if self.received >= sent:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_received.wait(), limit_s)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_result(
    args: argparse.Namespace, rec: LatencyRecorder, producer: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    lat = sorted(rec.latencies_ms)
    return {
        "workload": "latency",
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else math.nan,
        "mean_ms": sum(lat) / len(lat) if lat else math.nan,
        "measured": len(lat),
        "received": rec.received,
        "sent": producer.get("sent"),
        "offered_rate": producer.get("achieved_rate"),
        "consumed_rate": (rec.received - 1) / max(1e-9, rec.last_at - rec.first_at),
        "producer_max_lag_ms": producer.get("max_lag_ms"),
        "unit": "ms",
        **extra,
    }


async def offer_at_rate(
    produce_one: Callable[[dict[str, Any]], Awaitable[Any]],
    rate: float,
    seconds: float,
    max_in_flight: int = 1000,
) -> dict[str, Any]:
    """Open-loop producer: message i is due at t0 + i/rate (absolute schedule, no drift).

    Due messages are started as soon as they are due (several at once if the loop fell
    behind); each carries the wall-clock time at which its produce started in ``ts``.
    """
    total = int(rate * seconds)
    sem = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []
    max_lag = 0.0

    async def send(i: int) -> None:
        try:
            msg = message(i)
            msg["ts"] = time.time()
            await produce_one(msg)
        except Exception as e:  # reported, not swallowed
            errors.append(e)
        finally:
            sem.release()

    t0 = time.perf_counter()
    i = 0
    while i < total:
        elapsed = time.perf_counter() - t0
        due = min(total, int(elapsed * rate) + 1)
        while i < due:
            await sem.acquire()
            max_lag = max(max_lag, time.perf_counter() - t0 - i / rate)
            t = asyncio.create_task(send(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        delay = i / rate - (time.perf_counter() - t0)
        await asyncio.sleep(max(0.0, delay))
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} produce errors, first: {errors[0]!r}")
    return {"sent": total, "achieved_rate": total / elapsed, "max_lag_ms": max_lag * 1000.0}


def producer_main(produce_setup: Callable[[], Awaitable[Any]], args: argparse.Namespace) -> None:
    """Entry of the latency producer subprocess: ``produce_setup()`` returns
    ``(produce_one, close)``; prints the producer report as the result line."""

    async def run() -> None:
        produce_one, close = await produce_setup()
        try:
            report = await offer_at_rate(produce_one, args.rate, args.warmup + args.duration)
        finally:
            await close()
        emit(report)

    asyncio.run(run())


async def run_latency(
    args: argparse.Namespace,
    module: str,
    start_consumer: Callable[[LatencyRecorder], Awaitable[Callable[[], Awaitable[Any]]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Consumer side: start the consumer, spawn the producer subprocess (``python -m module``
    with ``--role producer``), wait for every sent message, return the latency result."""
    rec = LatencyRecorder(warmup_count=int(args.rate * args.warmup))
    stop = await start_consumer(rec)
    try:
        await asyncio.sleep(0.5)  # consumer connected and waiting
        cmd = [sys.executable, "-m", module, *sys.argv[1:], "--role", "producer"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, env=os.environ)
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(), args.warmup + args.duration + args.timeout
            )
        except TimeoutError:
            proc.kill()
            raise
        producer = parse_result(out.decode())
        await rec.wait_for(int(producer["sent"]), 30.0)
    finally:
        await stop()
    return latency_result(args, rec, producer, **(extra or {}))


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"no result line in output: {stdout[-500:]!r}")
