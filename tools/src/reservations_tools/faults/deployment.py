"""A whole deployment under the harness's control: PostgreSQL, Redis, the API, the workers.

Unlike ``reservations-tools up``, which keeps things running, this owns every process so that a
scenario can kill, stop and restart each one on cue.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from brokerq.server import RedisServer, free_port
from reservations.db import migrate
from reservations_tools.servers.postgres import PostgresServer

__all__ = ["Deployment"]

_READY_TIMEOUT_S = 60.0


class Deployment:
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 3,
        appendfsync: str = "always",
        worker_concurrency: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.worker_count = workers
        self.worker_concurrency = worker_concurrency
        self.port = free_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.postgres = PostgresServer(data_dir / "postgres")
        self.redis = RedisServer(data_dir / "redis", appendonly=True, appendfsync=appendfsync)
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ENVIRONMENT="test",
            DATABASE_URL=self.postgres.url,
            REDIS_URL=self.redis.url,
            SERVICE_PORT=str(self.port),
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            # A Redis that stops answering fails a call in seconds, not the default 15.
            REDIS_SOCKET_TIMEOUT="3",
        )
        env["ADMIN_TOKEN"] = self.admin_token
        if self.worker_concurrency is not None:
            env["WORKER_CONCURRENCY"] = str(self.worker_concurrency)
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "reservations.cli", *args],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # -- starting ------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.postgres.start)
        await self.redis.start()
        await asyncio.to_thread(migrate, self.postgres.url)
        await self.start_api()
        for i in range(self.worker_count):
            await self.start_worker(i)

    async def start_api(self) -> None:
        self.api = self._spawn("api", "api", "--port", str(self.port))
        await self.wait_healthy()

    async def start_worker(self, index: int) -> None:
        log = self.logs / f"worker{index}.log"
        offset = log.stat().st_size if log.exists() else 0
        worker = self.workers[index] = self._spawn(f"worker{index}", "worker")
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {index} exited: {self.tail(log)}")
            if log.exists() and b"worker_started" in log.read_bytes()[offset:]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {index} not started: {self.tail(log)}")
            await asyncio.sleep(0.05)

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while True:
                if self.api is not None and self.api.poll() is not None:
                    raise RuntimeError(f"the API exited: {self.tail(self.logs / 'api.log')}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the API is not healthy: {self.tail(self.logs / 'api.log')}"
                    )
                await asyncio.sleep(0.05)

    # -- faults --------------------------------------------------------------------------------

    def kill_worker(self, index: int) -> None:
        worker = self.workers[index]
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        self.workers[index] = None

    async def kill_redis(self) -> None:
        """SIGKILL: Redis keeps only what its append-only file holds."""
        await asyncio.to_thread(self.redis.kill)
        self.redis = RedisServer(
            self.redis.dir,
            port=self.redis.port,
            appendonly=True,
            appendfsync=self.redis.appendfsync,
        )

    async def start_redis(self) -> None:
        await self.redis.start()

    async def lose_redis_data(self) -> None:
        """SIGKILL Redis and start it again without its append-only file: everything it held
        is gone, as after a restart without persistence or a failover to an empty replica."""
        await self.kill_redis()
        shutil.rmtree(self.redis.dir / "appendonlydir", ignore_errors=True)
        await self.redis.start()

    def pause_redis(self) -> None:
        """SIGSTOP: Redis keeps its connections and its data and answers nothing (a stall)."""
        assert self.redis.process is not None
        self.redis.process.send_signal(signal.SIGSTOP)

    def resume_redis(self) -> None:
        assert self.redis.process is not None
        self.redis.process.send_signal(signal.SIGCONT)

    async def set_appendfsync(self, policy: str) -> None:
        """Change the fsync policy of the running Redis (and of its restarts)."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis.url)
        try:
            await client.config_set("appendfsync", policy)
        finally:
            await client.aclose()
        self.redis.appendfsync = policy

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.stop)

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.start)

    def kill_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(signal.SIGKILL)
            self.api.wait()
        self.api = None

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self) -> None:
        procs = [p for p in [self.api, *self.workers] if p is not None and p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await self.redis.stop()
        await asyncio.to_thread(self.postgres.stop)

    def tail(self, path: Path, size: int = 3000) -> str:
        try:
            return path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"
