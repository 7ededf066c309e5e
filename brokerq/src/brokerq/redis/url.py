"""Where and how a ``Connection`` connects: a Redis URL and options, as redis-py takes them.

``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, ``unix:///path``,
``redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/db]`` (or
``rediss+sentinel://``) for the primary that Redis Sentinel names,
``redis+cluster://[[user]:password@]host:port[,host:port...]/`` (or ``rediss+cluster://``) for
Redis Cluster, from any of its nodes (see ``cluster_of``); the options
(``socket_timeout``, ``ssl_ca_certs``, ...) in the URL's query or as keyword arguments, with
redis-py's names and meanings. Anything else is refused with a ``ConfigError`` that says
what is wrong, never with the password in it.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError

__all__ = [
    "CONNECTION_OPTIONS",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "ClusterSeeds",
    "Target",
    "cluster_of",
    "is_cluster_url",
    "target_of",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
# As brokerq's redis-py clients had them: a dead server fails a call instead of hanging it.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_TIMEOUT_S = 30.0


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


def _to_timeout(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, bool):
        raise ValueError("a timeout is a number of seconds")
    seconds = float(value)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError("a timeout is a positive number of seconds, or None")
    return seconds


def _to_db(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a database number is an int")
    db = int(value)
    if db < 0:
        raise ValueError("a database number is 0 or more")
    return db


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _to_cert_reqs(value: Any) -> str:
    for name, mode in _CERT_REQS.items():
        if value == mode:  # an ssl.VerifyMode, as redis-py also takes
            return name
    text = str(value).lower()
    if text not in _CERT_REQS:
        raise ValueError("it is one of none, optional, required")
    return text


# The options a Connection takes, in the URL's query or as keyword arguments, with redis-py's
# names and meanings (the ones brokerq has a use for).
_OPTIONS: dict[str, Any] = {
    "username": str,
    "password": str,
    "db": _to_db,
    "socket_timeout": _to_timeout,
    "socket_connect_timeout": _to_timeout,
    "client_name": str,
    "ssl_cert_reqs": _to_cert_reqs,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_ca_data": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_password": str,
    "ssl_check_hostname": _to_bool,
    "sentinel_username": str,
    "sentinel_password": str,
}
CONNECTION_OPTIONS = frozenset(_OPTIONS)
"""The names of the options a ``Connection`` takes."""
_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect, from a URL and options."""

    host: str
    port: int
    path: str | None
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    client_name: str | None
    connect_timeout: float | None
    timeout: float | None
    sentinels: tuple[tuple[str, int], ...] = ()
    """Redis Sentinel's addresses: connect to the primary they name ``master_name``."""
    master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @property
    def where(self) -> str:
        """The server, for messages (never the password)."""
        if self.sentinels and not self.host:
            return f"sentinel primary {self.master_name!r}"
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def target_of(url: str, password: str | None, options: dict[str, Any]) -> Target:
    if not isinstance(url, str):
        raise ConfigError(f"a Redis URL is a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in _SENTINEL_SCHEMES:
        return _sentinel_target(url, password, options)
    if scheme in _CLUSTER_SCHEMES:
        raise ConfigError(f"a {scheme}:// URL is for Redis Cluster's client, not one connection")
    if scheme not in ("redis", "rediss", "unix"):
        # The scheme only: the rest of the URL may hold a password.
        raise ConfigError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// or "
            "redis+cluster://, not "
            f"{parts.scheme + ':'!r}"
        )
    given: dict[str, Any] = {}
    for name, values in parse_qs(parts.query).items():
        given[name] = _option(name, values[-1], "in the Redis URL")
    if parts.username:
        given["username"] = unquote(parts.username)
    if parts.password:
        given["password"] = unquote(parts.password)
    if parts.scheme != "unix" and "db" not in given and parts.path.strip("/"):
        given["db"] = _option("db", unquote(parts.path).strip("/"), "in the Redis URL's path")
    if password is not None:
        options = {**options, "password": password}
    for name, value in options.items():
        if value is None and _OPTIONS.get(name) is not _to_timeout:
            continue  # not given (a timeout of None means none)
        value = _option(name, value, "given")
        if name in given and given[name] != value:
            raise ConfigError(
                f"Redis option {name!r} is given twice, differently: in the URL and as an argument"
            )
        given[name] = value

    tls_options = sorted(n for n in given if n.startswith("ssl_"))
    if parts.scheme == "rediss":
        tls = _tls_context(given)
    elif tls_options:
        raise ConfigError(f"{', '.join(tls_options)}: TLS options need a rediss:// URL")
    else:
        tls = None
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(
                "a unix:// Redis URL names the socket's path: unix:///path/to/redis.sock"
            )
        host, port, path = "", 0, unquote(parts.path)
    else:
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError("the port of the Redis URL is not a number from 0 to 65535") from None
        host, path = unquote(parts.hostname or "127.0.0.1"), None
    return Target(
        host=host,
        port=port,
        path=path,
        tls=tls,
        username=given.get("username"),
        password=given.get("password"),
        db=given.get("db", 0),
        client_name=given.get("client_name"),
        connect_timeout=given.get("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT_S),
        timeout=given.get("socket_timeout", DEFAULT_TIMEOUT_S),
    )


def _sentinel_target(url: str, password: str | None, options: dict[str, Any]) -> Target:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/<master>[/db][?options]``:
    the addresses are Sentinel's; the credentials, database and options are the primary's
    (``sentinel_password`` / ``sentinel_username`` for Sentinels that ask for their own)."""
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    names = [p for p in unquote(path).split("/") if p] if slash else []
    if not names:
        raise ConfigError(
            "a redis+sentinel:// URL names the primary after the addresses: "
            "redis+sentinel://host:26379,host:26380/mymaster"
        )
    if len(names) > 2:
        raise ConfigError("a redis+sentinel:// URL's path is /<master name>[/<db>]")
    sentinels = _addresses(hosts, 26379, "a Sentinel address")
    # The primary's own part, as a plain URL: credentials, database and options.
    db = f"/{names[1]}" if len(names) == 2 else ""
    plain = f"{_SENTINEL_SCHEMES[scheme]}://{userinfo + at}sentinel{db}"
    if query:
        plain += f"?{query}"
    sentinel_options: dict[str, Any] = {
        name: options[name]
        for name in ("sentinel_username", "sentinel_password")
        if name in options
    }
    rest_options = {k: v for k, v in options.items() if k not in sentinel_options}
    base = target_of(plain, password, rest_options)
    given = {k: _option(k, v, "given") for k, v in sentinel_options.items() if v is not None}
    for name, values in parse_qs(query).items():
        if name.startswith("sentinel_"):
            given[name] = _option(name, values[-1], "in the Redis URL")
    return Target(
        host="", port=0, path=None, tls=base.tls, username=base.username,
        password=base.password, db=base.db, client_name=base.client_name,
        connect_timeout=base.connect_timeout, timeout=base.timeout, sentinels=tuple(sentinels),
        master_name=names[0], sentinel_username=given.get("sentinel_username"),
        sentinel_password=given.get("sentinel_password"),
    )  # fmt: skip


def _option(name: str, value: Any, where: str) -> Any:
    parse = _OPTIONS.get(name)
    if parse is None:
        known = ", ".join(sorted(_OPTIONS))
        raise ConfigError(
            f"unknown Redis option {name!r} {where}; brokerq's connection takes {known}"
        )
    if value is None and parse is _to_timeout:
        return None
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        shown = "***" if "password" in name else repr(value)
        raise ConfigError(f"Redis option {name!r} {where} is invalid ({shown}): {exc}") from None


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """A client context as redis-py builds it: the system's CAs plus ``ssl_ca_*``; the server's
    certificate and host name checked unless ``ssl_cert_reqs`` says otherwise."""
    reqs = options.get("ssl_cert_reqs", "required")
    try:
        context = ssl.create_default_context()
        check = options.get("ssl_check_hostname", True) and reqs != "none"
        context.check_hostname = check
        context.verify_mode = _CERT_REQS[reqs]
        certfile = options.get("ssl_certfile")
        if certfile is not None:  # a client certificate, for servers that ask for one
            context.load_cert_chain(
                certfile, options.get("ssl_keyfile"), options.get("ssl_password")
            )
        elif "ssl_keyfile" in options:
            raise ConfigError("ssl_keyfile needs ssl_certfile, the certificate of that key")
        cafile, capath = options.get("ssl_ca_certs"), options.get("ssl_ca_path")
        cadata = options.get("ssl_ca_data")
        if cafile or capath or cadata:
            context.load_verify_locations(cafile=cafile, capath=capath, cadata=cadata)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"the TLS files of the Redis options cannot be loaded: {exc}") from exc
    return context


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    return isinstance(url, str) and urlsplit(url).scheme in _CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True)
class ClusterSeeds:
    """A Redis Cluster URL taken apart: the first node as a plain URL (credentials, TLS and
    options, as redis-py's ``RedisCluster.from_url`` takes it) and every node given."""

    url: str
    nodes: tuple[tuple[str, int], ...]


def cluster_of(url: str) -> ClusterSeeds:
    """``redis+cluster://[[user]:password@]host:port[,host:port...]/[?options]``: any nodes of
    the cluster (the client learns the rest from them); ``rediss+cluster://`` for TLS. A cluster
    has no databases: a path other than ``/`` or ``/0`` is refused."""
    scheme, _, rest = url.partition("://")
    if scheme not in _CLUSTER_SCHEMES:
        raise ConfigError("a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if path.strip("/") not in ("", "0"):
        raise ConfigError("Redis Cluster has one database: its URL's path is / or /0")
    nodes = _addresses(hosts, 6379, "a Redis Cluster node")
    first_host, first_port = nodes[0]
    shown = f"[{first_host}]" if ":" in first_host else first_host
    plain = f"{_CLUSTER_SCHEMES[scheme]}://{userinfo + at}{shown}:{first_port}/0"
    if query:
        plain += f"?{query}"
    return ClusterSeeds(plain, tuple(nodes))


def _addresses(hosts: str, default_port: int, what: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` (IPv6 hosts in brackets) as (host, port) pairs."""
    found: list[tuple[str, int]] = []
    for address in hosts.split(","):
        host, colon, port = address.strip().rpartition(":")
        if not colon:
            host, port = address.strip(), str(default_port)
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"{what} is host:port, with a port number") from None
        if not host or not 0 < number < 65536:
            raise ConfigError(f"{what} is host:port, with a port from 1 to 65535")
        found.append((host.strip("[]"), number))
    return found
