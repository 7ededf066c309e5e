"""The load test's summary table and its PNG plot."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .runner import RunResult
from .setup import Check

__all__ = ["add_checks", "plot", "summary_table", "summary_text", "table_text"]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f} ms"


def summary_table(r: RunResult) -> Table:
    s = r.scenario
    post = r.post_percentiles_ms()
    final = r.final_percentiles_ms()
    table = Table(title=f"reservation load test: {s.name}", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("service", r.base_url),
        ("event", f"{r.event_id} ({s.tickets:,} tickets)"),
        ("requests sent", f"{s.requests:,} ({r.scenario.users:,} users, {s.repeats:,} repeats)"),
        ("connections", f"{min(s.connections, s.requests):,}"),
        ("setup (users, event)", f"{r.setup_s:.1f} s"),
        ("accepted / failed", f"{r.accepted:,} / {r.errors:,}"),
        ("sending took", f"{r.fire_duration_s:.2f} s"),
        ("accepted req/s", f"{r.accepted_rps:,.0f}"),
        (
            "load generator CPU while sending",
            f"{r.client_cpu_s:.2f} s ({1e6 * r.client_cpu_s / max(s.requests, 1):,.0f} µs/request, "
            f"{100 * r.client_cpu_s / max(r.fire_duration_s, 1e-9):.0f}% of a core)",
        ),
        ("POST p50 / p95 / p99", f"{_ms(post['p50'])} / {_ms(post['p95'])} / {_ms(post['p99'])}"),
        ("POST max", _ms(post["max"])),
        (
            f"to final p50 / p95 / p99 ({r.final_source})",
            f"{_ms(final['p50'])} / {_ms(final['p95'])} / {_ms(final['p99'])}",
        ),
        (
            "all final after last POST",
            "never" if r.final_after_last_s is None else f"{r.final_after_last_s:.2f} s",
        ),
        ("outcomes written/s (to all final)", f"{r.outcomes_per_s:,.0f}"),
        ("reservations written/s (to the last)", f"{r.reservations_per_s:,.0f}"),
        ("reserved / rejected / pending",
         f"{r.outcomes.reserved:,} / {r.outcomes.rejected:,} / {r.outcomes.pending:,}"),
        ("rejections by reason",
         ", ".join(f"{k} {v:,}" for k, v in sorted(r.outcomes.reasons.items())) or "-"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    add_checks(table, r.checks)
    return table


def summary_text(r: RunResult) -> str:
    return table_text(summary_table(r), width=120)


def add_checks(table: Table, checks: Iterable[Check]) -> None:
    """The checks below the figures: PASS, FAIL, or MISS for a target."""
    table.add_section()
    for check in checks:
        mark = (
            "[green]PASS[/]"
            if check.ok
            else ("[yellow]MISS[/]" if check.target else "[red]FAIL[/]")
        )
        kind = "target: " if check.target else ""
        table.add_row(f"{mark} {kind}{check.name}", check.detail)


def table_text(table: Table, *, width: int) -> str:
    """The table as plain text (no colours)."""
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def plot(r: RunResult, path: Path) -> Path:
    """Three panels: POST latency over time, requests accepted vs final, latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    answered = r.statuses > 0
    t_end = (r.starts_s + r.latencies_s)[answered]
    lat_ms = r.latencies_s[answered] * 1000.0
    post = r.post_percentiles_ms()

    fig, axes = plt.subplots(3, 1, figsize=(10, 11), constrained_layout=True)
    ax = axes[0]
    if t_end.size:
        step = max(1, t_end.size // 20_000)
        order = np.argsort(t_end)
        ax.scatter(t_end[order][::step], lat_ms[order][::step], s=2, alpha=0.3, label="POST")
        bins = np.arange(0.0, float(t_end.max()) + 0.1, 0.1)
        which = np.digitize(t_end, bins)
        centers, p50s, p99s = [], [], []
        for b in np.unique(which):
            sel = lat_ms[which == b]
            if sel.size >= 5:
                centers.append(bins[b - 1] + 0.05)
                p50s.append(np.percentile(sel, 50))
                p99s.append(np.percentile(sel, 99))
        ax.plot(centers, p50s, color="tab:green", label="p50 per 100 ms")
        ax.plot(centers, p99s, color="tab:red", label="p99 per 100 ms")
        ax.set_yscale("log")
    ax.set_xlabel("time since first request (s)")
    ax.set_ylabel("POST latency (ms)")
    ax.set_title(
        f"{r.scenario.name}: {r.scenario.requests:,} requests, {r.scenario.tickets:,} tickets, "
        f"{r.accepted_rps:,.0f} req/s accepted"
    )
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)

    ax = axes[1]
    accepted_at = np.sort((r.starts_s + r.latencies_s)[r.accepted_mask])
    if accepted_at.size:
        ax.plot(accepted_at, np.arange(1, accepted_at.size + 1), label="accepted (POST answered)")
    if r.monitor_t_s.size:
        ax.plot(
            r.monitor_t_s,
            np.maximum.accumulate(r.monitor_final),
            drawstyle="steps-post",
            label="final outcome (polled)",
        )
        ax.plot(
            r.monitor_t_s,
            np.maximum.accumulate(r.monitor_reserved),
            drawstyle="steps-post",
            label="reserved (polled)",
        )
    ax.axvline(r.last_response_s, color="grey", linestyle="--", linewidth=1, label="last POST")
    if r.all_final_s is not None:
        ax.axvline(r.all_final_s, color="black", linestyle=":", linewidth=1, label="all final")
    ax.set_xlabel("time since first request (s)")
    ax.set_ylabel("requests")
    ax.set_title("accepted vs final over time")
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)

    ax = axes[2]
    if lat_ms.size:
        low, high = max(float(lat_ms.min()), 0.05), max(float(lat_ms.max()), 0.1)
        ax.hist(lat_ms, bins=np.logspace(np.log10(low), np.log10(high * 1.01), 80))
        ax.set_xscale("log")
        for name, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            ax.axvline(post[name], color=color, label=f"{name} {post[name]:,.1f} ms")
        ax.legend(loc="upper right")
    ax.set_xlabel("POST latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title("POST latency histogram")
    ax.grid(True, alpha=0.3)

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
