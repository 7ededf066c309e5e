"""Lua scripts kept as ``.lua`` files, run by their SHA1 with one fallback.

``Script.from_resource("brokerq", "lua/produce.lua", prelude="lua/_lib.lua")`` reads a script
from a package's files (with a shared prelude in front where wanted); ``await script.run(conn,
keys, args)`` sends ``EVALSHA`` and, where the server does not know the script yet (first use,
after ``SCRIPT FLUSH``, a restart or a failover), ``EVAL`` once, which runs it and caches it.
brokerq's engines and services on the same Redis run their scripts this way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Protocol, cast

from ..errors import NoScriptError, ScriptError, ServerError

__all__ = ["Caller", "Script", "SupportsCall", "resource_text"]


class SupportsCall(Protocol):
    """Anything that sends a Redis command and returns its reply: a ``brokerq.redis.Connection``."""

    def call(self, *args: Any) -> Awaitable[Any]: ...


Caller = SupportsCall | Callable[..., Awaitable[Any]]
"""Where a script runs: an object with ``call(*args)`` or such a function itself."""


def resource_text(package: str, path: str) -> str:
    """The text of ``path`` (``/``-separated, relative to ``package``) from the package's files."""
    node = resources.files(package)
    for part in path.split("/"):
        node = node / part
    return node.read_text(encoding="utf-8")


class Script:
    """A Lua script and its SHA1."""

    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    @classmethod
    def from_resource(
        cls, package: str, path: str, *, prelude: str | None = None, name: str | None = None
    ) -> Script:
        """The script in file ``path`` of ``package`` (e.g. ``"lua/admit.lua"``), with the
        file ``prelude`` of the same package in front (shared functions); named after the
        file unless ``name`` is given."""
        text = resource_text(package, path)
        if prelude is not None:
            text = resource_text(package, prelude) + "\n" + text
        if name is None:
            name = path.rsplit("/", 1)[-1].removesuffix(".lua")
        return cls(name, text)

    async def run(self, redis: Caller, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``KEYS`` and ``ARGV``; returns its reply.

        An error the script raises (or a command in it) raises ``ScriptError``, or the matching
        ``ServerError`` subclass (``WrongTypeError``, ``ReadOnlyError``, ...)."""
        call = cast("Callable[..., Awaitable[Any]]", getattr(redis, "call", redis))
        try:
            try:
                return await call("EVALSHA", self.sha, len(keys), *keys, *args)
            except NoScriptError:
                # First use on this server (or after SCRIPT FLUSH / failover): EVAL caches it.
                return await call("EVAL", self.text, len(keys), *keys, *args)
        except ServerError as exc:
            if type(exc) is not ServerError:
                raise
            # An error reply the script made itself (redis.error_reply) names no script.
            raise ScriptError(f"script {self.name}: {exc}", code=exc.code) from exc

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:12]}>"
