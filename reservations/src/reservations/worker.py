"""The reservation workers: consume ``reservation-queue`` and write outcomes to PostgreSQL.

Handlers do not write one by one: each hands its message to a group-commit writer and waits for the
transaction that includes it. While one transaction runs, the next batch gathers, so under load a
process writes hundreds of requests per transaction and when idle a request is written at once. A
handler returns (and brokerq acknowledges) only after its outcome is committed, so a crash at any
point leaves the message to be redelivered, and the request id makes the redelivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerq import Message

from .channels import ReserveEvent
from .log import get_logger
from .observability.logs import configure_logging, secrets_of
from .observability.tracing import configure_tracing, consume_span, db_write_span
from .reservation.gate import AdmissionGate
from .reservation.repository import Decision
from .reservation.settle.batch import Incoming, process_batch
from .reservation.settle.recovery import DELIVERED_HOLD_MS, maintenance_loop
from .resources import Resources, open_resources
from .runtime import freeze_startup_objects
from .settings import Settings

if TYPE_CHECKING:
    from brokerq.consumer import Consumer

__all__ = ["ReservationProcessor", "consuming", "run_worker"]

log = get_logger(__name__)

MAX_BATCH = 500


class ReservationProcessor:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        gate: AdmissionGate,
        *,
        max_batch: int = MAX_BATCH,
        writers: int = 2,
    ) -> None:
        self.session_factory = session_factory
        self.gate = gate
        self.max_batch = max_batch
        self.writers = writers
        self._queue: list[tuple[Incoming, asyncio.Future[Decision]]] = []
        self._ready = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._write_loop(), name=f"reservation-writer-{i}")
                for i in range(self.writers)
            ]

    async def handle(self, message: Message[ReserveEvent]) -> None:
        """The brokerq handler: returns once the request's outcome is committed."""
        with consume_span(message):
            if self._closing:
                raise RuntimeError("the reservation writer is closing")
            future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
            async with self._ready:
                self._queue.append((Incoming(message.id, message.data), future))
                self._ready.notify()
            decision = await future
            log.debug(
                "reservation_request_final",
                message_id=message.id,
                request_id=message.data.requestId,
                status=decision.status,
                reason=decision.reason,
                tries=message.tries,
            )

    async def _write_loop(self) -> None:
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: bool(self._queue))
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            try:
                await self._hold(batch)
                await self._write(batch)
            except BaseException as exc:
                # Whatever happened, no handler may wait for ever: a message whose handler never
                # returns stays leased (its lease is renewed) and is never retried.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError(f"reservation writer failed: {exc!r}"))
                if self._closing or not isinstance(exc, Exception | asyncio.CancelledError):
                    raise
                log.error("reservation_writer_error", error=type(exc).__name__)

    async def _hold(self, batch: list[tuple[Incoming, asyncio.Future[Decision]]]) -> None:
        """Tell recovery the queue has these requests: it must not queue copies of them while
        they fail and wait for their retries."""
        until_ms = time.time_ns() // 1_000_000 + DELIVERED_HOLD_MS
        await self.gate.hold_unfinished([i.data.requestId for i, _ in batch], until_ms)

    async def _write(self, batch: list[tuple[Incoming, asyncio.Future[Decision]]]) -> None:
        try:
            with db_write_span([i.message_id for i, _ in batch]):
                decisions = await process_batch(
                    self.session_factory, self.gate, [i for i, _ in batch]
                )
        except Exception as exc:
            if len(batch) > 1:
                # One bad request must not fail its neighbours: retry them one by one.
                log.warning(
                    "reservation_batch_failed",
                    size=len(batch),
                    error=type(exc).__name__,
                    message_ids=[i.message_id for i, _ in batch][:20],
                )
                for entry in batch:
                    await self._write([entry])
                return
            item, future = batch[0]
            log.warning(
                "reservation_request_failed",
                message_id=item.message_id,
                request_id=item.data.requestId,
                error=type(exc).__name__,
                detail=str(exc)[:500],
            )
            if not future.done():
                future.set_exception(exc)
            return
        for item, future in batch:
            if future.done():
                continue  # the handler was cancelled meanwhile; the outcome is committed anyway
            decision = decisions.get(item.data.requestId)
            if decision is None:
                future.set_exception(RuntimeError(f"no outcome for request {item.data.requestId}"))
            else:
                future.set_result(decision)

    async def close(self) -> None:
        """Stop writing; handlers still waiting get an error, so their messages are retried."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for _, future in self._queue:
            if not future.done():
                future.set_exception(RuntimeError("the reservation writer closed"))
        self._queue.clear()


@asynccontextmanager
async def consuming(
    resources: Resources, *, max_parallel: int
) -> AsyncIterator[Consumer[ReserveEvent]]:
    """Run one reservation consumer in this event loop (for tests and embedded use)."""
    processor = ReservationProcessor(resources.session_factory, resources.gate)
    await processor.start()
    consumer = await resources.channel.consume(
        processor.handle, max_parallel=max_parallel, envelope=True
    )
    try:
        yield consumer
    finally:
        await consumer.close()
        await processor.close()


async def run_worker(settings: Settings) -> None:
    """Consume reservation requests until SIGTERM or SIGINT, then finish what is held and stop."""
    from brokerq import Worker

    configure_tracing("reservations-worker")
    # Each parallel handler waits on a shared writer, so few connections suffice.
    async with open_resources(settings, pool_size=4) as resources:
        processor = ReservationProcessor(resources.session_factory, resources.gate)
        await processor.start()
        freeze_startup_objects()
        worker = Worker(resources.queue)
        worker.add(resources.channel, processor.handle, max_parallel=settings.worker_concurrency)
        recovery = asyncio.create_task(
            maintenance_loop(
                resources.gate,
                resources.channel,
                resources.session_factory,
                interval_s=settings.maintenance_interval_s,
            ),
            name="reservation-maintenance",
        )
        log.info("worker_started", max_parallel=settings.worker_concurrency)
        try:
            await worker.run()
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
            await processor.close()
            log.info("worker_stopped")


def main() -> None:
    # Until the worker installs its own handlers, SIGTERM means a clean exit: nothing is held yet.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings()
    configure_logging(
        json=settings.json_logs, level=settings.log_level, secrets=secrets_of(settings)
    )
    try:
        import uvloop

        uvloop.run(run_worker(settings))
    except ImportError:
        asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
