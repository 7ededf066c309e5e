"""The three reservation systems under benchmark: how each is prepared, started and stopped.

Each one is started against a fresh PostgreSQL database and a flushed Redis of the benchmark's
shared servers, as the processes its design runs:

- ``seed``: the seed's NestJS + BullMQ design (``bench/peers/seed_nestjs``): one producer and
  three consumers (Node, built from TypeScript with the committed package-lock.json);
- ``ours``: this repository's service as ``reservations-tools up`` runs it: the API and three
  workers;
- ``queueless``: FastAPI + asyncpg deciding in the request (``bench/peers/queueless``), uvicorn
  with two worker processes (``queueless@N`` for N): one per core of the 2-core machine it was
  tuned on, where two did 4-13% more requests/s than one in every scenario (quick sizes, medians
  of 3 alternating runs).

Process groups, for the CPU figures: ``front`` (the API, the producer, the app) and ``back`` (the
workers, the consumers; none for the queue-less design).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.service import procstat
from brokerq.server import free_port

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench" / "peers"
SEED_DIR = PEERS / "seed_nestjs"
QUEUELESS_DIR = PEERS / "queueless"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class StartError(RuntimeError):
    """A system did not come up; the message says which process and holds its log's tail."""


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # ours; a peer's interpreter is named explicitly
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Running:
    """A started system: where to drive it, its process groups, how to stop it."""

    base_url: str
    port: int
    procs: list[Proc]
    groups: dict[str, list[int]]
    extra_pids: list[int] = field(default_factory=list)  # children to kill if a stop fails

    def check_alive(self) -> None:
        for proc in self.procs:
            code = proc.popen.poll()
            if code is not None:
                raise StartError(
                    f"{proc.name} exited with code {code}; last lines of {proc.log}:\n"
                    f"{tail(proc.log)}"
                )

    def wait_until(
        self, ready: str, probe: Callable[[], object], timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Poll ``probe()`` (True when ready) while every process lives."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError):
                if probe():
                    return
            time.sleep(0.1)
        logs = ", ".join(str(p.log) for p in self.procs)
        raise StartError(f"not {ready} within {timeout_s:.0f}s; logs: {logs}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        for pid in self.extra_pids:
            # Only a leftover of ours: a pid that was ours may belong to anybody by now.
            with contextlib.suppress(OSError):
                if b"-m\x00reservations" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path) -> Proc:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the benchmark, which stops them in order
        )
    return Proc(name, popen, log)


@dataclass(frozen=True)
class System:
    key: str
    label: str
    front: str  # what the front group is called in this design
    back: str | None
    final_on_answer: bool = False  # POST answers the final outcome (no outcome polling)
    job_sample: int = 2_000  # accepted requests whose outcome is read one by one afterwards
    workers: int = 1  # uvicorn processes (queue-less only)

    @property
    def schema(self) -> Path | None:
        """SQL the benchmark applies to the fresh database (ours runs its own migrations)."""
        if self.key == "seed":
            return SEED_DIR / "schema.sql"
        if self.key.startswith("queueless"):
            return QUEUELESS_DIR / "schema.sql"
        return None

    def prepare(self) -> str | None:
        """Make the system runnable; a reason to skip it, or None."""
        if self.key == "seed":
            return _prepare_seed()
        if self.key.startswith("queueless"):
            r = subprocess.run(
                ["uv", "sync", "--locked", "--quiet", "--project", str(QUEUELESS_DIR)],
                cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False,
            )  # fmt: skip
            if r.returncode != 0:
                return f"uv sync of queueless failed: {r.stderr.strip()[-500:]}"
        return None

    def start(
        self, database_url: str, redis_url: str, redis_port: int, log_dir: Path, admin_token: str
    ) -> Running:
        if self.key == "seed":
            return _start_seed(database_url, redis_port, log_dir)
        if self.key.startswith("queueless"):
            return _start_queueless(database_url, log_dir, self.workers)
        return _start_ours(database_url, redis_url, log_dir, admin_token)


# -- the seed's design ----------------------------------------------------------------------------


