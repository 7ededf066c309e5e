"""The ``reservations-tools`` command: the service on one machine, and the tools around it.

``up`` runs the whole service in the foreground with its own PostgreSQL and Redis (see
``reservations_tools.up``); ``status`` shows the queue and the events; ``loadtest`` drives a
running service over HTTP; ``fill`` writes a long history into its database; ``faults``
runs the fault scenarios against a deployment it owns.
The service itself (``reservations api|worker|migrate``) never imports this package.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from reservations.settings import Settings

app = typer.Typer(
    name="reservations-tools",
    help="Run the reservation service on one machine, inspect it, load-test it, inject faults.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    from reservations.settings import Settings

    return Settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _redis_configured(settings: Settings) -> bool:
    """Redis counts as configured when REDIS_URL or the seed's REDIS_HOST is given."""
    url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    return bool(url) or "redis_host" in settings.model_fields_set


def _run_file(settings: Settings) -> dict[str, Any]:
    """What a running ``reservations-tools up`` wrote about itself (its embedded servers' URLs)."""
    path = Path(settings.data_dir) / "run.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _database_url(settings: Settings) -> str | None:
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return settings.database_url.get_secret_value()
    url = _run_file(settings).get("database_url")
    return str(url) if url else None


def _redis_url(settings: Settings) -> str:
    if _redis_configured(settings):
        return settings.effective_redis_url
    url = _run_file(settings).get("redis_url")
    return str(url) if url else settings.effective_redis_url


@app.command()
def up(
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: WORKERS, 3).", min=0)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="API port (default: SERVICE_PORT, 8080).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: DATA_DIR, ./data).")
    ] = None,
    api_processes: Annotated[
        int, typer.Option(help="uvicorn worker processes serving the API.", min=1)
    ] = 1,
    grace: Annotated[
        float, typer.Option(help="Seconds the children get to stop before SIGKILL.")
    ] = 30.0,
    redis_fsync: Annotated[
        str,
        typer.Option(
            help="Embedded Redis appendfsync: 'everysec' (up to ~1 s lost on a power cut) or "
            "'always' (nothing acknowledged is lost, slower)."
        ),
    ] = "everysec",
) -> None:
    """Run the whole service in the foreground: PostgreSQL and Redis (embedded unless configured),
    migrations, the API and the workers. Ctrl-C stops it gracefully."""
    from .up import UpOptions, run_up

    settings = _settings()
    if redis_fsync not in ("everysec", "always"):
        raise _fail("--redis-fsync must be 'everysec' or 'always'")
    database_url = (
        settings.database_url.get_secret_value()
        if settings.database_url is not None and settings.database_url.get_secret_value()
        else None
    )
    options = UpOptions(
        host=host,
        port=port or settings.service_port,
        workers=settings.workers if workers is None else workers,
        api_processes=api_processes,
        data_dir=data_dir or Path(settings.data_dir),
        grace_s=grace,
        redis_fsync=redis_fsync,
        database_url=database_url,
        redis_url=settings.effective_redis_url if _redis_configured(settings) else None,
        worker_metrics_port=settings.worker_metrics_port,
        admin_token_configured=bool(
            settings.admin_token is not None and settings.admin_token.get_secret_value()
        ),
    )
    raise typer.Exit(run_up(options, console))


@app.command(hidden=True)
def embedded(
    data_dir: Annotated[Path, typer.Option()],
    postgres: Annotated[bool, typer.Option("--postgres/--no-postgres")] = True,
    redis: Annotated[bool, typer.Option("--redis/--no-redis")] = True,
    redis_fsync: Annotated[str, typer.Option()] = "everysec",
) -> None:
    """Run the embedded PostgreSQL and Redis for ``up`` (internal)."""
    from .servers.embedded import run_embedded

    raise typer.Exit(run_embedded(data_dir, postgres, redis, redis_fsync))


