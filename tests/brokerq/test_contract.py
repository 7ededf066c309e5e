"""The promises of brokerq, checked against every adapter (memory and a real redis-server)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time

import pydantic
import pytest

import brokerq
from brokerq import (
    BrokerQueue,
    ChannelError,
    Message,
    MessageTypeError,
    Processing,
    QueueClosedError,
)
from brokerq.adapter import Settlement

from .conftest import User, until


def test_public_api_is_deliberate() -> None:
    assert sorted(brokerq.__all__) == [
        "Adapter", "AuthenticationError", "BatchHandler", "BatchResult", "BrokerError",
        "BrokerQueue", "BusyError", "Channel", "ChannelError", "ChannelOptions", "ChannelStats",
        "ClusterError", "ConfigError", "ConnectError", "ConnectionLostError", "Consumer",
        "ConsumerError", "ConsumerState", "DeadLetter", "Duration", "Handler", "LoadingError",
        "Message", "MessageTypeError", "NoScriptError", "OutOfMemoryError", "Processing",
        "ProduceResult", "QueueClosedError", "ReadOnlyError", "RedisConnectionError",
        "RedisError", "RedisTimeoutError", "ReplicationError", "ScriptError", "ServerError",
        "Worker", "WrongTypeError",
    ]  # fmt: skip


async def test_produce_then_consume_delivers_typed_messages_once(queue: BrokerQueue, name: str):
    ch = queue.channel(name, User)
    produced = await asyncio.gather(*(ch.produce(User(i, f"u{i}")) for i in range(200)))
    assert len({r.id for r in produced}) == 200
    assert not any(r.deduplicated for r in produced)
    assert (await ch.stats()).waiting == 200

    seen: list[User] = []
    consumer = await ch.consume(_collect(seen), max_parallel=20)
    await consumer.wait_idle()
    assert sorted(u.id for u in seen) == list(range(200))
    assert all(isinstance(u, User) for u in seen)
    stats = await ch.stats()
    assert (stats.waiting, stats.in_flight, stats.processed, stats.produced) == (0, 0, 200, 200)


class Occupancy:
    """Counts the handlers running at once; ``full`` is set when ``size`` run together."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self.peak = 0
        self.full = asyncio.Event()

    async def hold(self, until: asyncio.Event) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running == self.size:
            self.full.set()
        try:
            await until.wait()
        finally:
            self.running -= 1


def _collect(into: list):
    async def handler(message) -> None:
        into.append(message)

    return handler


async def test_handler_asking_for_the_envelope_gets_id_and_tries(queue: BrokerQueue, name: str):
    ch = queue.channel(name, User)
    result = await ch.produce(User(1, "Peter"))
    got: list[Message[User]] = []

    async def handler(msg: Message[User]) -> None:
        got.append(msg)

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    [msg] = got
    assert msg.data == User(1, "Peter")
    assert msg.id == result.id
    assert msg.tries == 1
    assert msg.channel == name
    assert abs(msg.produced_at_ms - time.time() * 1000) < 60_000


