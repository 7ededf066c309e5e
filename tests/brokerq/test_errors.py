"""Every failure brokerq meets reaches its user as a ``BrokerError`` that says what happened.

On both ways brokerq talks to Redis: its own connection (a single server) and redis-py's public
API (Redis Cluster, or a redis-py client given to the adapter), against real redis-servers that
refuse connections, get killed mid-call, stop answering, are read-only replicas, want another
password, or run a script that fails or never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from brokerq import (
    AuthenticationError,
    BrokerError,
    BrokerQueue,
    BusyError,
    ClusterError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    NoScriptError,
    ReadOnlyError,
    RedisTimeoutError,
    ScriptError,
    WrongTypeError,
)
from brokerq.adapter import Outgoing
from brokerq.bullmq import BullMQAdapter
from brokerq.redis import Connection, RedisAdapter, Script
from brokerq.redis.redispy import RedisPyCommands
from brokerq.server import RedisServer

from .conftest import User, until

PATHS = ["own", "redis-py"]


def adapter_for(path: str, url: str, **options: Any) -> RedisAdapter:
    """brokerq's own connection, or a redis-py client given to the adapter."""
    if path == "own":
        return RedisAdapter(url, **options)
    return RedisAdapter(client=aioredis.Redis.from_url(url, **options))


def commands_for(path: str, url: str, **options: Any) -> Connection | RedisPyCommands:
    if path == "own":
        return Connection(url, **options)
    return RedisPyCommands(aioredis.Redis.from_url(url, **options))


async def fails_with(cls: type[BrokerError], call: Awaitable[Any]) -> BrokerError:
    with pytest.raises(cls) as info:
        await call
    assert isinstance(info.value, BrokerError)
    return info.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    # Long scripts answer others with BUSY after 100 ms instead of 5 s.
    running = RedisServer(tmp_path / "redis", extra_args=("--busy-reply-threshold", "100"))
    await running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            os.kill(running.process.pid, signal.SIGCONT)  # if a test left it stopped
        await running.stop()


@pytest.mark.parametrize("path", [*PATHS, "cluster"])
async def test_a_refused_connection_is_a_connect_error(path: str) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    adapter = RedisAdapter(url, cluster=True) if path == "cluster" else adapter_for(path, url)
    queue = BrokerQueue(adapter)
    error = await fails_with(ConnectError, queue.channel("refused", int).produce(1))
    assert url.split("/")[2] in str(error)  # it names the server
    await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_server_killed_mid_call_is_a_lost_connection(
    path: str, server: RedisServer, name: str
) -> None:
    assert server.process is not None
    adapter = adapter_for(path, server.url)
    queue = BrokerQueue(adapter)
    ch = queue.channel(name, User)
    await ch.produce(User(0, "warm-up"))
    os.kill(server.process.pid, signal.SIGSTOP)  # it takes the call and never answers
    in_flight = asyncio.ensure_future(adapter.produce(name, [Outgoing(b'[1,"x"]')]))
    await asyncio.sleep(0)  # the call is written in its first step
    server.kill()
    await fails_with(ConnectionLostError, in_flight)
    await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_script_that_never_ends_makes_others_busy_and_is_lost_with_its_server(
    path: str, server: RedisServer
) -> None:
    spin = Script("spin", "while true do end")
    spinning = commands_for(path, server.url)
    running = asyncio.ensure_future(spin.run(spinning))
    observer = commands_for(path, server.url)

    busy: list[BusyError] = []

    async def answers_busy() -> bool:
        try:
            await observer.call("PING")
        except BusyError as exc:
            busy.append(exc)
        return bool(busy)

    await until(answers_busy, what="the server answers BUSY")
    assert "busy running a script" in str(busy[0])
    server.kill()
    await fails_with(ConnectionLostError, running)
    await spinning.close()
    await observer.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_stalled_server_is_a_timeout(path: str, server: RedisServer, name: str) -> None:
    assert server.process is not None
    queue = BrokerQueue(adapter_for(path, server.url, socket_timeout=0.5))
    ch = queue.channel(name, User)
    await ch.produce(User(0, "warm-up"))
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        await fails_with(RedisTimeoutError, asyncio.wait_for(ch.stats(), timeout=10))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert (await ch.stats()).waiting == 1  # and the next call works again
    await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_read_only_replica_is_a_read_only_error(
    path: str, server: RedisServer, tmp_path: Path, name: str
) -> None:
    replicaof = ("--replicaof", "127.0.0.1", str(server.port))
    async with RedisServer(tmp_path / "replica", extra_args=replicaof) as replica:
        async with Connection(replica.url) as conn:

            async def in_sync() -> bool:
                info: bytes = await conn.call("INFO", "replication")
                return b"master_link_status:up" in info

            await until(in_sync, what="the replica in sync")  # not LOADING any more
        queue = BrokerQueue(adapter_for(path, replica.url))
        ch = queue.channel(name, User)
        error = await fails_with(ReadOnlyError, ch.produce(User(1, "x")))
        assert "read only replica" in str(error)
        await fails_with(ReadOnlyError, ch.purge())  # a plain command, not a script
        assert (await ch.stats()).waiting == 0  # reading works
        await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_wrong_or_missing_password_is_an_authentication_error(
    path: str, tmp_path: Path, name: str
) -> None:
    async with RedisServer(tmp_path, password="right-pw") as server:
        hostport = f"127.0.0.1:{server.port}"
        for url in (f"redis://:wrong-pw@{hostport}/0", f"redis://{hostport}/0"):
            queue = BrokerQueue(adapter_for(path, url))
            error = await fails_with(AuthenticationError, queue.channel(name, int).produce(1))
            chain = f"{error} {error.__cause__}"
            assert "wrong-pw" not in chain and "right-pw" not in chain
            await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_script_the_server_forgot_is_sent_again(path: str, server, name: str) -> None:
    queue = BrokerQueue(adapter_for(path, server.url))
    ch = queue.channel(name, User)
    await ch.produce(User(1, "x"))
    conn = commands_for(path, server.url)
    await conn.call("SCRIPT", "FLUSH")  # as after a restart or a failover
    await ch.produce(User(2, "y"))
    assert (await ch.stats()).waiting == 2
    # Your own EVALSHA of an unknown script says so.
    await fails_with(NoScriptError, conn.call("EVALSHA", "0" * 40, 0))
    await conn.close()
    await queue.close()


