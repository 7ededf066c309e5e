"""``BrokerQueue``: channel options checked once, and what ``close`` waits for and stops."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from brokerq import BrokerQueue, ChannelError, ChannelOptions, ConsumerState, Processing
from brokerq.memory import MemoryAdapter


def test_channel_options_are_checked_once_and_kept_with_their_durations_in_ms() -> None:
    queue = BrokerQueue(MemoryAdapter())
    ch = queue.channel(
        "orders", int, process=Processing.EXACTLY_ONCE, deduplication_interval="2s",
        lease=timedelta(seconds=3), max_attempts=7, retry_backoff=0.5, max_retry_backoff="1m",
    )  # fmt: skip
    options = ch.options
    assert options == ChannelOptions(
        process=Processing.EXACTLY_ONCE, deduplication_interval="2s",
        lease=timedelta(seconds=3), max_attempts=7, retry_backoff=0.5, max_retry_backoff="1m",
    )  # fmt: skip
    assert (options.dedup_ms, options.lease_ms, options.max_attempts) == (2000, 3000, 7)
    assert (options.retry_backoff_ms, options.max_retry_backoff_ms) == (500, 60_000)
    defaults = queue.channel("plain", int).options
    assert (defaults.dedup_ms, defaults.lease_ms, defaults.retry_backoff_ms) == (0, 30_000, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lease_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"lease": "50ms"}, "lease must be at least 100ms"),
        ({"lease": "soon"}, "lease 'soon' is not a duration"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_attempts": True}, "max_attempts must be an int >= 1"),
        ({"retry_backoff": -1}, "retry_backoff must not be negative"),
        ({"max_retry_backoff": []}, "max_retry_backoff must be a str, number or timedelta"),
        ({"deduplication_interval": "1s"}, "needs process=Processing.EXACTLY_ONCE"),
        ({"process": "exactly_once"}, "process must be a Processing"),
        (
            {"process": Processing.EXACTLY_ONCE, "deduplication_interval": 0},
            "deduplication_interval must be at least 1ms",
        ),
    ],
)
def test_a_bad_channel_option_is_refused_naming_the_channel(
    options: dict[str, object], words: str
) -> None:
    queue = BrokerQueue(MemoryAdapter())
    with pytest.raises(ChannelError, match=words) as info:
        queue.channel("orders", int, **options)  # type: ignore[arg-type]
    assert info.value.channel == "orders"
    assert str(info.value).startswith("channel 'orders': ")
    with pytest.raises(ChannelError, match=words) as info:
        ChannelOptions(**options)  # type: ignore[arg-type]
    assert info.value.channel is None


async def test_close_stops_what_registered_and_waits_for_what_is_tracked() -> None:
    queue = BrokerQueue(MemoryAdapter())
    ch = queue.channel("orders", int)

    async def handler(n: int) -> None:
        pass

    consumer = await ch.consume(handler)

    class Closeable:
        closed = 0

        async def close(self) -> None:
            self.closed += 1

    kept, forgotten = Closeable(), Closeable()
    queue.register(kept)
    queue.register(forgotten)
    queue.unregister(forgotten)
    queue.unregister(forgotten)  # harmless when not registered
    step_done = asyncio.Event()

    async def step() -> None:
        await asyncio.sleep(0)
        step_done.set()

    queue.track(asyncio.ensure_future(step()))
    await queue.close()
    assert consumer.state is ConsumerState.STOPPED
    assert (kept.closed, forgotten.closed) == (1, 0)
    assert step_done.is_set()
    assert queue.closed


async def test_a_consumer_that_stopped_is_not_closed_again_by_the_queue() -> None:
    queue = BrokerQueue(MemoryAdapter())
    ch = queue.channel("orders", int)

    async def handler(n: int) -> None:
        pass

    consumer = await ch.consume(handler)
    await consumer.close()
    closes: list[object] = []
    original = consumer.close

    async def counting_close(grace: object = None) -> None:
        closes.append(grace)
        await original()

    consumer.close = counting_close  # type: ignore[method-assign]
    await queue.close()
    assert closes == []  # it unregistered when it stopped
