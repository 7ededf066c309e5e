"""A channel spread over shards: where each shard lives, which shard a message goes to, and the
adapter that shows a channel's shards as one channel.

A channel declared with ``shards=K`` (K > 1) is K channels to the engine, one per shard
(``shard_names``), each with its keys under a hash tag of its own, so that on Redis Cluster the
shards of one channel lie on different primaries. With one shard a channel is its name alone,
exactly as before shards existed.

``ShardedAdapter`` is what a sharded channel and its consumers talk to: a produce goes to the shard
the channel chose for each message (``Outgoing.shard``); ids name their shard
(``"<id>@<shard>"``); a fetch asks the shards in turn, starting one shard further each time; the
counts and dead letters of the shards are added up.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .adapter import Delivery, Exchange, Outgoing, RawDeadLetter, Settlement
from .errors import ChannelError
from .messages import ChannelStats
from .options import PartitionKey, check_channel_name

if TYPE_CHECKING:
    from .adapter import Adapter
    from .handles import QueueHandle

__all__ = [
    "ShardedAdapter",
    "add_stats",
    "base_name",
    "cluster_slot",
    "is_shard_name",
    "partition",
    "shard_names",
]

CLUSTER_SLOTS = 16384
ID_MARK = "@"
_SHARD_SUFFIX = re.compile(r"#\d+(?:\.\d+)?$")


def partition(key: PartitionKey, shards: int) -> int:
    """The shard of a partition key: the first 8 bytes of the SHA-256 of the key (a str as UTF-8,
    an int as its decimal digits, bytes as they are) as a big-endian number, modulo ``shards``.

    The same in every process and language, so producers anywhere agree on it.
    """
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    elif isinstance(key, int) and not isinstance(key, bool):
        data = str(key).encode()
    else:
        raise ChannelError(f"a partition key is a str, bytes or int, got {key!r}")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % shards


def cluster_slot(tag: str) -> int:
    """The Redis Cluster hash slot of a hash tag (CRC16-XMODEM modulo 16384, as Redis does)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


def shard_names(name: str, shards: int) -> list[str]:
    """The channel names of a channel's shards: ``[name]`` for one shard, else ``<name>#<i>``.

    Shard ``i``'s name is ``<name>#<i>``, or ``<name>#<i>.<n>`` with the smallest ``n`` >= 1
    that puts its Redis Cluster slot in the middle half of the ``i``-th of ``shards`` equal
    slot ranges. A cluster of N primaries with the slots split evenly (as ``redis-cli
    --cluster create`` does) thus holds shards on N different primaries when there are N of
    them, and spreads more shards evenly when their number is a multiple of N.
    """
    if shards == 1:
        return [name]
    return [_shard_name(name, i, shards) for i in range(shards)]


def _shard_name(name: str, index: int, shards: int) -> str:
    low, high = index * CLUSTER_SLOTS // shards, (index + 1) * CLUSTER_SLOTS // shards
    # The middle half: boundaries that differ by a slot or two between tools do not matter.
    low, high = low + (high - low) // 4, high - (high - low) // 4
    candidate, salt = f"{name}#{index}", 0
    while not low <= cluster_slot(candidate) < high:
        salt += 1
        candidate = f"{name}#{index}.{salt}"
    return candidate


def is_shard_name(name: str) -> bool:
    """Whether ``name`` has the form of a shard's name (``...#<i>`` or ``...#<i>.<n>``)."""
    return _SHARD_SUFFIX.search(name) is not None


def base_name(name: str) -> str:
    """The channel a stored channel name belongs to: a shard's channel, or the name itself."""
    return _SHARD_SUFFIX.sub("", name)


def add_stats(channel: str, parts: Sequence[ChannelStats]) -> ChannelStats:
    """The counts of a channel's shards added up; the lag is the largest."""
    counts = {
        field.name: sum(getattr(p, field.name) for p in parts)
        for field in dataclasses.fields(ChannelStats)
        if field.name not in ("channel", "lag_ms")
    }
    return ChannelStats(channel=channel, lag_ms=max((p.lag_ms for p in parts), default=0), **counts)


