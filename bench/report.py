"""Medians, ratios to Node BullMQ, the Rich table and the Markdown table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

# (column title, workload, result field, higher is better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("(a) produce msg/s", "produce", "value", True),
    ("(b) batch msg/s", "produce_batch", "value", True),
    ("(c) consume msg/s", "consume", "value", True),
    ("(d) p50 ms", "latency", "p50_ms", False),
    ("(d) p99 ms", "latency", "p99_ms", False),
]


@dataclass
class Cell:
    median: float | None
    values: list[float]
    note: str = ""


def cells(results: list[dict[str, Any]], system: str) -> dict[str, Cell]:
    out: dict[str, Cell] = {}
    for title, workload, field, _ in METRICS:
        rows = [r for r in results if r["system"] == system and r["workload"] == workload]
        values = [
            float(r["result"][field])
            for r in rows
            if r.get("result") and r["result"].get(field) is not None
        ]
        values = [v for v in values if not math.isnan(v)]
        note = ""
        sat = sum(saturated(r.get("result") or {}) for r in rows)
        if workload == "latency" and sat:
            note = f"{sat}/{len(rows)} runs saturated"
        if not values:
            unsupported = [r for r in rows if r.get("result", {}).get("unsupported")]
            errors = [r["error"] for r in rows if r.get("error")]
            note = "n/a" if unsupported else ("error" if errors else "")
        out[title] = Cell(statistics.median(values) if values else None, values, note)
    return out


def saturated(result: dict[str, Any]) -> bool:
    """The consumer did not keep up with the offered rate: latency grows with the test's length."""
    if result.get("workload") != "latency" or "p50_ms" not in result:
        return False
    if result.get("received", 0) < (result.get("sent") or 0) or result["p99_ms"] > 1000:
        return True
    consumed, offered = result.get("consumed_rate"), result.get("offered_rate")
    return bool(consumed and offered and consumed < 0.97 * offered)


def ratio(value: float | None, base: float | None, higher_better: bool) -> float | None:
    """Times better than the baseline: value/base for throughput, base/value for latency."""
    if value is None or base is None or value <= 0 or base <= 0:
        return None
    return value / base if higher_better else base / value


def fmt_value(v: float | None, note: str, higher_better: bool) -> str:
    if v is None:
        return note or "-"
    if higher_better:
        return f"{v:,.0f}"
    text = f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return f"{text} ({note})" if note else text


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return ""
    return "<0.01x" if r < 0.01 else f"{r:.2f}x"


def metrics_for(workloads: list[str]) -> list[tuple[str, str, str, bool]]:
    return [m for m in METRICS if m[1] in workloads]


def summary(
    results: list[dict[str, Any]], systems: list[tuple[str, str]], baseline: str
) -> list[dict[str, Any]]:
    """One row per system: label, per metric the median, its spread and the ratio.

    The baseline is the system ``baseline``, or in a concurrency sweep its first ``baseline@P``.
    """
    keys = [k for k, _ in systems]
    base_key = (
        baseline
        if baseline in keys
        else next((k for k in keys if k.startswith(baseline + "@")), None)
    )
    base = cells(results, base_key) if base_key else {}
    rows = []
    for key, label in systems:
        c = cells(results, key)
        row: dict[str, Any] = {"system": key, "label": label, "metrics": {}}
        for title, _, _, hb in METRICS:
            b = base.get(title)
            row["metrics"][title] = {
                "median": c[title].median,
                "runs": c[title].values,
                "note": c[title].note,
                "ratio_to_baseline": ratio(c[title].median, b.median if b else None, hb),
            }
        rows.append(row)
    return rows


def rich_table(rows: list[dict[str, Any]], title: str, workloads: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("system")
    for t, _, _, _ in metrics_for(workloads):
        table.add_column(t, justify="right")
        table.add_column("vs Node", justify="right", style="cyan")
    for row in rows:
        cols = [row["label"]]
        for t, _, _, hb in metrics_for(workloads):
            m = row["metrics"][t]
            cols += [fmt_value(m["median"], m["note"], hb), fmt_ratio(m["ratio_to_baseline"])]
        table.add_row(*cols)
    return table


def markdown_table(rows: list[dict[str, Any]], workloads: list[str]) -> str:
    head = ["system"]
    for t, _, _, _ in metrics_for(workloads):
        head += [t, "vs Node"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        cols = [row["label"]]
        for t, _, _, hb in metrics_for(workloads):
            m = row["metrics"][t]
            cols += [fmt_value(m["median"], m["note"], hb), fmt_ratio(m["ratio_to_baseline"])]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], title: str, workloads: list[str]) -> None:
    console = Console()
    if console.width < 160:
        console = Console(width=160)
    console.print(rich_table(rows, title, workloads))


