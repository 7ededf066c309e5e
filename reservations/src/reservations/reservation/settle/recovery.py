"""The workers' maintenance pass: recover requests the API admitted but never queued, give a final
outcome to requests that reached the dead letters, keep the gate in line with PostgreSQL, end
holds whose timers were lost, and delete idempotency keys past their 24 h.

The API admits a request (one Redis call) and then queues it (another). An API process that dies
between the two leaves a request that was never answered with 202 but holds a gate place, and
would stay PENDING for ever. The gate records every accepted request until a worker has written
its outcome (each event's ``unfinished`` set, found through the gate's registry of events); a
worker takes those older than any normal delay and queues them again. A request that was in fact
queued is then delivered twice, which the request id makes harmless.

Only requests no worker has seen are queued again: a worker that receives a request holds it
away from recovery for ``DELIVERED_HOLD_MS``, far longer than the queue keeps retrying it, so a
request that fails and waits for its retry is never copied (each copy would end in the dead
letters of its own). A request whose message reached the dead letters is FAILED: by the worker
on its last attempt, or here when that write failed too (``failed.py``). Its dead letter stays,
for an operator to inspect (a redrive changes nothing: the outcome is final); dead letters of
requests final otherwise are deleted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from reservations.channels import Admission, HoldExpiry, ReserveEvent
from reservations.idempotency.store import delete_expired
from reservations.log import get_logger

from ..gate import AdmissionGate, PendingRequest
from ..models import RejectReason, RequestStatus, ReservationRequest
from ..repository import ReservationRepository
from ..waitlist import fill, granted
from .failed import Failure, error_class, record_failures
from .holds import expire_overdue, schedule
from .reconcile import apply_releases, reconcile_events

if TYPE_CHECKING:
    from brokerq import Channel, DeadLetter

__all__ = [
    "DELIVERED_HOLD_MS",
    "RECOVERY_GRACE_MS",
    "DeadLetterReport",
    "clear_final_held",
    "maintenance_loop",
    "maintenance_pass",
    "requeue_unfinished",
    "settle_dead_letters",
]

log = get_logger(__name__)
T = TypeVar("T")

_LINES_PER_PASS = 100
# Well past the normal time from admission to outcome; the queue's current lag is added to it.
RECOVERY_GRACE_MS = 30_000
# Longer than the queue keeps retrying a message (10 attempts, leases of 10 s, backoff to 30 s).
DELIVERED_HOLD_MS = 15 * 60_000
_BATCH = 500
_DEAD_PAGE = 1000
# Dead letters of FAILED requests are kept, so they add up until an operator deletes them; a pass
# reads this many at most.
_DEAD_SCAN_MAX = 100_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def requeue_unfinished(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    older_than_ms: int,
) -> int:
    """Queue again the unfinished requests admitted more than ``older_than_ms`` ago that no
    worker holds; returns how many were queued. Ones already final only have their leftovers
    cleared."""
    now_ms = _now_ms()
    unfinished = await gate.unfinished_before(now_ms - older_than_ms, limit=_BATCH)
    if not unfinished:
        return 0
    markers = await gate.pending_many(unfinished)
    ids = [request_id for request_id, _ in unfinished]
    async with session_factory() as session:
        final = {row.id: row for row in await ReservationRepository(session).requests(ids)}
    await _clear_final(gate, unfinished, markers, final)
    gone: list[tuple[str, int]] = []
    again = []
    for request_id, event_id in unfinished:
        pending = markers.get(request_id)
        if request_id in final:
            continue
        if pending is None:
            gone.append((request_id, event_id))  # the marker expired: nothing to rebuild it
        else:
            again.append(pending)
    await gate.forget_unfinished(gone)
    if again:
        dead = await _dead_request_ids(channel)
        held = [(p.request_id, p.event_id) for p in again if p.request_id in dead]
        again = [p for p in again if p.request_id not in dead]
        # In the dead letters and not final: FAILED could not be written yet, and the dead
        # letters step goes on trying; a copy would only fail again.
        await gate.hold_unfinished(held, now_ms + DELIVERED_HOLD_MS)
    if again:
        await channel.produce_many(
            [
                ReserveEvent(
                    userId=p.user_id,
                    eventId=p.event_id,
                    requestId=p.request_id,
                    admission=p.admission,
                    seq=p.seq,
                    acceptedAtMs=p.accepted_at_ms,
                    quantity=p.quantity,
                )
                for p in again
            ]
        )
        # Back of the line: looked at again only if no worker has received the copy by then.
        await gate.hold_unfinished([(p.request_id, p.event_id) for p in again], now_ms)
        log.warning(
            "unfinished_requests_requeued",
            count=len(again),
            request_ids=[p.request_id for p in again][:20],
        )
    return len(again)


async def _clear_final(
    gate: AdmissionGate,
    unfinished: list[tuple[str, int]],
    markers: Mapping[str, PendingRequest],
    final: Mapping[str, ReservationRequest],
) -> list[tuple[str, int]]:
    """Clear up after the requests of ``unfinished`` that are ``final`` (the worker died
    before it did, after its commit): as the worker would have, hand back the seat of one
    admitted and then rejected or sent to the line (a HELD or RESERVED one keeps its seat; an
    ended hold's seat went back when it ended), and finish them in the gate. Returns them."""
    cleared: list[tuple[str, int]] = []
    for request_id, _ in unfinished:
        pending = markers.get(request_id)
        row = final.get(request_id)
        if row is None:
            continue
        if (
            pending is not None
            and pending.admission is Admission.ADMITTED
            and row.status in (RequestStatus.REJECTED, RequestStatus.WAITING)
        ):
            await gate.release(event_id=row.event_id, user_id=row.user_id, request_id=request_id)
        cleared.append((request_id, row.event_id))
    await gate.finished(cleared)
    return cleared


async def clear_final_held(
    gate: AdmissionGate, session_factory: async_sessionmaker[AsyncSession]
) -> int:
    """Clear up after requests final in PostgreSQL that the gate still holds for a worker
    (``DELIVERED_HOLD_MS``), oldest first; returns how many.

    A worker clears up right after its commit, so normally there are none. But a Redis that went
    back in time (a replica that missed its primary's last writes took over) brings back the
    markers of requests finished meanwhile, still held away from recovery: without this they
    would count as pending, and keep their places in line, for ``DELIVERED_HOLD_MS``."""
    unfinished = await gate.unfinished_before(_now_ms() + DELIVERED_HOLD_MS + 1, limit=_BATCH)
    if not unfinished:
        return 0
    async with session_factory() as session:
        ids = [request_id for request_id, _ in unfinished]
        final = {row.id: row for row in await ReservationRepository(session).requests(ids)}
    if not final:
        return 0
    ended = [(request_id, event_id) for request_id, event_id in unfinished if request_id in final]
    markers = await gate.pending_many(ended)
    cleared = await _clear_final(gate, ended, markers, final)
    log.info(
        "final_requests_cleared",
        count=len(cleared),
        request_ids=[request_id for request_id, _ in cleared][:20],
    )
    return len(cleared)


async def _dead_request_ids(channel: Channel[ReserveEvent]) -> set[str]:
    found: set[str] = set()
    for offset in range(0, _DEAD_SCAN_MAX, _DEAD_PAGE):
        page = await channel.dead_letters(limit=_DEAD_PAGE, offset=offset)
        found.update(letter.data.requestId for letter in page if letter.data is not None)
        if len(page) < _DEAD_PAGE:
            break
    return found


@dataclass(slots=True)
class DeadLetterReport:
    failed: int = 0
    """Requests given their final outcome, FAILED, from their dead letters."""
    cleared: int = 0
    """Dead letters deleted because their requests are final otherwise."""


async def settle_dead_letters(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
) -> DeadLetterReport:
    """Look at every dead letter (up to ``_DEAD_SCAN_MAX``), a page at a time: a request with no
    final outcome is made FAILED (the worker could not write it on the last attempt) and its
    letter kept; the letters of FAILED requests are kept, for an operator; the others (a
    redelivery that failed after its outcome was written, a request finished by a redrive's
    twin) are deleted: they need nobody's attention."""
    report = DeadLetterReport()
    offset = 0
    while offset < _DEAD_SCAN_MAX:
        page = await channel.dead_letters(limit=_DEAD_PAGE, offset=offset)
        failed, cleared = await _settle_page(gate, channel, session_factory, page)
        report.failed += failed
        report.cleared += cleared
        if len(page) < _DEAD_PAGE:
            break
        offset += len(page) - cleared  # the deleted ones no longer take a place
    else:
        log.warning("dead_letters_not_all_read", read=_DEAD_SCAN_MAX)
    if report.failed or report.cleared:
        log.info("dead_letters_settled", failed=report.failed, cleared=report.cleared)
    return report


async def _settle_page(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    page: list[DeadLetter[ReserveEvent]],
) -> tuple[int, int]:
    letters = [(letter, letter.data) for letter in page if letter.data is not None]
    if not letters:
        return 0, 0
    async with session_factory() as session:
        rows = await ReservationRepository(session).requests(
            list({data.requestId for _, data in letters})
        )
    final = {row.id: row for row in rows if row.status != RequestStatus.PENDING}
    clear = [
        letter.id
        for letter, data in letters
        if data.requestId in final and final[data.requestId].reason != RejectReason.FAILED
    ]
    failures = [
        Failure(letter.id, data, error_class(letter.error))
        for letter, data in letters
        if data.requestId not in final
    ]
    failed = await _fail(gate, session_factory, failures)
    cleared = await channel.delete_dead(clear) if clear else 0
    return failed, cleared


async def _fail(
    gate: AdmissionGate,
    session_factory: async_sessionmaker[AsyncSession],
    failures: list[Failure],
) -> int:
    """FAILED for all, or one by one when that fails: a request PostgreSQL refuses even so (it
    keeps refusing its row) must not hold back the others."""
    if not failures:
        return 0
    try:
        return len(await record_failures(session_factory, gate, failures))
    except Exception as exc:
        if len(failures) == 1:
            log.warning(
                "dead_letter_failure_not_recorded",
                request_id=failures[0].data.requestId,
                error=type(exc).__name__,
            )
            return 0
    failed = 0
    for failure in failures:
        failed += await _fail(gate, session_factory, [failure])
    return failed


async def maintenance_pass(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    pass_number: int | None = None,
    holds: Channel[HoldExpiry] | None = None,
) -> None:
    """One of each: apply the gate's outbox, end holds whose timers were lost (a backstop, see
    ``holds.py``; ``holds`` is the hold channel, for the timers of seats given from waitlists),
    end the waitlists of events that took place, reconcile the gate, delete expired idempotency
    keys, settle the dead letters (before recovery: a request they make final is not looked at
    again), recover requests. A step that fails is logged and the others still run.
    ``pass_number`` (see ``reconcile_events``) is None for a pass that checks every event in
    full."""
    await _step("releases", lambda: apply_releases(gate, session_factory))
    await _step("overdue holds", lambda: expire_overdue(session_factory, gate, holds))
    await _step("past events' waitlists", lambda: end_past_waitlists(session_factory))
    await _step("waitlists", lambda: fill_waitlists(session_factory, gate, holds))
    await _step(
        "reconcile", lambda: reconcile_events(gate, session_factory, pass_number=pass_number)
    )
    await _step("idempotency keys", lambda: delete_expired(session_factory))
    stats = await _step("stats", channel.stats)
    if stats is None:
        return
    if stats.dead:
        await _step("dead letters", lambda: settle_dead_letters(gate, channel, session_factory))
    grace_ms = RECOVERY_GRACE_MS + stats.lag_ms
    await _step(
        "recovery",
        lambda: requeue_unfinished(gate, channel, session_factory, older_than_ms=grace_ms),
    )
    await _step("final requests held", lambda: clear_final_held(gate, session_factory))


async def fill_waitlists(
    session_factory: async_sessionmaker[AsyncSession],
    gate: AdmissionGate,
    timers: Channel[HoldExpiry] | None,
) -> int:
    """Seat the heads of lines next to free seats: the transactions that free seats or add to
    a line fill it themselves, but one that could not ask the gate, or a request that was
    still in flight then, leaves it to this. Returns how many requests were seated."""
    async with session_factory() as session, session.begin():
        repository = ReservationRepository(session)
        event_ids = await repository.lines_to_fill(limit=_LINES_PER_PASS)
        filled = await fill(repository, gate, event_ids)
        if timers is not None:
            await schedule(timers, filled.timers)
    await granted(gate, filled.grants)
    if filled.grants:
        log.info("waitlists_filled", count=len(filled.grants))
    return len(filled.grants)


async def end_past_waitlists(session_factory: async_sessionmaker[AsyncSession]) -> int:
    """EVENT_ENDED for the requests still waiting for a seat of an event that took place."""
    async with session_factory() as session, session.begin():
        ended = await ReservationRepository(session).end_waiting_past_events()
    if ended:
        log.info("waitlists_ended", count=len(ended))
    return len(ended)


async def _step(name: str, run: Callable[[], Awaitable[T]]) -> T | None:
    try:
        return await run()
    except Exception as exc:
        log.warning("maintenance_step_failed", step=name, error=type(exc).__name__)
        return None


async def maintenance_loop(
    gate: AdmissionGate,
    channel: Channel[ReserveEvent],
    session_factory: async_sessionmaker[AsyncSession],
    *,
    interval_s: float = 5.0,
    holds: Channel[HoldExpiry] | None = None,
) -> None:
    """Run ``maintenance_pass`` every ``interval_s``, in one worker at a time."""
    for pass_number in itertools.count():
        await asyncio.sleep(interval_s)  # a period, not a wait for some condition
        try:
            if await gate.try_lock("maintenance", int(interval_s * 1000)):
                await maintenance_pass(
                    gate, channel, session_factory, pass_number=pass_number, holds=holds
                )
        except Exception as exc:
            log.warning("maintenance_failed", error=type(exc).__name__)
