"""A worker process: runs consumers until SIGTERM or SIGINT, then stops them gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from .channel import Channel, Handler
from .consumer import Consumer
from .errors import ConsumerError
from .options import Duration
from .queue import BrokerQueue

__all__ = ["Worker"]

log = logging.getLogger("brokerq.worker")


@dataclass(frozen=True, slots=True)
class _Registration:
    channel: Channel[Any]
    handler: Handler[Any]
    max_parallel: int
    envelope: bool | None


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
        if self.consumers:
            raise ConsumerError("add consumers before the worker runs")
        self._registrations.append(_Registration(channel, handler, max_parallel, envelope))

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
                consumer = await reg.channel.consume(
                    reg.handler,
                    max_parallel=reg.max_parallel,
                    envelope=reg.envelope,
                    grace=self.grace,
                )
                self.consumers.append(consumer)
                log.info("consuming %s (max_parallel=%d)", reg.channel.name, reg.max_parallel)
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