async def test_sync_handlers_run_too(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many([1, 2, 3])
    got: list[int] = []
    consumer = await ch.consume(got.append)
    await consumer.wait_idle()
    assert sorted(got) == [1, 2, 3]


async def test_wrong_type_is_refused_at_produce_and_nothing_is_written(queue, name):
    ch = queue.channel(name, User)
    with pytest.raises(MessageTypeError, match="does not fit User") as info:
        await ch.produce(User(id="not a number", username="x"))  # type: ignore[arg-type]
    assert "Expected `int`, got `str`" in str(info.value)
    with pytest.raises(MessageTypeError, match="username"):
        await ch.produce({"id": 1})  # type: ignore[arg-type]
    with pytest.raises(MessageTypeError):
        await ch.produce_many([User(1, "ok"), User(2, 3)])  # type: ignore[arg-type]
    stats = await ch.stats()
    assert (stats.produced, stats.waiting) == (0, 0)


async def test_pydantic_models_and_dataclasses_are_channel_types(queue: BrokerQueue, name: str):
    class Order(pydantic.BaseModel):
        id: int
        amount: float

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    orders = queue.channel(name + "/orders", Order)
    points = queue.channel(name + "/points", Point)
    await orders.produce(Order(id=1, amount=2.5))
    with pytest.raises(MessageTypeError):
        await orders.produce(Order.model_construct(id="x", amount=1.0))
    await points.produce(Point(1, 2))
    got: list[object] = []
    for ch in (orders, points):
        consumer = await ch.consume(_collect(got))
        await consumer.wait_idle()
    assert got == [Order(id=1, amount=2.5), Point(1, 2)]


async def test_undecodable_payload_goes_straight_to_dead_letters(queue: BrokerQueue, name: str):
    loose = queue.channel(name, dict)
    strict = queue.channel(name, User)
    await loose.produce({"id": "not-an-int"})
    calls: list[User] = []
    consumer = await strict.consume(_collect(calls))
    await consumer.wait_idle()
    assert calls == []
    [dead] = await strict.dead_letters()
    assert dead.data is None
    assert dead.payload == b'{"id":"not-an-int"}'
    assert "undecodable payload" in dead.error
    assert dead.tries == 1
    stats = await strict.stats()
    assert (stats.dead, stats.waiting, stats.in_flight, stats.dead_lettered) == (1, 0, 0, 1)


async def test_bad_and_poisoned_messages_are_set_aside_and_the_consumer_keeps_going(
    queue: BrokerQueue, name: str
):
    strict = queue.channel(name, User, max_attempts=2, retry_backoff="10ms")
    loose = queue.channel(name, dict)
    text = queue.channel(name, str)
    await strict.produce(User(1, "first"))
    await loose.produce({"garbage": True})
    await strict.produce(User(2, "poison"))
    await text.produce("not even an object")
    await strict.produce(User(3, "last"))
    handled: list[int] = []

    async def handler(user: User) -> None:
        if user.username == "poison":
            raise ValueError(f"user {user.id} is poison")
        handled.append(user.id)

    consumer = await strict.consume(handler, max_parallel=1)
    await until(lambda: _dead_count(strict, 3), what="three dead letters")
    await consumer.wait_idle()
    assert sorted(handled) == [1, 3]
    letters = await strict.dead_letters()
    [poisoned] = [letter for letter in letters if letter.data is not None]
    assert poisoned.data == User(2, "poison")
    assert (poisoned.error, poisoned.tries) == ("ValueError: user 2 is poison", 2)
    undecodable = {letter.payload: letter for letter in letters if letter.data is None}
    assert set(undecodable) == {b'{"garbage":true}', b'"not even an object"'}
    for letter in undecodable.values():
        # The reason says what is wrong with the payload, and it was not retried.
        assert letter.error.startswith("undecodable payload"), letter.error
        assert "Object missing required field" in letter.error or "Expected `object`" in (
            letter.error
        ), letter.error
        assert letter.tries == 1
    stats = await strict.stats()
    assert (stats.processed, stats.dead, stats.waiting, stats.in_flight) == (2, 3, 0, 0)


async def test_raising_handler_retries_with_backoff_then_dead_letters_and_redrives(queue, name):
    ch = queue.channel(name, User, max_attempts=3, retry_backoff="100ms")
    await ch.produce(User(7, "flaky"))
    attempts: list[tuple[int, float]] = []
    fail = True
    dead = asyncio.Event()

    async def handler(msg: Message[User]) -> None:
        attempts.append((msg.tries, time.monotonic()))
        if fail:
            if msg.tries == 3:
                dead.set()
            raise RuntimeError(f"boom {msg.tries}")

    consumer = await ch.consume(handler)
    await asyncio.wait_for(dead.wait(), 10)
    await until(lambda: _dead_count(ch, 1), what="dead letter")
    assert [t for t, _ in attempts] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    # Exponential backoff with equal jitter: at least half of 100ms, then of 200ms.
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    [letter] = await ch.dead_letters()
    assert letter.data == User(7, "flaky")
    assert letter.error == "RuntimeError: boom 3"
    assert letter.tries == 3
    stats = await ch.stats()
    assert (stats.retried, stats.dead_lettered, stats.dead) == (2, 1, 1)

    fail = False
    assert await ch.redrive() == 1
    await until(lambda: len(attempts) == 4, what="redriven delivery")
    await consumer.wait_idle()
    assert attempts[-1][0] == 1  # a redriven message starts with a fresh try count
    stats = await ch.stats()
    assert (stats.dead, stats.processed) == (0, 1)


async def _dead_count(ch, n: int) -> bool:
    return (await ch.stats()).dead == n


async def test_dead_letters_can_be_deleted_selectively(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, max_attempts=1)
    await ch.produce_many([1, 2, 3])

    async def handler(n: int) -> None:
        raise ValueError(n)

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    letters = await ch.dead_letters()
    assert sorted(d.data for d in letters) == [1, 2, 3]
    assert await ch.delete_dead([letters[0].id]) == 1
    assert await ch.redrive(["no-such-id"]) == 0
    assert len(await ch.dead_letters()) == 2
    assert await ch.delete_dead() == 2
    assert (await ch.stats()).dead == 0


async def test_dead_letters_are_read_page_by_page_up_to_the_last_index(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int, max_attempts=1)
    await ch.produce_many([1, 2, 3])

    async def handler(n: int) -> None:
        raise ValueError(n)

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    ids = [d.id for d in await ch.dead_letters()]
    assert len(ids) == 3
    assert [d.id for d in await ch.dead_letters(offset=1, limit=1)] == ids[1:2]
    assert [d.id for d in await ch.dead_letters(offset=2, limit=5)] == ids[2:]
    assert await ch.dead_letters(limit=0) == []
    assert await ch.dead_letters(offset=3) == []
    # Past the precision of a double (2**53), and up to the largest index Redis takes (2**63 - 1).
    for offset, limit in [(2**53 + 1, 1), (2**62, 1000), (2**63 - 1000, 1000), (2**63 - 1, 1)]:
        assert await ch.dead_letters(offset=offset, limit=limit) == [], (offset, limit)


@pytest.mark.parametrize(
    ("offset", "limit", "words"),
    [
        (-1, 10, "offset must be an int >= 0"),
        (0, -1, "limit must be an int >= 0"),
        (True, 10, "offset must be an int"),
        (0, False, "limit must be an int"),
        (1.0, 10, "offset must be an int"),
        ("1", 10, "offset must be an int"),
        (2**63 - 1, 2, "2**63 - 1"),
        (2**63, 0, "2**63 - 1"),
        (2**64, 1, "2**63 - 1"),
    ],
)
async def test_dead_letters_refuses_a_page_outside_the_index_range(
    queue: BrokerQueue, name: str, offset: object, limit: object, words: str
):
    ch = queue.channel(name, int)
    with pytest.raises(ChannelError, match=re.escape(words)) as info:
        await ch.dead_letters(offset=offset, limit=limit)  # type: ignore[arg-type]
    assert info.value.channel == name


async def test_exactly_once_drops_a_duplicate_within_the_window(queue: BrokerQueue, name: str):
    ch = queue.channel(name, User, process=Processing.EXACTLY_ONCE, deduplication_interval="1s")
    first = await ch.produce(User(1, "Peter"))
    second = await ch.produce(User(1, "Peter"))
    other = await ch.produce(User(2, "Paul"))
    assert not first.deduplicated
    assert second.deduplicated and second.id == first.id
    assert not other.deduplicated
    assert (await ch.stats()).waiting == 2

    await until(lambda: _produce_is_new(ch, User(1, "Peter")), timeout=5, what="window to end")
    got: list[User] = []
    consumer = await ch.consume(_collect(got))
    await consumer.wait_idle()
    assert sorted(u.id for u in got) == [1, 1, 2]


async def _produce_is_new(ch, message) -> bool:
    return not (await ch.produce(message)).deduplicated


async def test_window_runs_from_the_first_accepted_produce(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, process=Processing.EXACTLY_ONCE, deduplication_interval="600ms")
    start = time.monotonic()
    assert not (await ch.produce(1)).deduplicated
    results = []
    while time.monotonic() - start < 2:
        results.append(((await ch.produce(1)).deduplicated, time.monotonic() - start))
        await asyncio.sleep(0.05)
    # Repeated duplicates do not extend the window: it ends about 600ms after the first.
    first_new = next(t for dup, t in results if not dup)
    assert 0.55 <= first_new < 1.5


async def test_explicit_hash_is_the_deduplication_key(queue: BrokerQueue, name: str):
    ch = queue.channel(name, User, process=Processing.EXACTLY_ONCE)
    a = await ch.produce(User(1, "Peter"), hash="signup:peter")
    b = await ch.produce(User(2, "Someone else"), hash="signup:peter")
    c = await ch.produce(User(1, "Peter"), hash="signup:other")
    assert not a.deduplicated and b.deduplicated and b.id == a.id and not c.deduplicated


async def test_produce_options_replace_the_channel_options(queue: BrokerQueue, name: str):
    at_least = queue.channel(name + "/alo", int)
    assert not (await at_least.produce(5)).deduplicated
    assert not (await at_least.produce(5)).deduplicated
    once = {"process": Processing.EXACTLY_ONCE, "deduplication_interval": "1m"}
    assert not (await at_least.produce(6, **once)).deduplicated
    assert (await at_least.produce(6, **once)).deduplicated

    exactly = queue.channel(name + "/eo", int, process=Processing.EXACTLY_ONCE)
    assert not (await exactly.produce(9)).deduplicated
    assert (await exactly.produce(9)).deduplicated
    assert not (await exactly.produce(9, process=Processing.AT_LEAST_ONCE)).deduplicated
    with pytest.raises(ChannelError, match=r"needs process=Processing\.EXACTLY_ONCE"):
        await at_least.produce(1, hash="k")
    with pytest.raises(ChannelError, match=r"needs process=Processing\.EXACTLY_ONCE"):
        queue.channel(name + "/bad", int, deduplication_interval="1s")


async def test_exactly_once_defaults_to_a_five_minute_window(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, process=Processing.EXACTLY_ONCE)
    assert ch.options.dedup_ms == 5 * 60 * 1000
    short = queue.channel(name, int, process=Processing.EXACTLY_ONCE, deduplication_interval=0.2)
    assert not (await short.produce(1)).deduplicated
    await until(lambda: _produce_is_new(short, 1), timeout=5, what="short window to end")
    # The same key through the default channel is still held five minutes later than that.
    assert not (await ch.produce(2)).deduplicated
    assert (await ch.produce(2)).deduplicated


async def test_delay_holds_a_message_back(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    got: list[tuple[int, float]] = []
    arrived = asyncio.Event()

    async def handler(n: int) -> None:
        got.append((n, time.monotonic()))
        if n == 1:
            arrived.set()

    consumer = await ch.consume(handler)
    start = time.monotonic()
    await ch.produce(1, delay="400ms")
    await ch.produce(2)
    stats = await ch.stats()
    assert stats.delayed == 1
    await asyncio.wait_for(arrived.wait(), 5)
    order = [n for n, _ in got]
    assert order == [2, 1]
    assert got[1][1] - start >= 0.39
    await consumer.wait_idle()


async def test_priority_orders_waiting_messages_then_first_in_first_out(queue, name):
    ch = queue.channel(name, str)
    await ch.produce("low-1", priority=-5)
    await ch.produce("normal-1")
    await ch.produce("high-1", priority=10)
    await ch.produce("normal-2")
    await ch.produce("high-2", priority=10)
    await ch.produce("top", priority=1000)
    got: list[str] = []
    consumer = await ch.consume(_collect(got), max_parallel=1)
    await consumer.wait_idle()
    assert got == ["top", "high-1", "high-2", "normal-1", "normal-2", "low-1"]
    with pytest.raises(ChannelError, match="priority"):
        await ch.produce("x", priority=1001)


async def test_max_parallel_bounds_the_handlers_running_at_once(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many(range(20))
    occupancy = Occupancy(3)
    gate = asyncio.Event()

    async def handler(n: int) -> None:
        await occupancy.hold(gate)

    consumer = await ch.consume(handler, max_parallel=3)
    await asyncio.wait_for(occupancy.full.wait(), 5)
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting) == (3, 17)  # leased only as many as it can run
    gate.set()
    await consumer.wait_idle()
    assert occupancy.peak == 3
    assert (await ch.stats()).processed == 20


async def test_a_slow_handler_keeps_its_lease_and_runs_once(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, lease="300ms")
    await ch.produce(1)
    runs: list[int] = []
    started = asyncio.Event()

    async def slow(msg: Message[int]) -> None:
        runs.append(msg.tries)
        started.set()
        await asyncio.sleep(1.2)  # the work: four times the lease

    other_runs: list[int] = []
    slow_consumer = await ch.consume(slow)
    await asyncio.wait_for(started.wait(), 5)
    other = await ch.consume(_collect(other_runs))
    await slow_consumer.wait_idle()
    await other.wait_idle()
    assert runs == [1]
    assert other_runs == []
    stats = await ch.stats()
    assert (stats.processed, stats.redelivered, stats.in_flight) == (1, 0, 0)


async def test_a_consumer_that_stops_renewing_loses_the_message_to_another(queue, name):
    ch = queue.channel(name, int, lease="300ms")
    await ch.produce(42)
    adapter = queue.adapter
    # A consumer that leases a message and then dies: it never renews, acks or releases.
    crashed = await adapter.exchange(name, "crashed-consumer", Settlement(), 1, 300, 5)
    assert [d.tries for d in crashed.deliveries] == [1]
    taken = time.monotonic()

    got: list[Message[int]] = []
    arrived = asyncio.Event()

    async def handler(msg: Message[int]) -> None:
        got.append(msg)
        arrived.set()

    consumer = await ch.consume(handler)
    await asyncio.wait_for(arrived.wait(), 5)
    waited = time.monotonic() - taken
    assert 0.25 <= waited < 2.0
    assert [(m.data, m.tries) for m in got] == [(42, 2)]
    await consumer.wait_idle()

    # The dead consumer's late ack and renewal change nothing: the message is not its anymore.
    late = await adapter.exchange(name, "crashed-consumer", Settlement(acks=[got[0].id]), 0, 300, 5)
    assert late.lost == [got[0].id]
    assert await adapter.renew(name, "crashed-consumer", [got[0].id], 300) == [got[0].id]
    stats = await ch.stats()
    assert (stats.processed, stats.redelivered) == (1, 1)


async def test_a_renewal_never_takes_back_a_reclaimed_message(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, lease="200ms")
    await ch.produce(1)
    adapter = queue.adapter
    [first] = (await adapter.exchange(name, "a", Settlement(), 1, 200, 5)).deliveries
    await until(lambda: _lease_expired(adapter, name), timeout=5, what="lease to expire")
    [again] = (await adapter.exchange(name, "b", Settlement(), 1, 10_000, 5)).deliveries
    assert again.id == first.id and again.tries == 2
    assert await adapter.renew(name, "a", [first.id], 10_000) == [first.id]
    assert await adapter.renew(name, "b", [first.id], 10_000) == []
    done = await adapter.exchange(name, "b", Settlement(acks=[first.id]), 0, 10_000, 5)
    assert done.lost == []
    assert (await ch.stats()).processed == 1


async def _lease_expired(adapter, name: str) -> bool:
    # An exchange reaps expired leases; fetching nothing keeps the test in control of who leases.
    await adapter.exchange(name, "reaper", Settlement(), 0, 200, 5)
    return (await adapter.stats(name)).waiting == 1


async def test_close_lets_running_handlers_finish(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many([1, 2])
    both_started = asyncio.Event()
    running: list[int] = []
    finished: list[int] = []

    async def handler(n: int) -> None:
        running.append(n)
        if len(running) == 2:
            both_started.set()
        await asyncio.sleep(0.2)  # the work
        finished.append(n)

    consumer = await ch.consume(handler, max_parallel=2)
    await asyncio.wait_for(both_started.wait(), 5)
    await consumer.close()
    await consumer.close()  # harmless twice
    assert sorted(finished) == [1, 2]
    stats = await ch.stats()
    assert (stats.processed, stats.in_flight, stats.waiting) == (2, 0, 0)


async def test_close_past_the_grace_period_releases_the_message_untried(queue, name):
    ch = queue.channel(name, int)
    await ch.produce(1)
    started = asyncio.Event()

    async def stuck(n: int) -> None:
        started.set()
        await asyncio.Event().wait()

    consumer = await ch.consume(stuck, grace="100ms")
    await asyncio.wait_for(started.wait(), 5)
    await consumer.close()
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting, stats.processed) == (0, 1, 0)
    got: list[Message[int]] = []

    async def handler(msg: Message[int]) -> None:
        got.append(msg)

    again = await ch.consume(handler)
    await again.wait_idle()
    assert [(m.data, m.tries) for m in got] == [(1, 1)]


async def test_many_slots_fill_up_with_waiting_handlers_and_close_releases_them_all(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    await ch.produce_many(range(100))
    occupancy = Occupancy(40)

    async def stuck(n: int) -> None:
        await occupancy.hold(asyncio.Event())  # never set

    # Enough slots that the consumer fetches in halves and shares tasks between handlers.
    consumer = await ch.consume(stuck, max_parallel=40, grace="100ms")
    await asyncio.wait_for(occupancy.full.wait(), 5)
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting) == (40, 60)
    await consumer.close()
    assert occupancy.peak == 40
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting, stats.processed) == (0, 100, 0)
    got: list[Message[int]] = []

    async def handler(msg: Message[int]) -> None:
        got.append(msg)

    again = await ch.consume(handler, max_parallel=40)
    await again.wait_idle()
    await again.close()
    assert sorted(m.data for m in got) == list(range(100))
    assert {m.tries for m in got} == {1}


async def test_handlers_that_wait_and_handlers_that_do_not_share_the_slots(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    await ch.produce_many(range(300))
    done: list[int] = []

    async def handler(n: int) -> None:
        if n % 3 == 0:
            await asyncio.sleep(0)  # every third one gives way, the others never wait
        done.append(n)

    consumer = await ch.consume(handler, max_parallel=50)
    await consumer.wait_idle()
    await consumer.close()
    assert sorted(done) == list(range(300))
    assert (await ch.stats()).processed == 300


async def test_produce_many_keeps_order_and_large_batches(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    results = await ch.produce_many(range(2500))
    assert len(results) == 2500
    got: list[int] = []
    consumer = await ch.consume(_collect(got), max_parallel=1)
    await consumer.wait_idle()
    assert got == list(range(2500))


async def test_channel_options_are_checked(queue: BrokerQueue, name: str):
    with pytest.raises(ChannelError, match="not a duration"):
        queue.channel(name, int, lease="soon")
    with pytest.raises(ChannelError, match="max_attempts"):
        queue.channel(name, int, max_attempts=0)
    with pytest.raises(ChannelError, match="channel name"):
        queue.channel("bad{name}", int)
    ch = queue.channel(name, int)
    with pytest.raises(ChannelError, match="delay"):
        await ch.produce(1, delay=-1)
    for bad in (0, 1001, True):
        with pytest.raises(ValueError, match="max_parallel"):
            await ch.consume(_collect([]), max_parallel=bad)


async def test_stats_count_every_state_and_lag(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, max_attempts=1)
    await ch.produce_many([1, 2, 3])
    await ch.produce(4, delay="1h")
    stats = await ch.stats()
    assert (stats.waiting, stats.delayed, stats.in_flight, stats.dead) == (3, 1, 0, 0)
    assert stats.lag_ms >= 0
    assert name in await queue.channels()
    await ch.purge()
    stats = await ch.stats()
    assert (stats.waiting, stats.delayed, stats.produced) == (0, 0, 0)


async def test_headers_travel_with_exactly_once_messages(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, process=Processing.EXACTLY_ONCE)
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    # Alone, and in one tick with other exactly-once produces (one batch to the broker).
    await ch.produce(1, headers=trace)
    await asyncio.gather(ch.produce(2, headers={"n": "2"}), ch.produce(3), ch.produce(3))
    seen: list[tuple[int, dict[str, str]]] = []

    async def handler(msg: Message[int]) -> None:
        seen.append((msg.data, dict(msg.headers)))

    consumer = await ch.consume(handler)
    await consumer.wait_idle()
    assert sorted(seen) == [(1, trace), (2, {"n": "2"}), (3, {})]


async def test_headers_travel_with_the_message_through_retries(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, retry_backoff="10ms", max_attempts=3)
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    await ch.produce(1, headers=trace, priority=3)
    await ch.produce(2)
    await ch.produce_many([3], headers={"batch": "yes, with spaces"})
    seen: list[tuple[int, int, dict[str, str]]] = []

    async def handler(msg: Message[int]) -> None:
        seen.append((msg.data, msg.tries, dict(msg.headers)))
        if msg.data == 1 and msg.tries == 1:
            raise RuntimeError("once")

    consumer = await ch.consume(handler, max_parallel=1)
    await until(lambda: len(seen) == 4, what="four deliveries")
    await consumer.wait_idle()
    assert sorted(seen) == [
        (1, 1, trace),
        (1, 2, trace),
        (2, 1, {}),
        (3, 1, {"batch": "yes, with spaces"}),
    ]
    with pytest.raises(ChannelError, match="headers"):
        await ch.produce(4, headers={"n": 1})  # type: ignore[dict-item]


async def test_a_closed_queue_refuses_produces_and_consumers_but_not_its_draining_handlers(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    follow_up = queue.channel(f"{name}/follow-up", int)
    await ch.produce(1)
    started = asyncio.Event()
    produced: list[str] = []

    async def handler(n: int) -> None:
        started.set()
        await asyncio.sleep(0.1)  # still running when close() begins
        produced.append((await follow_up.produce(n * 10)).id)

    await ch.consume(handler)
    await asyncio.wait_for(started.wait(), 5)
    await queue.close()
    assert len(produced) == 1  # produced within the grace period, while the queue closed
    with pytest.raises(QueueClosedError, match="closed"):
        await ch.produce(2)
    with pytest.raises(QueueClosedError):
        await ch.produce_many([3])
    with pytest.raises(QueueClosedError):
        await ch.consume(_collect([]))