def _prepare_seed() -> str | None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found on PATH"
    if not (SEED_DIR / "node_modules" / "@nestjs" / "bullmq").exists():
        print("bench-service: npm ci in bench/peers/seed_nestjs (first use)", file=sys.stderr)
        r = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=SEED_DIR, env=child_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            return f"npm ci failed: {r.stderr.strip()[-500:]}"
    sources = list((SEED_DIR / "src").rglob("*.ts"))
    built = SEED_DIR / "dist" / "consumer" / "main.js"
    newest = max((p.stat().st_mtime for p in [*sources, SEED_DIR / "tsconfig.json"]), default=0.0)
    if not built.exists() or built.stat().st_mtime < newest:
        r = subprocess.run(
            ["npx", "--no-install", "tsc", "-p", "tsconfig.json"],
            cwd=SEED_DIR, env=child_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            return f"tsc failed: {(r.stdout + r.stderr).strip()[-800:]}"
    return None


def _seed_env(database_url: str, redis_port: int, port: int) -> dict[str, str]:
    return child_env(
        ENVIRONMENT="bench",
        SERVICE_PORT=str(port),
        DATABASE_URL=database_url,
        REDIS_QUEUE_HOST="127.0.0.1",
        REDIS_QUEUE_PORT=str(redis_port),
        REDIS_QUEUE_PASSWORD="",
        NO_COLOR="",  # as in a container's log: the seed's logger colours its lines
    )


def _start_seed(database_url: str, redis_port: int, log_dir: Path) -> Running:
    node = shutil.which("node") or "node"
    port = free_port()
    producer = _spawn(
        "producer", [node, "dist/producer/main.js"], _seed_env(database_url, redis_port, port),
        log_dir, SEED_DIR,
    )  # fmt: skip
    consumers = []
    for i in range(1, 4):  # three, as the seed's Compose file runs
        env = _seed_env(database_url, redis_port, free_port())
        consumers.append(
            _spawn(f"consumer-{i}", [node, "dist/consumer/main.js"], env, log_dir, SEED_DIR)
        )
    running = Running(
        base_url=f"http://127.0.0.1:{port}",
        port=port,
        procs=[producer, *consumers],
        groups={"front": [producer.popen.pid], "back": [c.popen.pid for c in consumers]},
    )
    try:
        running.wait_until("healthy", lambda: http_get(port, "/health")[0] == 200)
        # Jobs would wait in Redis for a late consumer, but its start-up is not what is measured.
        running.wait_until(
            "3 consumers", lambda: json.loads(http_get(port, "/bench/queue")[1])["workers"] >= 3
        )
    except BaseException:
        running.stop()
        raise
    return running


# -- our service ----------------------------------------------------------------------------------


def _start_ours(database_url: str, redis_url: str, log_dir: Path, admin_token: str) -> Running:
    port = free_port()
    data_dir = log_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ADMIN_TOKEN=admin_token,
        WORKERS="3",
        DATA_DIR=str(data_dir),
    )
    argv = [sys.executable, "-m", "reservations_tools", "up", "--port", str(port),
            "--data-dir", str(data_dir), "--grace", "10"]  # fmt: skip
    up = _spawn("up", argv, env, log_dir, ROOT)
    running = Running(base_url=f"http://127.0.0.1:{port}", port=port, procs=[up], groups={})
    run_file = data_dir / "run.json"
    try:
        # `up` writes run.json once its API answers /health, with its children's pids.
        running.wait_until("up", lambda: run_file.exists() and json.loads(run_file.read_text()))
    except BaseException:
        running.stop()
        raise
    children: dict[str, int] = json.loads(run_file.read_text())["children"]
    running.groups = {
        "front": [children["api"]],
        "back": [pid for name, pid in children.items() if name.startswith("worker")],
    }
    # Should `up` not stop them itself, they go down with it (PR_SET_PDEATHSIG) or at the end.
    running.extra_pids = list(children.values())
    return running


# -- the queue-less design ------------------------------------------------------------------------


def _start_queueless(database_url: str, log_dir: Path, workers: int) -> Running:
    port = free_port()
    python = QUEUELESS_DIR / ".venv" / "bin" / "python"
    argv = [
        str(python), "-m", "uvicorn", "bench.peers.queueless.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    app = _spawn("app", argv, child_env(DATABASE_URL=database_url), log_dir, ROOT)
    running = Running(
        base_url=f"http://127.0.0.1:{port}", port=port, procs=[app],
        groups={"front": [app.popen.pid]},
    )  # fmt: skip
    try:
        running.wait_until("healthy", lambda: http_get(port, "/health")[0] == 200)
        if workers > 1:
            # uvicorn's master answers nothing itself: wait until every worker has started.
            running.wait_until("all workers up", lambda: _children(app.popen.pid) >= workers)
    except BaseException:
        running.stop()
        raise
    return running


def _children(pid: int) -> int:
    return sum(1 for ppid, _ in procstat.snapshot().values() if ppid == pid)


SEED = System("seed", "seed design (NestJS + BullMQ)", "producer", "consumers", job_sample=0)
OURS = System("ours", "our service", "API", "workers")
SYSTEMS: dict[str, System] = {
    s.key: s
    for s in (
        SEED,
        OURS,
        System("queueless", "queue-less (FastAPI + asyncpg)", "app", None, True, 0, 2),
    )
}
BASELINE = SEED.key


def resolve(spec: str) -> System:
    """``key``, or ``queueless@N`` for N uvicorn worker processes."""
    key, _, n = spec.partition("@")
    if key not in SYSTEMS:
        raise SystemExit(f"unknown system {key!r}; known: {', '.join(SYSTEMS)}")
    system = SYSTEMS[key]
    if not n:
        return system
    if key != "queueless" or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"{spec!r}: only queueless@N (N uvicorn processes) takes a number")
    label = f"{system.label}, {n} process{'es' if int(n) > 1 else ''}"
    return System(f"{key}@{n}", label, system.front, None, True, 0, int(n))
