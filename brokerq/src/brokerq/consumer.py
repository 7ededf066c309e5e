"""The consumer: leases messages in batches, runs the handler, settles results in batches.

Lifecycle: CREATED -> RUNNING -> STOPPING -> STOPPED. Stopping stops taking messages, gives
running handlers a grace period, cancels the rest (their messages are released untried), sends
every outstanding settlement, and is harmless to repeat.

``Consumer`` runs a handler per message; ``BatchConsumer`` hands its handler lists of messages
and settles each message of a list on its own. Both share the fetching, lease renewal,
settlement and shutdown below.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import random
import secrets
import socket
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from .adapter import Delivery, Exchange, Settlement
from .codec import DECODE_ERRORS
from .errors import ConsumerError
from .handles import ChannelHandle
from .messages import Message
from .metrics import HANDLER_SECONDS, LOST_LEASES
from .options import Duration, duration_ms

__all__ = ["BatchConsumer", "BatchHandler", "BatchResult", "Consumer", "ConsumerState", "Handler"]

T = TypeVar("T")
log = logging.getLogger("brokerq.consumer")

Handler = Callable[[T], Awaitable[Any]] | Callable[[Message[T]], Awaitable[Any]]
"""A message handler: gets the decoded message (or its ``Message`` envelope); returning marks
it done, raising retries it."""

BatchResult = Mapping[str, Exception] | None
"""What a batch handler returns: None when every message is done, else the messages that failed
(message id -> the exception), which are retried; the others are done."""

BatchHandler = (
    Callable[[list[Message[T]]], Awaitable[BatchResult]] | Callable[[list[Message[T]]], BatchResult]
)
"""A batch handler: gets a list of ``Message`` envelopes and returns a ``BatchResult``; raising
retries every message of the list."""

MAX_IDLE_WAIT_MS = 1000
MAX_PARALLEL = 1000
MAX_BATCH = 1000
# One exchange leases at most this many messages, so no script call carries more.
MAX_FETCH = 1000
FINAL_FLUSH_TIMEOUT_S = 10.0
MAX_ERROR_LENGTH = 2000


class ConsumerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Consumer(Generic[T]):
    def __init__(
        self,
        channel: ChannelHandle[T],
        handler: Handler[T],
        *,
        max_parallel: int = 10,
        envelope: bool | None = None,
        grace: Duration = "30s",
    ) -> None:
        self.channel = channel
        self.max_parallel = _count("max_parallel", max_parallel, MAX_PARALLEL)
        self._set_slots(max_parallel)
        self.grace_s = duration_ms(grace, what="grace") / 1000
        self.state = ConsumerState.CREATED
        host = socket.gethostname().replace("|", "_")[:40]
        self.id = f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.processed = 0
        self.failed = 0
        self.lost = 0
        self._adapter = channel.adapter
        self._handler: Any = handler
        self._envelope = _wants_envelope(handler) if envelope is None else envelope
        # A blocking handler on the event loop would starve lease renewal; give it a thread.
        self._in_thread = not (
            inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(type(handler).__call__)
        )
        self._observe = {
            outcome: HANDLER_SECONDS.recorder(channel.name, outcome)
            for outcome in ("ok", "retry", "dead", "undecodable")
        }
        self._lost_leases = LOST_LEASES.labels(channel.name)
        self._held: set[str] = set()
        """Ids leased to this consumer and not yet settled."""
        self._queued: deque[Delivery] = deque()
        """Delivered messages whose handler has not started."""
        self._runners: set[asyncio.Task[None]] = set()
        self._spare: asyncio.Task[None] | None = None
        self._no_more_runners = False
        self._settle = Settlement()
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._in_broker_wait = False
        self._flush_task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    def _set_slots(self, slots: int) -> None:
        self._slots = slots
        """The most messages this consumer holds at once."""
        # With many slots, fetch at most half of them at a time: the next fetch is then on its
        # way to the broker while the handlers of the last one run, instead of client and broker
        # taking turns (no-op handlers, 100 slots: +20%).
        self._fetch_max = min(MAX_FETCH, slots if slots < 16 else (slots + 1) // 2)

    def __repr__(self) -> str:
        kind, name = type(self).__name__, self.channel.name
        return f"{kind}({name!r}, id={self.id!r}, state={self.state.value})"

    @property
    def in_flight(self) -> int:
        return len(self._held)

    async def start(self) -> None:
        if self.state is not ConsumerState.CREATED:
            raise ConsumerError(f"consumer {self.id} was already started")
        self.state = ConsumerState.RUNNING
        self._loop_task = asyncio.create_task(self._loop(), name=f"brokerq-fetch-{self.id}")
        self._renew_task = asyncio.create_task(self._renew(), name=f"brokerq-renew-{self.id}")
        self.channel.queue.register(self)

    async def wait_idle(self) -> None:
        """Return once this consumer holds nothing, has settled everything, and its last fetch
        found no message waiting (or it has stopped). Delayed messages not yet due do not count."""
        await self._idle.wait()

    # -- fetching ----------------------------------------------------------------------------

    def _take(self) -> Settlement:
        settle, self._settle = self._settle, Settlement()
        return settle

    async def _loop(self) -> None:
        ch = self.channel
        options = ch.options
        failures = 0
        while not self._stop.is_set():
            free = self._slots - len(self._held)
            if free <= 0 and not self._settle:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            settle = self._take()
            try:
                ex = await self._adapter.exchange(
                    ch.name, self.id, settle, min(max(free, 0), self._fetch_max),
                    options.lease_ms, options.max_attempts,
                )  # fmt: skip
            except Exception:
                self._settle.extend(settle)
                failures += 1
                log.warning("channel %s: fetch failed, retrying", ch.name, exc_info=True)
                await self._pause(min(2.0, 0.05 * 2**failures))
                continue
            failures = 0
            self._note_lost(ex.lost)
            self._keep_unsent(ex)
            if self._stop.is_set():
                self._settle.releases.extend(d.id for d in ex.deliveries)
                break
            if ex.deliveries:
                self._idle.clear()
                self._held.update(d.id for d in ex.deliveries)
                self._queued.extend(ex.deliveries)
                self._spawn()
                continue
            if free <= 0:
                continue
            if not self._held and not self._settle and self._flush_task is None:
                self._idle.set()
            timeout = MAX_IDLE_WAIT_MS if ex.wait_hint_ms < 0 else ex.wait_hint_ms
            await self._wait_for_messages(min(timeout, MAX_IDLE_WAIT_MS))

    async def _wait_for_messages(self, timeout_ms: int) -> None:
        self._in_broker_wait = True
        if self._settle:
            self._flush_soon()
        waiting = asyncio.ensure_future(self._adapter.wait(self.channel.name, timeout_ms))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._in_broker_wait = False
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)
        if waiting.done() and not waiting.cancelled() and waiting.exception() is not None:
            log.warning("channel %s: wait failed: %s", self.channel.name, waiting.exception())
            await self._pause(0.5)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- handling ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a runner unless one is already about to start.

        A runner takes the next queued message and, if more are queued, starts the next runner
        before it runs the handler. Handlers that never wait thus run one after another in one
        task; each handler that waits leaves the rest to a new runner, so up to max_parallel
        run at once. A task per message cost a quarter of a no-op message's time.
        """
        spare = self._spare
        runners = self._runners
        if len(runners) >= self.max_parallel:
            # A runner that has just returned leaves the set only in a later step of the loop
            # (its done callback): counted now, it would keep these messages waiting for ever.
            runners.difference_update([task for task in runners if task.done()])
        if (
            (spare is None or spare.done())
            and self._queued
            and len(runners) < self.max_parallel
            and not self._no_more_runners
        ):
            self._spare = task = asyncio.create_task(self._run())
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)

    async def _run(self) -> None:
        self._spare = None
        queued = self._queued
        while queued and not self._no_more_runners:
            delivery = queued.popleft()
            if queued:
                self._spawn()
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        try:
            try:
                data = self.channel.codec.decode(delivery.payload)
            except DECODE_ERRORS as exc:
                self._undecodable(delivery, exc, started)
                return
            arg: Any = self._envelope_of(delivery, data) if self._envelope else data
            if self._in_thread:
                result = await asyncio.to_thread(self._handler, arg)
            else:
                result = self._handler(arg)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            # Only a shutdown past its grace period cancels a handler: give the message back.
            self._settle.releases.append(delivery.id)
            raise
        except Exception as exc:
            self._failed(delivery, exc, started)
        else:
            # What _done and _settled do, written out: this is every message's path.
            self.processed += 1
            self._settle.acks.append(delivery.id)
            self._observe["ok"](time.perf_counter() - started)
        finally:
            self._held.discard(delivery.id)
            if self._in_broker_wait or self._stop.is_set():
                self._flush_soon()
            else:
                self._wakeup.set()

    def _envelope_of(self, delivery: Delivery, data: T) -> Message[T]:
        return Message(
            data,
            delivery.id,
            delivery.tries,
            self.channel.name,
            delivery.produced_at_ms,
            msgspec.json.decode(delivery.headers) if delivery.headers else {},
        )

    def _undecodable(self, delivery: Delivery, exc: Exception, started: float) -> None:
        name = self.channel.name
        log.error(
            "channel %s: message %s does not decode: %s", name, delivery.id, exc,
            extra={"message_id": delivery.id, "channel": name},
        )  # fmt: skip
        self._settle.dead.append((delivery.id, _error(f"undecodable payload: {exc}")))
        self.failed += 1
        self._observe["undecodable"](time.perf_counter() - started)

    def _failed(self, delivery: Delivery, exc: Exception, started: float) -> None:
        name = self.channel.name
        self.failed += 1
        delay = self._retry_delay_ms(delivery.tries)
        last = delivery.tries >= self.channel.options.max_attempts
        log.warning(
            "channel %s: message %s failed on try %d%s: %r",
            name, delivery.id, delivery.tries,
            " (dead-lettered)" if last else f", retry in {delay}ms", exc,
            extra={"message_id": delivery.id, "channel": name, "tries": delivery.tries},
        )  # fmt: skip
        self._settle.retries.append((delivery.id, delay, _error(f"{type(exc).__name__}: {exc}")))
        self._observe["dead" if last else "retry"](time.perf_counter() - started)

    def _done(self, delivery: Delivery, started: float) -> None:
        self.processed += 1
        self._settle.acks.append(delivery.id)
        self._observe["ok"](time.perf_counter() - started)

    def _settled(self) -> None:
        """After settling held messages: send now if nothing else will, else let the fetch
        loop carry the settlement with its next fetch."""
        if self._in_broker_wait or self._stop.is_set():
            self._flush_soon()
        else:
            self._wakeup.set()

    def _retry_delay_ms(self, tries: int) -> int:
        options = self.channel.options
        delay = min(
            options.max_retry_backoff_ms, options.retry_backoff_ms * 2 ** min(tries - 1, 30)
        )
        # Equal jitter: spreads a burst of failures without ever retrying sooner than half.
        return int(delay / 2 + random.random() * delay / 2)

    def _note_lost(self, ids: list[str]) -> None:
        if ids:
            self.lost += len(ids)
            self._lost_leases.inc(len(ids))
            log.warning(
                "channel %s: consumer %s no longer held %s (lease expired and taken over)",
                self.channel.name, self.id, ids,
            )  # fmt: skip

    def _keep_unsent(self, ex: Exchange, *, warn: bool = True) -> bool:
        """Keep what a sharded channel's exchange did not send, to send it with the next one;
        True when a shard failed."""
        if ex.unsent:
            self._settle.extend(ex.unsent)
        if ex.error is None:
            return False
        if warn:
            log.warning("channel %s: a shard failed: %r", self.channel.name, ex.error)
        return True

    # -- settling outside the fetch loop ------------------------------------------------------

    def _flush_soon(self) -> None:
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self._send_settlements(warn=True)
        finally:
            self._flush_task = None
            if not self._held and not self._settle and self._in_broker_wait:
                self._idle.set()

    async def _send_settlements(self, *, warn: bool) -> None:
        """Send what is to settle, fetching nothing, until it is all sent."""
        ch = self.channel
        while self._settle:
            settle = self._take()
            try:
                ex = await self._adapter.exchange(
                    ch.name, self.id, settle, 0, ch.options.lease_ms, ch.options.max_attempts
                )
            except Exception:
                self._settle.extend(settle)
                if warn:
                    log.warning("channel %s: settle failed, retrying", ch.name, exc_info=True)
                await asyncio.sleep(0.2)
                continue
            self._note_lost(ex.lost)
            if self._keep_unsent(ex, warn=warn):
                await asyncio.sleep(0.2)

    async def _renew(self) -> None:
        ch = self.channel
        lease_ms = ch.options.lease_ms
        interval_s = lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            if not self._held:
                continue
            try:
                lost = await self._adapter.renew(ch.name, self.id, list(self._held), lease_ms)
            except Exception:
                log.warning("channel %s: lease renewal failed", ch.name, exc_info=True)
                continue
            if lost:
                log.error(
                    "channel %s: consumer %s lost the lease of %s while handling it",
                    ch.name, self.id, lost,
                )  # fmt: skip

    # -- stopping ----------------------------------------------------------------------------

    async def close(self, grace: Duration | None = None) -> None:
        """Stop gracefully: take no more messages, let running handlers finish within the
        grace period, release the rest, and send every outstanding settlement."""
        if self.state is ConsumerState.STOPPED:
            return
        if self.state is ConsumerState.CREATED:
            self.state = ConsumerState.STOPPED
            return
        if self._closing is None:
            grace_s = self.grace_s if grace is None else duration_ms(grace, what="grace") / 1000
            self._closing = asyncio.create_task(self._shutdown(grace_s))
        await asyncio.shield(self._closing)

    async def _shutdown(self, grace_s: float) -> None:
        self.state = ConsumerState.STOPPING
        self._stop.set()
        self._wakeup.set()
        self._stopping()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._finish_handlers(grace_s)
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task
        try:
            await asyncio.wait_for(self._send_settlements(warn=False), FINAL_FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.error(
                "channel %s: could not settle before shutdown; leases will expire and the "
                "messages will be delivered again",
                self.channel.name,
            )
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
        self.state = ConsumerState.STOPPED
        self._idle.set()
        self.channel.queue.unregister(self)

    def _stopping(self) -> None:
        """Called as the shutdown begins, once ``_stop`` is set."""

    async def _finish_handlers(self, grace_s: float) -> None:
        """Let handlers run (and queued messages start) for the grace period, cancel what still
        runs, and give back what never started."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._runners and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._runners), timeout=remaining)
        self._no_more_runners = True
        running = set(self._runners)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        while self._queued:
            delivery = self._queued.popleft()
            self._held.discard(delivery.id)
            self._settle.releases.append(delivery.id)


class BatchConsumer(Consumer[T]):
    """Hands its handler lists of up to ``max_batch`` messages, up to ``max_parallel`` lists at
    once, and settles each message on its own (see ``Channel.consume_batch``).

    A runner takes what is queued, up to ``max_batch``. With ``max_wait`` > 0, a runner whose
    batch is not full gathers the messages that arrive next until the batch is full,
    ``max_wait`` has passed, or the consumer stops; while one runner gathers, no other starts,
    so arrivals fill that batch instead of starting small ones.
    """

    def __init__(
        self,
        channel: ChannelHandle[T],
        handler: BatchHandler[T],
        *,
        max_batch: int = 100,
        max_wait: Duration = 0,
        max_parallel: int = 1,
        grace: Duration = "30s",
    ) -> None:
        # The base class keeps its handler untyped; ``_call`` below is what calls this one.
        untyped: Any = handler
        super().__init__(channel, untyped, max_parallel=max_parallel, envelope=True, grace=grace)
        self.max_batch = _count("max_batch", max_batch, MAX_BATCH)
        self.max_wait_s = duration_ms(max_wait, what="max_wait") / 1000
        self._set_slots(self.max_parallel * self.max_batch)
        self._gathering = False
        self._arrived = asyncio.Event()

    def _spawn(self) -> None:
        if self._gathering:
            self._arrived.set()  # the gathering runner takes them
        else:
            super()._spawn()

    def _stopping(self) -> None:
        self._arrived.set()  # a gathering runner stops waiting and hands over what it has

    async def _run(self) -> None:
        self._spare = None
        queued = self._queued
        while queued and not self._no_more_runners and not self._gathering:
            batch = self._take_batch([])
            if len(batch) < self.max_batch and self.max_wait_s > 0 and not self._stop.is_set():
                self._gathering = True
                try:
                    await self._gather(batch)
                except asyncio.CancelledError:
                    self._release(batch)
                    raise
                finally:
                    self._gathering = False
            if queued:
                self._spawn()
            await self._handle_batch(batch)

    def _take_batch(self, batch: list[Delivery]) -> list[Delivery]:
        queued = self._queued
        for _ in range(min(len(queued), self.max_batch - len(batch))):
            batch.append(queued.popleft())
        return batch

    async def _gather(self, batch: list[Delivery]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch and not self._stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            self._take_batch(batch)

    def _release(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            self._held.discard(delivery.id)
            self._settle.releases.append(delivery.id)

    async def _handle_batch(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        messages: list[Message[T]] = []
        deliveries: dict[str, Delivery] = {}
        decode = self.channel.codec.decode
        for delivery in batch:
            try:
                data = decode(delivery.payload)
            except DECODE_ERRORS as exc:
                self._undecodable(delivery, exc, started)
                self._held.discard(delivery.id)
                continue
            messages.append(self._envelope_of(delivery, data))
            deliveries[delivery.id] = delivery
        failures: Mapping[str, Exception] = {}
        try:
            if messages:
                failures = await self._call(messages)
        except asyncio.CancelledError:
            # Only a shutdown past its grace period cancels a handler: give the messages back.
            self._release(list(deliveries.values()))
            raise
        except Exception as exc:
            for delivery in deliveries.values():
                self._failed(delivery, exc, started)
        else:
            for id_, delivery in deliveries.items():
                failure = failures.get(id_)
                if failure is None:
                    self._done(delivery, started)
                else:
                    self._failed(delivery, failure, started)
        finally:
            self._held.difference_update(deliveries)
            self._settled()

    async def _call(self, messages: list[Message[T]]) -> Mapping[str, Exception]:
        if self._in_thread:
            result = await asyncio.to_thread(self._handler, messages)
        else:
            result = self._handler(messages)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return {}
        if not isinstance(result, Mapping):
            raise TypeError(
                "a batch handler returns None or a mapping of message id to exception, "
                f"not {type(result).__name__}"
            )
        ids = {m.id for m in messages}
        strangers = [id_ for id_ in result if id_ not in ids]
        if strangers:
            raise ValueError(f"the batch handler reported ids not in its batch: {strangers[:10]}")
        wrong = [id_ for id_, exc in result.items() if not isinstance(exc, Exception)]
        if wrong:
            raise TypeError(f"the batch handler reported failures that are no exceptions: {wrong}")
        return result


def _count(what: str, value: int, high: int) -> int:
    # Bounded so that one script call never carries more than this many messages.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{what} must be an int from 1 to {high}, got {value!r}")
    return value


def _error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def _wants_envelope(handler: Any) -> bool:
    """True when the handler's first parameter is annotated ``Message[...]``."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    annotation = params[0].annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(handler).get(params[0].name, annotation)
        except Exception:
            base = annotation.split("[", 1)[0].strip()
            return base in {"Message", "brokerq.Message"}
    return annotation is Message or typing.get_origin(annotation) is Message
