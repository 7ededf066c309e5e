"""The service benchmark's figures: one run's record, the medians, the tables and the plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from reservations_tools.loadtest import RunResult

GROUPS = ("front", "back", "redis", "postgres")
_SERIES_POINTS = 300


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _series(r: RunResult) -> dict[str, list[float]]:
    """Accepted and final requests over time (s since the first POST), a few hundred points."""
    first = float(r.starts_s.min()) if r.starts_s.size else 0.0
    accepted_at = np.sort((r.starts_s + r.latencies_s)[r.accepted_mask]) - first
    final = np.maximum.accumulate(r.monitor_final) if r.monitor_final.size else r.monitor_final
    out: dict[str, list[float]] = {}
    for name, t, y in (
        ("accepted", accepted_at, np.arange(1, accepted_at.size + 1)),
        ("final", r.monitor_t_s - first, final),
    ):
        if t.size > _SERIES_POINTS:
            idx = np.unique(np.linspace(0, t.size - 1, _SERIES_POINTS).astype(int))
            t, y = t[idx], y[idx]
        out[f"{name}_t"] = [round(float(v), 4) for v in t]
        out[name] = [int(v) for v in y]
    return out


def figures(
    r: RunResult, cpu_s: dict[str, float], window_s: float, queue: dict[str, Any] | None
) -> dict[str, Any]:
    """One run's record: what the tables and the plot are made of."""
    post = r.post_percentiles_ms()
    requests = r.scenario.requests
    service_cpu = sum(cpu_s.get(g, 0.0) for g in GROUPS)
    per_request = {k: round(1e6 * v / requests, 1) for k, v in cpu_s.items()}
    per_request["service"] = round(1e6 * service_cpu / requests, 1)
    lost = max(0, r.expected_final - r.outcomes.final)
    return {
        "requests": requests,
        "users": r.scenario.users,
        "events": len(r.event_ids) or 1,
        "capacity": r.scenario.tickets * (len(r.event_ids) or 1),
        "accepted": r.accepted,
        "failed": r.errors,
        "send_duration_s": round(r.fire_duration_s, 4),
        "accepted_rps": round(r.accepted_rps, 1),
        "post_ms": {k: _clean(v) for k, v in post.items()},
        "first_to_all_final_s": _clean(r.first_to_all_final_s),
        "final_after_last_post_s": _clean(r.final_after_last_s),
        "reserved": len(r.reserved_user_ids),
        "reserved_counted": r.outcomes.reserved,
        "rejected": r.outcomes.rejected,
        "reasons": r.outcomes.reasons,
        "oversold": r.oversold,
        "double_booked": r.double_booked,
        "lost": lost,
        "cpu_s": {k: round(v, 4) for k, v in cpu_s.items()},
        "cpu_us_per_request": per_request,
        "window_s": round(window_s, 4),
        "setup_s": round(r.setup_s, 2),
        "ok": r.ok,
        "failed_checks": [f"{c.name}: {c.detail}" for c in r.checks if not c.ok and not c.target],
        "queue": queue,
        "series": _series(r),
    }


# -- the tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    title: str
    get: Callable[[dict[str, Any]], float | None]
    better: str | None  # "higher", "lower", or None: no ratio (a count that must be 0)
    fmt: str = "{:,.0f}"
    worst: bool = False  # correctness: the worst run, not the median


