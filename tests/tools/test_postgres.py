"""The embedded PostgreSQL launcher and the migrations, on a real server."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from reservations.db import migrate
from reservations_tools.servers.postgres import PostgresError, PostgresServer, find_postgres_bin_dir


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
        assert server.url.startswith("postgresql+asyncpg://postgres:")
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


# -- authentication ------------------------------------------------------------------------------


def _password(data_dir: Path) -> str:
    return (data_dir / "password").read_text().strip()


async def _connect(host: str, port: int, password: str | None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=host, port=port, user="postgres", database="postgres", password=password, timeout=10
    )


async def _refused(host: str, port: int, password: str | None) -> str:
    """The server's refusal of a connection with ``password``; fails the test if it lets it in."""
    try:
        conn = await _connect(host, port, password)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return str(exc)
    await conn.close()
    raise AssertionError(f"connected to {host} with password {password!r}")


def _assert_password_required(data_dir: Path, port: int) -> None:
    """Over TCP and over the Unix socket: no password and a wrong one are refused, the one in
    the password file works."""

    async def check() -> None:
        for host in ("127.0.0.1", str(data_dir / "sockets")):
            for wrong in (None, "", "not-the-password"):
                await _refused(host, port, wrong)
            conn = await _connect(host, port, _password(data_dir))
            try:
                assert await conn.fetchval("SELECT current_user") == "postgres"
            finally:
                await conn.close()

    asyncio.run(check())


def test_every_connection_needs_the_password(data_dir: Path) -> None:
    with PostgresServer(data_dir) as server:
        _assert_password_required(data_dir, server.port)
        password = _password(data_dir)
        assert len(password) >= 32
        assert (
            server.url
            == f"postgresql+asyncpg://postgres:{password}@127.0.0.1:{server.port}/postgres"
        )
        assert server.dsn == f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres"
    # A later start keeps the password: the data folder's clients still hold it.
    with PostgresServer(data_dir) as server:
        assert _password(data_dir) == password
        _assert_password_required(data_dir, server.port)


def test_the_password_file_and_the_folders_are_private(data_dir: Path) -> None:
    # A folder PostgresServer creates itself, inside one the postgres user (as root) can enter.
    data_dir.chmod(0o755)
    folder = data_dir / "postgres"
    with PostgresServer(folder):
        password_file = folder / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        # Readable by whoever started the server (as root: root, not the postgres user).
        assert password_file.stat().st_uid == os.geteuid()
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "sockets").stat().st_mode & 0o777 == 0o700
        # initdb's password file is gone once the cluster exists.
        assert sorted(p.name for p in folder.iterdir()) == [
            "password", "pgdata", "postgres.log", "sockets",
        ]  # fmt: skip


def _as_service_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _make_trust_cluster(data_dir: Path) -> None:
    """A data folder as earlier versions made it: initdb with trust authentication and no
    password, holding a table with one row."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    bin_dir = find_postgres_bin_dir()
    pgdata = str(data_dir / "pgdata")
    subprocess.run(
        [*_as_service_user(), str(bin_dir / "initdb"), "-D", pgdata, "-U", "postgres",
         "--auth=trust", "--encoding=UTF8", "--no-locale"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*_as_service_user(), str(bin_dir / "postgres"), "--single", "-D", pgdata,
         "-c", "exit_on_error=on", "postgres"],
        input=b"CREATE TABLE kept (v int);\nINSERT INTO kept VALUES (42);\n",
        check=True, capture_output=True,
    )  # fmt: skip


def test_a_data_folder_made_with_trust_authentication_is_upgraded(data_dir: Path) -> None:
    _make_trust_cluster(data_dir)
    assert not (data_dir / "password").exists()

    async def kept(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            value: int = await conn.fetchval("SELECT v FROM kept")
            return value
        finally:
            await conn.close()

    with PostgresServer(data_dir) as server:
        _assert_password_required(data_dir, server.port)
        assert asyncio.run(kept(server.dsn)) == 42  # the data came through the upgrade
    assert (data_dir / "password").stat().st_mode & 0o777 == 0o600
    hba = (data_dir / "pgdata" / "pg_hba.conf").read_text()
    methods = {
        line.split()[-1] for line in hba.splitlines() if line.split()[:1] != ["#"] and line.strip()
    }
    assert methods == {"scram-sha-256"}


def test_a_lost_password_file_gets_a_new_password(data_dir: Path) -> None:
    with PostgresServer(data_dir):
        old = _password(data_dir)
    (data_dir / "password").unlink()
    with PostgresServer(data_dir) as server:
        new = _password(data_dir)
        assert new != old
        _assert_password_required(data_dir, server.port)
        asyncio.run(_refused("127.0.0.1", server.port, old))


def test_a_password_file_the_server_does_not_accept_is_a_clear_error(data_dir: Path) -> None:
    with PostgresServer(data_dir):
        pass
    (data_dir / "password").write_text("edited-by-hand\n")
    with pytest.raises(PostgresError, match=r"not accepted.*password"):
        PostgresServer(data_dir).start()
    # Nothing is left running after the refusal.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
