"""brokerq on Redis: ``from brokerq.redis import RedisAdapter``.

Also public, for services that share brokerq's Redis: ``open_commands`` (commands to the Redis
a URL names, single server, Sentinel or Cluster, behind one small ``Commands`` interface),
``Connection`` / ``connect`` (brokerq's own pipelined connection to one server) and ``Script``
(a Lua script kept as a ``.lua`` file, run by its SHA1 with the ``EVAL`` fallback).
"""

from .adapter import RedisAdapter
from .commands import Commands, open_commands
from .connection import Connection, connect
from .lua import Script
from .url import is_cluster_url

__all__ = [
    "Commands",
    "Connection",
    "RedisAdapter",
    "Script",
    "connect",
    "is_cluster_url",
    "open_commands",
]