@pytest.mark.parametrize("path", PATHS)
async def test_failing_scripts_are_script_errors(path: str, server, name: str) -> None:
    conn = commands_for(path, server.url)
    error = await fails_with(ScriptError, Script("boom", "error('boom')").run(conn))
    assert "boom" in str(error)
    # An error reply the script makes itself names no script: the runner names it.
    own = Script("refuse", "return redis.error_reply('NOPE not today')")
    error = await fails_with(ScriptError, own.run(conn))
    assert str(error) == "script refuse: NOPE not today"
    assert error.code == "NOPE"  # type: ignore[attr-defined]
    await conn.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_key_of_another_type_is_a_wrong_type_error(path: str, server, name: str) -> None:
    queue = BrokerQueue(adapter_for(path, server.url))
    conn = commands_for(path, server.url)
    await conn.call("SET", f"bq:{{{name}}}:msg", "not a hash")
    error = await fails_with(WrongTypeError, queue.channel(name, User).produce(User(1, "x")))
    assert "wrong kind of value" in str(error)
    await conn.close()
    await queue.close()


async def test_redis_cluster_options_on_a_plain_server_are_a_cluster_error(server) -> None:
    queue = BrokerQueue(RedisAdapter(server.url, cluster=True))
    await fails_with(ClusterError, queue.channel("not-a-cluster", int).produce(1))
    await queue.close()


@contextlib.contextmanager
def config_error(says: str) -> Iterator[None]:
    """A ``ConfigError`` saying ``says``; a ``ValueError`` too, as before it was one."""
    with pytest.raises(ConfigError, match=says) as info:
        yield
    assert isinstance(info.value, ValueError)


async def test_bad_arguments_are_config_errors(redis_server) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    decoding = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    with config_error("either a Redis URL or a client"):
        RedisAdapter()
    with config_error("either a Redis URL or a client"):
        RedisAdapter(redis_server.url, client=client)
    with config_error("belong to the client"):
        RedisAdapter(client=client, socket_timeout=1)
    with config_error("unknown Redis option 'retry'"):
        RedisAdapter(redis_server.url, retry=3)
    with config_error("either a Redis URL or a client"):
        BullMQAdapter()
    with config_error("decode_responses"):
        BullMQAdapter(client=decoding)
    async with BrokerQueue(BullMQAdapter(redis_server.url)) as queue:
        with config_error("no ':'"):
            await queue.channel("a:b", int).produce(1)
    async with Connection(redis_server.url) as conn:
        with config_error("bytes, str, int or float"):
            await conn.call("SET", "k", {"a": 1})
        assert await conn.call("PING") == b"PONG"  # nothing was sent
    await client.aclose()
    await decoding.aclose()