def _cpu(group: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda f: f["cpu_us_per_request"].get(group)


METRICS: list[Metric] = [
    Metric("accepted requests/s", lambda f: f["accepted_rps"], "higher"),
    Metric("POST p50 ms", lambda f: f["post_ms"]["p50"], "lower", "{:,.1f}"),
    Metric("POST p95 ms", lambda f: f["post_ms"]["p95"], "lower", "{:,.1f}"),
    Metric("POST p99 ms", lambda f: f["post_ms"]["p99"], "lower", "{:,.1f}"),
    Metric("first POST to all final, s", lambda f: f["first_to_all_final_s"], "lower", "{:,.2f}"),
    Metric("CPU µs/request: front", _cpu("front"), "lower"),
    Metric("CPU µs/request: back", _cpu("back"), "lower"),
    Metric("CPU µs/request: Redis", _cpu("redis"), "lower"),
    Metric("CPU µs/request: PostgreSQL", _cpu("postgres"), "lower"),
    Metric("CPU µs/request: service total", _cpu("service"), "lower"),
    Metric("CPU µs/request: load driver", _cpu("driver"), None),
    Metric("reserved (capacity)", lambda f: f["reserved"], None, "{:,.0f}", worst=True),
    Metric("oversold", lambda f: f["oversold"], None, "{:,.0f}", worst=True),
    Metric("double-booked", lambda f: f["double_booked"], None, "{:,.0f}", worst=True),
    Metric("lost (accepted, never final)", lambda f: f["lost"], None, "{:,.0f}", worst=True),
    Metric("failed POSTs", lambda f: f["failed"], None, "{:,.0f}", worst=True),
]


def _value(metric: Metric, records: list[dict[str, Any]]) -> float | None:
    values = [metric.get(r["figures"]) for r in records if r.get("figures")]
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return None
    return max(clean) if metric.worst else statistics.median(clean)


def _ratio(metric: Metric, value: float | None, base: float | None) -> str:
    if metric.better is None or value is None or base is None or value == 0 or base == 0:
        return ""
    ratio = value / base if metric.better == "higher" else base / value
    return f"{ratio:.2f}x"


@dataclass
class Summary:
    scenario: str
    title: str
    header: list[str]
    rows: list[list[str]]


def summaries(
    records: list[dict[str, Any]],
    systems: list[tuple[str, str, str, str | None]],
    scenarios: list[dict[str, Any]],
    baseline: str,
) -> list[Summary]:
    """One table per scenario: a row per measure, the baseline's column first, then each other
    system's value and its ratio to the baseline ("times better")."""
    out = []
    for sc in scenarios:
        name = sc["name"]
        by_system = {
            key: [r for r in records if r["system"] == key and r["scenario"] == name]
            for key, *_ in systems
        }
        runs = max((len(v) for v in by_system.values()), default=0)
        # Ratios only when the baseline ran; each other system gets a column of them.
        ratio_to = (
            {key for key, *_ in systems if key != baseline} if baseline in by_system else set()
        )
        header = ["measure"]
        for key, label, front, back in systems:
            header.append(f"{label} [{front}{' / ' + back if back else ''}]")
            if key in ratio_to:
                header.append("vs seed")
        rows: list[list[str]] = []
        for metric in METRICS:
            base = _value(metric, by_system.get(baseline, []))
            row = [metric.title + (" (worst run)" if metric.worst and runs > 1 else "")]
            for key, *_ in systems:
                value = _value(metric, by_system[key])
                text = "-" if value is None else metric.fmt.format(value)
                if metric.title.startswith("reserved") and value is not None:
                    text += f" ({sc['capacity']:,})"
                row.append(text)
                if key in ratio_to:
                    row.append(_ratio(metric, value, base))
            rows.append(row)
        errors = {
            key: sum(1 for r in recs if r.get("error") or not r["figures"]["ok"])
            for key, recs in by_system.items()
        }
        row = ["runs with a failed check or error"]
        for key, *_ in systems:
            row.append(f"{errors[key]} of {len(by_system[key])}")
            if key in ratio_to:
                row.append("")
        rows.append(row)
        title = (
            f"{name}: {sc['requests']:,} requests ({sc['users']:,} users) for "
            f"{sc['events']:,} event{'s' if sc['events'] > 1 else ''} of {sc['tickets']:,} "
            f"tickets, {sc['connections']:,} connections; medians of {runs} alternating "
            f"run{'s' if runs != 1 else ''}"
        )
        out.append(Summary(name, title, header, rows))
    return out


def print_tables(tables: list[Summary], console: Console) -> None:
    for t in tables:
        table = Table(title=t.title, header_style="bold", title_justify="left")
        for i, h in enumerate(t.header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
    console.print(
        "'vs seed' = times better than the seed's design (throughput / seed's, or seed's time "
        "or CPU / this one's); front = API / producer / app, back = workers / consumers."
    )


def markdown(tables: list[Summary], meta: dict[str, Any]) -> str:
    lines = [
        f"# Service benchmark {meta['stamp']}",
        "",
        f"`{meta['command']}` at commit {meta.get('commit')}; load average "
        f"{meta['loadavg_before']} at the start, "
        f"{meta.get('loadavg_after')} at the end; {meta['cpus']} CPUs"
        f"{'' if meta.get('complete') else ' (INTERRUPTED)'}.",
        "",
        "'vs seed' = times better than the seed's design (throughput / seed's, or seed's time "
        "or CPU / this one's). front = API / producer / app, back = workers / consumers. "
        "Correctness rows give the worst run.",
        "",
    ]
    for t in tables:
        lines += [f"## {t.title}", ""]
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "---|" * len(t.header))
        for row in t.rows:
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


# -- the plot -------------------------------------------------------------------------------------


def plot(
    records: list[dict[str, Any]],
    systems: list[tuple[str, str, str, str | None]],
    scenarios: list[dict[str, Any]],
    path: Path,
) -> None:
    """Per scenario: accepted and final requests over time (each system's last run), and the
    CPU per request of each process group (medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(scenarios), 2, figsize=(14, 4.2 * len(scenarios)), squeeze=False,
        gridspec_kw={"width_ratios": [2.2, 1]},
    )  # fmt: skip
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
    for row, sc in zip(axes, scenarios, strict=True):
        left, right = row
        for (key, label, *_), colour in zip(systems, colours, strict=False):
            recs = [r for r in records if r["system"] == key and r["scenario"] == sc["name"]]
            recs = [r for r in recs if r.get("figures")]
            if not recs:
                continue
            s = recs[-1]["figures"]["series"]
            left.plot(s["accepted_t"], s["accepted"], color=colour, linestyle="--", linewidth=1)
            left.plot(s["final_t"], s["final"], color=colour, linewidth=1.8, label=label)
        left.set_title(f"{sc['name']}: accepted (dashed) and final (solid) requests")
        left.set_xlabel("seconds since the first POST")
        left.set_ylabel("requests")
        left.grid(alpha=0.3)
        left.legend(loc="lower right", fontsize=8)
        bottoms = np.zeros(len(systems))
        labels = [label for _, label, *_ in systems]
        for group, colour in zip(GROUPS, ["#4c72b0", "#dd8452", "#c44e52", "#55a868"], strict=True):
            metric = Metric(group, _cpu(group), "lower")
            heights = []
            for key, *_ in systems:
                recs = [r for r in records if r["system"] == key and r["scenario"] == sc["name"]]
                heights.append(_value(metric, recs) or 0.0)
            right.bar(labels, heights, bottom=bottoms, color=colour, label=group)
            bottoms += np.asarray(heights)
        right.set_title("CPU µs per request (medians)")
        right.tick_params(axis="x", labelrotation=15, labelsize=7)
        right.legend(fontsize=8)
        right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
