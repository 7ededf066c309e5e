"""Run a local PostgreSQL server in a data directory: for tests, development and a single box.

Binaries come from PATH, then ``/usr/lib/postgresql/*/bin``, then the ``pgserver`` wheel (which
ships a full PostgreSQL under its package directory). PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` system user, which then owns the data directory.

Every connection, over TCP or the Unix socket, needs the superuser's password: it is made on the
first start and kept in ``<data_dir>/password``, readable only by whoever started the server (as
root: root, not the ``postgres`` user). PostgreSQL itself only ever sees its SCRAM verifier.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from brokerq.server import free_port

from .credentials import PASSWORD_FILE, private_dir, read_or_create_password

__all__ = ["PostgresError", "PostgresServer", "find_postgres_bin_dir", "service_gid"]

_READY_TIMEOUT_S = 60.0
# Unix socket paths are limited to about 107 bytes; leave room for "/.s.PGSQL.<port>".
_MAX_SOCKET_DIR_LEN = 80
_SERVICE_USER = "postgres"
_SCRAM_ITERATIONS = 4096  # PostgreSQL's own default for scram_iterations
# Rewritten whenever it differs: a folder made with trust authentication (by earlier versions)
# is upgraded this way, and nobody's edit can open the server again.
_PG_HBA = """\
# Written by the embedded PostgreSQL launcher at every start. Every connection, over TCP or the
# Unix socket, needs the password kept next to this cluster, in ../password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class PostgresError(RuntimeError):
    """The embedded PostgreSQL could not be found, initialised, started or stopped."""


def _has_server_binaries(directory: Path) -> bool:
    return all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or a clear error."""
    explicit = os.environ.get("RESERVATIONS_PG_BIN")
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise PostgresError(f"RESERVATIONS_PG_BIN={explicit!r} holds no initdb/pg_ctl/postgres")
    on_path = shutil.which("pg_ctl")
    if on_path:
        directory = Path(on_path).resolve().parent
        if _has_server_binaries(directory):
            return directory
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if _has_server_binaries(Path(candidate)):
            return Path(candidate)
    try:
        import pgserver
    except ImportError:
        pass
    else:
        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if _has_server_binaries(bundled):
            return bundled
    raise PostgresError(
        "no PostgreSQL server binaries found (looked on PATH, in /usr/lib/postgresql/*/bin and in "
        "the 'pgserver' package): install PostgreSQL or the 'pgserver' package, or set "
        "RESERVATIONS_PG_BIN"
    )


def service_gid() -> int | None:
    """The group of the user the server runs as, when that is not us (as root); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVICE_USER).pw_gid
    except KeyError:
        return None


