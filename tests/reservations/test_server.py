"""The API's HTTP server against abusive clients, on a real ``reservations api`` process.

Heads and bodies have size limits and deadlines, idle connections are closed, connections past
the cap are answered 503, and ``X-Forwarded-For`` counts only from a configured proxy. The
timeouts are set short (1 s) so that the tests wait on the server closing a socket, with a bound.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from brokerq.server import free_port
from reservations.server import HttpLimits, raise_open_files_limit
from reservations.settings import Settings

from .helpers import ADMIN, ADMIN_TOKEN, wait_for

# The test server's deadlines, short so that the tests are quick.
HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEP_ALIVE_TIMEOUT_S = 3.0
MAX_HEADER_BYTES = 16 * 1024
# How long past a deadline a close may come on a busy machine before it counts as never.
SLACK_S = 5.0

# A second loopback address plays the proxy, a third a client that connects directly.
PROXY = "127.0.0.2"
DIRECT = "127.0.0.3"


# Settings the tests choose, never inherited from the developer's shell.
_OWN_SETTINGS = (
    "DATABASE_",
    "REDIS_",
    "FORWARDED_ALLOW_IPS",
    "MAX_",
    "REQUEST_",
    "KEEP_ALIVE_",
    "RESERVATION_RATE_",
)


class ApiProcess:
    """One ``reservations api`` process with the given settings, stopped on exit."""

    def __init__(self, log_path: Path, *args: str, **env: str) -> None:
        self.args = args
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_OWN_SETTINGS)},
            "ENVIRONMENT": "test",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reservations.cli", "api", "--port", str(self.port),
                 *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        wait_for(self._healthy, 60, f"/health of `reservations api` (log: {self.log_path})")
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"`reservations api` exited:\n{self.log()}")
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=10, source_address=(source, 0)
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=10)


@pytest.fixture(scope="module")
def api(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """Short deadlines; 127.0.0.2 is a trusted proxy; one reservation per client per minute."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    with ApiProcess(
        log,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT_S),
        REQUEST_BODY_TIMEOUT=str(BODY_TIMEOUT_S),
        KEEP_ALIVE_TIMEOUT=str(KEEP_ALIVE_TIMEOUT_S),
        FORWARDED_ALLOW_IPS=PROXY,
        RESERVATION_RATE_LIMIT="1/min",
    ) as process:
        yield process


def _responses(sock: socket.socket, count: int, timeout_s: float = 10) -> list[bytes]:
    """Read ``count`` whole responses (head and ``Content-Length`` body), and nothing more."""
    sock.settimeout(timeout_s)
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end]
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            if len(data) >= end + 4 + length:
                responses.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed mid-response: {data[:300]!r}")
        data += chunk
    assert data == b"", f"more responses than requests: {data[:300]!r}"
    return responses


def _response(sock: socket.socket) -> bytes:
    return _responses(sock, 1)[0]


