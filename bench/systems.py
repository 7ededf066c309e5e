"""The systems under benchmark: how to prepare each one's environment and run one workload.

brokerq runs in the project's own environment; every peer in its own (their dependencies
conflict with ours and with each other): ``bench/peers/node`` (npm, committed package-lock.json)
and ``bench/peers/<python peer>`` (uv, committed uv.lock), prepared on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"


@dataclass(frozen=True)
class System:
    key: str  # name on the command line
    label: str  # row of the table
    kind: str  # "own" (our environment), "python" (a uv project under peers/), "node"
    target: str  # python module or node script (relative to the repository root)
    project: str = ""  # peers/<project> for python peers
    variant: str = ""
    parallel: int = 100  # consumer concurrency
    note: str = ""

    def with_parallel(self, parallel: int) -> System:
        return replace(
            self, key=f"{self.key}@{parallel}", label=f"{self.label} @{parallel}", parallel=parallel
        )

    def command(self) -> list[str]:
        if self.kind == "own":
            return [sys.executable, "-m", self.target]
        if self.kind == "python":
            project = str(PEERS.relative_to(ROOT) / self.project)
            return [
                "uv",
                "run",
                "--locked",
                "--quiet",
                "--project",
                project,
                "python",
                "-m",
                self.target,
            ]
        return [node_binary() or "node", self.target]


NODE = System(
    "node",
    "Node BullMQ",
    "node",
    "bench/peers/node/runner.cjs",
    note="bullmq (npm), ioredis connections, Worker concurrency, addBulk, removeOnComplete",
)
SYSTEMS: dict[str, System] = {
    s.key: s
    for s in (
        NODE,
        System(
            "brokerq-alo",
            "brokerq at-least-once",
            "own",
            "bench.brokerq_runner",
            variant="alo",
            parallel=200,  # 100, 200 and 500 are within noise; 200 had the best median
        ),
        System(
            "brokerq-eo",
            "brokerq exactly-once",
            "own",
            "bench.brokerq_runner",
            variant="eo",
            parallel=200,
        ),
        System(
            "brokerq-alo-ack",
            "brokerq at-least-once, replicas_ack=1",
            "own",
            "bench.brokerq_runner",
            variant="alo-ack1",
            parallel=200,
            note="a produce returns once a replica has it (WAIT); the run's Redis gets a replica",
        ),
        System(
            "brokerq-bullmq",
            "brokerq on BullMQ layout",
            "own",
            "bench.brokerq_runner",
            variant="bullmq-alo",
            parallel=100,
        ),
        System(
            "bullmq-py",
            "bullmq (PyPI)",
            "python",
            "bench.peers.bullmq_py.runner",
            project="bullmq_py",
        ),
        System("arq", "arq", "python", "bench.peers.arq.runner", project="arq"),
        System("saq", "SAQ", "python", "bench.peers.saq.runner", project="saq"),
    )
}
BASELINE = NODE.key
NEEDS_REPLICA = {"brokerq-alo-ack"}
"""Systems that only run against a Redis with a replica (started for the run when chosen)."""
DEFAULT_SYSTEMS = [key for key in SYSTEMS if key not in NEEDS_REPLICA]


def resolve(spec: str) -> System:
    """``key`` or ``key@parallel`` (consumer concurrency override)."""
    key, _, parallel = spec.partition("@")
    if key not in SYSTEMS:
        raise SystemExit(f"unknown system {key!r}; known: {', '.join(SYSTEMS)}")
    system = SYSTEMS[key]
    return system.with_parallel(int(parallel)) if parallel else system


def node_binary() -> str | None:
    return shutil.which("node")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # ours; the peers' `uv run --project` uses their own
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prepare(system: System) -> str | None:
    """Make the system runnable; returns a reason to skip it, or None."""
    if system.kind == "node":
        if node_binary() is None or shutil.which("npm") is None:
            return "node/npm not found on PATH: Node BullMQ skipped"
        node_dir = PEERS / "node"
        if not (node_dir / "node_modules" / "bullmq").exists():
            print("bench: npm ci in bench/peers/node (first use)", file=sys.stderr)
            r = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=node_dir,
                env=child_env(),
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                return f"npm ci failed: {r.stderr.strip()[-500:]}"
        return None
    if system.kind == "python":
        project = PEERS / system.project
        r = subprocess.run(
            ["uv", "sync", "--locked", "--quiet", "--project", str(project)],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return f"uv sync of {system.project} failed: {r.stderr.strip()[-500:]}"
        return None
    probe = "from brokerq import BrokerQueue, Processing; from brokerq.redis import RedisAdapter"
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"brokerq does not import yet ({last}): skipped"
    return None
