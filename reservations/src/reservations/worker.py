"""The reservation workers: consume ``reservation-queue`` and write outcomes to PostgreSQL.

brokerq hands the processor batches of messages (``Channel.consume_batch``), two at a time: a
batch is what arrived while the previous one was written, so under load a transaction writes many
requests and when idle a request is written at once. A message is acknowledged only after its
outcome is committed, so a crash at any point leaves it to be redelivered, and the request id makes
the redelivery harmless. A batch whose transaction fails is written again request by request, so
one bad request is retried alone and its neighbours are done. A request that fails on its last
attempt gets its final outcome, FAILED (``reservation/settle/failed.py``), and its message still
goes to the dead letters, for an operator to inspect.
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

from .channels import RESERVATION_MAX_ATTEMPTS, HoldExpiry, ReserveEvent
from .log import get_logger
from .observability.logs import configure_logging, secrets_of
from .observability.tracing import (
    configure_tracing,
    consume_span,
    consume_spans,
    db_write_span,
    mark_failed,
)
from .reservation.gate import AdmissionGate
from .reservation.settle.batch import Incoming, process_batch
from .reservation.settle.failed import Failure, record_failures
from .reservation.settle.holds import HoldExpirer
from .reservation.settle.recovery import DELIVERED_HOLD_MS, maintenance_loop
from .reservation.settle.retention import retention_loop
from .resources import Resources, open_resources
from .runtime import freeze_startup_objects
from .settings import Settings

if TYPE_CHECKING:
    from brokerq import Channel, Consumer

__all__ = ["ReservationProcessor", "batch_shape", "consuming", "run_worker"]

log = get_logger(__name__)

WRITERS = 2
"""Batches written at once: while one transaction commits, the next batch is written."""
HOLD_BATCH = 500
"""Due holds' timers expired in one transaction."""


def batch_shape(max_parallel: int) -> tuple[int, int]:
    """``(max_batch, batches at once)`` that hold ``max_parallel`` messages at most."""
    writers = min(WRITERS, max_parallel)
    return max_parallel // writers, writers


