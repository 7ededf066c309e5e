"""A whole deployment under the harness's control: PostgreSQL, Redis, the API, the workers.

Unlike ``reservations-tools up``, which keeps things running, this owns every process so that a
scenario can kill, stop and restart each one on cue. Redis is one server, a Redis Cluster (three
primaries, a replica each) or a Sentinel set (a primary, its replica, three Sentinels), every data
node with its append-only file.
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
from typing import Literal

import httpx

from brokerq.server import RedisCluster, RedisServer, free_port
from reservations.db import migrate
from reservations_tools.servers.postgres import PostgresServer

from .sentinel import SentinelSet

__all__ = ["Deployment", "Topology"]

_READY_TIMEOUT_S = 60.0
# How long a cluster node may be unreachable before its replica takes over: short, and long
# enough that a busy two-core machine does not fail a live node over.
CLUSTER_NODE_TIMEOUT_MS = 3000

Topology = Literal["single", "cluster", "sentinel"]


class Deployment:
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 3,
        appendfsync: str = "always",
        worker_concurrency: int | None = None,
        topology: Topology = "single",
        replicas_ack: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.worker_count = workers
        self.worker_concurrency = worker_concurrency
        self.port = free_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.postgres = PostgresServer(data_dir / "postgres")
        self.redis = RedisServer(data_dir / "redis", appendonly=True, appendfsync=appendfsync)
        self.topology: Topology = topology
        self.replicas_ack = replicas_ack
        self.cluster: RedisCluster | None = None
        self.sentinel: SentinelSet | None = None
        self._sets = 0
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        if self.sentinel is not None:
            return self.sentinel.url
        return self.redis.url

    def data_nodes(self) -> list[RedisServer]:
        """The Redis servers that hold data (not the Sentinels)."""
        if self.cluster is not None:
            return list(self.cluster.nodes)
        if self.sentinel is not None:
            return list(self.sentinel.nodes)
        return [self.redis]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ENVIRONMENT="test",
            DATABASE_URL=self.postgres.url,
            REDIS_URL=self.redis_url,
            REDIS_REPLICAS_ACK=str(self.replicas_ack),
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
        await self._start_redis_set()
        await asyncio.to_thread(migrate, self.postgres.url)
        await self._start_processes()

    async def _start_processes(self) -> None:
        await self.start_api()
        for i in range(self.worker_count):
            await self.start_worker(i)

    async def _start_redis_set(self) -> None:
        """Start Redis as ``topology`` says; a cluster or Sentinel set fresh, in directories of
        its own."""
        self._sets += 1
        where = self.data_dir / f"redis-{self.topology}-{self._sets}"
        if self.topology == "cluster":
            self.cluster = RedisCluster(
                where, replicas=1, node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS,
                appendonly=True, appendfsync=self.redis.appendfsync,
            )  # fmt: skip
            await asyncio.to_thread(self.cluster.start_sync)
        elif self.topology == "sentinel":
            self.sentinel = SentinelSet(where, appendfsync=self.redis.appendfsync)
            await self.sentinel.start()
        else:
            await self.redis.start()

    async def _stop_redis_set(self) -> None:
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop_sync)
        if self.sentinel is not None:
            await self.sentinel.stop()
        await self.redis.stop()
        self.cluster = self.sentinel = None

    async def use_redis(self, topology: Topology, *, replicas_ack: int = 0) -> None:
        """Run on another Redis (a fresh one: the gate is rebuilt from PostgreSQL) or with
        another ``REDIS_REPLICAS_ACK``: the API and the workers restart with it."""
        if (topology, replicas_ack) == (self.topology, self.replicas_ack):
            return
        await self._stop_processes()
        if topology != self.topology:
            await self._stop_redis_set()
            self.topology = topology
            await self._start_redis_set()
        self.replicas_ack = replicas_ack
        await self._start_processes()

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
        """Change the fsync policy of the running Redis servers (and of their restarts)."""
        import redis.asyncio as aioredis

        for node in self.data_nodes():
            if node.process is not None:
                client = aioredis.Redis(port=node.port)
                try:
                    await client.config_set("appendfsync", policy)
                finally:
                    await client.aclose()
            node.appendfsync = policy
        self.redis.appendfsync = policy

    async def cut_off(self, replica: RedisServer, primary: RedisServer) -> None:
        """SIGSTOP ``replica`` and close its link to ``primary``, as a partition would: the
        primary goes on taking writes its replica does not get until it is resumed."""
        import redis.asyncio as aioredis

        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)
        client = aioredis.Redis(port=primary.port, socket_timeout=5)
        try:
            await client.execute_command("CLIENT", "KILL", "TYPE", "replica")
        finally:
            await client.aclose()

    def resume(self, node: RedisServer) -> None:
        if node.process is not None:
            node.process.send_signal(signal.SIGCONT)

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
        await self._stop_processes()
        await self._stop_redis_set()
        await asyncio.to_thread(self.postgres.stop)

    async def _stop_processes(self) -> None:
        procs = [p for p in [self.api, *self.workers] if p is not None and p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.api = None
        self.workers = [None] * self.worker_count

    def tail(self, path: Path, size: int = 3000) -> str:
        try:
            return path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"
