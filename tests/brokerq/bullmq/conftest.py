"""Fixtures for the BullMQ adapter: a real redis-server (the suite's) and real Node BullMQ.

Node BullMQ comes from npm, pinned by ``tests/brokerq/bullmq/node/package-lock.json``; ``npm ci``
runs once into ``tests/brokerq/bullmq/node/node_modules`` (git-ignored). Tests that need Node are
skipped, saying why, when ``node`` or ``npm`` is not on PATH.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from brokerq import BrokerQueue
from brokerq.bullmq import BullMQAdapter

NODE_DIR = Path(__file__).parent / "node"
JOB_NAME = "reserveEvent"


class ReserveEvent(msgspec.Struct):
    userId: int
    eventId: int


class Node:
    """Runs the Node BullMQ scripts of tests/brokerq/bullmq/node against the suite's Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.node = shutil.which("node") or "node"

    async def start(self, script: str, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self.node, str(NODE_DIR / script), self.url, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def run(self, script: str, *args: str, timeout: float = 60) -> list[dict[str, Any]]:
        proc = await self.start(script, *args)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        if proc.returncode != 0:
            raise AssertionError(f"node {script} failed ({proc.returncode}): {err.decode()}")
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    async def add(self, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
        [reply] = await self.run("producer.cjs", queue, json.dumps(jobs))
        ids: list[str] = reply["ids"]
        return ids

    async def inspect(self, queue: str, *ids: str) -> dict[str, Any]:
        [reply] = await self.run("inspect.cjs", queue, *ids)
        return reply

    async def work(self, queue: str, finish: int, *extra: str) -> list[dict[str, Any]]:
        """Run the Node worker until ``finish`` jobs completed or finally failed."""
        return await self.run("worker.cjs", queue, str(finish), *extra)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(
            "Node.js (node and npm) not found on PATH: the Node BullMQ interop tests need it"
        )
    installed = NODE_DIR / "node_modules" / "bullmq" / "package.json"
    # The suite's workers are separate processes: one installs, the others wait for it.
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists():
            r = _npm("ci")
            if r.returncode != 0 and "EUSAGE" in r.stderr:
                # The lock lists optional per-platform packages (msgpackr-extract) a registry
                # mirror may not carry; npm ci then refuses the whole lock. `npm install
                # --no-save` installs the same locked versions, package-lock.json untouched.
                r = _npm("install", "--no-save")
            if r.returncode != 0:
                pytest.fail(f"npm ci in tests/brokerq/bullmq/node failed: {r.stderr[-2000:]}")
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["bullmq"]
    assert json.loads(installed.read_text())["version"] == pinned, "installed bullmq is not pinned"
    return NODE_DIR / "node_modules"


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture
def node(node_modules: Path, redis_server) -> Node:
    return Node(redis_server.url)


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def bq(redis_server) -> AsyncIterator[BrokerQueue]:
    q = BrokerQueue(BullMQAdapter(redis_server.url, job_name=JOB_NAME))
    yield q
    await q.close()
