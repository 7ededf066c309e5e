"""``reservations-tools faults``: every fault scenario against a real deployment."""

from __future__ import annotations

import functools
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

import typer
import uvloop
from rich.console import Console
from rich.table import Table

from reservations_tools.loadtest.http import Pool
from reservations_tools.loadtest.setup import create_users

from .burst import BurstResult, run_burst
from .deployment import Deployment
from .holds import run_holds_burst
from .scenarios import SCENARIOS, Scenario

app = typer.Typer(add_completion=False)
console = Console()


async def run_scenarios(
    scenarios: list[Scenario],
    *,
    requests: int,
    tickets: int,
    data_dir: Path,
    worker_concurrency: int | None = None,
    hold_seconds: int = 10,
) -> list[tuple[Scenario, BurstResult]]:
    results: list[tuple[Scenario, BurstResult]] = []
    deployment = Deployment(data_dir, worker_concurrency=worker_concurrency)
    await deployment.start()
    try:
        async with Pool(deployment.base_url, 32) as pool:
            users = await create_users(pool, f"fault-{uuid.uuid4().hex[:8]}", int(requests * 0.9))
        for scenario in scenarios:
            console.print(f"[bold]{scenario.name}[/]: {scenario.fault}")
            await deployment.use_redis(scenario.topology, replicas_ack=scenario.replicas_ack)
            await deployment.set_appendfsync(scenario.appendfsync)
            fault = scenario.run
            if scenario.holds:
                results.append(
                    (
                        scenario,
                        await run_holds_burst(
                            deployment.base_url,
                            lambda: deployment.redis_url,
                            users,
                            tickets=tickets,
                            hold_seconds=hold_seconds,
                            fault=None if fault is None else functools.partial(fault, deployment),
                            admin_token=deployment.admin_token,
                        ),
                    )
                )
                console.print(table(results[-1:]))
                continue
            result = await run_burst(
                deployment.base_url,
                lambda: deployment.redis_url,
                users,
                requests=requests,
                tickets=tickets,
                fault=None if fault is None else functools.partial(fault, deployment),
                admin_token=deployment.admin_token,
                # With replicas acknowledging, every accepted request is asked about: none may be
                # lost; without, the lost ones are counted.
                poll_every_job=scenario.loses_data or scenario.replicas_ack > 0,
                lossless=scenario.replicas_ack > 0,
            )
            results.append((scenario, result))
            console.print(table([(scenario, result)]))
    finally:
        await deployment.stop()
    return results


def table(results: list[tuple[Scenario, BurstResult]]) -> Table:
    t = Table(title="fault scenarios")
    for column in ("scenario", "fault", "accepted", "retried", "lost", "final after", "result"):
        t.add_column(column)
    for scenario, r in results:
        failed = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok]
        t.add_row(
            scenario.name,
            scenario.fault,
            f"{r.accepted:,}",
            f"{r.retried:,}",
            f"{r.lost:,}",
            "-" if r.all_final_s is None else f"{r.all_final_s:.1f} s",
            ("[green]all invariants hold[/]" if r.ok else "[red]" + "; ".join(failed) + "[/]")
            + (f" ({r.note})" if r.note else ""),
        )
    return t


def markdown(results: list[tuple[Scenario, BurstResult]], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| scenario | fault | requests | accepted | retried by the client | lost (found by "
        "clients) | all final after | reserved | no user twice | every accepted final or "
        "lost | nothing stuck or dead | gate agrees with PostgreSQL | result |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|",
    ]
    for scenario, r in results:
        marks = ["yes" if c.ok else f"**NO** ({c.detail})" for c in r.checks[:5]]
        lost = f"{r.lost:,} ({r.lost_seen:,})" if scenario.loses_data else f"{r.lost:,}"
        lines.append(
            f"| {scenario.name} | {scenario.fault} | {r.requests:,} | {r.accepted:,} "
            f"| {r.retried:,} | {lost} | "
            + ("never" if r.all_final_s is None else f"{r.all_final_s:.1f} s")
            + f" | {r.checks[0].detail} | "
            + " | ".join(marks[1:])
            + f" | {'pass' if r.ok else 'FAIL'}{f' ({r.note})' if r.note else ''} |"
        )
    return "\n".join(lines) + "\n"


@app.command()
def main(
    requests: Annotated[int, typer.Option(help="requests per scenario")] = 100_000,
    tickets: Annotated[int, typer.Option(help="tickets of each scenario's event")] = 1_000,
    only: Annotated[list[str] | None, typer.Option(help="scenario names (default: all)")] = None,
    report: Annotated[Path | None, typer.Option(help="write the Markdown table here")] = None,
    hold_seconds: Annotated[
        int, typer.Option(help="seconds a seat is held in the holds scenarios", min=1)
    ] = 10,
) -> None:
    """Run every fault scenario during a burst of reservations and check the invariants."""
    chosen = [s for s in SCENARIOS if not only or s.name in only]
    data_dir = Path(tempfile.mkdtemp(prefix="reservations-faults-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    try:
        results = uvloop.run(
            run_scenarios(
                chosen,
                requests=requests,
                tickets=tickets,
                data_dir=data_dir,
                hold_seconds=hold_seconds,
            )
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    console.print(table(results))
    if report is not None:
        command = (
            f"uv run reservations-tools faults --requests {requests} --tickets {tickets} "
            f"--hold-seconds {hold_seconds}"
        )
        report.write_text(markdown(results, command))
    if not all(r.ok for _, r in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
