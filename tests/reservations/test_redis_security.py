"""Redis with a password and TLS for the whole service, and no secret in its logs or answers.

Real servers only: redis-servers of this module's own (one with a password, one serving only TLS
with a throwaway CA), the suite's PostgreSQL with a role that has a password, and the service's
real API and worker, in process and as the ``reservations api`` / ``reservations worker`` commands.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter
from brokerq.server import RedisServer
from reservations.app import create_app
from reservations.channels import Admission, ReserveEvent, reservation_channel
from reservations.settings import Settings

from ..brokerq.test_redis import make_certificates, redis_has_tls
from .conftest import _plain
from .helpers import create_user, eventually
from .processes import Service

REDIS_PASSWORD = f"redis-pw-{secrets.token_hex(8)}"
WRONG_REDIS_PASSWORD = f"wrong-redis-pw-{secrets.token_hex(8)}"
PG_PASSWORD = f"pg-pw-{secrets.token_hex(8)}"
ADMIN_TOKEN = f"admin-token-{secrets.token_hex(8)}"
SECRETS = (REDIS_PASSWORD, WRONG_REDIS_PASSWORD, PG_PASSWORD, ADMIN_TOKEN)

EVENT = {"name": "Over TLS", "date": "2030-05-01T19:00:00Z", "location": "Seoul", "maxTickets": 1}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def leaked(text: str) -> list[str]:
    """The secrets found in ``text``, also where colours or line wrapping split them up."""
    plain = _ANSI.sub("", text)
    squeezed = re.sub(r"[\s│|]", "", plain)
    return [s for s in SECRETS if s in plain or s in squeezed or quote(s) in plain]


def assert_no_secret(text: str, where: str) -> None:
    found = leaked(text)
    if found:
        plain = _ANSI.sub("", text)
        lines = [line for line in plain.splitlines() if any(s[:8] in line for s in found)]
        raise AssertionError(f"{where} holds {len(found)} secret(s), e.g. in: {lines[:5]}")


def _closed_port() -> int:
    """A port with nothing listening: the server is unreachable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    directory = tmp_path_factory.mktemp("certs")
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl tool to make test certificates")
    if not redis_has_tls(directory):
        pytest.skip("this redis-server was built without TLS support")
    return make_certificates(directory)


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[str, str, str]
) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("tls-redis")
    with RedisServer(directory, tls=certificates, password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("pw-redis"), password=REDIS_PASSWORD) as server:
        yield server


def tls_url(server: RedisServer, ca: str | None, password: str = REDIS_PASSWORD) -> str:
    """``rediss://:password@host:port/0``, trusting ``ca`` through redis-py's URL query."""
    url = f"rediss://:{password}@127.0.0.1:{server.port}/0"
    return f"{url}?ssl_ca_certs={quote(ca, safe='')}" if ca else url


@pytest.fixture(scope="module")
async def pg_role_url(database_url: str) -> AsyncIterator[str]:
    """The test database through a role of its own that has a password."""
    role = f"rsv_secret_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_plain(database_url))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PG_PASSWORD}'")
        await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        await admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    finally:
        await admin.close()
    yield (
        make_url(database_url)
        .set(username=role, password=PG_PASSWORD)
        .render_as_string(hide_password=False)
    )
    admin = await asyncpg.connect(_plain(database_url))
    try:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.close()


async def _flush(url: str, **options: Any) -> None:
    client = Redis.from_url(url, **options)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


# -- 1. password and TLS end to end -----------------------------------------------------------


