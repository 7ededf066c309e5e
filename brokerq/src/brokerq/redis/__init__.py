"""brokerq on Redis: ``from brokerq.redis import RedisAdapter``.

Also public, for services that share brokerq's Redis: ``open_commands`` (commands to the Redis
a URL names, single server, Sentinel or Cluster, behind one small ``Commands`` interface),
``Connection`` / ``connect`` (brokerq's own pipelined connection to one server), ``Script``
(a Lua script kept as a ``.lua`` file, run by its SHA1 with the ``EVAL`` fallback) and
``acknowledged_by`` (runs a script, then ``WAIT`` for replicas, on a connection of its own to the
node of its keys: what ``replicas_ack`` does for a produce, for a service's own scripts).
"""

from .adapter import RedisAdapter
from .commands import Commands, open_commands
from .connection import Connection, connect
from .lua import Script
from .replication import Acknowledged, acknowledged_by
from .url import is_cluster_url

__all__ = [
    "Acknowledged",
    "Commands",
    "Connection",
    "RedisAdapter",
    "Script",
    "acknowledged_by",
    "connect",
    "is_cluster_url",
    "open_commands",
]
