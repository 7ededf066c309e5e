"""One dedicated redis-server for the whole benchmark run (persistence off, loopback only)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yields the URL of a fresh redis-server in a temporary directory; stops it afterwards.

    Uses ``brokerq.server.RedisServer`` when available (the same launcher as the tests), else
    starts ``redis-server`` itself with the same settings: no RDB snapshots, no AOF.
    """
    with tempfile.TemporaryDirectory(prefix="brokerq-bench-") as tmp:
        try:
            from brokerq.server import RedisServer
        except ImportError:
            RedisServer = None
        if RedisServer is not None:
            with RedisServer(Path(tmp)) as srv:
                yield srv.url
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH (and brokerq.server unavailable)")
        port = _free_port()
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            tmp,
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "redis.log",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            client.close()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


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
