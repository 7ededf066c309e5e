"""brokerq: a typed broker queue that keeps its promises.

Durable produces, one consumer per message under a renewed lease, done on return, retries with
backoff into inspectable dead letters, exactly-once deduplication, priorities and delays, on
Redis (single or Cluster) or in memory.
"""

from .adapter import Adapter
from .channel import Channel
from .consumer import BatchHandler, BatchResult, Consumer, ConsumerState, Handler
from .errors import (
    AuthenticationError,
    BrokerError,
    BusyError,
    ChannelError,
    ClusterError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    ConsumerError,
    LoadingError,
    MessageTypeError,
    NoScriptError,
    OutOfMemoryError,
    QueueClosedError,
    ReadOnlyError,
    RedisConnectionError,
    RedisError,
    RedisTimeoutError,
    ReplicationError,
    ScriptError,
    ServerError,
    WrongTypeError,
)
from .messages import ChannelStats, DeadLetter, Message, ProduceResult
from .options import ChannelOptions, Duration, Processing
from .queue import BrokerQueue
from .worker import Worker

__all__ = [
    "Adapter",
    "AuthenticationError",
    "BatchHandler",
    "BatchResult",
    "BrokerError",
    "BrokerQueue",
    "BusyError",
    "Channel",
    "ChannelError",
    "ChannelOptions",
    "ChannelStats",
    "ClusterError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "Consumer",
    "ConsumerError",
    "ConsumerState",
    "DeadLetter",
    "Duration",
    "Handler",
    "LoadingError",
    "Message",
    "MessageTypeError",
    "NoScriptError",
    "OutOfMemoryError",
    "Processing",
    "ProduceResult",
    "QueueClosedError",
    "ReadOnlyError",
    "RedisConnectionError",
    "RedisError",
    "RedisTimeoutError",
    "ReplicationError",
    "ScriptError",
    "ServerError",
    "Worker",
    "WrongTypeError",
]
