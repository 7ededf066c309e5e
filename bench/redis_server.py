"""One dedicated redis-server for the whole benchmark run (persistence off, loopback only)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from brokerq.server import RedisServer


@contextlib.contextmanager
def redis_server(*, replica: bool = False) -> Iterator[str]:
    """Yields the URL of a fresh redis-server in a temporary directory (persistence off,
    loopback only: ``brokerq.server.RedisServer``, the tests' launcher); stops it afterwards.
    ``replica``: with a replica attached (every system then runs against a replicated primary,
    and ``replicas_ack`` has a replica to wait for)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="brokerq-bench-")))
        primary = RedisServer(tmp / "primary", extra_args=("--repl-diskless-sync-delay", "0"))
        stack.enter_context(primary)
        if replica:
            follower = RedisServer(
                tmp / "replica", extra_args=("--replicaof", "127.0.0.1", str(primary.port))
            )
            stack.enter_context(follower)
            _wait_linked(follower.url)
        yield primary.url


def _wait_linked(url: str, timeout_s: float = 30.0) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    try:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's replica did not sync in {timeout_s:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()


class RedisProbe:
    """FLUSHALL between runs, and per-run server counters (commands, CPU) for the results file."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)

    def reset(self) -> None:
        self.client.flushall()
        self.client.config_resetstat()

    def snapshot(self) -> dict[str, Any]:
        info = self.client.info("all")
        calls = sum(
            v["calls"]
            for k, v in info.items()
            if k.startswith("cmdstat_") and isinstance(v, dict) and "calls" in v
        )
        return {
            "commands": calls,
            "cpu_s": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "version": info.get("redis_version"),
        }

    def delta(self, before: dict[str, Any]) -> dict[str, Any]:
        after = self.snapshot()
        return {
            "redis_commands": after["commands"] - before["commands"],
            "redis_cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
        }

    def close(self) -> None:
        self.client.close()