async def test_reservation_over_tls_with_a_password_goes_from_post_to_reserved(
    tls_redis: RedisServer,
    certificates: tuple[str, str, str],
    pg_role_url: str,
    tmp_path: Path,
    services: list[Service],
) -> None:
    ca = certificates[2]
    redis_url = tls_url(tls_redis, ca)
    await _flush(redis_url)
    # The worker is the real command, configured only through its environment.
    service = Service(
        tmp_path,
        {"REDIS_URL": redis_url, "DATABASE_URL": pg_role_url, "ADMIN_TOKEN": ADMIN_TOKEN},
    )
    services.append(service)
    worker = service.start_worker()
    settings = Settings(
        _env_file=None,
        ENVIRONMENT="test",
        DATABASE_URL=pg_role_url,
        REDIS_URL=redis_url,
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["checks"] == {"redis": "ok", "postgres": "ok"}

            await service.wait_logged(worker, "worker_started", "worker started")
            user_id = await create_user(client, 101)
            created = await client.post("/event", json=EVENT)  # with the client's admin token
            assert created.status_code == 201, created.text
            event_id = created.json()["id"]
            r = await client.post(f"/reservation/{event_id}/{user_id}")
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]

            async def probe() -> dict[str, Any]:
                got = await client.get(f"/reservation/requests/{job_id}")
                assert got.status_code == 200, got.text
                body: dict[str, Any] = got.json()
                return body

            outcome = await eventually(
                probe, lambda b: b["status"] != "PENDING", what="request final"
            )
            assert outcome["status"] == "RESERVED", outcome
            event = (await client.get(f"/event/{event_id}")).json()
            assert event["reservedTickets"] == 1

    # The request went through this Redis, over TLS: the queue's keys are there.
    raw = Redis.from_url(redis_url)
    try:
        assert await raw.keys("bq:{reservation-queue}:*")
    finally:
        await raw.aclose()
    service.stop()
    assert worker.popen.returncode == 0, worker.text()[-3000:]
    assert_no_secret(worker.text(), "the worker's log")


