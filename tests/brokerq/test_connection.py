"""The pipelined connection that carries brokerq's script calls, against a real redis-server.

A small TCP relay between the adapter and Redis can hold Redis's replies back, so the tests can
have calls in flight, a server that stops answering, and a connection cut mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.exceptions

from brokerq import BrokerQueue
from brokerq.redis import RedisAdapter, pipelined

from .conftest import User


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
        clients = await queue.adapter.client.client_list()  # type: ignore[attr-defined]
        ours = [c for c in clients if c["name"] == "bq-pipelined"]
        # The script calls' connection, and the pool's for CLIENT LIST itself.
        assert len(ours) == 2
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
        with pytest.raises(redis.exceptions.TimeoutError):
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
        with pytest.raises(redis.exceptions.ConnectionError):
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


async def test_a_redis_py_that_cannot_hand_over_its_socket_falls_back_to_its_own_path(
    redis_server, name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As if a redis-py release kept its streams elsewhere: the handover finds no transport.
    monkeypatch.setattr(pipelined, "_transport_of", lambda connection: None)
    queue = BrokerQueue(RedisAdapter(redis_server.url))
    ch = queue.channel(name, User)
    try:
        with caplog.at_level(logging.WARNING, logger="brokerq.redis"):
            results = await asyncio.gather(*(ch.produce(User(i, "x")) for i in range(50)))
        assert len({r.id for r in results}) == 50
        assert "cannot hand a connection over" in caplog.text
        got: list[User] = []

        async def handler(user: User) -> None:
            got.append(user)

        consumer = await ch.consume(handler, max_parallel=20)
        await consumer.wait_idle()
        await consumer.close()
        assert sorted(u.id for u in got) == list(range(50))
        assert (await ch.stats()).processed == 50
    finally:
        await queue.close()