class ShardedAdapter:
    """The shards of one channel as the one channel its ``Channel`` and consumers see.

    Made by a channel declared with ``shards`` > 1; every call names that channel. It owns no
    connection: ``close`` ends only the waits it left running (the queue calls it).
    """

    def __init__(self, queue: QueueHandle, name: str, shards: int) -> None:
        self.queue = queue
        self.base: Adapter = queue.adapter
        self.name = name
        self.names = shard_names(name, shards)
        for shard in self.names:
            check_channel_name(shard)
        self._first = 0
        """The shard the next fetch asks first."""
        self._waits: dict[int, asyncio.Future[None]] = {}
        """Each shard's wait still under way, shared by every consumer that waits."""
        self._registered = False
        self._closed = False

    @property
    def accepts_options(self) -> bool:
        return bool(getattr(self.base, "accepts_options", False))

    # -- ids ---------------------------------------------------------------------------------

    def _split_ids(self, ids: Iterable[str]) -> dict[int, list[str]]:
        """The engine's ids by shard; ids that name no shard of this channel are left out."""
        by_shard: dict[int, list[str]] = {}
        for id_ in ids:
            inner, mark, shard = id_.rpartition(ID_MARK)
            if mark and shard.isdigit() and int(shard) < len(self.names):
                by_shard.setdefault(int(shard), []).append(inner)
        return by_shard

    def _split_settlement(self, settle: Settlement) -> dict[int, tuple[Settlement, Settlement]]:
        """Per shard: (its part of ``settle`` as given, the same with the engine's ids)."""
        parts: dict[int, tuple[Settlement, Settlement]] = {}

        def part(id_: str) -> tuple[Settlement, Settlement, str]:
            inner, _, shard = id_.rpartition(ID_MARK)
            given, engine = parts.setdefault(int(shard), (Settlement(), Settlement()))
            return given, engine, inner

        for id_ in settle.acks:
            given, engine, inner = part(id_)
            given.acks.append(id_)
            engine.acks.append(inner)
        for id_, delay_ms, error in settle.retries:
            given, engine, inner = part(id_)
            given.retries.append((id_, delay_ms, error))
            engine.retries.append((inner, delay_ms, error))
        for id_, reason in settle.dead:
            given, engine, inner = part(id_)
            given.dead.append((id_, reason))
            engine.dead.append((inner, reason))
        for id_ in settle.releases:
            given, engine, inner = part(id_)
            given.releases.append(id_)
            engine.releases.append(inner)
        return parts

    # -- producing ---------------------------------------------------------------------------

    async def produce(self, channel: str, items: Sequence[Outgoing]) -> list[tuple[str, bool]]:
        """Each message to its ``shard``, one call per shard, all at once; in order per shard."""
        shard = items[0].shard if items else 0
        if all(item.shard == shard for item in items):  # a channel's tick: one shard a call
            reply = await self.base.produce(self.names[shard], items)
            return [(f"{id_}{ID_MARK}{shard}", duplicate) for id_, duplicate in reply]
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.shard, []).append(i)
        replies = await asyncio.gather(
            *(
                self.base.produce(self.names[shard], [items[i] for i in indexes])
                for shard, indexes in groups.items()
            )
        )
        results: list[tuple[str, bool]] = [("", False)] * len(items)
        for (shard, indexes), reply in zip(groups.items(), replies, strict=True):
            for i, (id_, duplicate) in zip(indexes, reply, strict=True):
                results[i] = (f"{id_}{ID_MARK}{shard}", duplicate)
        return results

    # -- consuming ---------------------------------------------------------------------------

    async def exchange(
        self,
        channel: str,
        consumer: str,
        settle: Settlement,
        fetch: int,
        lease_ms: int,
        max_attempts: int,
    ) -> Exchange:
        """Fetch from the first shard, then from the next shards in turn for what is still
        missing, each call carrying that shard's part of ``settle``. The first shard moves on by
        one with every fetch, so a busy shard cannot starve another: each is first once every K
        fetches. The parts of shards this fetch did not reach come back as ``unsent``, for the
        consumer's next exchange, which comes at once: a fetch that delivered is followed by
        another, and one that did not reached every shard; with its slots full, the consumer
        exchanges without a fetch, and then every part goes at once.

        Shards that fail are left out (their part comes back as ``unsent``, with ``error``)
        unless every shard called fails, which raises.
        """
        parts = self._split_settlement(settle)
        result = _Gathered()
        if fetch <= 0:
            shards = sorted(parts)
            replies = await asyncio.gather(
                *(
                    self.base.exchange(
                        self.names[s], consumer, parts[s][1], 0, lease_ms, max_attempts
                    )
                    for s in shards
                ),
                return_exceptions=True,
            )
            for shard, reply in zip(shards, replies, strict=True):
                result.add(shard, reply, parts[shard][0])
            return result.exchange()
        count = len(self.names)
        first, self._first = self._first, (self._first + 1) % count
        for step in range(count):
            wanted = fetch - len(result.deliveries)
            if wanted <= 0:
                break
            shard = (first + step) % count
            given, engine = parts.pop(shard, (Settlement(), Settlement()))
            try:
                reply = await self.base.exchange(
                    self.names[shard], consumer, engine, wanted, lease_ms, max_attempts
                )
            except Exception as exc:
                result.add(shard, exc, given)
            else:
                result.add(shard, reply, given)
        for given, _ in parts.values():
            result.unsent.extend(given)
        return result.exchange()

    async def renew(
        self, channel: str, consumer: str, ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        by_shard = self._split_ids(ids)
        shards = list(by_shard)
        replies = await asyncio.gather(
            *(self.base.renew(self.names[s], consumer, by_shard[s], lease_ms) for s in shards),
            return_exceptions=True,
        )
        lost: list[str] = []
        for shard, reply in zip(shards, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply  # the other shards' leases were renewed all the same
            lost.extend(f"{id_}{ID_MARK}{shard}" for id_ in reply)
        return lost

    async def wait(self, channel: str, timeout_ms: int) -> None:
        """Return when any shard may have a message waiting, or after ``timeout_ms``.

        A shard's wait is not cancelled when another's ends first (on Redis that would cost its
        blocking connection): the next wait takes it over. Shards whose wait fails are left out;
        if every one fails, the first failure is raised.
        """
        if self._closed:
            await asyncio.sleep(timeout_ms / 1000)  # only a consumer about to stop gets here
            return
        if not self._registered:
            self._registered = True
            self.queue.register(self)  # so that the queue ends the waits left running
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        pending = {self._wait_on(shard, timeout_ms) for shard in range(len(self.names))}
        errors: list[BaseException] = []
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - loop.time()), return_when="FIRST_COMPLETED"
            )
            if not done:
                return
            for future in done:
                if future.cancelled() or future.exception() is None:
                    return
                errors.append(future.exception())  # type: ignore[arg-type]
        raise errors[0]

    def _wait_on(self, shard: int, timeout_ms: int) -> asyncio.Future[None]:
        waiting = self._waits.get(shard)
        if waiting is None:
            waiting = asyncio.ensure_future(self.base.wait(self.names[shard], timeout_ms))
            self._waits[shard] = waiting
            waiting.add_done_callback(lambda done: self._waited(shard, done))
        return waiting

    def _waited(self, shard: int, done: asyncio.Future[None]) -> None:
        if self._waits.get(shard) is done:
            del self._waits[shard]
        if not done.cancelled():
            done.exception()  # seen here, so that a failure nobody waits for is not reported

    async def close(self) -> None:
        """End the waits left running; the queue closes the engine itself."""
        self._closed = True
        waits = list(self._waits.values())
        for waiting in waits:
            waiting.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*waits, return_exceptions=True)
        self.queue.unregister(self)

    # -- inspecting --------------------------------------------------------------------------

    async def stats(self, channel: str) -> ChannelStats:
        parts = await asyncio.gather(*(self.base.stats(name) for name in self.names))
        return add_stats(self.name, parts)

    async def dead_letters(self, channel: str, offset: int, limit: int) -> list[RawDeadLetter]:
        """Every shard's first ``offset + limit`` dead letters, merged oldest first."""
        pages = await asyncio.gather(
            *(self.base.dead_letters(name, 0, offset + limit) for name in self.names)
        )
        letters = [
            dataclasses.replace(letter, id=f"{letter.id}{ID_MARK}{shard}")
            for shard, page in enumerate(pages)
            for letter in page
        ]
        letters.sort(key=lambda letter: (letter.dead_at_ms, letter.id))
        return letters[offset : offset + limit]

    async def redrive(self, channel: str, ids: Sequence[str] | None) -> int:
        if ids is None:
            moved = await asyncio.gather(*(self.base.redrive(n, None) for n in self.names))
        else:
            by_shard = self._split_ids(ids)
            moved = await asyncio.gather(
                *(self.base.redrive(self.names[s], by_shard[s]) for s in by_shard)
            )
        return sum(moved)

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        if ids is None:
            deleted = await asyncio.gather(*(self.base.delete_dead(n, None) for n in self.names))
        else:
            by_shard = self._split_ids(ids)
            deleted = await asyncio.gather(
                *(self.base.delete_dead(self.names[s], by_shard[s]) for s in by_shard)
            )
        return sum(deleted)

    async def purge(self, channel: str) -> None:
        await asyncio.gather(*(self.base.purge(name) for name in self.names))

    async def channels(self) -> list[str]:
        return await self.base.channels()


class _Gathered:
    """The shards' answers to one exchange, put together."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lost: list[str] = []
        self.hint = -1
        self.answered = 0
        self.unsent = Settlement()
        self.errors: list[Exception] = []

    def add(self, shard: int, reply: Exchange | BaseException, given: Settlement) -> None:
        """One shard's answer (or failure) to the exchange that carried ``given`` to it."""
        if isinstance(reply, BaseException):
            if not isinstance(reply, Exception):
                raise reply
            self.errors.append(reply)
            self.unsent.extend(given)
            return
        self.answered += 1
        for delivery in reply.deliveries:
            delivery.id = f"{delivery.id}{ID_MARK}{shard}"
        self.deliveries.extend(reply.deliveries)
        self.lost.extend(f"{id_}{ID_MARK}{shard}" for id_ in reply.lost)
        if reply.wait_hint_ms >= 0 and (self.hint < 0 or reply.wait_hint_ms < self.hint):
            self.hint = reply.wait_hint_ms

    def exchange(self) -> Exchange:
        if self.errors and not self.answered:
            raise self.errors[0]
        error = self.errors[0] if self.errors else None
        return Exchange(self.deliveries, self.lost, self.hint, self.unsent or None, error)
