"""``reservations-tools up``: the whole service on one machine, in the foreground.

What it does, in order:

1. When no ``DATABASE_URL`` / Redis (``REDIS_URL`` or ``REDIS_HOST``) is configured, it starts an
   embedded PostgreSQL and an embedded Redis (append-only persistence on) with their data under
   ``DATA_DIR`` (``data/`` by default), kept across restarts. Both require a password, made on the
   first start and kept in ``DATA_DIR/postgres/password`` and ``DATA_DIR/redis/password``
   (mode 0600); the children get the URLs with the passwords in their environment, ``status`` and
   ``migrate`` from ``DATA_DIR/run.json`` (0600), and the banner shows them without. The servers
   run in a helper process of their own session, so a Ctrl-C in the terminal reaches only the
   supervisor, which stops them last.
2. It runs the migrations.
3. It starts the API (uvicorn) and ``WORKERS`` worker processes, each logging to
   ``DATA_DIR/logs/<name>.log``, waits until ``/health`` answers and prints where everything is.
4. On SIGTERM or SIGINT it sends SIGTERM to the API and the workers, waits for them (a grace period,
   then SIGKILL), and stops the embedded servers last. A second signal skips the grace period.

A child that dies unexpectedly is reported with the tail of its log and restarted after a short
backoff; one that dies ``_MAX_CRASHES`` times within ``_CRASH_WINDOW_S`` stops the whole service
with a non-zero exit and a message saying which child and where its log is. If the embedded servers
die, the service stops (nothing can run without them).

Every child gets ``PR_SET_PDEATHSIG``: if the supervisor itself is killed, they get SIGTERM and do
not linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from .admin_token import TOKEN_FILE, ensure_admin_token
from .servers.credentials import PASSWORD_FILE, private_dir, write_private

__all__ = ["UpOptions", "run_up", "set_parent_death_signal"]

_MAX_CRASHES = 5
_CRASH_WINDOW_S = 60.0
_EMBEDDED_READY_TIMEOUT_S = 120.0
_HEALTH_TIMEOUT_S = 60.0
_EMBEDDED_STOP_TIMEOUT_S = 90.0
_PR_SET_PDEATHSIG = 1
_SAME_SIGNAL_WINDOW_S = 1.0


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _child_preexec() -> None:
    set_parent_death_signal(signal.SIGTERM)


def _redact(url: str) -> str:
    """A URL with its password, if any, replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass
class UpOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 3
    api_processes: int = 1
    data_dir: Path = Path("data")
    grace_s: float = 30.0
    redis_fsync: str = "everysec"
    database_url: str | None = None
    redis_url: str | None = None  # None: start the embedded Redis
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_metrics_port: int | None = None  # worker i serves its metrics on this + i - 1
    admin_token_configured: bool = False  # False: use (or make) the data folder's admin-token


# ---------------------------------------------------------------------------------------------
# The supervisor
# ---------------------------------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    argv: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    crashes: deque[float] = field(default_factory=deque)
    log: IO[bytes] | None = None
    started_at: float = 0.0


class StartupError(RuntimeError):
    """The service could not be brought up; the message says what failed and where to look."""


