"""``reservations-tools up`` as a real process: embedded PostgreSQL and Redis, the API and the
workers.

One service runs for the module; the tests follow each other as a developer would use it: reserve,
look at the status, lose a worker, stop, start again on the same data.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import redis

from brokerq.server import free_port

from ._ops_fixtures import (
    UpProcess,
    make_data_dir,
    pid_alive,
    reserve_and_wait,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    parent = make_data_dir()
    yield parent / "data"  # made by `up` itself, as ./data is on a first run
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def up(data_dir: Path) -> Iterator[UpProcess]:
    service = UpProcess(data_dir, free_port(), workers=2)
    service.log_path = data_dir.parent / "up-test.log"  # `up` makes the data folder itself
    service.start()
    yield service
    service.kill_everything()


@pytest.fixture(scope="module")
def client(up: UpProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def booked(up: UpProcess, client: httpx.Client) -> dict[str, Any]:
    """A user with a reservation for an event of two tickets, made through the running service."""
    user = client.post("/user", json={"name": "Ada", "email": "ada@example.com"})
    assert user.status_code == 201, user.text
    event = client.post(
        "/event",
        json={"name": "Up test", "date": "2030-01-01T19:00:00Z", "location": "Hall",
              "maxTickets": 2},
        headers=up.admin_headers(),
    )  # fmt: skip
    assert event.status_code == 201, event.text
    outcome = reserve_and_wait(client, event.json()["id"], user.json()["id"])
    return {"user": user.json(), "event": event.json(), "outcome": outcome}


def test_up_serves_the_api_and_swagger(up: UpProcess, client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/api").status_code == 200
    info = up.run_info()
    assert set(info["children"]) == {"api", "worker-1", "worker-2"}
    assert info["database_url"].startswith("postgresql://postgres:")
    assert urlsplit(info["redis_url"]).hostname == "127.0.0.1"
    # The embedded servers keep their data in the data folder.
    assert (up.data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()
    assert (up.data_dir / "redis").is_dir()
    for name in ("api", "worker-1", "worker-2", "embedded"):
        assert (up.data_dir / "logs" / f"{name}.log").exists()


def test_up_makes_an_admin_token_that_only_its_owner_can_read(
    up: UpProcess, client: httpx.Client
) -> None:
    token_file = up.data_dir / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(token_file.read_text().strip()) >= 32
    event = {"name": "No", "date": "2030-01-01T19:00:00Z", "location": "Hall", "maxTickets": 1}
    refused = client.post("/event", json=event)
    assert refused.status_code == 401, refused.text
    wrong = client.post("/event", json=event, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401, wrong.text
    accepted = client.post("/event", json=event, headers=up.admin_headers())
    assert accepted.status_code == 201, accepted.text


def test_a_reservation_goes_through_queue_and_workers(booked: dict[str, Any]) -> None:
    assert booked["outcome"]["status"] == "RESERVED"
    assert booked["outcome"]["reservationId"] is not None


def _embedded_passwords(data_dir: Path) -> tuple[str, str]:
    return (
        (data_dir / "postgres" / "password").read_text().strip(),
        (data_dir / "redis" / "password").read_text().strip(),
    )


def test_up_keeps_the_embedded_servers_passwords_where_only_its_user_reads_them(
    up: UpProcess,
) -> None:
    for path in (up.data_dir / "postgres" / "password", up.data_dir / "redis" / "password"):
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.stat().st_uid == os.geteuid(), path
        assert len(path.read_text().strip()) >= 32, path
    assert (up.data_dir / "run.json").stat().st_mode & 0o777 == 0o600
    folder = up.data_dir.stat()
    if os.geteuid() == 0:
        # PostgreSQL runs as the postgres user, which must pass through to its own folder.
        assert folder.st_mode & 0o777 == 0o710
        assert folder.st_gid == pwd.getpwnam("postgres").pw_gid
    else:
        assert folder.st_mode & 0o777 == 0o700
    for sub in ("postgres", "postgres/sockets", "redis", "logs"):
        assert (up.data_dir / sub).stat().st_mode & 0o777 == 0o700, sub


def test_the_embedded_servers_refuse_clients_without_the_password(
    up: UpProcess, booked: dict[str, Any]
) -> None:
    info = up.run_info()
    database, redis_url = urlsplit(info["database_url"]), urlsplit(info["redis_url"])
    with socket.create_connection(("127.0.0.1", redis_url.port or 0), 5) as anonymous:
        anonymous.sendall(b"FLUSHALL\r\n")
        assert anonymous.makefile("rb").readline().startswith(b"-NOAUTH"), "Redis let it in"
    with redis.Redis.from_url(info["redis_url"], socket_timeout=5) as authenticated:
        assert authenticated.dbsize() > 0  # nothing was flushed

    async def postgres() -> None:
        for password in (None, "postgres", "wrong"):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(
                    host="127.0.0.1", port=database.port, user="postgres", password=password
                )
        conn = await asyncpg.connect(info["database_url"])
        try:
            assert await conn.fetchval("SELECT count(*) FROM events") >= 1
        finally:
            await conn.close()

    asyncio.run(postgres())

    # The service's processes got the passwords (and `booked` went through API, Redis, workers
    # and PostgreSQL, which let nobody in without them).
    pg_password, redis_password = _embedded_passwords(up.data_dir)
    assert (database.password, redis_url.password) == (pg_password, redis_password)

    # The banner shows the URLs without their passwords, and no log holds them either.
    assert "postgresql://postgres:***@127.0.0.1" in up.log()
    assert "redis://:***@127.0.0.1" in up.log()
    logs = [up.log_path, *(up.data_dir / "logs").glob("*.log")]
    logs += [up.data_dir / "postgres" / "postgres.log", up.data_dir / "redis" / "redis.log"]
    for log in logs:
        text = log.read_text(errors="replace")
        assert pg_password not in text and redis_password not in text, log


def test_status_shows_channel_counts_and_event_tickets(
    up: UpProcess, booked: dict[str, Any]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reservations_tools", "status", "--json"],
        env=service_env(up.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    [channel] = report["channels"]
    assert channel["channel"] == "reservation-queue"
    assert channel["processed"] >= 1 and channel["dead"] == 0
    [event] = [e for e in report["events"] if e["id"] == booked["event"]["id"]]
    assert (event["capacity"], event["reserved"], event["remaining"]) == (2, 1, 1)

    table = subprocess.run(
        [sys.executable, "-m", "reservations_tools", "status"],
        env=service_env(up.data_dir, COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert "reservation-queue" in table.stdout and "Up test" in table.stdout


def test_a_second_up_on_the_same_data_dir_is_refused(up: UpProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reservations_tools", "up", "--data-dir", str(up.data_dir),
         "--port", str(free_port())],
        env=service_env(up.data_dir, COLUMNS="200"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "already running" in result.stdout
    assert up.run_info()["pid"] == up.process.pid if up.process else False


def test_a_worker_that_dies_is_reported_and_restarted(
    up: UpProcess, client: httpx.Client, booked: dict[str, Any]
) -> None:
    old_pid = up.run_info()["children"]["worker-1"]
    os.kill(old_pid, signal.SIGKILL)
    new_pid = wait_for(
        lambda: (p := up.run_info()["children"]["worker-1"]) != old_pid and p,
        30,
        "worker-1 to be restarted",
    )
    assert pid_alive(new_pid)
    assert "worker-1" in up.log() and "exited unexpectedly" in up.log()
    # The service still works with the restarted worker.
    user = client.post("/user", json={"name": "Bob", "email": "bob@example.com"}).json()
    outcome = reserve_and_wait(client, booked["event"]["id"], user["id"])
    assert outcome["status"] == "RESERVED"


def test_sigterm_stops_every_process_and_the_data_survives_a_restart(
    up: UpProcess, booked: dict[str, Any]
) -> None:
    event_id, user_id = booked["event"]["id"], booked["user"]["id"]
    before = httpx.get(f"{up.base_url}/event/{event_id}", timeout=10).json()
    info = up.run_info()
    children = [int(pid) for pid in info["children"].values()]
    redis_port = int(info["redis_url"].rsplit(":", 1)[1].split("/")[0])

    assert up.stop(signal.SIGTERM) == 0
    assert not [pid for pid in children if pid_alive(pid)]
    assert not (up.data_dir / "run.json").exists()
    assert not (up.data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", redis_port)) != 0, "embedded Redis still listening"
    log = up.log()
    assert "stopping the embedded servers" in log and "stopped" in log

    # Same data folder, new processes: what was reserved is still there.
    passwords = _embedded_passwords(up.data_dir)
    up.start()
    # ...and the servers kept their passwords.
    assert _embedded_passwords(up.data_dir) == passwords
    restarted = up.run_info()
    assert urlsplit(restarted["database_url"]).password == passwords[0]
    assert urlsplit(restarted["redis_url"]).password == passwords[1]
    with httpx.Client(base_url=up.base_url, timeout=10) as c:
        found = c.get("/reservation", params={"eventId": event_id, "userId": user_id})
        assert found.status_code == 200, found.text
        assert found.json()["status"] == "RESERVED"
        assert c.get(f"/event/{event_id}").json()["remainingTickets"] == before["remainingTickets"]
    # A Ctrl-C in a terminal under `uv run` arrives twice at once (from the terminal, and
    # forwarded by uv): that is still one graceful stop, not "stop now without grace".
    assert up.process is not None
    up.process.send_signal(signal.SIGINT)
    assert up.stop(signal.SIGINT) == 0
    second_run = up.log().rsplit("reservation service is up", 1)[1]
    assert "SIGINT: shutting down" in second_run
    assert "without the grace period" not in second_run
    assert "did not stop in time" not in second_run


def test_up_refuses_a_port_in_use_and_leaves_nothing_running() -> None:
    data = make_data_dir()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = subprocess.run(
                [sys.executable, "-m", "reservations_tools", "up", "--data-dir", str(data),
                 "--port", str(port)],
                env=service_env(data, COLUMNS="200"),
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        assert result.returncode == 1
        assert "cannot listen" in result.stdout
        assert not (data / "up.pid").exists()
        assert not (data / "postgres").exists(), "nothing should have been started"
    finally:
        shutil.rmtree(data, ignore_errors=True)
