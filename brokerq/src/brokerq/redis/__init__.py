"""brokerq on Redis: ``from brokerq.redis import RedisAdapter``.

Also public, for services that share brokerq's Redis: ``Connection`` / ``connect`` (brokerq's
own pipelined connection to one server) and ``Script`` (a Lua script kept as a ``.lua`` file,
run by its SHA1 with the ``EVAL`` fallback).
"""

from .adapter import RedisAdapter
from .connection import Connection, connect
from .lua import Script

__all__ = ["Connection", "RedisAdapter", "Script", "connect"]