class ReservationProcessor:
    """Writes batches of reservation requests; ``handle`` is the brokerq batch handler.

    ``max_attempts`` is the consumed channel's: a message that fails on that try is
    dead-lettered, so its request gets its final outcome then. ``timers``: the hold channel
    (see ``settle/holds.py``)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        gate: AdmissionGate,
        *,
        max_attempts: int = RESERVATION_MAX_ATTEMPTS,
        timers: Channel[HoldExpiry] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.gate = gate
        self.max_attempts = max_attempts
        self.timers = timers

    async def handle(self, messages: list[Message[ReserveEvent]]) -> dict[str, Exception]:
        """Returns once the outcomes of the batch are committed, with the messages whose request
        could not be written (brokerq retries them, or dead-letters those on their last
        attempt, whose requests are FAILED by then; the others are done)."""
        with consume_spans(messages) as spans:
            await self._hold(messages)
            failures = await self._write(messages)
            for message_id, error in failures.items():
                mark_failed(spans.get(message_id), error)
            if failures:
                await self._fail_for_good(messages, failures)
        return failures

    async def _fail_for_good(
        self, batch: list[Message[ReserveEvent]], failures: dict[str, Exception]
    ) -> None:
        """Write FAILED for the requests whose last attempt this was. If that fails too, the
        maintenance pass writes it from the dead letter (``settle.recovery``)."""
        last = [
            Failure(m.id, m.data, type(failures[m.id]).__name__)
            for m in batch
            if m.id in failures and m.tries >= self.max_attempts
        ]
        if not last:
            return
        try:
            await record_failures(self.session_factory, self.gate, last)
        except Exception as exc:
            log.warning(
                "reservation_failure_not_recorded",
                request_ids=[f.data.requestId for f in last][:20],
                error=type(exc).__name__,
            )

    async def _hold(self, batch: list[Message[ReserveEvent]]) -> None:
        """Tell recovery the queue has these requests: it must not queue copies of them while
        they fail and wait for their retries."""
        until_ms = time.time_ns() // 1_000_000 + DELIVERED_HOLD_MS
        await self.gate.hold_unfinished(
            [(m.data.requestId, m.data.eventId) for m in batch], until_ms
        )

    async def _write(self, batch: list[Message[ReserveEvent]]) -> dict[str, Exception]:
        try:
            with db_write_span([m.id for m in batch]):
                decisions = await process_batch(
                    self.session_factory,
                    self.gate,
                    [Incoming(m.id, m.data) for m in batch],
                    timers=self.timers,
                )
        except Exception as exc:
            if len(batch) == 1:
                [message] = batch
                with consume_span(message):
                    log.warning(
                        "reservation_request_failed",
                        request_id=message.data.requestId,
                        error=type(exc).__name__,
                        detail=str(exc)[:500],
                    )
                return {message.id: exc}
            # One bad request must not fail its neighbours: write them one by one.
            log.warning(
                "reservation_batch_failed",
                size=len(batch),
                error=type(exc).__name__,
                message_ids=[m.id for m in batch][:20],
            )
            failures: dict[str, Exception] = {}
            for message in batch:
                failures.update(await self._write([message]))
            return failures
        failures = {}
        for message in batch:
            decision = decisions.get(message.data.requestId)
            if decision is None:
                failures[message.id] = RuntimeError(
                    f"no outcome for request {message.data.requestId}"
                )
                continue
            with consume_span(message):
                log.debug(
                    "reservation_request_final",
                    request_id=message.data.requestId,
                    status=decision.status,
                    reason=decision.reason,
                )
        return failures


@asynccontextmanager
async def consuming(
    resources: Resources,
    *,
    max_parallel: int,
    channel: Channel[ReserveEvent] | None = None,
) -> AsyncIterator[Consumer[ReserveEvent]]:
    """Run one reservation consumer holding up to ``max_parallel`` messages in this event loop
    (for tests and embedded use). ``channel``: the reservation queue declared with other
    options (fewer attempts, say) than the service's."""
    channel = channel or resources.channel
    processor = ReservationProcessor(
        resources.session_factory,
        resources.gate,
        max_attempts=channel.options.max_attempts,
        timers=resources.holds,
    )
    max_batch, writers = batch_shape(max_parallel)
    expirer = HoldExpirer(resources.session_factory, resources.gate, resources.holds)
    timers = await resources.holds.consume_batch(
        expirer.handle, max_batch=HOLD_BATCH, max_parallel=1
    )
    consumer = await channel.consume_batch(
        processor.handle, max_batch=max_batch, max_parallel=writers
    )
    try:
        yield consumer
    finally:
        await consumer.close()
        await timers.close()


async def run_worker(settings: Settings) -> None:
    """Consume reservation requests until SIGTERM or SIGINT, then finish what is held and stop."""
    from brokerq import Worker

    configure_tracing("reservations-worker")
    # Two batches are written at once, each in one transaction: few connections suffice.
    async with open_resources(settings, pool_size=4) as resources:
        processor = ReservationProcessor(
            resources.session_factory,
            resources.gate,
            max_attempts=resources.channel.options.max_attempts,
            timers=resources.holds,
        )
        expirer = HoldExpirer(resources.session_factory, resources.gate, resources.holds)
        freeze_startup_objects()
        max_batch, writers = batch_shape(settings.worker_concurrency)
        worker = Worker(resources.queue)
        worker.add_batch(
            resources.channel, processor.handle, max_batch=max_batch, max_parallel=writers
        )
        worker.add_batch(resources.holds, expirer.handle, max_batch=HOLD_BATCH, max_parallel=1)
        recovery = asyncio.create_task(
            maintenance_loop(
                resources.gate,
                resources.channel,
                resources.session_factory,
                interval_s=settings.maintenance_interval_s,
                holds=resources.holds,
            ),
            name="reservation-maintenance",
        )
        retention = asyncio.create_task(
            retention_loop(
                resources.gate,
                resources.channel,
                resources.session_factory,
                retention=settings.retention,
                interval_s=settings.retention_interval_s,
            ),
            name="reservation-retention",
        )
        log.info("worker_started", max_parallel=settings.worker_concurrency, max_batch=max_batch)
        try:
            await worker.run()
        finally:
            for task in (recovery, retention):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
