"""The service as real processes: ``reservations api`` and ``reservations worker`` started as
commands, each with its own environment and log file, as on separate machines."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .helpers import eventually


def free_port() -> int:
    """A port with nothing listening (until somebody takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Service:
    """``reservations api`` and ``reservations worker`` with the given environment."""

    directory: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: list[Process] = field(default_factory=list)

    def spawn(self, name: str, *args: str) -> Process:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REDIS_", "DATABASE_", "ADMIN_", "TEST_", "LOG_"))
        }
        env.update(
            ENVIRONMENT="test",
            DATA_DIR=str(self.directory),
            LOG_LEVEL="INFO",
            COLUMNS="100",  # what a narrow terminal does to tracebacks: the check unwraps them
            **self.env,
        )
        log = self.directory / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "reservations.cli", *args],
                env=env,
                cwd=self.directory,  # no environments/.env.* file here: only what we set
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_api(self) -> Process:
        return self.spawn("api", "api", "--port", str(self.port))

    def start_worker(self) -> Process:
        return self.spawn("worker", "worker", "--concurrency", "4")

    async def wait_logged(self, process: Process, pattern: str, what: str) -> None:
        async def seen() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited: {process.text()[-3000:]}")
            return re.search(pattern, process.text()) is not None

        await eventually(seen, bool, timeout_s=60, what=what)

    def stop(self) -> None:
        for p in self.processes:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.text()}" for p in self.processes)
