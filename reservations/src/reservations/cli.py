"""The ``reservations`` command: the service's processes.

``api`` serves the HTTP API (the producer), ``worker`` runs one consumer process, ``migrate``
brings the database schema up to date: what a deployment runs (the Compose file runs each in a
container). Running everything on one machine, load tests and fault injection are the
workspace's tooling (``reservations-tools``), not the service.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from .settings import Settings

app = typer.Typer(
    name="reservations",
    help="The event-reservation service: its API, its workers and its database migrations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    from .settings import Settings

    return Settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: SERVICE_PORT, 8080).")] = None,
    processes: Annotated[int, typer.Option(help="uvicorn worker processes.", min=1)] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Run the HTTP API (the producer) with uvicorn, with limits on heads, bodies, deadlines
    and connections (see ``reservations.server``)."""
    from .server import run_api

    settings = _settings()
    run_api(
        settings,
        host=host,
        port=port or settings.service_port,
        processes=processes,
        access_log=access_log,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Messages handled at once (default: WORKER_CONCURRENCY)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's Prometheus metrics (handler durations, lost leases) on "
            "127.0.0.1:PORT/metrics.",
            min=1,
            max=65535,
        ),
    ] = None,
) -> None:
    """Run one worker (consumer) process until SIGTERM / SIGINT."""
    import signal

    import uvloop

    from .observability.logs import configure_logging, secrets_of
    from .worker import run_worker

    # Until the worker installs its own handlers, SIGTERM means a clean exit: nothing is held yet.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(
        json=settings.json_logs, level=settings.log_level, secrets=secrets_of(settings)
    )
    if metrics_port is not None:
        from .observability.metrics import start_worker_metrics

        start_worker_metrics(metrics_port, addr="127.0.0.1")
    uvloop.run(run_worker(settings))


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Alembic revision.")] = "head",
) -> None:
    """Bring the database schema at DATABASE_URL up to date."""
    from .db import migrate as run_migrations

    url = _settings().effective_database_url
    if url is None:
        raise _fail("DATABASE_URL is not set")
    run_migrations(url, revision)
    console.print(f"[green]database at revision {revision}[/]")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
