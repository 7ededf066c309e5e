"""The holds run's summary table, its JSON figures and its PNG plot (``report.py``'s style)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from .holds_checks import Analysis, Seat, analyse, percentiles
from .holds_result import HoldsResult
from .report import add_checks, table_text

__all__ = ["holds_figures", "holds_plot", "holds_summary_table", "holds_summary_text"]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:,.0f} ms"


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.2f} s"


def _spread(values: np.ndarray, fmt: Any = _ms) -> str:
    p = percentiles(values)
    return f"{fmt(p['p50'])} / {fmt(p['p99'])} / {fmt(p['max'])} ({values.size:,})"


def holds_summary_table(r: HoldsResult, a: Analysis | None = None) -> Table:
    a = a or analyse(r)
    s = r.scenario
    post = r.post_percentiles_ms()
    looks = r.look_times_s
    span = max(r.ended_s, 1e-9)
    never = sum(1 for c in r.clients if c.never_confirm)
    table = Table(title=f"reservation load test: {s.name}", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("service", r.base_url),
        ("event", f"{r.event_id}: {s.tickets:,} seats held {s.hold_seconds} s, waitlist"),
        ("clients", f"{s.requests:,} (one request each); {never:,} never confirm "
                    f"({s.never_confirm:.0%}), the others after 0-{s.think_s:g} s"),
        ("connections", f"{min(s.connections, s.requests):,} sending, 32 following"),
        ("setup (users, event)", f"{r.setup_s:.1f} s"),
        ("accepted / failed", f"{r.accepted:,} / {r.errors:,}"),
        ("sending took", f"{r.fire_duration_s:.2f} s ({r.accepted_rps:,.0f} accepted/s)"),
        ("POST p50 / p95 / p99",
         f"{post['p50']:,.1f} / {post['p95']:,.1f} / {post['p99']:,.1f} ms"),
        ("status looks", f"{looks.size:,} ({looks.size / span:,.0f}/s over the run), "
                         f"{r.look_errors:,} failed"),
        ("first looks made: what they found",
         f"{sum(r.first_seen.values()):,} of {r.accepted:,}: "
         + ", ".join(f"{k} {v:,}" for k, v in sorted(r.first_seen.items()))),
        ("look latency by status found p50 / p99",
         "; ".join(f"{k} {_spread(v / 1000.0)}" for k, v in sorted(r.look_ms.items()))),
        ("run ended", f"{r.end_reason}, {r.ended_s:.1f} s after the first POST"),
        ("holds won at first / promotions from the line",
         f"{len(a.seats) - len(a.promoted):,} / {len(a.promoted):,}"
         + (f" ({a.stamps_inverted} timed before the one handed on before them)"
            if a.stamps_inverted else "")),
        ("reservations by status at the end",
         ", ".join(f"{k} {v:,}" for k, v in sorted(a.by_status.items())) or "-"),
        ("confirmed / refused (hold ended)", f"{a.confirmed:,} / {a.confirm_late:,}"),
        ("holders that meant to confirm and lost the hold", f"{a.lost_holds:,}"),
        ("first holders: seen by their client p50 / p99 / max", _spread(a.notice_first_s)),
        ("promoted holders: seen by their client p50 / p99 / max", _spread(a.notice_s)),
        ("expired holds given to the line at once", f"{a.expired_matched:,} of {len(a.expired):,}"),
        ("seat back after expiry p50 / p99 / max", _spread(a.expiry_to_seat_s)),
        ("most seats taken at once (intervals / sampled)",
         f"{a.live_max:,} / {a.sampled_max:,} of {s.tickets:,}"),
        ("closed out of the line (EVENT_CLOSED)", f"{len(a.closed_out):,}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    add_checks(table, r.checks)
    return table


def holds_summary_text(r: HoldsResult) -> str:
    return table_text(holds_summary_table(r), width=140)


def _clean(d: dict[str, float], scale: float = 1.0) -> dict[str, float | None]:
    return {k: (None if math.isnan(v) else round(v * scale, 3)) for k, v in d.items()}


def holds_figures(r: HoldsResult, a: Analysis | None = None) -> dict[str, Any]:
    a = a or analyse(r)
    s = r.scenario
    return {
        "scenario": s.name,
        "base_url": r.base_url,
        "event_id": r.event_id,
        "requests": s.requests,
        "tickets": s.tickets,
        "hold_seconds": s.hold_seconds,
        "never_confirm": s.never_confirm,
        "think_max_s": s.think_s,
        "connections": min(s.connections, s.requests),
        "accepted": r.accepted,
        "failed": r.errors,
        "send_duration_s": round(r.fire_duration_s, 3),
        "accepted_rps": round(r.accepted_rps, 1),
        "post_ms": _clean(r.post_percentiles_ms()),
        "looks": int(r.look_times_s.size),
        "look_errors": r.look_errors,
        "first_looks": r.first_seen,
        "look_ms": {k: _clean(percentiles(v)) for k, v in r.look_ms.items()},
        "end_reason": r.end_reason,
        "ended_s": round(r.ended_s, 3),
        "promotions": len(a.promoted),
        "promotions_timed_before_the_previous": a.stamps_inverted,
        "retried": r.retried,
        "lost_seen": r.lost_seen,
        "reservations": a.by_status,
        "confirmed": a.confirmed,
        "confirm_refused": a.confirm_late,
        "lost_holds": a.lost_holds,
        "expired": len(a.expired),
        "expired_given_at_once": a.expired_matched,
        "expiry_to_seat_ms": _clean(percentiles(a.expiry_to_seat_s), 1000.0),
        "promoted_seen_ms": _clean(percentiles(a.notice_s), 1000.0),
        "first_seen_ms": _clean(percentiles(a.notice_first_s), 1000.0),
        "live_max": a.live_max,
        "sampled_reserved_tickets_max": a.sampled_max,
        "closed_out": len(a.closed_out),
        "outcomes": r.outcomes,
        "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail, "target": c.target} for c in r.checks
        ],
        "ok": r.ok,
        "targets_ok": r.targets_ok,
    }


def _series(seats: list[Seat], r: HoldsResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seats HELD and RESERVED over time (s since the first POST), as steps."""
    changes: dict[int, list[int]] = {}
    for seat in seats:
        end = seat.cancelled_us
        held_end = seat.confirmed_us if seat.confirmed_us is not None else end
        for t, dh, dr in (
            (seat.reserved_us, 1, 0),
            (held_end, -1, 0),
            (seat.confirmed_us, 0, 1),
            (end if seat.confirmed_us is not None else None, 0, -1),
        ):
            if t is not None:
                step = changes.setdefault(t, [0, 0])
                step[0] += dh
                step[1] += dr
    times = sorted(changes)
    held = np.cumsum([changes[t][0] for t in times]) if times else np.empty(0)
    reserved = np.cumsum([changes[t][1] for t in times]) if times else np.empty(0)
    return np.asarray([r.server_s(t) for t in times]), held, reserved


