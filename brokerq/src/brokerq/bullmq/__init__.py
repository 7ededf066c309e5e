"""brokerq on BullMQ's Redis data layout: ``BrokerQueue(BullMQAdapter(url))``."""

from .adapter import BullMQAdapter, KeepJobs, bullmq_priority

__all__ = ["BullMQAdapter", "KeepJobs", "bullmq_priority"]
