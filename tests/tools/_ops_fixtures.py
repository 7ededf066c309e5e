"""Running ``reservations-tools up`` as a real process for the operations tests.

The service runs with its embedded PostgreSQL and Redis in a temporary data folder, on a free port,
exactly as a developer's ``./scripts/up`` runs it. Everything waits on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.reservations.helpers import wait_for

T = TypeVar("T")

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0

# What `reservations-tools up` must not inherit from the developer's shell or CI: it would then use
# those servers (and that admin token) instead of making its own.
_SERVER_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "ADMIN_TOKEN",
)


def make_data_dir() -> Path:
    # Not pytest's tmp_path: as root, PostgreSQL runs as the postgres user, which must be able to
    # enter the folder.
    path = Path(tempfile.mkdtemp(prefix="rsv-up-"))
    path.chmod(0o755)
    return path


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_VARS}
    env.update({"ENVIRONMENT": "test", "DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class UpProcess:
    """One ``reservations-tools up`` process and where to reach it."""

    data_dir: Path
    port: int
    workers: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "up-test.log"

    def admin_headers(self) -> dict[str, str]:
        """The Authorization header with the token ``up`` made in its data folder."""
        token = (self.data_dir / "admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "reservations_tools", "up",
                "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--workers", str(self.workers), "--grace", "15",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=service_env(self.data_dir, COLUMNS="120"),
        )  # fmt: skip
        log.close()
        wait_for(
            self._healthy, timeout_s, f"/health of `reservations-tools up` (log: {self.log_path})"
        )
        wait_for(lambda: self.run_info() or None, 10, "run.json")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"`reservations-tools up` exited with {self.process.returncode}:\n{self.log()}"
            )
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def run_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads((self.data_dir / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return info

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"`reservations-tools up` did not stop in time:\n{self.log()}"
            ) from None

    def kill_everything(self) -> None:
        """Last-resort cleanup after a failed test: nothing may outlive the suite."""
        info = self.run_info()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in info.get("children", {}).values():
            if pid_alive(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


def reserve_and_wait(client: httpx.Client, event_id: int, user_id: int) -> dict[str, Any]:
    """POST a reservation, then poll its request until it is final; the final outcome."""
    resp = client.post(f"/reservation/{event_id}/{user_id}")
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]

    def final() -> dict[str, Any] | None:
        outcome: dict[str, Any] = client.get(f"/reservation/requests/{job_id}").json()
        return outcome if outcome["status"] != "PENDING" else None

    return wait_for(final, 30, f"request {job_id} to be final")
