"""What the queue's parts know of each other: small protocols, so that the queue, its channels,
their consumers and the metrics depend on these and not on each other's modules (no import
circle: ``queue`` makes channels, a channel starts consumers, and neither looks back up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable

    from .adapter import Adapter
    from .codec import Codec
    from .messages import ChannelStats
    from .options import ChannelOptions

__all__ = ["ChannelHandle", "Closeable", "QueueHandle"]

T = TypeVar("T")


class Closeable(Protocol):
    """What a queue closes with itself: a consumer, or anything stopped by ``await close()``."""

    async def close(self) -> None: ...


class QueueHandle(Protocol):
    """A ``BrokerQueue`` as its channels, consumers and metrics use it."""

    @property
    def adapter(self) -> Adapter: ...

    @property
    def closed(self) -> bool: ...

    def register(self, consumer: Closeable) -> None: ...

    def unregister(self, consumer: Closeable) -> None: ...

    def track(self, task: asyncio.Future[None]) -> None: ...

    async def channels(self) -> list[str]: ...

    async def channel_stats(self, names: Iterable[str] | None = None) -> list[ChannelStats]: ...


class ChannelHandle(Protocol[T]):
    """A ``Channel`` as its consumers use it."""

    @property
    def name(self) -> str: ...

    @property
    def codec(self) -> Codec[T]: ...

    @property
    def options(self) -> ChannelOptions: ...

    @property
    def adapter(self) -> Adapter:
        """What the consumers take messages from (the queue's adapter, or the channel's shards
        over it)."""
        ...

    @property
    def queue(self) -> QueueHandle: ...
