"""The embedded PostgreSQL launcher and the migrations, on a real server."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from reservations.db import migrate
from reservations.embedded.postgres import PostgresError, PostgresServer, find_postgres_bin_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Under /tmp rather than pytest's private directory: as root, the server runs as 'postgres'.
    directory = Path(tempfile.mkdtemp(prefix="rsv-pg-test-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_finds_server_binaries() -> None:
    bin_dir = find_postgres_bin_dir()
    assert (bin_dir / "initdb").is_file()
    assert (bin_dir / "pg_ctl").is_file()


def test_data_persists_across_restarts(data_dir: Path) -> None:
    async def write(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        await conn.close()

    async def read(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            value: int = await conn.fetchval("SELECT v FROM kept")
            return value
        finally:
            await conn.close()

    with PostgresServer(data_dir) as server:
        assert server.url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        asyncio.run(write(server.dsn))
        first_port = server.port
    # Stopped means stopped: nothing listens any more.
    with pytest.raises(OSError):
        asyncio.run(read(f"postgresql://postgres@127.0.0.1:{first_port}/postgres"))
    with PostgresServer(data_dir) as server:
        assert asyncio.run(read(server.dsn)) == 42
    # The socket directory lives inside the data directory.
    assert (data_dir / "sockets").is_dir()


def test_stop_is_harmless_twice(data_dir: Path) -> None:
    server = PostgresServer(data_dir).start()
    server.stop()
    server.stop()


def test_a_port_in_use_is_a_clear_error(data_dir: Path, pg_server_url: str) -> None:
    port = make_url(pg_server_url).port
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the suite's own server on this machine")
    with pytest.raises(PostgresError, match=r"did not start|not ready"):
        PostgresServer(data_dir, port=port).start()


def test_migrations_are_idempotent_and_create_the_schema(database_url: str) -> None:
    migrate(database_url)  # already at head: a no-op

    async def tables() -> set[str]:
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    assert {"users", "events", "reservations", "reservation_requests", "alembic_version"} <= (
        asyncio.run(tables())
    )


def test_runs_the_binaries_of_the_pgserver_wheel(data_dir: Path) -> None:
    """The fallback for machines without a system PostgreSQL."""
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"

    async def version(dsn: str) -> str:
        conn = await asyncpg.connect(dsn)
        try:
            text: str = await conn.fetchval("SHOW server_version")
            return text
        finally:
            await conn.close()

    with PostgresServer(data_dir, bin_dir=bundled) as server:
        assert asyncio.run(version(server.dsn))