async def test_tls_without_the_ca_fails_health_without_the_password(
    tls_redis: RedisServer, pg_role_url: str
) -> None:
    # A private CA that the service was not told about: the certificate is refused, clearly.
    settings = Settings(
        _env_file=None,
        ENVIRONMENT="test",
        DATABASE_URL=pg_role_url,
        REDIS_URL=tls_url(tls_redis, None),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["checks"] == {"redis": "down (ConnectError)", "postgres": "ok"}
    assert_no_secret(health.text, "/health")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_wrong_redis_password_fails_health_clearly_without_the_password(
    tls: bool,
    request: pytest.FixtureRequest,
    pg_role_url: str,
    certificates: tuple[str, str, str],
) -> None:
    server: RedisServer = request.getfixturevalue("tls_redis" if tls else "password_redis")
    url = (
        tls_url(server, certificates[2], WRONG_REDIS_PASSWORD)
        if tls
        else f"redis://:{WRONG_REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
    )
    settings = Settings(_env_file=None, ENVIRONMENT="test", DATABASE_URL=pg_role_url, REDIS_URL=url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # The app's answer to an unexpected error, as a client gets it, instead of the exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            health = await client.get("/health")
            reservation = await client.post("/reservation/1/1")
    assert health.status_code == 503
    assert health.json()["checks"] == {"redis": "down (AuthenticationError)", "postgres": "ok"}
    assert reservation.status_code >= 500, reservation.text
    assert_no_secret(health.text + reservation.text, "the answers")


# -- 2. no secret in logs or error bodies -----------------------------------------------------


SCENARIOS = ["redis-wrong-password", "redis-down", "postgres-down"]


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_no_secret_in_logs_or_error_bodies(
    scenario: str,
    log_format: str,
    password_redis: RedisServer,
    pg_role_url: str,
    tmp_path: Path,
    services: list[Service],
) -> None:
    good_redis = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{password_redis.port}/0"
    await _flush(good_redis)
    redis_url = {
        "redis-wrong-password": f"redis://:{WRONG_REDIS_PASSWORD}@127.0.0.1:{password_redis.port}/0",
        "redis-down": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{_closed_port()}/0",
        "postgres-down": good_redis,
    }[scenario]
    database_url = (
        make_url(pg_role_url).set(port=_closed_port()).render_as_string(hide_password=False)
        if scenario == "postgres-down"
        else pg_role_url
    )
    service = Service(
        tmp_path,
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_FORMAT": log_format,
        },
    )
    services.append(service)
    api, worker = service.start_api(), service.start_worker()
    if scenario == "postgres-down":
        # A request already in the queue: the worker must try, and fail, to write it.
        queue = BrokerQueue(RedisAdapter(good_redis))
        await reservation_channel(queue).produce(
            ReserveEvent(
                userId=1,
                eventId=1,
                requestId="secret-test-1",
                admission=Admission.ADMITTED,
                seq=1,
                acceptedAtMs=1,
            )
        )
        await queue.close()

    answers: list[httpx.Response] = []
    # A connection of its own per request: uvicorn closes the one an unexpected error went through.
    fresh = httpx.Limits(max_keepalive_connections=0)
    base_url = f"http://127.0.0.1:{service.port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=fresh) as http:

        async def up() -> bool:
            if api.popen.poll() is not None:
                raise AssertionError(f"api exited: {api.text()[-3000:]}")
            try:
                await http.get("/api-json")
            except httpx.TransportError:
                return False
            return True

        await eventually(up, bool, timeout_s=60, what="API listening")
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        wrong = {"Authorization": f"Bearer not-{ADMIN_TOKEN}"}
        answers += [
            await http.get("/health"),
            await http.get("/metrics", headers=wrong),
            await http.get("/metrics"),
            await http.post("/reservation/1/1"),
            await http.get("/user/1"),
            await http.post("/event", headers=admin, json=EVENT),
        ]
    statuses = [r.status_code for r in answers]
    assert statuses[0] == 503, answers[0].text
    assert statuses[1:3] == [401, 401]
    assert any(s >= 500 for s in statuses[3:]), statuses  # a failure reached the API's handlers
    for answer in answers:
        assert_no_secret(f"{answer.headers}\n{answer.text}", str(answer.request.url))

    # The worker has met the failure and logged it.
    failure = "reservation_request_failed" if scenario == "postgres-down" else "fetch failed"
    await service.wait_logged(worker, failure, f"worker logs {failure}")
    if scenario == "redis-wrong-password":  # the reason is in the log, the password is not
        await service.wait_logged(worker, "AuthenticationError", "worker logs the reason")
    service.stop()
    logs = service.logs()
    assert "api_started" in logs and "worker_started" in logs, logs[-3000:]
    assert_no_secret(api.text(), "the API's log")
    assert_no_secret(worker.text(), "the worker's log")


_LOG_SCRIPT = """
import logging, sys
import structlog
from reservations.observability.logs import configure_logging
configure_logging(json=sys.argv[1] == "json", level="INFO", secrets=[sys.argv[2]])
url = sys.argv[3]
try:
    raise ConnectionError(f"cannot reach {url} (token {sys.argv[2]})")
except ConnectionError:
    structlog.get_logger("t").exception("structlog_failure", url=url, nested={"dsn": [url]})
    logging.getLogger("t").exception("stdlib failure at %s", url)
"""


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_logging_redacts_url_passwords_and_configured_secrets(log_format: str) -> None:
    # Secrets inside exception messages, fields and the standard library's records alike; the
    # database password is not among the configured secrets: only the URL pattern catches it.
    url = f"postgresql://someone:{PG_PASSWORD}@db.example:5432/app"
    out = subprocess.run(
        [sys.executable, "-c", _LOG_SCRIPT, log_format, ADMIN_TOKEN, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = out.stdout + out.stderr
    assert "structlog_failure" in text and "stdlib failure at" in text, text
    assert text.count("postgresql://someone:***@db.example:5432/app") >= 4, text
    assert "ConnectionError: cannot reach" in text  # the traceback is still there
    assert_no_secret(text, "the log")
