"""One dedicated redis-server for the whole benchmark run (persistence off, loopback only)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from brokerq.server import RedisServer


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yields the URL of a fresh redis-server in a temporary directory (persistence off,
    loopback only: ``brokerq.server.RedisServer``, the tests' launcher); stops it afterwards."""
    with tempfile.TemporaryDirectory(prefix="brokerq-bench-") as tmp, RedisServer(Path(tmp)) as srv:
        yield srv.url


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