@app.command()
def status(
    event: Annotated[
        list[int] | None, typer.Option("--event", "-e", help="Only these event ids.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many events, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Queue channel counts and, per event, capacity / reserved / remaining (exit 1 if either
    could not be read)."""
    from .status import collect_status, render_status

    settings = _settings()
    database_url = _database_url(settings)
    redis_url = _redis_url(settings)
    try:
        report = asyncio.run(
            collect_status(
                redis_url,
                database_url,
                event or [],
                limit,
                settings.queue_engine,
                settings.reservation_channel_shards,
            )
        )
    except Exception as exc:
        raise _fail(f"cannot read the status: {exc}") from exc
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        render_status(report, console)
    if report["errors"]:
        raise typer.Exit(1)


@app.command()
def fill(
    requests: Annotated[int, typer.Option(help="Request rows to write.", min=1)] = 5_000_000,
    per_event: Annotated[int, typer.Option(help="Requests of each past event.", min=1)] = 1_000,
    tickets: Annotated[int, typer.Option(help="Seats of each past event.", min=1)] = 100,
    users: Annotated[int, typer.Option(help="Users the requests come from.", min=1)] = 100_000,
) -> None:
    """Write the history of a deployment that has lived straight into PostgreSQL: past, sold
    out events with their request rows and reservations (see ``fill.py``), then VACUUM ANALYZE."""
    from .fill import FillPlan, fill_database

    database_url = _database_url(_settings())
    if database_url is None:
        raise _fail("no database: set DATABASE_URL or run `reservations-tools up` first")
    plan = FillPlan(requests=requests, per_event=per_event, tickets=tickets, users=users)
    started = time.monotonic()
    written = asyncio.run(
        fill_database(database_url, plan, lambda n: console.print(f"{n:,} request rows"))
    )
    console.print(f"{written:,} request rows in {time.monotonic() - started:.0f} s")


@app.command()
def loadtest(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            "-s",
            help="'seed' (the k6 bar), 'burst', 'holds' (seats held, a waitlist, clients "
            "that confirm or let their holds expire) or 'soak' (a steady rate for --minutes over "
            "events that open and take place; Redis memory, PostgreSQL size, accepted/s).",
        ),
    ] = "seed",
    base_url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8080",
    requests: Annotated[int | None, typer.Option(help="Override: number of POSTs.")] = None,
    tickets: Annotated[int | None, typer.Option(help="Override: the event's tickets.")] = None,
    repeat_fraction: Annotated[
        float | None, typer.Option(help="Override: share of requests repeated by a user.")
    ] = None,
    connections: Annotated[
        int | None, typer.Option(help="Override: keep-alive connections (closed loop).")
    ] = None,
    final_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for every outcome to be final (holds: for the run to end "
            "after the sending)."
        ),
    ] = None,
    hold_seconds: Annotated[
        int | None,
        typer.Option(help="Override (holds): seconds a won seat is held.", min=1, max=86_400),
    ] = None,
    never_confirm: Annotated[
        float | None,
        typer.Option(help="Override (holds): share of holders that never confirm.", min=0, max=1),
    ] = None,
    think_max: Annotated[
        float | None,
        typer.Option(
            help="Override (holds): longest think time before a holder confirms, in seconds "
            "(default: half the hold).",
            min=0,
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG to write (default: data/loadtest/<scenario>.png).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON here.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Fail (exit 2) when a throughput target is missed, too.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed for the request order.")] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="ADMIN_TOKEN",
            show_envvar=True,
            help="Bearer token for creating the event (default: <data dir>/admin-token).",
        ),
    ] = None,
    reuse_users: Annotated[
        bool,
        typer.Option(
            help="Reuse the users an earlier run created on the same service (checked first)."
        ),
    ] = True,
    minutes: Annotated[
        float | None, typer.Option(help="Soak: how long to run, in minutes (30).", min=0.5)
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Soak: requests sent per second (1000).", min=1)
    ] = None,
) -> None:
    """Drive a RUNNING service over HTTP: create an event and users, fire the reservations,
    wait for every outcome, check the invariants; exit 1 if one fails."""
    from .loadtest.cli import run_loadtest_command

    code = run_loadtest_command(
        console,
        scenario_name=scenario,
        base_url=base_url,
        overrides={
            "requests": requests,
            "tickets": tickets,
            "repeat_fraction": repeat_fraction,
            "connections": connections,
            "final_timeout_s": final_timeout,
            "hold_seconds": hold_seconds,
            "never_confirm": never_confirm,
            "think_max_s": think_max,
        },
        soak={"minutes": minutes, "rate": rate},
        plot_path=plot,
        json_path=json_out,
        strict=strict,
        seed=seed,
        data_dir=Path(os.environ.get("DATA_DIR", "data")),
        reuse_users=reuse_users,
        admin_token=admin_token,
    )
    raise typer.Exit(code)


def _faults() -> None:
    from .faults.cli import main as run_faults

    # The harness's own command, options and all, under this one.
    app.command(name="faults")(run_faults)


_faults()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
