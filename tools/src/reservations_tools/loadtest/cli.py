"""``reservations-tools loadtest``: progress bar, summary table, plot and exit code."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from reservations_tools.admin_token import read_admin_token

from . import runner
from .holds import HoldsResult, run_holds
from .holds_checks import analyse
from .holds_report import holds_figures, holds_plot, holds_summary_table
from .http import parse_base_url
from .report import plot, summary_table
from .scenario import scenario as get_scenario

__all__ = ["run_loadtest_command"]

T = TypeVar("T")


class RichProgress(runner.Progress):
    def __init__(self, progress: Progress, console: Console) -> None:
        self._progress = progress
        self._console = console
        self._task: TaskID | None = None

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=True)
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(name, total=total)

    def advance(self, done: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done)

    def note(self, text: str) -> None:
        self._console.print(text)


def _figures(r: runner.RunResult) -> dict[str, Any]:
    def clean(d: dict[str, float]) -> dict[str, float | None]:
        return {k: (None if math.isnan(v) else round(v, 3)) for k, v in d.items()}

    return {
        "scenario": r.scenario.name,
        "base_url": r.base_url,
        "event_id": r.event_id,
        "requests": r.scenario.requests,
        "users": r.scenario.users,
        "tickets": r.scenario.tickets,
        "connections": min(r.scenario.connections, r.scenario.requests),
        "accepted": r.accepted,
        "failed": r.errors,
        "send_duration_s": round(r.fire_duration_s, 3),
        "accepted_rps": round(r.accepted_rps, 1),
        "client_cpu_s": round(r.client_cpu_s, 3),
        "post_ms": clean(r.post_percentiles_ms()),
        "time_to_final_ms": clean(r.final_percentiles_ms()),
        "time_to_final_source": r.final_source,
        "final_after_last_post_s": r.final_after_last_s,
        "outcomes_per_s": None if math.isnan(r.outcomes_per_s) else round(r.outcomes_per_s, 1),
        "reservations_per_s": None
        if math.isnan(r.reservations_per_s)
        else round(r.reservations_per_s, 1),
        "reserved": r.outcomes.reserved,
        "rejected": r.outcomes.rejected,
        "pending": r.outcomes.pending,
        "reasons": r.outcomes.reasons,
        "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail, "target": c.target} for c in r.checks
        ],
        "ok": r.ok,
        "targets_ok": r.targets_ok,
    }


def run_loadtest_command(
    console: Console,
    *,
    scenario_name: str,
    base_url: str,
    overrides: dict[str, Any],
    plot_path: Path | None,
    json_path: Path | None,
    strict: bool,
    seed: int | None,
    data_dir: Path,
    reuse_users: bool = True,
    admin_token: str | None = None,
    soak: dict[str, Any] | None = None,
) -> int:
    """Run one scenario; 0 when every invariant holds (and, with ``strict``, every target)."""
    if scenario_name == "soak":
        return _run_soak(
            console, base_url, soak or {}, plot_path, json_path, strict, seed, data_dir,
            reuse_users, admin_token,
        )  # fmt: skip
    try:
        chosen = get_scenario(scenario_name).with_overrides(**overrides)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    if chosen.holds:
        console.print(
            f"[bold]{chosen.name}[/]: {chosen.requests:,} reservation requests from as many "
            f"users for {chosen.tickets:,} seats held {chosen.hold_seconds} s, with a waitlist; "
            f"{chosen.never_confirm:.0%} of the holders never confirm, the others within "
            f"{chosen.think_s:g} s; {min(chosen.connections, chosen.requests):,} connections, "
            f"against {base_url}"
        )
    else:
        console.print(
            f"[bold]{chosen.name}[/]: {chosen.requests:,} reservation requests "
            f"({chosen.users:,} users, {chosen.repeats:,} repeats) for {chosen.tickets:,} "
            f"tickets, {min(chosen.connections, chosen.requests):,} connections, against "
            f"{base_url}"
        )
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            cache = _users_cache(data_dir, base_url) if reuse_users else None
            token = admin_token or read_admin_token(data_dir)
            shown = RichProgress(progress, console)
            result: runner.RunResult | HoldsResult
            if chosen.holds:
                result = _on_uvloop(run_holds(base_url, chosen, shown, seed, cache, token))
            else:
                result = _on_uvloop(
                    runner.run_loadtest(base_url, chosen, shown, seed, cache, token)
                )
    except runner.LoadTestError as exc:
        console.print(f"[bold red]load test aborted:[/] {exc}")
        return 1
    except OSError as exc:
        console.print(f"[bold red]load test aborted:[/] cannot talk to {base_url}: {exc}")
        return 1
    path = plot_path or data_dir / "loadtest" / f"{chosen.name}.png"
    if isinstance(result, HoldsResult):
        analysis = analyse(result)
        console.print(holds_summary_table(result, analysis))
        holds_plot(result, path, analysis)
        figures = holds_figures(result, analysis)
    else:
        console.print(summary_table(result))
        plot(result, path)
        figures = _figures(result)
    console.print(f"plot: {path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"figures: {json_path}")
    if not result.ok:
        console.print("[bold red]FAILED: an invariant does not hold[/]")
        return 1
    if strict and not result.targets_ok:
        console.print("[bold yellow]a throughput target was missed (--strict)[/]")
        return 2
    console.print("[bold green]all invariants hold[/]")
    return 0


def _users_cache(data_dir: Path, base_url: str) -> Path:
    host, port, _ = parse_base_url(base_url)
    return data_dir / "loadtest" / f"users-{host}-{port}.json"


def _on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)


def _run_soak(
    console: Console,
    base_url: str,
    options: dict[str, Any],
    plot_path: Path | None,
    json_path: Path | None,
    strict: bool,
    seed: int | None,
    data_dir: Path,
    reuse_users: bool,
    admin_token: str | None,
) -> int:
    from .setup import LoadTestError
    from .soak import SoakPlan, run_soak, servers_of, soak_figures
    from .soak_report import soak_plot, soak_table

    plan = SoakPlan(**{k: v for k, v in options.items() if v is not None})
    console.print(
        f"[bold]soak[/]: {plan.rate:,.0f} requests/s for {plan.minutes:g} min, a new event of "
        f"{plan.tickets:,} seats every {plan.event_every_s:g} s, each taking place "
        f"{plan.event_life_s:g} s later, against {base_url}. Run the service with a short "
        "retention (RESERVATION_RETENTION_DAYS=0.0105 RETENTION_INTERVAL=10) to see it at work."
    )
    columns = (SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
               BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    try:
        database_url, redis_url = servers_of(data_dir)
        with Progress(*columns, console=console, transient=False) as progress:
            result = _on_uvloop(
                run_soak(
                    base_url,
                    plan,
                    RichProgress(progress, console),
                    database_url=database_url,
                    redis_url=redis_url,
                    seed=seed,
                    users_cache=_users_cache(data_dir, base_url) if reuse_users else None,
                    admin_token=admin_token or read_admin_token(data_dir),
                )
            )
    except (LoadTestError, OSError) as exc:
        console.print(f"[bold red]soak aborted:[/] {exc}")
        return 1
    console.print(soak_table(result))
    path = soak_plot(result, plot_path or data_dir / "loadtest" / "soak.png")
    console.print(f"plot: {path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(soak_figures(result), indent=2) + "\n")
        console.print(f"figures: {json_path}")
    if not result.ok:
        console.print("[bold red]FAILED: the deployment grew or slowed[/]")
        return 1
    if strict and not result.targets_ok:
        console.print("[bold yellow]a target was missed (--strict)[/]")
        return 2
    console.print("[bold green]steady: memory and throughput flat[/]")
    return 0