def _scram_verifier(password: str) -> str:
    """What PostgreSQL stores for ``password`` with SCRAM-SHA-256 (RFC 5802 / RFC 7677). Given
    this instead of the password, the server never holds the password itself, in any log either.
    """
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class PostgresServer:
    """One PostgreSQL server with its data in ``data_dir`` (kept between runs: it is persistent
    unless the caller throws the directory away).

    ``url`` is a SQLAlchemy asyncpg URL for the ``postgres`` superuser with its password,
    reachable on 127.0.0.1 only; it is known once ``start()`` has run. ``start()`` is synchronous:
    from async code, run it in a thread.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        database: str = "postgres",
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.database = database
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self._socket_dir: Path | None = None
        self._own_socket_dir = False
        self._started = False
        self._password: str | None = None

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def password(self) -> str:
        """The ``postgres`` superuser's password (kept in ``password_file``)."""
        if self._password is None:
            raise PostgresError("the password is known once the server has been started")
        return self._password

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self._userinfo}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """The same server as a libpq/asyncpg DSN (no SQLAlchemy driver suffix)."""
        return f"postgresql://{self._userinfo}@127.0.0.1:{self.port}/{self.database}"

    @property
    def _userinfo(self) -> str:
        return f"postgres:{quote(self.password, safe='')}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin_dir()
        return self._bin_dir

    # -- running commands, as the service user when we are root -----------------------------------

    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            raise PostgresError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
                "create one (useradd --system postgres) or run as an unprivileged user"
            ) from None
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", _SERVICE_USER, "--"]
        setpriv = shutil.which("setpriv")
        if setpriv:
            entry = pwd.getpwnam(_SERVICE_USER)
            return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]
        raise PostgresError(
            "running as root, but neither 'runuser' nor 'setpriv' is available to start "
            "PostgreSQL as the 'postgres' user"
        )

    def _command(self, name: str, *args: str) -> list[str]:
        return [*self._run_as(), str(self.bin_dir / name), *args]

    def _check(self, name: str, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            self._command(name, *args),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{name} failed with exit code {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result.stdout

    def _service_user(self) -> pwd.struct_passwd | None:
        """The user the server runs as when that is not us (as root), else None."""
        return pwd.getpwnam(_SERVICE_USER) if self._run_as() else None

    def _prepare_dirs(self) -> None:
        owner = self._service_user()
        uid, gid = (owner.pw_uid, owner.pw_gid) if owner is not None else (-1, -1)
        private_dir(self.data_dir, uid=uid, gid=gid)
        socket_dir = self.data_dir / "sockets"
        if len(str(socket_dir)) > _MAX_SOCKET_DIR_LEN:
            socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-"))
            self._own_socket_dir = True
        private_dir(socket_dir, uid=uid, gid=gid)
        self._socket_dir = socket_dir
        if owner is not None:
            probe = subprocess.run([*self._run_as(), "test", "-w", str(self.data_dir)], check=False)
            if probe.returncode != 0:
                raise PostgresError(
                    f"the 'postgres' user cannot write to {self.data_dir}: a parent directory "
                    "is not accessible to it; choose a data directory it can reach "
                    "(e.g. under /tmp or /var/lib)"
                )

    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def _pg_hba(self) -> Path:
        return self._pgdata / "pg_hba.conf"

    def _prepare_cluster(self) -> None:
        """Make the cluster with its password, or bring an existing one to password
        authentication; the password file is written before the server learns the password, and
        pg_hba.conf last, so an interrupted start is finished by the next one."""
        password, made = read_or_create_password(self.password_file)
        self._password = password
        if not (self._pgdata / "PG_VERSION").exists():
            self._initdb(_scram_verifier(password))
        elif made or not self._hba_is_ours():
            # Made with trust authentication and no password (by earlier versions), or its
            # password file was lost: set the password while the server is down, in single-user
            # mode, so that no connection can come in between.
            self._set_password_offline(_scram_verifier(password))
        else:
            return
        self._write_pg_hba()

    def _hba_is_ours(self) -> bool:
        try:
            return self._pg_hba.read_text() == _PG_HBA
        except FileNotFoundError:
            return False

    def _write_pg_hba(self) -> None:
        if self._service_user() is None:
            self._pg_hba.write_text(_PG_HBA)
            return
        # As the postgres user, who owns pgdata: root writing there could be sent elsewhere by a
        # symbolic link.
        result = subprocess.run(
            [*self._run_as(), "tee", str(self._pg_hba)],
            input=_PG_HBA, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresError(f"cannot write {self._pg_hba}: {result.stderr.strip()}")

    def _initdb(self, verifier: str) -> None:
        # initdb reads the password from a file; as root it runs as the postgres user, who must
        # be able to read it. It holds the verifier, and is gone once initdb has run.
        pwfile = self.data_dir / ".initdb-password"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                owner = self._service_user()
                if owner is not None:
                    os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
                out.write(verifier + "\n")
            self._check(
                "initdb",
                "-D", str(self._pgdata),
                "-U", "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _set_password_offline(self, verifier: str) -> None:
        self._check(
            "postgres", "--single", "-D", str(self._pgdata), "-c", "exit_on_error=on", "postgres",
            input=f"ALTER ROLE postgres PASSWORD '{verifier}';\n",
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        if self._started:
            return self
        self._prepare_dirs()
        self._prepare_cluster()
        assert self._socket_dir is not None
        options = (
            f"-p {self.port} -k {self._socket_dir} -h 127.0.0.1 "
            "-c fsync=on -c max_connections=200 -c shared_buffers=128MB"
        )
        # -W: don't let pg_ctl wait; we poll a real connection below and report the log on failure.
        self._check(
            "pg_ctl", "start", "-D", str(self._pgdata), "-W",
            "-l", str(self.data_dir / "postgres.log"), "-o", options,
        )  # fmt: skip
        self._started = True
        try:
            self._wait_ready()
            self._check_password()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        # Through our own socket directory: on a port some other server holds, TCP would answer
        # for that server and we would believe ours had started.
        assert self._socket_dir is not None
        pg_isready = self.bin_dir / "pg_isready"
        if pg_isready.is_file():
            result = subprocess.run(
                [str(pg_isready), "-h", str(self._socket_dir), "-p", str(self.port),
                 "-d", "postgres", "-U", "postgres", "-t", "1"],
                stdin=subprocess.DEVNULL, capture_output=True, check=False,
            )  # fmt: skip
            return result.returncode == 0
        return self._ready_asyncpg(str(self._socket_dir))

    def _connect_once(self, host: str, timeout_s: float) -> None:
        import asyncio

        import asyncpg  # type: ignore[import-untyped]

        async def connect() -> None:
            conn = await asyncpg.connect(
                host=host,
                port=self.port,
                user="postgres",
                password=self.password,
                database="postgres",
                timeout=timeout_s,
            )
            await conn.close()

        asyncio.run(connect())

    def _ready_asyncpg(self, host: str) -> bool:
        import asyncpg  # type: ignore[import-untyped]

        try:
            self._connect_once(host, 1)
        except asyncpg.InvalidAuthorizationSpecificationError:
            return True  # it answers; _check_password says what is wrong with the password
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        return True

    def _check_password(self) -> None:
        """Fail now, and clearly, when the password file does not match the server's password,
        rather than in every client later."""
        import asyncpg  # type: ignore[import-untyped]

        assert self._socket_dir is not None
        try:
            self._connect_once(str(self._socket_dir), 10)
        except asyncpg.InvalidAuthorizationSpecificationError:
            raise PostgresError(
                f"the password in {self.password_file} is not accepted by the PostgreSQL server "
                f"in {self._pgdata}: put back the file's original content, or delete the file "
                "to have a new password set at the next start"
            ) from None

    def _wait_ready(self) -> None:
        started = time.monotonic()
        deadline = started + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._ready():
                return
            # The postmaster appears a moment after pg_ctl returns; a longer absence is a failure.
            if time.monotonic() - started > 2.0 and not self._postmaster_running():
                raise PostgresError(f"PostgreSQL did not start: {self._log_tail()}")
            time.sleep(0.05)
        raise PostgresError(
            f"PostgreSQL on port {self.port} not ready in {_READY_TIMEOUT_S:.0f}s: "
            f"{self._log_tail()}"
        )

    def _postmaster_running(self) -> bool:
        result = subprocess.run(
            self._command("pg_ctl", "status", "-D", str(self._pgdata)),
            stdin=subprocess.DEVNULL, capture_output=True, check=False,
        )  # fmt: skip
        return result.returncode != 3

    def _log_tail(self) -> str:
        log = self.data_dir / "postgres.log"
        try:
            return log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, writes a checkpoint); harmless twice."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(PostgresError):
            self._check("pg_ctl", "stop", "-D", str(self._pgdata), "-m", "fast", "-w", "-t", "60")
        if self._own_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
