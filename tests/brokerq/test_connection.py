"""brokerq's own Redis connection (``brokerq.redis.Connection``), against real redis-servers.

A small TCP relay between the client and Redis can hold Redis's replies back, so the tests can
have calls in flight, a server that stops answering, and a connection cut mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from brokerq import (
    AuthenticationError,
    BrokerQueue,
    ConfigError,
    ConnectionLostError,
    RedisTimeoutError,
    ServerError,
)
from brokerq.redis import Connection, RedisAdapter, connect, is_cluster_url, open_commands
from brokerq.redis.url import cluster_of
from brokerq.server import RedisServer

from .conftest import User, until


class Relay:
    """Forwards TCP to Redis; ``hold()`` keeps Redis's replies until ``release()``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.released = asyncio.Event()
        self.released.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def cut(self) -> None:
        """Close every relayed connection, as a network failure would."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self.writers += [client_w, server_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if held:
                        await self.released.wait()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def relay(redis_server) -> AsyncIterator[Relay]:
    url = urlsplit(redis_server.url)
    r = Relay(url.hostname or "127.0.0.1", url.port or 6379)
    yield r
    await r.close()


async def clients(conn: Connection, name: str) -> list[dict[str, str]]:
    """The clients named ``name`` connected to the server, from CLIENT LIST."""
    listing: bytes = await conn.call("CLIENT", "LIST")
    fields = [
        dict(f.split("=", 1) for f in line.split(" ")) for line in listing.decode().splitlines()
    ]
    return [f for f in fields if f["name"] == name]


async def test_calls_in_flight_share_one_connection_and_get_their_own_replies(
    redis_server, name: str
) -> None:
    queue = BrokerQueue(RedisAdapter(redis_server.url, client_name="bq-pipelined"))
    ch = queue.channel(name, User)
    try:
        # Separate channels of one adapter, each its own call, all in flight at once.
        others = [queue.channel(f"{name}/{i}", User) for i in range(20)]
        results = await asyncio.gather(
            *(other.produce(User(i, f"u{i}")) for i, other in enumerate(others)),
            *(ch.produce(User(i, "x")) for i in range(100)),
        )
        # Ids count per channel: each of the 20 got its channel's first id, the 100 distinct ones.
        assert all(r.id.endswith("-1") for r in results[:20])
        assert len({r.id for r in results[20:]}) == 100
        for i, other in enumerate(others):
            assert (await other.stats()).waiting == 1, i
        assert (await ch.stats()).waiting == 100
        # Every produce and stats call went through one connection.
        async with Connection(redis_server.url) as admin:
            assert len(await clients(admin, "bq-pipelined")) == 1
    finally:
        await queue.close()


async def test_a_cancelled_call_does_not_shift_the_replies_of_the_others(
    relay: Relay, name: str
) -> None:
    adapter = RedisAdapter(await relay.start())
    queue = BrokerQueue(adapter)
    channels = [queue.channel(f"{name}/{x}", User) for x in "abc"]
    try:
        for count, ch in enumerate(channels, start=1):
            await ch.produce_many([User(i, "x") for i in range(count)])
        relay.hold()
        calls = [asyncio.ensure_future(adapter.stats(ch.name)) for ch in channels]
        await asyncio.sleep(0)  # all three sent, no reply yet
        calls[1].cancel()
        relay.release()
        first, third = await calls[0], await calls[2]
        with pytest.raises(asyncio.CancelledError):
            await calls[1]
        assert (first.waiting, third.waiting) == (1, 3)
        assert (await channels[1].stats()).waiting == 2  # and the connection is still in step
    finally:
        await queue.close()


async def test_a_server_that_stops_answering_fails_the_call_after_the_socket_timeout(
    relay: Relay, name: str
) -> None:
    queue = BrokerQueue(RedisAdapter(await relay.start(), socket_timeout=0.5))
    ch = queue.channel(name, User)
    try:
        await ch.produce(User(0, "warm-up"))
        relay.hold()
        with pytest.raises(RedisTimeoutError, match=r"within 0\.5s"):
            await asyncio.wait_for(ch.produce(User(1, "late")), timeout=10)
        relay.release()
        # The next call opens a fresh connection and works.
        await ch.produce(User(2, "after"))
        assert (await ch.stats()).waiting == 3  # the late one was stored, its reply lost
    finally:
        await queue.close()


async def test_a_cut_connection_fails_calls_in_flight_and_the_next_call_reconnects(
    relay: Relay, name: str
) -> None:
    queue = BrokerQueue(RedisAdapter(await relay.start()))
    ch = queue.channel(name, User)
    try:
        await ch.produce(User(0, "warm-up"))
        relay.hold()
        in_flight = asyncio.ensure_future(ch.produce(User(1, "cut")))
        await asyncio.sleep(0)
        relay.cut()
        with pytest.raises(ConnectionLostError):
            await in_flight
        relay.release()
        result = await ch.produce(User(2, "after"))
        assert not result.deduplicated
        # Whether the cut produce reached Redis before the cut is up to the network, as in life.
        assert (await ch.stats()).waiting in (2, 3)
    finally:
        await queue.close()


def test_one_adapter_across_successive_event_loops(redis_server, name: str) -> None:
    adapter = RedisAdapter(redis_server.url)
    queue = BrokerQueue(adapter)
    ch = queue.channel(name, User)
    for i in range(3):
        asyncio.run(ch.produce(User(i, "x")))
    assert asyncio.run(ch.stats()).waiting == 3
    asyncio.run(queue.close())


async def test_calls_awaited_together_and_call_many_keep_their_order(redis_server, name) -> None:
    async with Connection(redis_server.url) as conn:
        key = f"{name}:list"
        await asyncio.gather(*(conn.call("RPUSH", key, i) for i in range(200)))
        assert await conn.call("LRANGE", key, 0, -1) == [str(i).encode() for i in range(200)]
        replies = await conn.call_many([("SET", f"{name}:a", "1"), ("INCR", f"{name}:a"),
                                        ("GET", f"{name}:missing"), ("LLEN", key)])  # fmt: skip
        assert replies == [b"OK", 2, None, 200]
        # A transaction's replies are EXEC's.
        transaction = [("INCR", f"{name}:a"), ("GET", f"{name}:a")]
        assert await conn.call_many(transaction, transaction=True) == [3, b"3"]
        # An error reply fails its call only; the connection stays in step.
        with pytest.raises(ServerError, match="WRONGTYPE"):
            await conn.call_many([("GET", key), ("LLEN", key)])
        assert await conn.call("LLEN", key) == 200
        await conn.call("DEL", key, f"{name}:a")


async def test_a_blocking_wait_has_a_connection_of_its_own(redis_server, name) -> None:
    adapter = RedisAdapter(redis_server.url, client_name="bq-blocking")
    queue = BrokerQueue(adapter)
    ch = queue.channel(name, User)
    waiting = asyncio.ensure_future(adapter.wait(name, 1000))
    async with Connection(redis_server.url) as conn:

        async def blocked() -> bool:
            return any(c["cmd"] == "blpop" for c in await clients(conn, "bq-blocking"))

        await until(blocked, what="the wait in BLPOP")
        await ch.produce(User(1, "x"))  # while the wait blocks, or after it timed out
        # Two connections: the blocking wait's, and the one of every other call (the produce).
        found = sorted(c["cmd"] for c in await clients(conn, "bq-blocking"))
        assert len(found) == 2 and found[0] == "blpop" and found[1].startswith("eval"), found
    await waiting
    await queue.close()


async def test_call_blocking_waits_beyond_the_socket_timeout(redis_server, name) -> None:
    async with Connection(redis_server.url, socket_timeout=0.2, client_name="bq-b") as blocking:
        waiting = asyncio.ensure_future(blocking.call_blocking(10, "BLPOP", name, 10))
        async with Connection(redis_server.url) as conn:

            async def blocked() -> bool:
                return any(c["cmd"] == "blpop" for c in await clients(conn, "bq-b"))

            await until(blocked, what="the call in BLPOP")
            await asyncio.sleep(0.5)  # the time under test: past the socket timeout
            assert not waiting.done()
            await conn.call("RPUSH", name, "go")
        assert await waiting == [name.encode(), b"go"]


async def test_database_and_unix_socket_from_the_url(tmp_path: Path, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bq") as short:  # a socket path has ~100 bytes
        socket_path = f"{short}/redis.sock"
        extra = ("--unixsocket", socket_path, "--unixsocketperm", "700")
        async with RedisServer(tmp_path, extra_args=extra) as server:
            tcp = await connect(f"redis://127.0.0.1:{server.port}/3")
            unix = await connect(f"unix://{quote(socket_path)}?db=3")
            await tcp.call("SET", name, "in db 3")
            assert await unix.call("GET", name) == b"in db 3"
            assert f"addr={socket_path}:".encode() in await unix.call("CLIENT", "INFO")
            async with Connection(f"redis://127.0.0.1:{server.port}/0") as db0:
                assert await db0.call("GET", name) is None
            await tcp.close()
            await unix.close()


async def test_a_user_and_password_from_the_url_or_the_password_argument(tmp_path: Path) -> None:
    async with RedisServer(tmp_path, password="admin-pw") as server:
        hostport = f"127.0.0.1:{server.port}"
        async with Connection(server.url) as admin:
            await admin.call("ACL", "SETUSER", "queue", "on", ">queue-pw", "~*", "+@all")
        async with Connection(f"redis://queue:queue-pw@{hostport}/0") as user:
            assert await user.call("ACL", "WHOAMI") == b"queue"
        async with Connection(f"redis://{hostport}/0", password="admin-pw") as default:
            assert await default.call("ACL", "WHOAMI") == b"default"
        with pytest.raises(AuthenticationError, match="refused the login") as info:
            await connect(f"redis://queue:not-it@{hostport}/0")
        assert "not-it" not in str(info.value)
        anonymous = Connection(f"redis://{hostport}/0")
        with pytest.raises(AuthenticationError, match="NOAUTH"):
            await anonymous.call("PING")
        await anonymous.close()


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("http://127.0.0.1:6379", {}, "starts with redis://"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", {}, "socket_timeout"),
        ("redis://127.0.0.1:6379/0", {"retry_on_timeout": True}, "unknown Redis option"),
        ("redis://127.0.0.1:6379/0", {"ssl_ca_certs": "ca.pem"}, "need a rediss:// URL"),
        ("redis://:url-secret@127.0.0.1:6379/0", {"password": "arg-secret"}, "given twice"),
        ("redis://127.0.0.1:6379/x", {}, "'db'"),
        ("rediss://127.0.0.1:6379/0", {"ssl_cert_reqs": "maybe"}, "ssl_cert_reqs"),
        ("unix://", {}, "socket's path"),
    ],
)
def test_invalid_urls_and_options_are_refused_up_front(url, options, says) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        Connection(url, **options)
    assert isinstance(info.value, ValueError)
    assert "secret" not in str(info.value)


def test_a_cluster_url_is_taken_apart_into_seed_nodes() -> None:
    seeds = cluster_of("rediss+cluster://u:pw@10.0.0.1:7000,[::1]:7001,node3/?socket_timeout=2")
    assert seeds.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379))
    assert seeds.url == "rediss://u:pw@10.0.0.1:7000/0?socket_timeout=2"
    assert is_cluster_url("redis+cluster://h:1/") and not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "one database"),
        ("redis+cluster://127.0.0.1:port/", "port number"),
        ("redis+cluster://127.0.0.1:0/", "port from 1"),
    ],
)
def test_invalid_cluster_urls_are_refused(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        cluster_of(url)
    with pytest.raises(ConfigError, match=says):
        open_commands(url)


def test_a_cluster_url_is_not_one_connection() -> None:
    with pytest.raises(ConfigError, match="Redis Cluster"):
        Connection("redis+cluster://127.0.0.1:7000/")