def _closed_within(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; what it sent and the seconds it took.

    Fails if it is still open after ``timeout_s``. A reset counts as closed.
    """
    start = time.monotonic()
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            sock.settimeout(max(0.01, timeout_s - (time.monotonic() - start)))
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {timeout_s:.0f} s") from None
    return received, time.monotonic() - start


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


# --- Heads: size limits -------------------------------------------------------------------------


def _stream_a_huge_header(api: ApiProcess) -> tuple[bytes, int]:
    """The adversarial review's attack: a header without end, sent as fast as the server takes
    it (up to 64 MiB) until it answers; the answer and the bytes sent."""
    with closing(api.connect()) as sock:
        sock.setblocking(False)
        chunk = b"a" * 65536
        pending = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: "
        sent = 0
        while sent < 64 * 1024 * 1024:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break
            if not writable:
                raise AssertionError("the server neither reads nor answers")
            try:
                sent += sock.send(pending or chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = b""
        sock.setblocking(True)
        answer, _ = _closed_within(sock, SLACK_S)
    return answer, sent


def test_a_huge_header_is_answered_431_early_and_health_stays_fast(api: ApiProcess) -> None:
    answers: list[tuple[bytes, int]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def attack() -> None:
        try:
            while not stop.is_set():
                answers.append(_stream_a_huge_header(api))
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        # Meanwhile other clients are served as usual (the review saw /health take 35 s).
        for _ in range(5):
            assert httpx.get(f"{api.base_url}/health", timeout=5).status_code == 200
    finally:
        stop.set()
        attacker.join(timeout=60)
    assert not attacker.is_alive()
    assert not failures, failures
    assert answers
    for answer, sent in answers:
        assert _status(answer) == 431, answer[:300]
        assert b"connection: close" in answer.lower()
        assert b"headers are too large" in answer
        # Answered once past the limit, not after the whole stream (what the kernel's socket
        # buffers take meanwhile is sent all the same).
        assert sent < 32 * 1024 * 1024


def test_a_header_over_the_limit_in_one_piece_is_answered_431(api: ApiProcess) -> None:
    with closing(api.connect()) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: test\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
            + b"\r\n"
        )
        response, _ = _closed_within(sock, SLACK_S)
    assert _status(response) == 431, response[:300]


def test_headers_just_under_the_limit_are_served(api: ApiProcess) -> None:
    padding = b"v" * (MAX_HEADER_BYTES - 200)
    with closing(api.connect()) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: " + padding + b"\r\n\r\n")
        assert _status(_response(sock)) == 200


def test_an_over_long_request_line_is_answered_414(api: ApiProcess) -> None:
    with closing(api.connect()) as sock:
        sock.sendall(b"GET /health?" + b"q" * 40_000 + b" HTTP/1.1\r\nHost: test\r\n\r\n")
        response, _ = _closed_within(sock, SLACK_S)
    assert _status(response) == 414, response[:300]
    assert b"connection: close" in response.lower()


# --- Deadlines ----------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(api: ApiProcess) -> None:
    with closing(api.connect()) as sock:
        received, took = _closed_within(sock, HEAD_TIMEOUT_S + SLACK_S)
    assert received == b""
    assert took >= HEAD_TIMEOUT_S * 0.9


def test_a_head_sent_a_line_at_a_time_is_cut_at_the_head_deadline(api: ApiProcess) -> None:
    """Sending keeps no connection alive: the whole head must arrive within the deadline."""
    with closing(api.connect()) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        # One header line every 0.2 s (the attack's own pace), for at most the deadline + slack.
        while time.monotonic() - start < HEAD_TIMEOUT_S + SLACK_S:
            if select.select([sock], [], [], 0.2)[0]:
                received, _ = _closed_within(sock, SLACK_S)
                closed = True
                break
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                received, closed = b"", True
                break
        took = time.monotonic() - start
    assert closed, "the trickled head kept its connection past the deadline"
    assert received == b""
    assert HEAD_TIMEOUT_S * 0.9 <= took < HEAD_TIMEOUT_S + SLACK_S


def test_between_requests_the_keep_alive_timeout_applies_not_the_head_deadline(
    api: ApiProcess,
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with closing(api.connect()) as sock:
        sock.sendall(request)
        assert _status(_response(sock)) == 200
        # The client's own pause, longer than the head deadline, within the keep-alive timeout.
        time.sleep(HEAD_TIMEOUT_S * 1.5)
        sock.sendall(request)
        assert _status(_response(sock)) == 200
        received, took = _closed_within(sock, KEEP_ALIVE_TIMEOUT_S + SLACK_S)
    assert received == b""
    assert took >= KEEP_ALIVE_TIMEOUT_S * 0.9


def test_a_later_request_head_has_its_own_deadline(api: ApiProcess) -> None:
    with closing(api.connect()) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _status(_response(sock)) == 200
        # The start of a second head, never finished: uvicorn stops its keep-alive timer when
        # data arrives, so only the head deadline closes this connection.
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        received, took = _closed_within(sock, HEAD_TIMEOUT_S + SLACK_S)
    assert received == b""
    assert took >= HEAD_TIMEOUT_S * 0.9


def test_pipelined_requests_and_a_head_in_small_pieces_are_served(api: ApiProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with closing(api.connect()) as sock:
        sock.sendall(request * 3)
        assert [_status(r) for r in _responses(sock, 3)] == [200, 200, 200]
        for i in range(0, len(request), 5):
            sock.sendall(request[i : i + 5])
        assert _status(_response(sock)) == 200


def test_a_malformed_request_still_gets_uvicorns_400(api: ApiProcess) -> None:
    with closing(api.connect()) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        response, _ = _closed_within(sock, SLACK_S)
    assert _status(response) == 400, response[:300]


@pytest.mark.parametrize(
    ("framing", "first", "byte"),
    [
        ("content-length", b"Content-Length: 100\r\n\r\n", b"x"),
        ("chunked", b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),
    ],
)
def test_a_trickled_body_is_cut_at_the_body_deadline(
    api: ApiProcess, framing: str, first: bytes, byte: bytes
) -> None:
    with closing(api.connect()) as sock:
        sock.sendall(
            b"POST /user HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + first
        )
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < BODY_TIMEOUT_S + SLACK_S:
            if select.select([sock], [], [], 0.2)[0]:
                received, _ = _closed_within(sock, SLACK_S)
                closed = True
                break
            try:
                sock.sendall(byte)
            except (BrokenPipeError, ConnectionResetError):
                received, closed = b"", True
                break
        took = time.monotonic() - start
    assert closed, f"a {framing} body trickled past the deadline kept its connection"
    assert b"HTTP/1.1 2" not in received
    assert BODY_TIMEOUT_S * 0.9 <= took < BODY_TIMEOUT_S + SLACK_S


def test_a_body_that_arrives_in_time_is_served(api: ApiProcess) -> None:
    body = b'{"name": "Slow but in time", "email": "slow@example.com"}'
    with closing(api.connect()) as sock:
        sock.sendall(
            b"POST /user HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body[:10])
        time.sleep(BODY_TIMEOUT_S / 4)  # the client's own pace, well within the deadline
        sock.sendall(body[10:])
        assert _status(_response(sock)) == 201


# --- The connection cap -------------------------------------------------------------------------

MAX_CONNECTIONS = 6


@pytest.fixture
def capped(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """Long deadlines (connections stay), a cap of 6, no proxy configured, a rate limit."""
    log = tmp_path_factory.mktemp("capped") / "api.log"
    with ApiProcess(
        log,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        REQUEST_HEAD_TIMEOUT="60",
        KEEP_ALIVE_TIMEOUT="60",
        RESERVATION_RATE_LIMIT="1/min",
    ) as process:
        yield process


def test_over_the_connection_cap_a_new_connection_gets_503_until_some_close(
    capped: ApiProcess,
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with ExitStack() as stack:
        held = [stack.enter_context(closing(capped.connect())) for _ in range(MAX_CONNECTIONS)]
        for sock in held:
            # A served request proves the server has taken the connection.
            sock.sendall(request)
            assert _status(_response(sock)) == 200
        with closing(capped.connect()) as extra:
            extra.sendall(request)
            response, _ = _closed_within(extra, SLACK_S)
        assert _status(response) == 503, response[:300]
        assert b"connection: close" in response.lower()
        # The connections already held are still served.
        held[0].sendall(request)
        assert _status(_response(held[0])) == 200

    def served() -> bool:
        with closing(capped.connect()) as sock:
            sock.sendall(request)
            return _status(_response(sock)) == 200

    wait_for(served, 10, "a new connection to be served once the others closed")


def test_with_several_processes_each_enforces_the_limits(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """uvicorn's worker processes get the protocol class by reference and read the settings."""
    log = tmp_path_factory.mktemp("processes") / "api.log"
    with ApiProcess(
        log,
        "--processes",
        "2",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MAX_HEADER_BYTES="2048",
    ) as process:
        for _ in range(4):
            with closing(process.connect()) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nX-Pad: " + b"v" * 3000 + b"\r\n\r\n")
                response, _ = _closed_within(sock, SLACK_S)
            assert _status(response) == 431, response[:300]


# --- Proxies and the rate limit -----------------------------------------------------------------


def _event_and_users(client: httpx.Client, users: int) -> tuple[int, list[int]]:
    event = {
        "name": f"Proxied {time.monotonic_ns()}",
        "date": "2030-05-01T19:00:00Z",
        "location": "Seoul",
        "maxTickets": 100,
    }
    r = client.post("/event", json=event, headers=ADMIN)
    assert r.status_code == 201, r.text
    event_id: int = r.json()["id"]
    ids = []
    for _ in range(users):
        n = time.monotonic_ns()
        r = client.post("/user", json={"name": f"u{n}", "email": f"u{n}@example.com"})
        assert r.status_code == 201, r.text
        ids.append(int(r.json()["id"]))
    return event_id, ids


def test_behind_a_trusted_proxy_each_client_has_its_own_rate_limit(api: ApiProcess) -> None:
    with api.client(PROXY) as proxy:
        event_id, (u1, u2, u3) = _event_and_users(proxy, 3)

        def reserve(forwarded_for: str, user: int, body_form: bool = False) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            if body_form:
                r = proxy.post(
                    "/reservation", json={"eventId": event_id, "userId": user}, headers=headers
                )
            else:
                r = proxy.post(f"/reservation/{event_id}/{user}", headers=headers)
            return r.status_code

        assert reserve("198.51.100.1", u1) == 202
        # The same client again, by either route: over its limit of one a minute.
        assert reserve("198.51.100.1", u2) == 429
        assert reserve("198.51.100.1", u2, body_form=True) == 429
        # Another client behind the same proxy is not held back by the first.
        assert reserve("198.51.100.2", u2, body_form=True) == 202
        assert reserve("198.51.100.3", u3) == 202


def test_an_untrusted_peer_is_keyed_by_its_own_address_whatever_it_forwards(
    api: ApiProcess,
) -> None:
    with api.client(PROXY) as proxy:
        event_id, (u1, u2) = _event_and_users(proxy, 2)
    with api.client(DIRECT) as direct:
        assert (
            direct.post(
                f"/reservation/{event_id}/{u1}", headers={"X-Forwarded-For": "198.51.100.10"}
            ).status_code
            == 202
        )
        # A made-up forwarded address does not buy a fresh allowance.
        assert (
            direct.post(
                f"/reservation/{event_id}/{u2}", headers={"X-Forwarded-For": "198.51.100.11"}
            ).status_code
            == 429
        )


def test_by_default_no_proxy_is_trusted_not_even_loopback(capped: ApiProcess) -> None:
    with capped.client() as client:
        event_id, (u1, u2) = _event_and_users(client, 2)
        assert (
            client.post(
                f"/reservation/{event_id}/{u1}", headers={"X-Forwarded-For": "198.51.100.20"}
            ).status_code
            == 202
        )
        assert (
            client.post(
                f"/reservation/{event_id}/{u2}", headers={"X-Forwarded-For": "198.51.100.21"}
            ).status_code
            == 429
        )


# --- Settings -----------------------------------------------------------------------------------


def test_the_limits_default_to_sensible_values_and_no_trusted_proxy() -> None:
    settings = Settings(_env_file=None)
    assert settings.trusted_proxies() == []
    limits = HttpLimits.from_settings(settings)
    assert limits.max_head_bytes == 16 * 1024
    assert (limits.head_timeout_s, limits.body_timeout_s) == (10.0, 30.0)
    assert settings.keep_alive_timeout_s == 5.0
    assert 1 <= limits.max_connections <= 2048


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = Settings(_env_file=None, FORWARDED_ALLOW_IPS="10.0.0.5, 10.1.0.0/16,::1")
    assert settings.trusted_proxies() == ["10.0.0.5", "10.1.0.0/16", "::1"]
    with pytest.raises(ValidationError, match=r"'proxy\.internal' is not an IP address"):
        Settings(_env_file=None, FORWARDED_ALLOW_IPS="10.0.0.5,proxy.internal")


def test_the_connection_cap_stays_below_the_open_files_limit() -> None:
    soft = raise_open_files_limit()
    settings = Settings(_env_file=None, MAX_CONNECTIONS=str(soft * 2))
    assert HttpLimits.from_settings(settings).max_connections < soft
