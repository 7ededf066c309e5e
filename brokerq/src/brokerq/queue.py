"""The entry point: a queue on one adapter, holding its channels and consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from .channel import Channel
from .errors import ChannelError
from .handles import Closeable
from .options import ChannelOptions, ChannelOptionsDict, check_channel_name
from .shards import add_stats, base_name, is_shard_name

if TYPE_CHECKING:
    from .adapter import Adapter
    from .messages import ChannelStats

__all__ = ["BrokerQueue", "Closeable"]

T = TypeVar("T")


class BrokerQueue:
    """``BrokerQueue(RedisAdapter(url))``: declare channels with ``channel``; ``close`` stops
    this queue's consumers gracefully, then the adapter, and sets ``closed``."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._consumers: set[Closeable] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closing = False
        # Set once consumers and pending produces are done: a handler still finishing within
        # its grace period may produce, a caller after close may not.
        self.closed = False

    @overload
    def channel(
        self, name: str, type_: type[T], **options: Unpack[ChannelOptionsDict]
    ) -> Channel[T]: ...

    @overload
    def channel(
        self, name: str, type_: Any, **options: Unpack[ChannelOptionsDict]
    ) -> Channel[Any]: ...

    def channel(self, name: str, type_: Any, **options: Unpack[ChannelOptionsDict]) -> Channel[Any]:
        """Declare a channel: a name and the type of its messages, plus its options (the fields
        of ``ChannelOptions``: ``process``, ``deduplication_interval``, ``lease``,
        ``max_attempts``, ``retry_backoff``, ``max_retry_backoff``, ``shards``,
        ``partition_key``).

        Declare it once in a module that producers and workers both import. A name may not end
        in ``#<digits>`` (or ``#<digits>.<digits>``): that is how shards are named.
        """
        check_channel_name(name)
        if is_shard_name(name):
            raise ChannelError("a name ending in '#<digits>' is a shard's", channel=name)
        try:
            checked = ChannelOptions(**options)
        except ChannelError as exc:
            raise ChannelError(str(exc), channel=name) from None
        return Channel(self, name, type_, checked)

    async def channels(self) -> list[str]:
        """Names of the channels the broker holds messages or counters for; a sharded channel
        once, by its name."""
        return sorted({base_name(name) for name in await self.adapter.channels()})

    async def channel_stats(self, names: Iterable[str] | None = None) -> list[ChannelStats]:
        """The counts of every channel (or of those named), each channel's shards added up:
        every shard the broker holds for it, whatever shard count it is declared with now."""
        stored: dict[str, list[str]] = {}
        for name in await self.adapter.channels():
            stored.setdefault(base_name(name), []).append(name)
        wanted = sorted(stored) if names is None else list(names)
        found = []
        for name in wanted:
            parts = [await self.adapter.stats(s) for s in stored.get(name, [name])]
            found.append(parts[0] if len(parts) == 1 else add_stats(name, parts))
        return found

    # -- what close waits for ------------------------------------------------------------------

    def track(self, task: asyncio.Future[Any]) -> None:
        """Have ``close`` wait for ``task``, work already under way (a produce on its way to the
        broker); the queue forgets it once it is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def register(self, consumer: Closeable) -> None:
        """Have ``close`` stop ``consumer`` (``await consumer.close()``) before the adapter
        closes. A ``Consumer`` registers itself when it starts and unregisters when it stops."""
        self._consumers.add(consumer)

    def unregister(self, consumer: Closeable) -> None:
        """Forget a consumer that stopped on its own; harmless if it was not registered."""
        self._consumers.discard(consumer)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await asyncio.gather(*(c.close() for c in list(self._consumers)))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.closed = True
        await self.adapter.close()

    async def __aenter__(self) -> BrokerQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
