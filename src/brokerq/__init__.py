"""brokerq: a typed broker queue that keeps its promises.

Durable produces, one consumer per message under a renewed lease, done on return, retries with
backoff into inspectable dead letters, exactly-once deduplication, priorities and delays, on
Redis (single or Cluster) or in memory.
"""

from .adapter import Adapter
from .channel import Channel
from .consumer import BatchHandler, BatchResult, Consumer, ConsumerState, Handler
from .errors import (
    BrokerError,
    ChannelError,
    ConsumerError,
    MessageTypeError,
    QueueClosedError,
)
from .messages import ChannelStats, DeadLetter, Message, ProduceResult
from .options import ChannelOptions, Duration, Processing
from .queue import BrokerQueue
from .worker import Worker

__all__ = [
    "Adapter",
    "BatchHandler",
    "BatchResult",
    "BrokerError",
    "BrokerQueue",
    "Channel",
    "ChannelError",
    "ChannelOptions",
    "ChannelStats",
    "Consumer",
    "ConsumerError",
    "ConsumerState",
    "DeadLetter",
    "Duration",
    "Handler",
    "Message",
    "MessageTypeError",
    "Processing",
    "ProduceResult",
    "QueueClosedError",
    "Worker",
]
