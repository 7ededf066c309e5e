"""The error hierarchy: every error brokerq raises is a ``BrokerError``."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ChannelError",
    "ConsumerError",
    "MessageTypeError",
    "QueueClosedError",
]


class BrokerError(Exception):
    """Base of every brokerq error."""


class ChannelError(BrokerError):
    """A channel was declared or used with invalid options."""

    def __init__(self, message: str, *, channel: str | None = None) -> None:
        super().__init__(f"channel {channel!r}: {message}" if channel else message)
        self.channel = channel


class MessageTypeError(ChannelError, TypeError):
    """A message does not fit its channel's type; nothing was written."""


class QueueClosedError(BrokerError):
    """The queue was closed: it produces nothing more and starts no consumer."""


class ConsumerError(BrokerError):
    """A consumer was used in a state that does not allow it (e.g. started twice)."""
