"""A typed channel: validates and encodes messages, coalesces produces, starts consumers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from .adapter import Adapter, Outgoing
from .codec import DECODE_ERRORS, ENCODE_ERRORS, codec_for
from .consumer import BatchConsumer, BatchHandler, Consumer, Handler
from .errors import ChannelError, MessageTypeError, QueueClosedError
from .handles import QueueHandle
from .messages import ChannelStats, DeadLetter, ProduceResult
from .metrics import DEDUPLICATED, PRODUCED
from .options import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    ChannelOptions,
    Duration,
    PartitionKey,
    Processing,
    dedup_window_ms,
    duration_ms,
)
from .shards import ShardedAdapter, partition

__all__ = ["Channel"]

T = TypeVar("T")

# One Lua call stores at most this many messages, so no call holds Redis for long.
MAX_BATCH = 1000
# A tick's produces are sent in two halves once there are at least twice this many (measured with
# 100 producers: at-least-once +11%, exactly-once +46%; four parts or halves of 25 did worse).
SPLIT_MIN = 32
MAX_HEADERS_BYTES = 8192
# The largest index of a sorted set that Redis takes (a signed 64-bit integer).
MAX_INDEX = 2**63 - 1


class Channel(Generic[T]):
    """Messages of one type under one name; create with ``BrokerQueue.channel``."""

    def __init__(self, queue: QueueHandle, name: str, type_: Any, options: ChannelOptions) -> None:
        self.queue = queue
        self.name = name
        self.type = type_
        self.options = options
        self.codec = codec_for(type_)
        self.adapter: Adapter = queue.adapter
        """What the channel and its consumers store to and take from: the queue's adapter, or
        for a sharded channel a ``ShardedAdapter`` over it."""
        if options.shards > 1:
            self.adapter = ShardedAdapter(queue, name, options.shards)
        self._adapter = self.adapter
        self._next_shard = 0
        """The shard of the next message that has no key to choose one (round robin)."""
        self._produced = PRODUCED.labels(name)
        self._deduplicated = DEDUPLICATED.labels(name)
        self._pending: list[tuple[Outgoing, asyncio.Future[ProduceResult]]] = []
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {getattr(self.type, '__name__', self.type)!r})"

    # -- producing ---------------------------------------------------------------------------

    def _outgoing(
        self,
        message: T,
        hash: str | bytes | None,
        delay: Duration | None,
        priority: int | None,
        process: Processing | None,
        deduplication_interval: Duration | None,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Outgoing:
        if options is not None and not getattr(self._adapter, "accepts_options", False):
            raise ChannelError(
                f"options= is for engines with per-message options; "
                f"{type(self._adapter).__name__} has none",
                channel=self.name,
            )
        payload = self._encode(message)
        dedup_ms = self.options.dedup_ms
        if process is not None or deduplication_interval is not None:
            mode = self.options.process if process is None else process
            try:
                dedup_ms = dedup_window_ms(mode, deduplication_interval)
            except ChannelError as exc:
                raise ChannelError(str(exc), channel=self.name) from None
        dedup_key = None
        if dedup_ms:
            if hash is None:
                dedup_key = _content_key(payload)
            else:
                dedup_key = "k:" + (hash.hex() if isinstance(hash, bytes) else str(hash))
        elif hash is not None:
            raise ChannelError(
                "a deduplication hash needs process=Processing.EXACTLY_ONCE", channel=self.name
            )
        delay_ms = 0 if delay is None else duration_ms(delay, what="delay")
        prio = 0 if priority is None else priority
        if (
            isinstance(prio, bool)
            or not isinstance(prio, int)
            or not (PRIORITY_MIN <= prio <= PRIORITY_MAX)
        ):
            raise ChannelError(
                f"priority must be an int in [{PRIORITY_MIN}, {PRIORITY_MAX}], got {priority!r}",
                channel=self.name,
            )
        return Outgoing(
            payload, prio, delay_ms, dedup_key, dedup_ms, options, self._headers(headers)
        )

    def _encode(self, message: T) -> bytes:
        try:
            return self.codec.encode(message)
        except ENCODE_ERRORS as exc:
            raise MessageTypeError(
                f"message does not fit {getattr(self.type, '__name__', self.type)}: {exc}",
                channel=self.name,
            ) from exc

    def _plain_outgoing(self, message: T) -> Outgoing:
        """``_outgoing`` with every produce option left to the channel."""
        payload = self._encode(message)
        dedup_ms = self.options.dedup_ms
        if not dedup_ms:
            return Outgoing(payload)
        return Outgoing(payload, 0, 0, _content_key(payload), dedup_ms)

    def _headers(self, headers: Mapping[str, str] | None) -> bytes | None:
        if not headers:
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ChannelError("headers must map str to str", channel=self.name)
        encoded = msgspec.json.encode(dict(headers))
        if len(encoded) > MAX_HEADERS_BYTES:
            raise ChannelError(
                f"headers take {len(encoded)} bytes as JSON; at most {MAX_HEADERS_BYTES}",
                channel=self.name,
            )
        return encoded

    async def produce(
        self,
        message: T,
        *,
        key: PartitionKey | None = None,
        hash: str | bytes | None = None,
        delay: Duration | None = None,
        priority: int | None = None,
        process: Processing | None = None,
        deduplication_interval: Duration | None = None,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProduceResult:
        """Store one message; returns once the broker has it.

        Produces issued in the same event-loop tick travel together in one round trip.
        Options given here replace the channel's for this message. ``options`` are the
        engine's own per-message options (BullMQ job options on ``BullMQAdapter``).
        ``headers`` travel with the message to ``Message.headers`` (e.g. a trace context).
        ``key`` is the partition key on a sharded channel (else the channel's
        ``partition_key`` of the message): messages with the same key keep their order.
        """
        self._check_open()
        if (
            hash is None
            and delay is None
            and priority is None
            and process is None
            and deduplication_interval is None
            and options is None
            and headers is None
        ):
            item = self._plain_outgoing(message)  # the common case, at a fraction of the cost
        else:
            item = self._outgoing(
                message, hash, delay, priority, process, deduplication_interval, options, headers
            )
        if key is not None or self.options.shards > 1:
            self._route(item, message, key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProduceResult] = loop.create_future()
        self._pending.append((item, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _route(self, item: Outgoing, message: T, key: PartitionKey | None) -> None:
        """Choose the message's shard: by its key, else by its exactly-once key (so that a
        duplicate meets its original), else the next shard in turn."""
        shards = self.options.shards
        if key is None and shards > 1 and self.options.partition_key is not None:
            key = self.options.partition_key(message)
        if key is not None:
            try:
                item.shard = partition(key, shards)
            except ChannelError as exc:
                raise ChannelError(str(exc), channel=self.name) from None
        elif item.dedup_key is not None:
            item.shard = partition(item.dedup_key, shards)
        else:
            item.shard = self._next_shard
            self._next_shard = (self._next_shard + 1) % shards

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if self.options.shards > 1:
            task = asyncio.ensure_future(self._store_shards(pending))
            self.queue.track(task)
            return
        size = MAX_BATCH
        if len(pending) >= 2 * SPLIT_MIN:
            # Two round trips instead of one: Redis runs the first half while this process packs
            # the second, and the first half's producers go on while Redis runs the second. The
            # halves then stay apart, so client and server overlap instead of taking turns.
            size = min(MAX_BATCH, (len(pending) + 1) // 2)
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            task = asyncio.ensure_future(self._store(batch))
            self.queue.track(task)

    async def _store(self, batch: list[tuple[Outgoing, asyncio.Future[ProduceResult]]]) -> None:
        try:
            results = await self._adapter.produce(self.name, [item for item, _ in batch])
        except BaseException as exc:
            self._answer(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._answer(batch, results)

    async def _store_shards(
        self, pending: list[tuple[Outgoing, asyncio.Future[ProduceResult]]]
    ) -> None:
        """A tick's produces, a call per shard, all at once and answered together.

        Answered shard by shard, the producers would go on in different ticks, and their next
        produces would travel in ever smaller batches. A shard that fails fails only its own.
        """
        by_shard: dict[int, list[tuple[Outgoing, asyncio.Future[ProduceResult]]]] = {}
        for entry in pending:
            by_shard.setdefault(entry[0].shard, []).append(entry)
        batches = [
            entries[start : start + MAX_BATCH]
            for entries in by_shard.values()
            for start in range(0, len(entries), MAX_BATCH)
        ]
        outcomes = await asyncio.gather(
            *(self._adapter.produce(self.name, [item for item, _ in b]) for b in batches),
            return_exceptions=True,
        )
        for batch, outcome in zip(batches, outcomes, strict=True):
            self._answer(batch, outcome)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome

    def _answer(
        self,
        batch: list[tuple[Outgoing, asyncio.Future[ProduceResult]]],
        outcome: list[tuple[str, bool]] | BaseException,
    ) -> None:
        if isinstance(outcome, BaseException):
            for _, future in batch:
                if not future.done():
                    future.set_exception(outcome)
            return
        duplicates = 0
        for (_, future), (id_, duplicate) in zip(batch, outcome, strict=True):
            duplicates += duplicate
            if not future.done():
                future.set_result(ProduceResult(id_, duplicate))
        self._count(len(outcome), duplicates)

    def _count(self, total: int, duplicates: int) -> None:
        if total > duplicates:
            self._produced.inc(total - duplicates)
        if duplicates:
            self._deduplicated.inc(duplicates)

    async def produce_many(
        self,
        messages: Iterable[T],
        *,
        key: PartitionKey | Callable[[T], PartitionKey] | None = None,
        delay: Duration | None = None,
        priority: int | None = None,
        process: Processing | None = None,
        deduplication_interval: Duration | None = None,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[ProduceResult]:
        """Store many messages in order, in as few round trips as possible.

        Every message is validated before anything is written; exactly-once dedup uses each
        message's own content hash. ``key`` is one partition key for every message, or a
        function giving each message's (see ``produce``); the order given holds per shard.
        """
        self._check_open()
        items = []
        for m in messages:
            item = self._outgoing(
                m, None, delay, priority, process, deduplication_interval, options, headers
            )
            if key is not None or self.options.shards > 1:
                self._route(item, m, key(m) if callable(key) else key)
            items.append(item)
        results: list[ProduceResult] = []
        for start in range(0, len(items), MAX_BATCH):
            stored = await self._adapter.produce(self.name, items[start : start + MAX_BATCH])
            results.extend(ProduceResult(id_, dup) for id_, dup in stored)
            self._count(len(stored), sum(dup for _, dup in stored))
        return results

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        handler: Handler[T],
        *,
        max_parallel: int = 10,
        envelope: bool | None = None,
        grace: Duration = "30s",
    ) -> Consumer[T]:
        """Start a consumer in the background and return it at once.

        The handler receives the decoded message, or the ``Message`` envelope when its first
        parameter is annotated ``Message[...]`` (or ``envelope=True``). Returning marks the
        message done; raising retries it with exponential backoff, and after ``max_attempts``
        it goes to the dead letters.
        """
        self._check_open()
        consumer = Consumer(
            self, handler, max_parallel=max_parallel, envelope=envelope, grace=grace
        )
        await consumer.start()
        return consumer

    async def consume_batch(
        self,
        handler: BatchHandler[T],
        *,
        max_batch: int = 100,
        max_wait: Duration = 0,
        max_parallel: int = 1,
        grace: Duration = "30s",
    ) -> Consumer[T]:
        """Start a consumer that hands the handler lists of ``Message`` envelopes, and return it.

        Each message of a batch is settled on its own: the handler returns None (every message
        done) or a mapping of message id to exception for the messages that failed; those are
        retried with backoff (dead letters after ``max_attempts``), the others are done. A
        handler that raises retries every message of its batch. Messages that do not decode go
        to the dead letters without reaching the handler.

        A batch holds up to ``max_batch`` messages; with ``max_wait`` 0 (the default) it holds
        what has arrived when a handler is free, so batches grow under load and an idle message
        is handled at once; a larger ``max_wait`` lets a batch that is not full wait that long
        for more. Up to ``max_parallel`` batches are handled at once, so the consumer leases up
        to ``max_parallel * max_batch`` messages.
        """
        self._check_open()
        consumer = BatchConsumer(
            self, handler, max_batch=max_batch, max_wait=max_wait, max_parallel=max_parallel,
            grace=grace,
        )  # fmt: skip
        await consumer.start()
        return consumer

    def _check_open(self) -> None:
        if self.queue.closed:
            raise QueueClosedError(f"channel {self.name!r}: its queue is closed")

    # -- inspecting --------------------------------------------------------------------------

    async def stats(self) -> ChannelStats:
        return await self._adapter.stats(self.name)

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[DeadLetter[T]]:
        """Up to ``limit`` dead letters from position ``offset``, the oldest first.

        Raises ``ChannelError`` unless both are ints >= 0 and the page's indexes, ``offset`` to
        ``offset + limit - 1``, are at most ``2**63 - 1`` (Redis's signed 64-bit index).
        """
        for what, value in (("offset", offset), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ChannelError(f"{what} must be an int >= 0, got {value!r}", channel=self.name)
        if max(offset, offset + limit - 1) > MAX_INDEX:
            raise ChannelError(
                f"offset and offset + limit - 1 must be at most 2**63 - 1 ({MAX_INDEX}), got "
                f"offset={offset} and limit={limit}",
                channel=self.name,
            )
        if limit == 0:
            # Not a range for the adapters: Redis would read ZRANGE 0 -1 as "everything".
            return []
        letters = []
        for raw in await self._adapter.dead_letters(self.name, offset, limit):
            try:
                data: T | None = self.codec.decode(raw.payload)
            except DECODE_ERRORS:
                data = None
            letters.append(
                DeadLetter(
                    id=raw.id,
                    payload=raw.payload,
                    data=data,
                    error=raw.error,
                    tries=raw.tries,
                    dead_at_ms=raw.dead_at_ms,
                    produced_at_ms=(
                        int(raw.id.partition("-")[0])
                        if raw.produced_at_ms is None
                        else raw.produced_at_ms
                    ),
                )
            )
        return letters

    async def redrive(self, ids: Sequence[str] | None = None) -> int:
        """Put dead letters (all, or those ids) back in the queue with a fresh try count."""
        return await self._adapter.redrive(self.name, ids)

    async def delete_dead(self, ids: Sequence[str] | None = None) -> int:
        return await self._adapter.delete_dead(self.name, ids)

    async def purge(self) -> None:
        """Delete every message of this channel, whatever its state."""
        await self._adapter.purge(self.name)


def _content_key(payload: bytes) -> str:
    """The default exactly-once key: a 128-bit hash of the encoded message."""
    return "h:" + hashlib.blake2b(payload, digest_size=16).hexdigest()