def spread_table(rows: list[dict[str, Any]], workloads: list[str]) -> str:
    """Every run's figure, to show the noise behind each median."""
    lines = ["| system | " + " | ".join(t for t, *_ in metrics_for(workloads)) + " |"]
    lines.append("|---|" + "---|" * len(metrics_for(workloads)))
    for row in rows:
        cols = [row["label"]]
        for t, _, _, hb in metrics_for(workloads):
            runs = row["metrics"][t]["runs"]
            cols.append(" / ".join(fmt_value(v, "", hb) for v in runs) or "-")
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def redis_cost_table(
    results: list[dict[str, Any]], systems: list[tuple[str, str]], workloads: list[str]
) -> str:
    """Median Redis work per message (commands, CPU microseconds) for the throughput workloads."""
    shown = [w for w in ("produce", "produce_batch", "consume") if w in workloads]
    if not shown:
        return "(no throughput workload in this run)"
    head = ["system"] + [f"{w}: cmds/msg, Redis CPU us/msg" for w in shown]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(shown)]
    for key, label in systems:
        cols = [label]
        for w in shown:
            runs = [
                r
                for r in results
                if r["system"] == key and r["workload"] == w and r.get("result", {}).get("n")
            ]
            if not runs:
                cols.append("-")
                continue
            n = runs[0]["result"]["n"]
            cmds = statistics.median(r["redis_commands"] for r in runs) / n
            cpu = statistics.median(r["redis_cpu_s"] for r in runs) * 1e6 / n
            cols.append(f"{cmds:.2f}, {cpu:.1f}")
        lines.append("| " + " | ".join(cols) + " |")
    note = "(consume includes the untimed pre-fill)" if "consume" in shown else ""
    return "\n".join(lines) + ("\n\n" + note if note else "")


def markdown_report(
    rows: list[dict[str, Any]],
    results: list[dict[str, Any]],
    systems: list[tuple[str, str]],
    workloads: list[str],
) -> str:
    return (
        markdown_table(rows, workloads)
        + "\n\nEvery run (in run order):\n\n"
        + spread_table(rows, workloads)
        + "\n\nMedian of the per-run ratios to Node BullMQ (same run, back to back):\n\n"
        + paired_ratios(results, systems, "node", workloads)
        + "\n\nRedis work per message (medians):\n\n"
        + redis_cost_table(results, systems, workloads)
        + "\n"
    )


def paired_ratios(
    results: list[dict[str, Any]],
    systems: list[tuple[str, str]],
    baseline: str,
    workloads: list[str],
) -> str:
    """Median over runs of (system / baseline in the same run): the two ran one after the other,
    so this ratio is less exposed to the machine's load drifting between runs."""
    keys = [k for k, _ in systems]
    if baseline not in keys:
        return ""
    shown = metrics_for(workloads)
    lines = ["| system | " + " | ".join(t for t, *_ in shown) + " |"]
    lines.append("|---|" + "---:|" * len(shown))
    for key, label in systems:
        if key == baseline:
            continue
        cols = [label]
        for _, workload, field, hb in shown:
            ratios = []
            for r in results:
                if r["system"] != key or r["workload"] != workload:
                    continue
                base = [
                    b
                    for b in results
                    if b["system"] == baseline
                    and b["workload"] == workload
                    and b["run"] == r["run"]
                ]
                x = (r.get("result") or {}).get(field)
                y = (base[0].get("result") or {}).get(field) if base else None
                value = ratio(x, y, hb) if x is not None and y is not None else None
                if value is not None:
                    ratios.append(value)
            cols.append(fmt_ratio(statistics.median(ratios)) if ratios else "-")
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)
