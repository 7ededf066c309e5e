"""The batch consumer (``Channel.consume_batch``), checked against every adapter.

tests/brokerq/bullmq/test_contract_bullmq.py runs these on the BullMQ engine as well.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from brokerq import BrokerQueue, ChannelError, Message

from .conftest import User, until
from .test_contract import Occupancy


def _collect(into: list[list[Message[int]]], arrived: asyncio.Event | None = None):
    async def handler(batch: list[Message[int]]) -> None:
        into.append(batch)
        if arrived is not None:
            arrived.set()

    return handler


def _data(batches: list[list[Message[int]]]) -> list[list[int]]:
    return [[m.data for m in batch] for batch in batches]


async def _dead(ch, n: int) -> bool:
    return (await ch.stats()).dead == n


async def test_a_batch_handler_gets_lists_of_envelopes_and_returning_marks_them_done(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, User)
    produced = await ch.produce_many([User(i, f"u{i}") for i in range(25)])
    batches: list[list[Message[User]]] = []

    async def handler(batch: list[Message[User]]) -> None:
        batches.append(batch)

    consumer = await ch.consume_batch(handler, max_batch=10)
    await consumer.wait_idle()
    assert len(batches[0]) == 10  # all 25 were waiting: the first batch is full
    assert all(1 <= len(batch) <= 10 for batch in batches)
    got = [m for batch in batches for m in batch]
    assert sorted(m.data.id for m in got) == list(range(25))
    assert {m.id for m in got} == {r.id for r in produced}
    assert all(isinstance(m.data, User) for m in got)
    assert {(m.tries, m.channel) for m in got} == {(1, name)}
    stats = await ch.stats()
    assert (stats.processed, stats.in_flight, stats.waiting, stats.retried) == (25, 0, 0, 0)


async def test_each_message_of_a_batch_is_done_or_retried_on_its_own(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int, max_attempts=3, retry_backoff="100ms")
    await ch.produce_many(range(6))
    seen: list[tuple[int, int, float]] = []
    last_try = asyncio.Event()

    async def handler(batch: list[Message[int]]) -> dict[str, Exception]:
        failures: dict[str, Exception] = {}
        for m in batch:
            seen.append((m.data, m.tries, time.monotonic()))
            if m.data == 3:
                failures[m.id] = ValueError(f"{m.data} is the odd one out")
                if m.tries == 3:
                    last_try.set()
        return failures

    consumer = await ch.consume_batch(handler, max_batch=6)
    await asyncio.wait_for(last_try.wait(), 10)
    await until(lambda: _dead(ch, 1), what="the dead letter")
    await consumer.wait_idle()
    # The neighbours were done on their first try, in the batch where 3 failed.
    assert sorted((n, tries) for n, tries, _ in seen if n != 3) == [(n, 1) for n in (0, 1, 2, 4, 5)]
    three = [(tries, at) for n, tries, at in seen if n == 3]
    assert [tries for tries, _ in three] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(three)]
    # Exponential backoff with equal jitter: at least half of 100ms, then of 200ms.
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    [letter] = await ch.dead_letters()
    assert (letter.data, letter.tries) == (3, 3)
    assert letter.error == "ValueError: 3 is the odd one out"
    stats = await ch.stats()
    assert (stats.processed, stats.retried, stats.dead_lettered, stats.dead) == (5, 2, 1, 1)


async def test_a_batch_handler_that_raises_retries_every_message_of_its_batch(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int, max_attempts=2, retry_backoff="10ms")
    await ch.produce_many([1, 2, 3])
    seen: list[tuple[int, int]] = []

    async def handler(batch: list[Message[int]]) -> None:
        seen.extend((m.data, m.tries) for m in batch)
        if any(m.tries == 1 for m in batch):
            raise RuntimeError("the database went away")

    consumer = await ch.consume_batch(handler, max_batch=3)
    await until(lambda: len(seen) == 6, what="every message delivered again")
    await consumer.wait_idle()
    assert seen[:3] == [(1, 1), (2, 1), (3, 1)]  # one batch
    assert sorted(seen[3:]) == [(1, 2), (2, 2), (3, 2)]
    stats = await ch.stats()
    assert (stats.processed, stats.retried, stats.dead) == (3, 3, 0)


@pytest.mark.parametrize(
    ("returned", "words"),
    [
        ({"no-such-id": ValueError("x")}, "ids not in its batch: ['no-such-id']"),
        (["a list"], "returns None or a mapping of message id to exception, not list"),
    ],
)
async def test_a_batch_handler_that_returns_something_else_fails_its_whole_batch(
    queue: BrokerQueue, name: str, returned: object, words: str
):
    ch = queue.channel(name, int, max_attempts=1)
    await ch.produce_many([1, 2])

    async def handler(batch: list[Message[int]]) -> object:
        return returned

    consumer = await ch.consume_batch(handler, max_batch=2)  # type: ignore[arg-type]
    await until(lambda: _dead(ch, 2), what="both dead letters")
    await consumer.wait_idle()
    letters = await ch.dead_letters()
    assert sorted(letter.data for letter in letters) == [1, 2]
    for letter in letters:
        assert words in letter.error, letter.error
    assert (await ch.stats()).processed == 0


async def test_undecodable_messages_go_to_the_dead_letters_without_reaching_the_handler(
    queue: BrokerQueue, name: str
):
    loose = queue.channel(name, dict)
    strict = queue.channel(name, User)
    await strict.produce(User(1, "first"))
    await loose.produce({"id": "not-an-int"})
    await strict.produce(User(2, "second"))
    batches: list[list[Message[User]]] = []

    async def handler(batch: list[Message[User]]) -> None:
        batches.append(batch)

    consumer = await strict.consume_batch(handler, max_batch=10)
    await consumer.wait_idle()
    assert sorted(m.data.id for batch in batches for m in batch) == [1, 2]
    [dead] = await strict.dead_letters()
    assert (dead.payload, dead.data, dead.tries) == (b'{"id":"not-an-int"}', None, 1)
    assert dead.error.startswith("undecodable payload"), dead.error

    # A batch of nothing but undecodable messages never calls the handler.
    calls = len(batches)
    await loose.produce({"id": "still not"})
    await until(lambda: _dead(strict, 2), what="the second dead letter")
    await consumer.wait_idle()
    assert len(batches) == calls
    stats = await strict.stats()
    assert (stats.processed, stats.dead, stats.in_flight, stats.waiting) == (2, 2, 0, 0)


async def test_a_slow_batch_handler_keeps_the_leases_of_its_whole_batch(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int, lease="300ms")
    await ch.produce_many([1, 2, 3])
    runs: list[list[tuple[int, int]]] = []
    started = asyncio.Event()

    async def slow(batch: list[Message[int]]) -> None:
        runs.append([(m.data, m.tries) for m in batch])
        started.set()
        await asyncio.sleep(1.2)  # the work: four times the lease

    slow_consumer = await ch.consume_batch(slow, max_batch=3)
    await asyncio.wait_for(started.wait(), 5)
    other_runs: list[int] = []

    async def other_handler(n: int) -> None:
        other_runs.append(n)

    other = await ch.consume(other_handler)
    await slow_consumer.wait_idle()
    await other.wait_idle()
    assert runs == [[(1, 1), (2, 1), (3, 1)]]
    assert other_runs == []
    stats = await ch.stats()
    assert (stats.processed, stats.redelivered, stats.in_flight) == (3, 0, 0)


async def test_max_parallel_bounds_the_batches_handled_at_once(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many(range(20))
    occupancy = Occupancy(2)
    gate = asyncio.Event()
    sizes: list[int] = []

    async def handler(batch: list[Message[int]]) -> None:
        sizes.append(len(batch))
        await occupancy.hold(gate)

    consumer = await ch.consume_batch(handler, max_batch=3, max_parallel=2)
    await asyncio.wait_for(occupancy.full.wait(), 5)
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting) == (6, 14)  # leased what two batches hold
    assert sizes == [3, 3]
    gate.set()
    await consumer.wait_idle()
    assert occupancy.peak == 2
    assert (await ch.stats()).processed == 20


async def test_an_idle_message_is_handled_at_once_without_max_wait(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    batches: list[list[Message[int]]] = []
    arrived = asyncio.Event()
    consumer = await ch.consume_batch(_collect(batches, arrived), max_batch=100)
    await ch.produce(7)
    await asyncio.wait_for(arrived.wait(), 5)
    assert _data(batches) == [[7]]
    await consumer.wait_idle()


async def test_max_wait_bounds_how_long_a_partial_batch_waits_on_an_idle_queue(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    handled: list[tuple[list[int], float]] = []
    arrived = asyncio.Event()

    async def handler(batch: list[Message[int]]) -> None:
        handled.append(([m.data for m in batch], time.monotonic()))
        arrived.set()

    consumer = await ch.consume_batch(handler, max_batch=100, max_wait="300ms")
    produced = time.monotonic()
    await ch.produce(7)
    await asyncio.wait_for(arrived.wait(), 5)
    [(data, at)] = handled
    assert data == [7]
    assert at - produced >= 0.29  # it waited for company, and no longer than the test's 5 s
    await consumer.wait_idle()


async def test_a_partial_batch_gathers_the_messages_that_arrive_within_max_wait(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    batches: list[list[Message[int]]] = []
    arrived = asyncio.Event()
    consumer = await ch.consume_batch(_collect(batches, arrived), max_batch=3, max_wait="30s")
    await ch.produce(1)
    await until(lambda: consumer.in_flight == 1, what="the first message leased")
    await ch.produce(2)
    await ch.produce(3)
    # Full, the batch goes at once, not when the 30 s are up.
    await asyncio.wait_for(arrived.wait(), 10)
    assert _data(batches) == [[1, 2, 3]]
    await consumer.wait_idle()


async def test_close_lets_running_batches_finish(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many([1, 2, 3, 4])
    started: list[int] = []
    both_started = asyncio.Event()
    finished: list[int] = []

    async def handler(batch: list[Message[int]]) -> None:
        started.append(len(batch))
        if len(started) == 2:
            both_started.set()
        await asyncio.sleep(0.2)  # the work
        finished.extend(m.data for m in batch)

    consumer = await ch.consume_batch(handler, max_batch=2, max_parallel=2)
    await asyncio.wait_for(both_started.wait(), 5)
    await consumer.close()
    await consumer.close()  # harmless twice
    assert sorted(finished) == [1, 2, 3, 4]
    stats = await ch.stats()
    assert (stats.processed, stats.in_flight, stats.waiting) == (4, 0, 0)


async def test_close_hands_a_gathering_batch_to_its_handler_at_once(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    batches: list[list[Message[int]]] = []
    consumer = await ch.consume_batch(_collect(batches), max_batch=10, max_wait="1h", grace="2s")
    await ch.produce(1)
    await until(lambda: consumer.in_flight == 1, what="the message leased")
    # Were the batch still gathering, the grace period would end and release it unhandled.
    await consumer.close()
    assert _data(batches) == [[1]]
    stats = await ch.stats()
    assert (stats.processed, stats.in_flight, stats.waiting) == (1, 0, 0)


async def test_close_past_the_grace_period_releases_the_batch_untried(
    queue: BrokerQueue, name: str
):
    ch = queue.channel(name, int)
    await ch.produce_many([1, 2])
    started = asyncio.Event()

    async def stuck(batch: list[Message[int]]) -> None:
        started.set()
        await asyncio.Event().wait()

    consumer = await ch.consume_batch(stuck, max_batch=2, grace="100ms")
    await asyncio.wait_for(started.wait(), 5)
    await consumer.close()
    stats = await ch.stats()
    assert (stats.in_flight, stats.waiting, stats.processed) == (0, 2, 0)
    batches: list[list[Message[int]]] = []
    again = await ch.consume_batch(_collect(batches), max_batch=2)
    await again.wait_idle()
    assert sorted((m.data, m.tries) for batch in batches for m in batch) == [(1, 1), (2, 1)]


async def test_sync_batch_handlers_run_in_a_thread(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    await ch.produce_many([1, 2, 3])
    got: list[int] = []
    threads: set[int] = set()

    def handler(batch: list[Message[int]]) -> None:
        threads.add(threading.get_ident())
        got.extend(m.data for m in batch)

    consumer = await ch.consume_batch(handler, max_batch=10)
    await consumer.wait_idle()
    assert sorted(got) == [1, 2, 3]
    assert threading.get_ident() not in threads


async def test_batch_consumer_arguments_are_checked(queue: BrokerQueue, name: str):
    ch = queue.channel(name, int)
    handler = _collect([])
    for bad in (0, 1001, True, 2.0):
        with pytest.raises(ValueError, match="max_batch must be an int from 1 to 1000"):
            await ch.consume_batch(handler, max_batch=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_parallel must be an int from 1 to 1000"):
            await ch.consume_batch(handler, max_parallel=bad)  # type: ignore[arg-type]
    for wait in (-1, "soon"):
        with pytest.raises(ChannelError, match="max_wait"):
            await ch.consume_batch(handler, max_wait=wait)
