"""The entry point: a queue on one adapter, holding its channels and consumers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .channel import Channel
from .options import Duration, Processing, check_channel_name

if TYPE_CHECKING:
    from .adapter import Adapter
    from .consumer import Consumer

__all__ = ["BrokerQueue"]

T = TypeVar("T")


class BrokerQueue:
    """``BrokerQueue(RedisAdapter(url))``: declare channels with ``channel``; ``close`` stops
    this queue's consumers gracefully, then the adapter, and sets ``closed``."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._consumers: set[Consumer[Any]] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._closing = False
        # Set once consumers and pending produces are done: a handler still finishing within
        # its grace period may produce, a caller after close may not.
        self.closed = False

    @overload
    def channel(
        self,
        name: str,
        type_: type[T],
        *,
        process: Processing = ...,
        deduplication_interval: Duration | None = ...,
        lease: Duration = ...,
        max_attempts: int = ...,
        retry_backoff: Duration = ...,
        max_retry_backoff: Duration = ...,
    ) -> Channel[T]: ...

    @overload
    def channel(
        self,
        name: str,
        type_: Any,
        *,
        process: Processing = ...,
        deduplication_interval: Duration | None = ...,
        lease: Duration = ...,
        max_attempts: int = ...,
        retry_backoff: Duration = ...,
        max_retry_backoff: Duration = ...,
    ) -> Channel[Any]: ...

    def channel(
        self,
        name: str,
        type_: Any,
        *,
        process: Processing = Processing.AT_LEAST_ONCE,
        deduplication_interval: Duration | None = None,
        lease: Duration = "30s",
        max_attempts: int = 5,
        retry_backoff: Duration = "1s",
        max_retry_backoff: Duration = "5m",
    ) -> Channel[Any]:
        """Declare a channel: a name and the type of its messages, plus its options.

        Declare it once in a module that producers and workers both import.
        """
        check_channel_name(name)
        return Channel(
            self,
            name,
            type_,
            process=process,
            deduplication_interval=deduplication_interval,
            lease=lease,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            max_retry_backoff=max_retry_backoff,
        )

    async def channels(self) -> list[str]:
        """Names of the channels the broker holds messages or counters for."""
        return await self.adapter.channels()

    def _track(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