def _rate(times: np.ndarray, end: float, width: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    if times.size == 0:
        return np.empty(0), np.empty(0)
    bins = np.arange(0.0, max(end, float(times.max())) + width, width)
    counts, edges = np.histogram(times, bins=bins)
    return edges[:-1] + width / 2, counts / width


def holds_plot(r: HoldsResult, path: Path, a: Analysis | None = None) -> Path:
    """Four panels: the seats (HELD, RESERVED) over time; the line and the promotions; what the
    clients sent over time; how long after its hold's end each expired seat went to the line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = a or analyse(r)
    s = r.scenario
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(4, 1, figsize=(10, 15), constrained_layout=True)
    end = r.ended_s + 1.0

    ax = axes[0]
    t, held, reserved = _series(a.seats, r)
    if t.size:
        ax.step(t, held, where="post", label="HELD")
        ax.step(t, reserved, where="post", label="RESERVED (confirmed)")
        ax.step(t, held + reserved, where="post", color="black", linewidth=1, label="taken")
    if r.samples:
        ax.plot(
            [x.t_s for x in r.samples], [x.reserved_tickets for x in r.samples], ".",
            markersize=3, color="grey", label="reservedTickets (sampled)",
        )  # fmt: skip
    ax.axhline(s.tickets, color="tab:red", linestyle="--", linewidth=1, label="seats")
    ax.set_xlim(0, end)
    ax.set_xlabel("time since first request (s)")
    ax.set_ylabel("seats")
    ax.set_title(
        f"{s.name}: {s.requests:,} requests, {s.tickets:,} seats held {s.hold_seconds} s, "
        f"{s.never_confirm:.0%} never confirm; {r.end_reason} at {r.ended_s:.1f} s"
    )
    ax.legend(loc="center right")
    ax.grid(True, alpha=0.3)

    ax = axes[1]
    if r.samples:
        ts = [x.t_s for x in r.samples]
        ax.plot(ts, [x.waiting for x in r.samples], label="WAITING (sampled)")
        ax.plot(ts, [x.pending for x in r.samples], label="PENDING (sampled)")
    ax.set_xlim(0, end)
    ax.set_xlabel("time since first request (s)")
    ax.set_ylabel("requests")
    ax.set_title("the line, and the seats that came back to it")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    twin = ax.twinx()
    if a.promoted:
        pt = np.sort([r.server_s(p.reserved_us) for p in a.promoted])
        twin.step(pt, np.arange(1, pt.size + 1), where="post", color="tab:green",
                  label="promotions")  # fmt: skip
    if a.expired:
        et = np.sort([r.server_s(e.cancelled_us or 0) for e in a.expired])
        twin.step(et, np.arange(1, et.size + 1), where="post", color="tab:red",
                  linestyle=":", label="holds expired")  # fmt: skip
    twin.set_ylabel("seats (cumulative)")
    twin.legend(loc="upper right")

    ax = axes[2]
    answered = (r.starts_s + r.latencies_s)[r.statuses > 0]
    for times, label in (
        (answered, "POST answered"),
        (r.look_times_s, "status looks"),
        (r.confirm_times_s, "confirmations"),
    ):
        x, y = _rate(np.asarray(times), end)
        if x.size:
            ax.plot(x, y, label=label)
    ax.set_xlim(0, end)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time since first request (s)")
    ax.set_ylabel("requests/s (per 0.5 s)")
    ax.set_title("what the clients sent")
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)

    ax = axes[3]
    delays = a.expiry_to_seat_s * 1000.0
    if delays.size:
        ax.hist(delays, bins=60)
        p = percentiles(delays)
        for name, color in (("p50", "tab:green"), ("p99", "tab:red")):
            ax.axvline(p[name], color=color, alpha=0.6, label=f"{name} {p[name]:,.0f} ms")
        if s.target_expiry_to_seat_p99_s is not None:
            ax.axvline(s.target_expiry_to_seat_p99_s * 1000, color="black", linestyle="--",
                       linewidth=1, label="target")  # fmt: skip
        ax.legend(loc="upper right")
    ax.set_xlabel("seat back after its hold's expiry: cancelledAt - expiresAt (ms)")
    ax.set_ylabel("expired holds")
    ax.set_title(
        f"{len(a.expired):,} holds expired, {a.expired_matched:,} given to the line at once"
    )
    ax.grid(True, alpha=0.3)

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
