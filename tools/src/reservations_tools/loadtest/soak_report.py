"""The soak's summary table and its plot: Redis memory, PostgreSQL size and accepted
requests/s over the run, with the warm-up and the two compared thirds marked."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .report import add_checks
from .soak import SoakResult, _median

__all__ = ["soak_plot", "soak_table"]


def soak_table(r: SoakResult) -> Table:
    p = r.plan
    first, last = r.thirds()
    table = Table(title="reservation load test: soak", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("service", r.base_url),
        ("run", f"{p.minutes:g} min at {p.rate:,.0f} requests/s, {p.users:,} users"),
        (
            "events",
            f"{r.events:,} of {p.tickets:,} seats, one every {p.event_every_s:g} s, each on sale "
            f"{p.event_life_s:g} s",
        ),
        ("accepted / failed", f"{r.accepted:,} / {r.failed:,}"),
        ("sent again after a connection reset", f"{r.resent:,}"),
        ("warm-up left out", f"{p.warmup_s:,.0f} s"),
    ]
    for label, name, unit in (
        ("Redis used_memory", "redis_bytes", "MB"),
        ("Redis keys", "redis_keys", ""),
        ("PostgreSQL database size", "pg_bytes", "MB"),
        ("request rows", "request_rows", ""),
        ("accepted requests/s", "accepted_rps", "/s"),
    ):
        a, b = _median(first, name), _median(last, name)
        if unit == "MB":
            a, b = a / 2**20, b / 2**20
        rows.append((f"{label}: first / last third (median)", f"{a:,.1f} / {b:,.1f} {unit}"))
    for label, value in rows:
        table.add_row(label, value)
    add_checks(table, r.checks)
    return table


def soak_plot(r: SoakResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    minutes = [s.t_s / 60 for s in r.samples]
    first, last = r.thirds()
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    panels = (
        ("Redis used_memory (MB)", [s.redis_bytes / 2**20 for s in r.samples], "tab:red"),
        ("PostgreSQL database size (MB)", [s.pg_bytes / 2**20 for s in r.samples], "tab:blue"),
        ("accepted requests/s", [s.accepted_rps for s in r.samples], "tab:green"),
    )
    for ax, (label, values, colour) in zip(axes, panels, strict=True):
        ax.plot(minutes, values, color=colour, linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0, top=max(values, default=1) * 1.15 or 1)
        ax.axvspan(0, r.plan.warmup_s / 60, color="grey", alpha=0.12)
        for part in (first, last):
            if part:
                ax.axvspan(part[0].t_s / 60, part[-1].t_s / 60, color=colour, alpha=0.08)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(
        f"soak: {r.plan.rate:,.0f} requests/s for {r.plan.minutes:g} min over {r.events:,} "
        f"events (grey: warm-up; shaded: the thirds compared)"
    )
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