class Supervisor:
    def __init__(self, options: UpOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.data_dir = options.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.children: list[_Child] = []
        self.embedded: asyncio.subprocess.Process | None = None
        self.database_url = options.database_url
        self.redis_url = options.redis_url
        self._stop = asyncio.Event()
        self._signals = 0
        self._first_signal_at = 0.0
        self.exit_code = 0
        self._pid_file = self.data_dir / "up.pid"
        self._run_file = self.data_dir / "run.json"
        self._admin_token: str | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}")

    def _cli(self, *args: str) -> list[str]:
        """A command of the service: ``reservations api``, ``reservations worker``."""
        return [sys.executable, "-m", "reservations", *args]

    def _tools(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "reservations_tools", *args]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.options.extra_env)
        env["DATA_DIR"] = str(self.data_dir)
        env["SERVICE_PORT"] = str(self.options.port)
        env["WORKERS"] = str(self.options.workers)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self._admin_token is not None:
            env["ADMIN_TOKEN"] = self._admin_token
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _claim_data_dir(self) -> None:
        if not self.data_dir.exists():
            # Only its owner may enter; as root, the embedded PostgreSQL runs as the postgres
            # user and must pass through to its folder. A folder the user made is left as it is.
            from .servers.postgres import service_gid

            gid = service_gid()
            if gid is None:
                private_dir(self.data_dir)
            else:
                private_dir(self.data_dir, gid=gid, group_may_enter=True)
        private_dir(self.log_dir)
        if self._pid_file.exists():
            try:
                pid = int(self._pid_file.read_text().strip())
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                pass  # stale: the previous run is gone
            except PermissionError:
                raise StartupError(
                    f"another 'reservations-tools up' (pid file {self._pid_file}) is using this "
                    "data dir"
                ) from None
            else:
                if pid != os.getpid():
                    raise StartupError(
                        f"'reservations-tools up' is already running with pid {pid} on "
                        f"{self.data_dir}; "
                        "stop it first, or use another DATA_DIR"
                    )
        self._pid_file.write_text(f"{os.getpid()}\n")

    def _release_data_dir(self) -> None:
        for path in (self._run_file, self._pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _tail(self, path: Path, lines: int = 15) -> str:
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- embedded servers ------------------------------------------------------------------------

    async def _start_embedded(self) -> None:
        want_pg = self.database_url is None
        want_redis = self.redis_url is None
        if not (want_pg or want_redis):
            return
        what = " and ".join(n for n, w in (("PostgreSQL", want_pg), ("Redis", want_redis)) if w)
        self._say(f"starting embedded {what} in {self.data_dir}")
        log = (self.log_dir / "embedded.log").open("ab")
        args = [
            "embedded",
            "--data-dir",
            str(self.data_dir),
            "--redis-fsync",
            self.options.redis_fsync,
        ]
        args += [
            "--postgres" if want_pg else "--no-postgres",
            "--redis" if want_redis else "--no-redis",
        ]
        self.embedded = await asyncio.create_subprocess_exec(
            *self._tools(*args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=self._env(),
            start_new_session=True,  # a terminal's Ctrl-C must not stop the servers before the rest
            preexec_fn=_child_preexec,
        )
        log.close()
        assert self.embedded.stdout is not None
        try:
            line = await asyncio.wait_for(
                self.embedded.stdout.readline(), _EMBEDDED_READY_TIMEOUT_S
            )
        except TimeoutError:
            line = b""
        if not line:
            await self._stop_embedded()
            raise StartupError(
                "the embedded servers did not start; see "
                f"{self.log_dir / 'embedded.log'}:\n{self._tail(self.log_dir / 'embedded.log')}"
            )
        urls: dict[str, str] = json.loads(line)
        self.database_url = self.database_url or urls.get("database_url")
        self.redis_url = self.redis_url or urls.get("redis_url")

    async def _stop_embedded(self) -> None:
        proc = self.embedded
        if proc is None or proc.returncode is not None:
            return
        self._say("stopping the embedded servers")
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _EMBEDDED_STOP_TIMEOUT_S)
        except TimeoutError:
            self._say("[red]the embedded servers did not stop in time; killing them[/]")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # -- children --------------------------------------------------------------------------------

    async def _spawn(self, child: _Child) -> None:
        child.log = child.log_path.open("ab")
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=child.log,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,  # signals come from the supervisor only, in order
            preexec_fn=_child_preexec,
        )
        child.started_at = time.monotonic()

    def _check_port_free(self) -> None:
        """Refuse to start when something already listens on the API port: /health would be
        answered by that other process and the service would look up when it is not."""
        import socket

        with socket.socket() as s:
            # As uvicorn binds: connections of a previous run in TIME_WAIT don't block the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.options.host, self.options.port))
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {self.options.host}:{self.options.port} ({exc.strerror}); "
                    "is the service already running? Choose another port with --port or "
                    "SERVICE_PORT"
                ) from None

    def _make_children(self) -> None:
        o = self.options
        api = ["api", "--host", o.host, "--port", str(o.port), "--processes", str(o.api_processes)]
        self.children = [_Child("api", self._cli(*api), self.log_dir / "api.log")]
        for i in range(1, o.workers + 1):
            name = f"worker-{i}"
            args = ["worker"]
            if o.worker_metrics_port is not None:
                args += ["--metrics-port", str(o.worker_metrics_port + i - 1)]
            self.children.append(_Child(name, self._cli(*args), self.log_dir / f"{name}.log"))

    async def _wait_healthy(self) -> None:
        from .loadtest.http import HttpError, Pool

        url = f"http://{self._client_host()}:{self.options.port}"
        deadline = time.monotonic() + _HEALTH_TIMEOUT_S
        api = self.children[0]
        async with Pool(url, 1) as pool:
            while time.monotonic() < deadline:
                if api.process is not None and api.process.returncode is not None:
                    raise StartupError(
                        f"the API exited with code {api.process.returncode} while starting; "
                        f"see {api.log_path}:\n{self._tail(api.log_path)}"
                    )
                try:
                    resp = await pool.get("/health")
                    if resp.status == 200:
                        return
                except (OSError, HttpError):
                    pass
                await asyncio.sleep(0.1)
        raise StartupError(
            f"the API did not answer /health within {_HEALTH_TIMEOUT_S:.0f}s; "
            f"see {api.log_path}:\n{self._tail(api.log_path)}"
        )

    def _client_host(self) -> str:
        return "127.0.0.1" if self.options.host in ("0.0.0.0", "", "::") else self.options.host

    def _banner(self) -> None:
        base = f"http://{self._client_host()}:{self.options.port}"
        table = Table(
            title="reservation service is up", show_header=False, title_style="bold green"
        )
        table.add_column(style="bold")
        table.add_column()
        table.add_row("API", base)
        table.add_row("Swagger UI", f"{base}/api")
        table.add_row("health", f"{base}/health")
        table.add_row(
            "processes",
            f"api (pid {self.children[0].process.pid if self.children[0].process else '?'}), "
            f"{self.options.workers} workers",
        )
        pg = "embedded" if self.options.database_url is None else "configured"
        rd = "embedded" if self.options.redis_url is None else "configured"
        table.add_row(f"PostgreSQL ({pg})", _redact(self.database_url or "-"))
        table.add_row(f"Redis ({rd})", _redact(self.redis_url or "-"))
        table.add_row(
            "admin token",
            "configured (ADMIN_TOKEN)"
            if self.options.admin_token_configured
            else f"in {self.data_dir / TOKEN_FILE} (set ADMIN_TOKEN to choose one)",
        )
        table.add_row("data dir", str(self.data_dir))
        table.add_row("logs", f"{self.log_dir}/{{api,worker-N,embedded}}.log")
        if self.options.database_url is None:
            table.add_row("PostgreSQL log", str(self.data_dir / "postgres" / "postgres.log"))
        if self.options.redis_url is None:
            table.add_row("Redis data / log", str(self.data_dir / "redis"))
        embedded = [
            str(self.data_dir / name / PASSWORD_FILE)
            for name, url in (
                ("postgres", self.options.database_url),
                ("redis", self.options.redis_url),
            )
            if url is None
        ]
        if embedded:
            table.add_row("embedded passwords", f"in {', '.join(embedded)} (yours only)")
        table.add_row("status", "uv run reservations-tools status")
        table.add_row("stop", "Ctrl-C (or SIGTERM to this process)")
        self.console.print(table)

    def _write_run_file(self) -> None:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "api": f"http://{self._client_host()}:{self.options.port}",
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "children": {c.name: c.process.pid for c in self.children if c.process},
        }
        # It holds the servers' passwords: `status` and `migrate` read them there.
        write_private(self._run_file, json.dumps(info, indent=2) + "\n")

    async def _on_exit(self, child: _Child) -> None:
        """A child exited while the service runs: report it, restart it or give up."""
        assert child.process is not None
        code = child.process.returncode
        if child.log is not None:
            child.log.close()
        now = time.monotonic()
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > _CRASH_WINDOW_S:
            child.crashes.popleft()
        self._say(
            f"[red]{child.name} (pid {child.process.pid}) exited unexpectedly with code {code}[/]; "
            f"last lines of {child.log_path}:\n{self._tail(child.log_path)}"
        )
        if len(child.crashes) >= _MAX_CRASHES:
            self.console.print(
                f"[bold red]{child.name} died {len(child.crashes)} times within "
                f"{_CRASH_WINDOW_S:.0f}s: stopping the service. See {child.log_path}[/]"
            )
            self.exit_code = 1
            self._stop.set()
            return
        delay = min(10.0, 0.5 * 2 ** (len(child.crashes) - 1))
        self._say(f"restarting {child.name} in {delay:.1f}s")
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
            return  # stopping meanwhile
        except TimeoutError:
            pass
        await self._spawn(child)
        self._say(f"{child.name} restarted (pid {child.process.pid})")
        self._write_run_file()

    async def _stop_children(self) -> None:
        running = [c for c in self.children if c.process and c.process.returncode is None]
        if not running:
            return
        self._say(
            f"stopping {', '.join(c.name for c in running)} (grace {self.options.grace_s:g}s)"
        )
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        waits = {asyncio.ensure_future(c.process.wait()): c for c in running if c.process}
        deadline = time.monotonic() + self.options.grace_s
        pending = set(waits)
        while pending:
            if self._signals >= 2:
                break  # a second Ctrl-C: no more grace
            timeout = min(0.2, deadline - time.monotonic())
            if timeout <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for fut in pending:
            child = waits[fut]
            self._say(f"[yellow]{child.name} did not stop in time: killing it[/]")
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        if pending:
            await asyncio.wait(pending)
        for child in self.children:
            if child.log is not None:
                child.log.close()
            if child.process is not None and child.process.returncode not in (0, None):
                code = child.process.returncode
                if code not in (-signal.SIGTERM, -signal.SIGKILL):
                    self._say(f"{child.name} exited with code {code}")

    def _on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if self._signals and now - self._first_signal_at < _SAME_SIGNAL_WINDOW_S:
            # One Ctrl-C often arrives twice: from the terminal, and forwarded by a wrapper such
            # as `uv run` in the same process group. Only a later one means "stop now".
            return
        self._signals += 1
        if self._signals == 1:
            self._first_signal_at = now
            self._say(f"{signal.Signals(signum).name}: shutting down")
        else:
            self._say("second signal: stopping now, without the grace period")
        self._stop.set()

    # -- the whole run ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            self._claim_data_dir()
            if not self.options.admin_token_configured:
                self._admin_token = ensure_admin_token(self.data_dir)
        except StartupError as exc:
            self.console.print(f"[bold red]startup failed:[/] {exc}")
            return 1
        try:
            try:
                self._check_port_free()
                await self._start_embedded()
                if self._stop.is_set():
                    return self.exit_code
                self._say("running migrations")
                from reservations.db import migrate

                assert self.database_url is not None
                try:
                    await asyncio.to_thread(migrate, self.database_url)
                except Exception as exc:
                    raise StartupError(f"migrations failed: {exc!r}") from exc
                self._make_children()
                for child in self.children:
                    await self._spawn(child)
                await self._wait_healthy()
            except StartupError as exc:
                self.console.print(f"[bold red]startup failed:[/] {exc}")
                self.exit_code = 1
                return 1
            self._write_run_file()
            self._banner()
            await self._supervise()
            return self.exit_code
        finally:
            await self._stop_children()
            await self._stop_embedded()
            self._release_data_dir()
            self._say("stopped" if self.exit_code == 0 else f"stopped (exit code {self.exit_code})")

    async def _supervise(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        watching: dict[asyncio.Future[Any], Callable[[], Any]] = {}

        def watch_child(child: _Child) -> None:
            assert child.process is not None
            watching[asyncio.ensure_future(child.process.wait())] = lambda: child

        for child in self.children:
            watch_child(child)
        embedded_wait = (
            asyncio.ensure_future(self.embedded.wait()) if self.embedded is not None else None
        )
        try:
            while not self._stop.is_set():
                futures: set[asyncio.Future[Any]] = {stop, *watching}
                if embedded_wait is not None:
                    futures.add(embedded_wait)
                done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
                if self._stop.is_set():
                    break
                if embedded_wait is not None and embedded_wait in done:
                    code = self.embedded.returncode if self.embedded else None
                    self.console.print(
                        f"[bold red]the embedded PostgreSQL/Redis stopped (code {code}): "
                        f"stopping the service. See {self.log_dir / 'embedded.log'}[/]"
                    )
                    self.exit_code = 1
                    self._stop.set()
                    break
                for fut in done:
                    if fut in watching:
                        child = watching.pop(fut)()
                        await self._on_exit(child)
                        if not self._stop.is_set() and child.process.returncode is None:
                            watch_child(child)
        finally:
            for fut in [stop, *watching, *([embedded_wait] if embedded_wait else [])]:
                fut.cancel()


def run_up(options: UpOptions, console: Console | None = None) -> int:
    """Run the service in the foreground until a signal; the process exit code."""
    console = console or Console()
    supervisor = Supervisor(options, console)
    try:
        return asyncio.run(supervisor.run())
    except StartupError as exc:
        console.print(f"[bold red]startup failed:[/] {exc}")
        return 1
