"""The holds run's verdict: what the event's reservations, its outcome counts and the clients'
views must agree on, and the figures the report shows.

Everything is computed from what the service answered after the close: every reservation the
event ever had (``[reservedAt, cancelledAt)`` is when it took a seat, ``confirmedAt`` when a hold
became RESERVED, ``expiresAt`` when the hold was due to end), the request each belongs to (its
user's; every user sends one request) and that request's arrival number ``seq``, as its client
saw it. A seat that comes back goes to the line in the transaction that freed it, so a promoted
reservation is one whose ``reservedAt`` is another's ``cancelledAt``, to the microsecond.

Those times are PostgreSQL's ``now()``, the start of the transaction that wrote them, not the
moment it took the event's lock to hand the seat on: two expiries running side by side can hand
their seats on in the order opposite to their times. The order in which the seats were handed on
is the reservations' ids, drawn under that lock; the line's order is checked against those.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .holds_result import HoldsResult, micros
from .setup import Check

__all__ = ["Analysis", "analyse", "holds_checks"]

_LIVE = ("HELD", "RESERVED")


@dataclass(slots=True)
class Seat:
    """One reservation, its times in microseconds since the epoch."""

    id: int
    user_id: int
    status: str
    reserved_us: int
    cancelled_us: int | None
    expires_us: int | None
    confirmed_us: int | None
    seq: int  # its request's arrival number (-1: not one of the run's)
    client: int | None  # the run's client index


@dataclass
class Analysis:
    seats: list[Seat]
    by_status: dict[str, int]
    live_max: int  # most reservations taking a seat at one instant
    live_max_at_s: float
    sampled_max: int  # most ``reservedTickets`` the monitor saw
    promoted: list[Seat]  # in the order they were given (reservation ids)
    stamps_inverted: int  # promotions whose ``reservedAt`` is before the one given before
    expired: list[Seat]
    expired_matched: int  # expired holds whose seat went to the line at that very instant
    expiry_to_seat_s: np.ndarray  # per expired hold: cancelledAt - expiresAt
    out_of_order: int  # promotions given to a later arrival than the one before
    closed_out: list[int]  # the client indexes of the accepted requests that got no seat (and
    # were not found lost with Redis's data)
    passed_over: int  # requests closed out of the line that arrived before a promoted one
    first_closed_seq: int  # the earliest arrival closed out of the line
    bad_seqs: int  # arrival numbers seen twice or below 1, or seats of unknown number
    bad_seqs_detail: str  # the three counts of ``bad_seqs``
    idle_seat_s: float | None  # seat-seconds left free while requests waited (None: not judged)
    double: int  # users holding two live reservations
    confirmed: int  # confirmations answered 200
    confirm_late: int  # confirmations refused (409): the hold had ended
    lost_holds: int  # holders that meant to confirm and whose hold expired
    notice_s: np.ndarray  # promoted holders: from the promotion to their client seeing it
    notice_first_s: np.ndarray  # the first holders: from the win to their client seeing it
    read_back_bad: list[str] = field(default_factory=list)

    @property
    def live_end(self) -> int:
        return sum(self.by_status.get(s, 0) for s in _LIVE)


def _first_attempt_seated(r: HoldsResult, client: int | None) -> bool:
    """The client's POST was sent again after a 5xx and its own request ended DUPLICATE: the
    first attempt was accepted after all (admitted before Redis or the API failed) and is the
    request that holds the user's place; its arrival number is not the client's."""
    if client is None or r.clients[client].retries == 0:
        return False
    data = r.read_back.get(client, {})
    return (data.get("status"), data.get("reason")) == ("REJECTED", "DUPLICATE")


def _seats(r: HoldsResult) -> list[Seat]:
    by_user = {c.user_id: i for i, c in enumerate(r.clients) if c.job_id}
    seats: list[Seat] = []
    for item in r.reservations:
        user = int(item["userId"])
        client = by_user.get(user)
        unknown = client is None or _first_attempt_seated(r, client)
        reserved = micros(item.get("reservedAt"))
        seats.append(
            Seat(
                id=int(item["id"]),
                user_id=user,
                status=str(item["status"]),
                reserved_us=reserved if reserved is not None else 0,
                cancelled_us=micros(item.get("cancelledAt")),
                expires_us=micros(item.get("expiresAt")),
                confirmed_us=micros(item.get("confirmedAt")),
                seq=-1 if unknown or client is None else r.clients[client].seq,
                client=client,
            )
        )
    return seats


def live_steps(seats: list[Seat]) -> list[tuple[int, int]]:
    """(time, seats taken from then on), at every time the count changes: half-open intervals
    ``[reservedAt, cancelledAt)``, so a seat handed on in one transaction is counted once."""
    deltas: Counter[int] = Counter()
    for s in seats:
        deltas[s.reserved_us] += 1
        if s.cancelled_us is not None:
            deltas[s.cancelled_us] -= 1
    steps: list[tuple[int, int]] = []
    live = 0
    for t in sorted(deltas):
        live += deltas[t]
        steps.append((t, live))
    return steps


def _idle(steps: list[tuple[int, int]], capacity: int, start: int, end: int) -> float:
    """Seat-seconds below ``capacity`` within ``[start, end)``."""
    idle = 0.0
    live = 0
    at = start
    for t, count in steps:
        if t <= start:
            live = count
            continue
        if t >= end:
            break
        idle += max(0, capacity - live) * (t - at) / 1e6
        at, live = t, count
    if end > at:
        idle += max(0, capacity - live) * (end - at) / 1e6
    return idle


def analyse(r: HoldsResult) -> Analysis:
    seats = _seats(r)
    steps = live_steps(seats)
    live_max, live_max_at = 0, 0
    for t, count in steps:
        if count > live_max:
            live_max, live_max_at = count, t
    cancelled = {s.cancelled_us for s in seats if s.cancelled_us is not None}
    promoted = sorted((s for s in seats if s.reserved_us in cancelled), key=lambda s: s.id)
    # (Seats held by a first attempt the client sent again have no known number: left out.)
    numbered = [s for s in promoted if s.seq > 0]
    out_of_order = sum(1 for a, b in itertools.pairwise(numbered) if b.seq <= a.seq)
    inverted = sum(1 for a, b in itertools.pairwise(promoted) if b.reserved_us < a.reserved_us)
    expired = [s for s in seats if s.status == "EXPIRED"]
    given = Counter(s.reserved_us for s in promoted)
    matched = 0
    for s in expired:
        if s.cancelled_us is not None and given[s.cancelled_us] > 0:
            given[s.cancelled_us] -= 1
            matched += 1
    delays = np.asarray(
        [
            (s.cancelled_us - s.expires_us) / 1e6
            for s in expired
            if s.cancelled_us is not None and s.expires_us is not None
        ]
    )

    seated = {s.client for s in seats if s.client is not None}
    closed_out = [
        i for i, c in enumerate(r.clients) if c.job_id and i not in seated and c.status != "LOST"
    ]
    # Arrival numbers are the event's counter at the gate: the accepted requests are 1..N, one
    # each. So the requests closed out before the last promoted one are the numbers up to it
    # without a seat, whether their clients looked at them or not (far back, most never do).
    seated_seqs = {s.seq for s in seats if s.client is not None and s.seq > 0}
    last_promoted = max((s.seq for s in promoted), default=0)
    passed_over = last_promoted - sum(1 for q in seated_seqs if q <= last_promoted)
    first_closed = next(q for q in itertools.count(1) if q not in seated_seqs)
    # A request lost with Redis's data gave its number back with the gate's counter.
    known = [c.seq for c in r.clients if c.seq >= 0 and c.status != "LOST"]
    seq_twice = len(known) - len(set(known))
    # Numbers are unique, not dense: an attempt undone because Redis failed before it was
    # queued keeps its number, and after Redis lost writes its checkpoint had seen the gate
    # numbers on from past a gap (``LOSS_SEQ_GAP``). So above ``accepted`` is no fault.
    seq_outside = sum(1 for q in known if q < 1)
    seq_unknown = sum(
        1
        for s in seats
        if s.client is not None and s.seq < 0 and not _first_attempt_seated(r, s.client)
    )
    bad_seqs = seq_twice + seq_outside + seq_unknown

    idle: float | None = None
    closed_at = micros(r.event.get("closedAt"))
    if closed_out and r.all_processed_s is not None and closed_at is not None:
        # From the moment every request was seen processed, the requests closed out at the end
        # were all in line: no seat may be free until the close.
        start = round((r.wall0 + r.all_processed_s) * 1e6)
        idle = _idle(steps, r.seats, start, closed_at) if start < closed_at else 0.0

    live_users = Counter(s.user_id for s in seats if s.status in _LIVE)
    promoted_ids = {s.id for s in promoted}
    by_reservation = {s.id: s for s in seats}
    notice: list[float] = []
    notice_first: list[float] = []
    for c in r.clients:
        seat = by_reservation.get(c.reservation_id or -1)
        if seat is None or math.isnan(c.held_seen_s):
            continue
        delay = c.held_seen_s - r.server_s(seat.reserved_us)
        (notice if seat.id in promoted_ids else notice_first).append(delay)
    lost_holds = sum(
        1
        for s in seats
        if s.status == "EXPIRED" and s.client is not None and not r.clients[s.client].never_confirm
    )
    return Analysis(
        seats=seats,
        by_status=dict(Counter(s.status for s in seats)),
        live_max=live_max,
        live_max_at_s=r.server_s(live_max_at) if live_max_at else math.nan,
        sampled_max=max((s.reserved_tickets for s in r.samples), default=0),
        promoted=promoted,
        stamps_inverted=inverted,
        expired=expired,
        expired_matched=matched,
        expiry_to_seat_s=delays,
        out_of_order=out_of_order,
        closed_out=closed_out,
        passed_over=passed_over,
        first_closed_seq=first_closed,
        bad_seqs=bad_seqs,
        bad_seqs_detail=f"{seq_twice} twice, {seq_outside} below 1, "
        f"{seq_unknown} seats of unknown number",
        idle_seat_s=idle,
        double=sum(n - 1 for n in live_users.values() if n > 1),
        confirmed=sum(1 for c in r.clients if c.confirm == 200),
        confirm_late=sum(1 for c in r.clients if c.confirm == 409),
        lost_holds=lost_holds,
        notice_s=np.asarray(notice),
        notice_first_s=np.asarray(notice_first),
        read_back_bad=_read_back_bad(r, seats),
    )


def _read_back_bad(r: HoldsResult, seats: list[Seat]) -> list[str]:
    """What the requests read back after the close say against the reservations."""
    mine = {s.client: s for s in seats if s.client is not None}
    bad: list[str] = []
    for i, data in sorted(r.read_back.items()):
        seat = mine.get(i)
        status, reason, seq = data.get("status"), data.get("reason"), data.get("seq")
        if seat is None:
            closed = (status, reason) == ("REJECTED", "EVENT_CLOSED")
            if not closed and status != "LOST" and not _first_attempt_seated(r, i):
                bad.append(f"seq {seq}: {status} {reason or ''}, no seat")
        elif _first_attempt_seated(r, i):
            continue
        elif status not in _LIVE or data.get("reservationId") != seat.id:
            bad.append(f"seq {seq}: {status} {data.get('reservationId')}, seat {seat.id}")
        elif status == "HELD" and data.get("reservationStatus") != seat.status:
            bad.append(f"seq {seq}: hold {data.get('reservationStatus')}, seat {seat.status}")
    return bad


def percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(values.max())}


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return int(value) if isinstance(value, int) else -1


def holds_checks(r: HoldsResult, a: Analysis | None = None) -> list[Check]:
    a = a or analyse(r)
    s = r.scenario
    o = r.outcomes
    checks: list[Check] = []
    checks.append(
        Check(
            "every POST accepted (202)",
            r.errors == 0,
            f"{r.accepted:,} of {s.requests:,} accepted; {r.errors:,} failed",
        )
    )
    not_final = sum(
        1
        for d in r.read_back.values()
        if d.get("status") not in ("HELD", "RESERVED", "REJECTED", "LOST")
    )
    final, lost = _int(o, "final"), max(_int(o, "lost"), 0)
    checks.append(
        Check(
            "every request final after the close",
            _int(o, "pending") == 0
            and _int(o, "waiting") == 0
            and final + lost == _int(o, "accepted")
            and final + lost >= r.accepted
            and not_final == 0,
            f"{final:,} final and {lost:,} lost of {_int(o, 'accepted'):,} accepted (the run saw "
            f"{r.accepted:,}), pending {_int(o, 'pending')}, waiting {_int(o, 'waiting')}; "
            f"{not_final} of {len(r.read_back):,} read back not final",
        )
    )
    reasons = o.get("byReason") or {}
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "none rejected"
    if r.retried:
        # A POST sent again after a 5xx whose first attempt was accepted after all ends
        # DUPLICATE (the first attempt holds the user's place), as for a user who pressed twice.
        duplicates = int(reasons.get("DUPLICATE", 0))
        checks.append(
            Check(
                "no request rejected but by the close (or as a retry's DUPLICATE)",
                set(reasons) <= {"EVENT_CLOSED", "DUPLICATE"}
                and duplicates <= sum(1 for c in r.clients if c.retries),
                f"{detail}; {r.retried:,} POSTs sent again",
            )
        )
    else:
        # Lost requests no client asked about are among the clients' requests without a seat.
        closed = len(a.closed_out) - max(0, lost - r.lost_seen)
        checks.append(
            Check(
                f"the {closed:,} requests without a seat ended EVENT_CLOSED",
                reasons == ({"EVENT_CLOSED": closed} if closed else {})
                and _int(o, "rejected") == closed,
                detail,
            )
        )
    checks.append(
        Check(
            f"never more than {r.seats:,} seats taken at once",
            a.live_max <= r.seats and a.sampled_max <= r.seats,
            f"at most {a.live_max:,} HELD+RESERVED (reservations' intervals), "
            f"{a.sampled_max:,} reservedTickets sampled",
        )
    )
    checks.append(
        Check(
            "seats came back to the line in arrival order",
            a.out_of_order == 0,
            f"{len(a.promoted):,} promotions, {a.out_of_order} to an earlier arrival than the one "
            f"before ({a.stamps_inverted} timed before the one before)",
        )
    )
    last = max((p.seq for p in a.promoted), default=None)
    checks.append(
        Check(
            "the requests closed out all came after every promoted one",
            a.passed_over == 0 and a.bad_seqs == 0,
            f"last promoted seq {last}, first closed out {a.first_closed_seq}; "
            f"{a.passed_over} passed over; {a.bad_seqs} arrival numbers amiss "
            f"({a.bad_seqs_detail})",
        )
    )
    if a.idle_seat_s is not None:
        checks.append(
            Check(
                "no seat left free while requests waited",
                a.idle_seat_s == 0.0,
                f"{a.idle_seat_s:.3f} seat-seconds free from the last request processed to "
                "the close",
            )
        )
    reserved = a.by_status.get("RESERVED", 0)
    checks.append(
        Check(
            "RESERVED seats = confirmations",
            reserved == a.confirmed,
            f"{reserved:,} RESERVED, {a.confirmed:,} confirmations answered 200",
        )
    )
    event_seats = _int(r.event, "reservedTickets")
    remaining = _int(r.event, "remainingTickets")
    checks.append(
        Check(
            "the event's reservedTickets = live reservations",
            event_seats == a.live_end and remaining == r.seats - a.live_end,
            f"reservedTickets {event_seats:,}, remainingTickets {remaining:,}; "
            f"{a.live_end:,} HELD+RESERVED listed",
        )
    )
    strangers = sum(1 for seat in a.seats if seat.client is None)
    checks.append(
        Check(
            "no user holds two seats; every seat is the run's",
            a.double == 0 and strangers == 0,
            f"{a.double} duplicates, {strangers} others",
        )
    )
    checks.append(
        Check(
            f"requests read back agree ({len(r.read_back):,})",
            not a.read_back_bad,
            "; ".join(a.read_back_bad[:3]) or "every one",
        )
    )
    if s.target_expiry_to_seat_p99_s is not None:
        back = percentiles(a.expiry_to_seat_s)
        checks.append(
            Check(
                f"a seat is back within {s.target_expiry_to_seat_p99_s:g} s of its hold's "
                "expiry (p99)",
                a.expiry_to_seat_s.size == 0 or back["p99"] <= s.target_expiry_to_seat_p99_s,
                "no hold expired"
                if a.expiry_to_seat_s.size == 0
                else f"{back['p99'] * 1000:,.0f} ms",
                target=True,
            )
        )
    return checks
