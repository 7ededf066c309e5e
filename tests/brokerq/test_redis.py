"""Promises that need a real Redis: persistence, real crashes, signals, Cluster, shared state."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from brokerq import AuthenticationError, BrokerQueue, ConnectError, Message, Processing
from brokerq.redis import RedisAdapter
from brokerq.server import RedisCluster, RedisServer

from .conftest import User, until

BROKERQ = str(Path(sys.executable).parent / "brokerq")
ROOT = Path(__file__).resolve().parents[2]


def start_worker(url: str, channel: str, mode: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "BQ_TEST_REDIS_URL": url,
        "BQ_TEST_CHANNEL": channel,
        "BQ_TEST_MODE": mode,
        **env,
    }
    return subprocess.Popen(
        [BROKERQ, "worker", "tests.brokerq.worker_app:make_worker"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def next_event(client: aioredis.Redis, channel: str, timeout: float = 20.0) -> str:
    popped = await client.blpop([f"events:{channel}"], timeout=timeout)
    assert popped is not None, "no event from the worker process"
    return popped[1].decode()


async def test_acknowledged_messages_survive_a_redis_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=True, appendfsync="always")
    await server.start()
    try:
        queue = BrokerQueue(RedisAdapter(server.url))
        ch = queue.channel("durable", User)
        one_by_one = await asyncio.gather(*(ch.produce(User(i, "a")) for i in range(500)))
        batched = await ch.produce_many([User(i, "b") for i in range(500, 1000)])
        acknowledged = {r.id for r in one_by_one + batched}
        await queue.close()

        server.kill()  # SIGKILL: no shutdown save, only what the append-only file holds
        server = RedisServer(tmp_path, port=server.port, appendonly=True, appendfsync="always")
        await server.start()

        queue = BrokerQueue(RedisAdapter(server.url))
        ch = queue.channel("durable", User)
        assert (await ch.stats()).waiting == 1000
        got: list[str] = []

        async def handler(msg: Message[User]) -> None:
            got.append(msg.id)

        consumer = await ch.consume(handler, max_parallel=50)
        await consumer.wait_idle()
        assert set(got) == acknowledged
        assert len(got) == 1000
        await queue.close()
    finally:
        await server.stop()


async def test_a_killed_worker_process_hands_its_message_over_within_the_lease(redis_server):
    url, name = redis_server.url, f"kill-{time.monotonic_ns()}"
    queue = BrokerQueue(RedisAdapter(url))
    ch = queue.channel(name, int, lease="2s")
    events = aioredis.Redis.from_url(url)
    produced = await ch.produce(7)
    worker = start_worker(url, name, "hang", BQ_TEST_LEASE="2s")
    try:
        started = await next_event(events, name)
        assert started.startswith(f"start:{produced.id}:1:{worker.pid}")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = time.monotonic()

        got: list[tuple[Message[int], float]] = []
        arrived = asyncio.Event()

        async def handler(msg: Message[int]) -> None:
            got.append((msg, time.monotonic() - killed_at))
            arrived.set()

        consumer = await ch.consume(handler)
        await asyncio.wait_for(arrived.wait(), 10)
        await consumer.wait_idle()
        [(msg, after)] = got
        assert (msg.id, msg.tries, msg.data) == (produced.id, 2, 7)
        assert after < 2.0 + 1.0  # within the lease (plus a scheduling margin), not minutes
        stats = await ch.stats()
        assert (stats.processed, stats.redelivered, stats.in_flight, stats.waiting) == (1, 1, 0, 0)
        assert await events.llen(f"events:{name}") == 0  # the killed handler never finished
    finally:
        if worker.poll() is None:
            worker.kill()
        await events.aclose()
        await queue.close()


async def test_sigterm_lets_the_running_handler_finish_and_leaves_the_rest(redis_server):
    url, name = redis_server.url, f"term-{time.monotonic_ns()}"
    queue = BrokerQueue(RedisAdapter(url))
    ch = queue.channel(name, int)
    events = aioredis.Redis.from_url(url)
    first, *_ = await ch.produce_many([1, 2, 3])
    worker = start_worker(url, name, "work", BQ_TEST_WORK_S="1.0")
    try:
        assert (await next_event(events, name)).startswith(f"start:{first.id}:1:")
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(worker.communicate, timeout=30)
        assert worker.returncode == 0, stderr.decode()[-2000:]
        assert (await next_event(events, name, timeout=1)).startswith(f"done:{first.id}:1:")
        assert await events.llen(f"events:{name}") == 0  # it took nothing after the signal
        stats = await ch.stats()
        assert (stats.processed, stats.in_flight, stats.waiting) == (1, 0, 2)
    finally:
        if worker.poll() is None:
            worker.kill()
        await events.aclose()
        await queue.close()


async def test_a_message_that_crashes_every_worker_ends_in_the_dead_letters(redis_server):
    url, name = redis_server.url, f"poison-{time.monotonic_ns()}"
    queue = BrokerQueue(RedisAdapter(url))
    ch = queue.channel(name, int)
    poison, *_ = await ch.produce_many([13, 1, 2])
    env = {"BQ_TEST_LEASE": "500ms", "BQ_TEST_MAX_ATTEMPTS": "2"}
    crashes = 0
    deadline = time.monotonic() + 30
    worker = start_worker(url, name, "poison", **env)
    try:
        # A supervisor's job, done by the test: restart the worker whenever it dies.
        while not await _settled(ch, dead=1, processed=2):
            assert time.monotonic() < deadline, f"not settled after {crashes} crashes"
            if worker.poll() is not None:
                assert worker.returncode == 3
                crashes += 1
                worker = start_worker(url, name, "poison", **env)
            await asyncio.sleep(0.05)
        [letter] = await ch.dead_letters()
        assert (letter.id, letter.data, letter.tries) == (poison.id, 13, 2)
        assert letter.error.startswith("lease expired: consumer ")
        assert crashes == 2
    finally:
        worker.kill()
        worker.wait()
        await queue.close()


async def _settled(ch, *, dead: int, processed: int) -> bool:
    stats = await ch.stats()
    return (stats.dead, stats.processed) == (dead, processed)


async def test_deduplication_state_lives_in_redis(redis_server) -> None:
    name = f"dedup-{time.monotonic_ns()}"
    one = BrokerQueue(RedisAdapter(redis_server.url))
    two = BrokerQueue(RedisAdapter(redis_server.url))
    a = one.channel(name, int, process=Processing.EXACTLY_ONCE)
    b = two.channel(name, int, process=Processing.EXACTLY_ONCE)
    first = await a.produce(5)
    second = await b.produce(5)  # another client, another connection: same window
    assert second.deduplicated and second.id == first.id
    raw = aioredis.Redis.from_url(redis_server.url)
    # One entry, in the current generation of the channel's dedup hashes, for five minutes.
    entries = {}
    for generation in ("a", "b"):
        entries |= await raw.hgetall(f"bq:{{{name}}}:dd:{generation}")
    [(field, value)] = entries.items()
    assert field.startswith(b"h:")
    expiry_ms, stored_id = value.decode().split(" ")
    assert stored_id == first.id
    now_ms = int(time.time() * 1000)
    assert 299_000 < int(expiry_ms) - now_ms <= 300_000  # the default window: five minutes
    await raw.aclose()
    await one.close()
    await two.close()


async def test_password_protected_redis(tmp_path: Path) -> None:
    async with RedisServer(tmp_path, password="s3cret-pw") as server:
        queue = BrokerQueue(RedisAdapter(server.url))
        ch = queue.channel("secured", int)
        assert not (await ch.produce(1)).deduplicated
        await queue.close()

        anonymous = BrokerQueue(RedisAdapter(f"redis://127.0.0.1:{server.port}/0"))
        with pytest.raises(AuthenticationError) as info:
            await anonymous.channel("secured", int).produce(2)
        assert "s3cret-pw" not in str(info.value)
        await anonymous.close()

        # With a password there is no reason to turn Redis's protected mode off.
        admin = aioredis.Redis.from_url(server.url, decode_responses=True)
        assert await admin.config_get("protected-mode") == {"protected-mode": "yes"}
        await admin.aclose()


async def test_works_on_a_redis_cluster(cluster: RedisCluster) -> None:
    queue = BrokerQueue(RedisAdapter(cluster.url))
    names = [f"cluster/{i}" for i in range(6)]  # spread over the three nodes' slots
    channels = [
        queue.channel(n, int, process=Processing.EXACTLY_ONCE, max_attempts=1) for n in names
    ]
    for ch in channels:
        results = await asyncio.gather(*(ch.produce(i) for i in range(100)))
        assert sum(r.deduplicated for r in results) == 0
        assert (await ch.produce(0)).deduplicated
        await ch.produce(1000, delay="100ms", priority=5)

    got: dict[str, list[int]] = {n: [] for n in names}

    def handler_for(name: str):
        async def handler(n: int) -> None:
            if n == 13:
                raise ValueError("unlucky")
            got[name].append(n)

        return handler

    for ch in channels:
        consumer = await ch.consume(handler_for(ch.name), max_parallel=20)
        await until(lambda ch=ch: _processed(ch, 100), what=f"{ch.name} processed")
        await consumer.wait_idle()
        stats = await ch.stats()
        assert (stats.processed, stats.dead, stats.waiting, stats.delayed) == (100, 1, 0, 0)
        assert sorted(got[ch.name]) == [i for i in range(100) if i != 13] + [1000]
        [letter] = await ch.dead_letters()
        assert (letter.data, letter.error) == (13, "ValueError: unlucky")
    assert sorted(await queue.channels()) == names
    await queue.close()


async def _processed(ch, n: int) -> bool:
    return (await ch.stats()).processed >= n


def make_certificates(directory: Path) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl tool."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
         "-keyout", ca_key, "-out", ca_crt],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "1", "-extfile", ext, "-out", crt],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *map(str, step)], check=True, capture_output=True)
    return str(crt), str(key), str(ca_crt)


def redis_has_tls(directory: Path) -> bool:
    from brokerq.server import find_redis_server

    # With TLS support this exits at once ("not listen anywhere"); without, the directive is bad.
    probe = subprocess.run(
        [find_redis_server(), "--tls-port", "0", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=10,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


async def test_tls_and_password_end_to_end(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl tool to make test certificates")
    if not redis_has_tls(tmp_path):
        pytest.skip("this redis-server was built without TLS support")
    cert, key, ca = make_certificates(tmp_path)
    async with RedisServer(tmp_path / "data", tls=(cert, key, ca), password="tls-pw") as server:
        assert server.url.startswith("rediss://")
        queue = BrokerQueue(RedisAdapter(server.url, ssl_ca_certs=ca))
        ch = queue.channel("over-tls", User)
        await ch.produce(User(1, "secure"))
        got: list[User] = []

        async def handler(user: User) -> None:
            got.append(user)

        consumer = await ch.consume(handler)
        await consumer.wait_idle()
        assert got == [User(1, "secure")]
        await queue.close()

        untrusted = BrokerQueue(RedisAdapter(server.url))  # no CA: the certificate is refused
        with pytest.raises(ConnectError, match="certificate verify failed"):
            await untrusted.channel("over-tls", User).produce(User(2, "x"))
        await untrusted.close()

        # Told (in the URL's query, as redis-py takes it) not to check the certificate.
        unchecked = BrokerQueue(RedisAdapter(f"{server.url}?ssl_cert_reqs=none"))
        assert (await unchecked.channel("over-tls", User).stats()).processed == 1
        await unchecked.close()


def test_plain_and_tls_connections_under_uvloop(tmp_path: Path, redis_server, name: str) -> None:
    # The service runs brokerq on uvloop (uvicorn's loop), whose TLS transport is its own class.
    uvloop = pytest.importorskip("uvloop")
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl tool to make test certificates")
    if not redis_has_tls(tmp_path):
        pytest.skip("this redis-server was built without TLS support")
    cert, key, ca = make_certificates(tmp_path)

    async def main() -> None:
        async with RedisServer(tmp_path / "data", tls=(cert, key, ca), password="pw") as tls:
            for url in (redis_server.url, f"{tls.url}?ssl_ca_certs={quote(ca, safe='')}"):
                queue = BrokerQueue(RedisAdapter(url))
                ch = queue.channel(name, User)
                await ch.produce(User(1, "x"))
                got: list[User] = []
                consumer = await ch.consume(got.append)
                await consumer.wait_idle()
                assert got == [User(1, "x")]
                await queue.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def test_dedup_generations_rotate_without_dropping_a_live_entry(redis_server) -> None:
    name = f"dedup-gen-{time.monotonic_ns()}"
    queue = BrokerQueue(RedisAdapter(redis_server.url))
    ch = queue.channel(name, str, process=Processing.EXACTLY_ONCE)
    raw = aioredis.Redis.from_url(redis_server.url)
    meta = f"bq:{{{name}}}:dd:meta"
    produced = 0

    async def produce_short_until_rotated(times: int) -> None:
        # 1 ms entries are expired by the next produce, so each produce may rotate.
        nonlocal produced
        rotations = 0
        deadline = time.monotonic() + 10
        while rotations < times:
            assert time.monotonic() < deadline, "the dedup generations did not rotate"
            before = await raw.hget(meta, "cur")
            await ch.produce(f"short-{produced}", deduplication_interval="1ms")
            produced += 1
            rotations += before is not None and await raw.hget(meta, "cur") != before

    await produce_short_until_rotated(5)
    # Expired entries went with their generation: each rotation after the second dropped one
    # that held at least the entry whose produce had started it.
    sizes = [await raw.hlen(f"bq:{{{name}}}:dd:{g}") for g in ("a", "b")]
    assert sum(sizes) <= produced - 3, (sizes, produced)

    kept = await ch.produce("kept", deduplication_interval="10s")
    # Its generation becomes the previous one at the next rotation; while it holds a live
    # entry it is not dropped, so no further rotation happens and the entry stays.
    await produce_short_until_rotated(1)
    for _ in range(20):
        await ch.produce(f"short-{produced}", deduplication_interval="1ms")
        produced += 1
    again = await ch.produce("kept", deduplication_interval="10s")
    assert again.deduplicated and again.id == kept.id
    # An expired short entry no longer deduplicates.
    assert not (await ch.produce("short-0", deduplication_interval="1ms")).deduplicated
    await raw.aclose()
    await queue.close()
