"""brokerq in one process: the same semantics as Redis, kept in memory.

For unit tests and single-process use. Nothing survives the process; everything else (leases,
retries, dead letters, priorities, delays, deduplication windows) behaves as on Redis.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .adapter import Delivery, Exchange, Outgoing, RawDeadLetter, Settlement
from .messages import ChannelStats
from .options import check_channel_name

__all__ = ["MemoryAdapter"]

PRIO_SPAN = 2**42
REAP_LIMIT = 100
PROMOTE_LIMIT = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Stored:
    payload: bytes
    priority: int
    headers: bytes | None = None
    failures: int = 0
    error: str = ""

    def rank(self, id_: str) -> int:
        return int(id_.rpartition("-")[2]) - self.priority * PRIO_SPAN


@dataclass
class _State:
    seq: int = 0
    messages: dict[str, _Stored] = field(default_factory=dict)
    ready: list[tuple[int, str]] = field(default_factory=list)  # heap of (rank, id)
    in_ready: set[str] = field(default_factory=set)
    delayed: dict[str, int] = field(default_factory=dict)  # id -> visible at ms
    delayed_heap: list[tuple[int, str]] = field(default_factory=list)  # may hold stale entries
    leases: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (consumer, deadline)
    lease_heap: list[tuple[int, str]] = field(default_factory=list)  # may hold stale entries
    dead: dict[str, int] = field(default_factory=dict)  # id -> dead at ms
    dedup: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (id, expires at)
    counters: dict[str, int] = field(default_factory=dict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def push_ready(self, id_: str) -> None:
        heapq.heappush(self.ready, (self.messages[id_].rank(id_), id_))
        self.in_ready.add(id_)

    def pop_ready(self) -> str | None:
        while self.ready:
            _, id_ = heapq.heappop(self.ready)
            if id_ in self.in_ready:
                self.in_ready.discard(id_)
                return id_
        return None

    def delay(self, id_: str, at_ms: int) -> None:
        self.delayed[id_] = at_ms
        heapq.heappush(self.delayed_heap, (at_ms, id_))

    def lease(self, id_: str, consumer: str, deadline_ms: int) -> None:
        self.leases[id_] = (consumer, deadline_ms)
        heapq.heappush(self.lease_heap, (deadline_ms, id_))

    def first_delayed(self) -> tuple[int, str] | None:
        heap = self.delayed_heap
        while heap and self.delayed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def first_lease(self) -> tuple[int, str] | None:
        heap = self.lease_heap
        while heap and (heap[0][1] not in self.leases or self.leases[heap[0][1]][1] != heap[0][0]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def head(self) -> str | None:
        while self.ready and self.ready[0][1] not in self.in_ready:
            heapq.heappop(self.ready)
        return self.ready[0][1] if self.ready else None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class MemoryAdapter:
    def __init__(self) -> None:
        self._channels: dict[str, _State] = {}

    def _state(self, channel: str) -> _State:
        state = self._channels.get(channel)
        if state is None:
            check_channel_name(channel)
            state = self._channels[channel] = _State()
        return state

    async def produce(self, channel: str, items: Sequence[Outgoing]) -> list[tuple[str, bool]]:
        st = self._state(channel)
        now = _now_ms()
        results: list[tuple[str, bool]] = []
        added = False
        for item in items:
            st.seq += 1
            id_ = f"{now}-{st.seq}"
            if item.dedup_key is not None:
                held = st.dedup.get(item.dedup_key)
                if held is not None and held[1] > now:
                    results.append((held[0], True))
                    continue
                st.dedup[item.dedup_key] = (id_, now + item.dedup_ms)
            st.messages[id_] = _Stored(item.payload, item.priority, item.headers)
            if item.delay_ms > 0:
                st.delay(id_, now + item.delay_ms)
            else:
                st.push_ready(id_)
            st.count("produced")
            results.append((id_, False))
            added = True
        if added:
            st.wake()
        await asyncio.sleep(0)  # a broker round trip yields to the loop; so does this
        return results

    def _fail(
        self, st: _State, id_: str, reason: str, delay_ms: int, counter: str, dead: bool,
        max_attempts: int, now: int,
    ) -> None:  # fmt: skip
        stored = st.messages.get(id_)
        if stored is None:
            return
        stored.failures += 1
        stored.error = reason
        if dead or stored.failures >= max_attempts:
            st.dead[id_] = now
            st.count("dead_lettered")
        elif delay_ms > 0:
            st.delay(id_, now + delay_ms)
            st.count(counter)
        else:
            st.push_ready(id_)
            st.count(counter)

    def _owned(self, st: _State, consumer: str, id_: str) -> bool:
        lease = st.leases.get(id_)
        if lease is None or lease[0] != consumer:
            return False
        del st.leases[id_]
        return True

    async def exchange(
        self,
        channel: str,
        consumer: str,
        settle: Settlement,
        fetch: int,
        lease_ms: int,
        max_attempts: int,
    ) -> Exchange:
        st = self._state(channel)
        now = _now_ms()
        lost: list[str] = []
        for id_ in settle.acks:
            if self._owned(st, consumer, id_):
                st.messages.pop(id_, None)
                st.count("processed")
            else:
                lost.append(id_)
        for id_, delay_ms, error in settle.retries:
            if self._owned(st, consumer, id_):
                self._fail(st, id_, error, delay_ms, "retried", False, max_attempts, now)
            else:
                lost.append(id_)
        for id_, reason in settle.dead:
            if self._owned(st, consumer, id_):
                self._fail(st, id_, reason, 0, "retried", True, max_attempts, now)
            else:
                lost.append(id_)
        for id_ in settle.releases:
            if self._owned(st, consumer, id_):
                if id_ in st.messages:
                    st.push_ready(id_)
            else:
                lost.append(id_)

        for _ in range(REAP_LIMIT):
            first = st.first_lease()
            if first is None or first[0] > now:
                break
            holder, _ = st.leases.pop(first[1])
            reason = f"lease expired: consumer {holder} stopped renewing it"
            self._fail(st, first[1], reason, 0, "redelivered", False, max_attempts, now)

        for _ in range(PROMOTE_LIMIT):
            due = st.first_delayed()
            if due is None or due[0] > now:
                break
            del st.delayed[due[1]]
            if due[1] in st.messages:
                st.push_ready(due[1])

        deliveries: list[Delivery] = []
        while len(deliveries) < fetch:
            next_id = st.pop_ready()
            if next_id is None:
                break
            stored = st.messages[next_id]
            st.lease(next_id, consumer, now + lease_ms)
            deliveries.append(
                Delivery(next_id, stored.payload, stored.failures + 1, headers=stored.headers)
            )
        if st.in_ready:
            st.wake()

        first_due, first_deadline = st.first_delayed(), st.first_lease()
        hints = [first_due[0] - now] if first_due else []
        hints += [first_deadline[0] - now + 1] if first_deadline else []
        hint = max(1, min(hints)) if hints else -1
        await asyncio.sleep(0)
        return Exchange(deliveries, lost, hint)

    async def renew(
        self, channel: str, consumer: str, ids: Sequence[str], lease_ms: int
    ) -> list[str]:
        st = self._state(channel)
        deadline = _now_ms() + lease_ms
        lost = []
        for id_ in ids:
            lease = st.leases.get(id_)
            if lease is not None and lease[0] == consumer:
                st.lease(id_, consumer, deadline)
            else:
                lost.append(id_)
        return lost

    async def wait(self, channel: str, timeout_ms: int) -> None:
        st = self._state(channel)
        if st.in_ready:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        st.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(timeout_ms, 1) / 1000)
        except TimeoutError:
            pass
        finally:
            if waiter in st.waiters:
                st.waiters.remove(waiter)

    async def stats(self, channel: str) -> ChannelStats:
        st = self._state(channel)
        head = st.head()
        c = st.counters
        return ChannelStats(
            channel=channel,
            waiting=len(st.in_ready),
            in_flight=len(st.leases),
            delayed=len(st.delayed),
            dead=len(st.dead),
            produced=c.get("produced", 0),
            processed=c.get("processed", 0),
            retried=c.get("retried", 0),
            redelivered=c.get("redelivered", 0),
            dead_lettered=c.get("dead_lettered", 0),
            lag_ms=max(0, _now_ms() - int(head.partition("-")[0])) if head else 0,
        )

    async def dead_letters(self, channel: str, offset: int, limit: int) -> list[RawDeadLetter]:
        st = self._state(channel)
        ordered = sorted(st.dead.items(), key=lambda item: (item[1], item[0]))
        letters = []
        for id_, dead_at in ordered[offset : offset + limit]:
            stored = st.messages[id_]
            letters.append(
                RawDeadLetter(id_, stored.payload, stored.error, stored.failures, dead_at)
            )
        return letters

    async def redrive(self, channel: str, ids: Sequence[str] | None) -> int:
        st = self._state(channel)
        chosen = list(st.dead) if ids is None else [i for i in ids if i in st.dead]
        for id_ in chosen:
            del st.dead[id_]
            stored = st.messages[id_]
            stored.failures = 0
            stored.error = ""
            st.push_ready(id_)
        if chosen:
            st.wake()
        return len(chosen)

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        st = self._state(channel)
        chosen = list(st.dead) if ids is None else [i for i in ids if i in st.dead]
        for id_ in chosen:
            del st.dead[id_]
            del st.messages[id_]
        return len(chosen)

    async def purge(self, channel: str) -> None:
        st = self._state(channel)
        seq, dedup = st.seq, st.dedup
        self._channels[channel] = _State(seq=seq, dedup=dedup)
        st.wake()

    async def channels(self) -> list[str]:
        return sorted(self._channels)

    async def close(self) -> None:
        for st in self._channels.values():
            st.wake()
