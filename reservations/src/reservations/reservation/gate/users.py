"""A Redis cache of which user ids exist, so the reservation path can skip PostgreSQL.

Only positive entries are cached; a user removed from the database may still be found here, which
is why the workers check again in PostgreSQL before writing.
"""

from __future__ import annotations

from brokerq.redis import Connection

__all__ = ["KEY_PREFIX", "remember_user", "user_key"]

KEY_PREFIX = "rsv:"


def user_key(user_id: int) -> str:
    return f"{KEY_PREFIX}user:{user_id}"


async def remember_user(redis: Connection, user_id: int) -> None:
    await redis.call("SET", user_key(user_id), b"1")
