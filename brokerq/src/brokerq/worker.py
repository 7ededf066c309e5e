"""A worker process: runs consumers until SIGTERM or SIGINT, then stops them gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .channel import Channel
from .consumer import BatchHandler, Consumer, Handler
from .errors import ConsumerError
from .options import Duration
from .queue import BrokerQueue

__all__ = ["Worker"]

log = logging.getLogger("brokerq.worker")


@dataclass(frozen=True, slots=True)
class _Registration:
    channel: Channel[Any]
    start: Callable[[Duration], Awaitable[Consumer[Any]]]
    """Starts the consumer with the worker's grace period."""
    shape: str


class Worker:
    """``worker = Worker(queue); worker.add(channel, handler); await worker.run()``.

    ``run`` starts every consumer, waits for SIGTERM / SIGINT (or ``stop()``), then stops taking
    messages, lets running handlers finish within ``grace`` and releases the rest, and closes
    the queue.
    """

    def __init__(self, queue: BrokerQueue, *, grace: Duration = "30s") -> None:
        self.queue = queue
        self.grace = grace
        self.consumers: list[Consumer[Any]] = []
        self._registrations: list[_Registration] = []
        self._stop: asyncio.Event | None = None
        self._stop_requested = False

    def add(
        self,
        channel: Channel[Any],
        handler: Handler[Any],
        *,
        max_parallel: int = 10,
        envelope: bool | None = None,
    ) -> None:
        """Consume ``channel`` with ``handler`` when the worker runs (see ``Channel.consume``)."""

        def start(grace: Duration) -> Awaitable[Consumer[Any]]:
            return channel.consume(
                handler, max_parallel=max_parallel, envelope=envelope, grace=grace
            )

        self._register(channel, start, f"max_parallel={max_parallel}")

    def add_batch(
        self,
        channel: Channel[Any],
        handler: BatchHandler[Any],
        *,
        max_batch: int = 100,
        max_wait: Duration = 0,
        max_parallel: int = 1,
    ) -> None:
        """Consume ``channel`` in batches with ``handler`` when the worker runs (see
        ``Channel.consume_batch``)."""

        def start(grace: Duration) -> Awaitable[Consumer[Any]]:
            return channel.consume_batch(
                handler, max_batch=max_batch, max_wait=max_wait, max_parallel=max_parallel,
                grace=grace,
            )  # fmt: skip

        self._register(channel, start, f"max_batch={max_batch}, max_parallel={max_parallel}")

    def _register(
        self,
        channel: Channel[Any],
        start: Callable[[Duration], Awaitable[Consumer[Any]]],
        shape: str,
    ) -> None:
        if self.consumers:
            raise ConsumerError("add consumers before the worker runs")
        self._registrations.append(_Registration(channel, start, shape))

    def stop(self) -> None:
        """Ask a running worker to stop; harmless to call more than once."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        handled: list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    handled.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not main thread
                    pass
        try:
            for reg in self._registrations:
                self.consumers.append(await reg.start(self.grace))
                log.info("consuming %s (%s)", reg.channel.name, reg.shape)
            await self._stop.wait()
            log.info("stopping: finishing running handlers")
        finally:
            await asyncio.gather(*(c.close() for c in self.consumers))
            await self.queue.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            log.info("stopped")

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        self.stop()
