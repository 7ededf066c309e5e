"""``brokerq worker module:attribute`` runs a worker; ``brokerq stats`` prints channel counts."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .messages import ChannelStats
from .queue import BrokerQueue
from .shards import base_name
from .worker import Worker

app = typer.Typer(help="brokerq: a typed broker queue on Redis.", no_args_is_help=True)


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"expected 'module:attribute', got {target!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise typer.BadParameter(f"module {module_name!r} has no attribute {attribute!r}") from None


async def _resolve_worker(target: Any) -> Worker:
    if isinstance(target, Worker):
        return target
    if callable(target):
        made = target()
        if inspect.isawaitable(made):
            made = await made
        if isinstance(made, Worker):
            return made
    raise typer.BadParameter("the target must be a brokerq.Worker or a factory returning one")


@app.command()
def worker(
    target: Annotated[str, typer.Argument(help="module:attribute of a Worker or its factory")],
    log_level: Annotated[str, typer.Option(help="logging level")] = "INFO",
) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    loaded = _load(target)

    async def main() -> None:
        await (await _resolve_worker(loaded)).run()

    asyncio.run(main())


@app.command()
def stats(
    url: Annotated[
        str, typer.Option(envvar="REDIS_URL", help="Redis URL")
    ] = "redis://127.0.0.1:6379/0",
    cluster: Annotated[bool, typer.Option(help="the URL is a Redis Cluster node")] = False,
    channel: Annotated[list[str] | None, typer.Option(help="channels (default: all)")] = None,
    shards: Annotated[
        bool, typer.Option(help="a row per shard of a sharded channel, not one per channel")
    ] = False,
) -> None:
    """Print a table of channels and their message counts."""
    from .redis import RedisAdapter

    async def main() -> list[ChannelStats]:
        queue = BrokerQueue(RedisAdapter(url, cluster=cluster))
        try:
            if not shards:
                return await queue.channel_stats(channel)
            stored = await queue.adapter.channels()
            names = [s for s in stored if channel is None or base_name(s) in channel]
            return [await queue.adapter.stats(name) for name in names]
        finally:
            await queue.close()

    Console().print(stats_table(asyncio.run(main())))


def stats_table(rows: list[ChannelStats]) -> Table:
    table = Table(title="brokerq channels")
    columns = (
        "channel", "waiting", "in_flight", "delayed", "dead", "produced", "processed",
        "retried", "redelivered", "dead_lettered", "lag_ms",
    )  # fmt: skip
    for column in columns:
        if column == "channel":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(getattr(row, column)) for column in columns))
    return table


def main() -> None:
    app()
