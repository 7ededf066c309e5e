"""brokerq on Redis: ``from brokerq.redis import RedisAdapter``."""

from .adapter import RedisAdapter

__all__ = ["RedisAdapter"]
