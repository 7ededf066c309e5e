"""A Redis cache of which user ids exist, so the reservation path can skip PostgreSQL.

Only positive entries are cached; a user removed from the database may still be found here, which
is why the workers check again in PostgreSQL before writing. A user's key is in a slot of its own
on Redis Cluster, so the gate asks for it before its script instead of inside it; each process
also keeps the users it has seen lately, so that a user's later requests cost no extra call.
"""

from __future__ import annotations

from brokerq.redis import Commands

__all__ = ["KEY_PREFIX", "KnownUsers", "remember_user", "user_key"]

KEY_PREFIX = "rsv:"
# Users one process remembers without asking Redis (about 100 bytes each).
LOCAL_USERS = 100_000


def user_key(user_id: int) -> str:
    return f"{KEY_PREFIX}user:{user_id}"


async def remember_user(redis: Commands, user_id: int) -> None:
    await redis.call("SET", user_key(user_id), b"1")


class KnownUsers:
    """The users known to exist: this process's recent ones, then Redis."""

    def __init__(self, redis: Commands, size: int = LOCAL_USERS) -> None:
        self._redis = redis
        self._size = size
        self._seen: dict[int, None] = {}

    async def exists(self, user_id: int) -> bool:
        if user_id in self._seen:
            return True
        if not await self._redis.call("EXISTS", user_key(user_id)):
            return False
        self._note(user_id)
        return True

    async def remember(self, user_id: int) -> None:
        await remember_user(self._redis, user_id)
        self._note(user_id)

    def _note(self, user_id: int) -> None:
        if len(self._seen) >= self._size:
            # The oldest first: dicts keep insertion order.
            del self._seen[next(iter(self._seen))]
        self._seen[user_id] = None
