"""The embedded servers' helper process of ``up`` (``reservations-tools embedded``, hidden).

PostgreSQL and Redis run in a process of their own session, so that a terminal's Ctrl-C reaches
only the supervisor, which stops them last, after the API and the workers.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from brokerq.server import RedisServer

from .credentials import PASSWORD_FILE, private_dir, read_or_create_password
from .postgres import PostgresServer

__all__ = ["run_embedded"]


def run_embedded(data_dir: Path, postgres: bool, redis: bool, redis_fsync: str) -> int:
    """Start the embedded servers, print their URLs as one JSON line, stop them on SIGTERM."""
    # Handlers, not a blocked signal mask: a mask would be inherited by redis-server, which then
    # could not be stopped gracefully. A signal during start-up still stops what was started.
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    pg: PostgresServer | None = None
    rs: RedisServer | None = None
    urls: dict[str, str] = {}
    try:
        if postgres and not stop.is_set():
            pg = PostgresServer(data_dir / "postgres")
            pg.start()
            urls["database_url"] = pg.dsn
        if redis and not stop.is_set():
            redis_dir = private_dir(data_dir / "redis")
            password, _ = read_or_create_password(redis_dir / PASSWORD_FILE)
            rs = RedisServer(redis_dir, appendonly=True, appendfsync=redis_fsync, password=password)
            rs.start_sync()
            urls["redis_url"] = rs.url
        if not stop.is_set():
            print(json.dumps(urls), flush=True)
        stop.wait()
    finally:
        # Redis first: the workers are gone by now, and PostgreSQL's checkpoint takes longer.
        if rs is not None:
            rs.stop_sync()
        if pg is not None:
            pg.stop()
    return 0
