"""What the API and the workers share: the database engine, Redis, the queue and its channels
(reservation requests, holds' timers), the admission gate; opened once per process
(``open_resources``), closed with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerq.redis import Commands

from .middleware.rate_limit import Limiter, RateLimiter, SharedRateLimiter
from .settings import Settings

if TYPE_CHECKING:
    from brokerq import BrokerQueue, Channel

    from .channels import HoldExpiry, ReserveEvent
    from .reservation.gate import AdmissionGate
    from .reservation.request_ids import RequestIds

__all__ = ["Resources", "open_resources"]


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Commands
    queue: BrokerQueue
    channel: Channel[ReserveEvent]
    gate: AdmissionGate
    holds: Channel[HoldExpiry]
    limiter: Limiter | None = field(init=False)
    _request_ids: RequestIds | None = field(init=False, default=None)
    _request_ids_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        limit = self.settings.rate_limit()
        if limit is None:
            self.limiter = None
        elif self.settings.reservation_rate_limit_scope == "process":
            self.limiter = RateLimiter(limit)
        else:
            url = self.settings.effective_redis_url
            assert url is not None
            self.limiter = SharedRateLimiter(limit, url)

    async def request_ids(self) -> RequestIds:
        """The signer of request ids, its key read from PostgreSQL on first use."""
        if self._request_ids is None:
            async with self._request_ids_lock:
                if self._request_ids is None:
                    from .reservation.service import load_request_ids

                    self._request_ids = await load_request_ids(self.session_factory)
        return self._request_ids


@asynccontextmanager
async def open_resources(
    settings: Settings, *, pool_size: int | None = None
) -> AsyncIterator[Resources]:
    """What the API and the workers share: database engine, Redis, the queue and its channel."""
    from brokerq import BrokerQueue
    from brokerq.redis import acknowledged_by, is_cluster_url, open_commands

    from .channels import hold_channel, queue_adapter, reservation_channel
    from .db import create_engine, create_session_factory
    from .reservation.gate import AdmissionGate

    database_url = settings.effective_database_url
    if database_url is None:
        raise RuntimeError("DATABASE_URL is not set")
    engine = create_engine(database_url, pool_size=pool_size or settings.db_pool_size)
    redis_url = settings.effective_redis_url
    # brokerq's pipelined connection (or redis-py's cluster client on Redis Cluster): every
    # request's gate calls share it, many in flight; a reply that does not come fails its call
    # after the timeout instead of holding it for ever.
    redis = open_commands(redis_url, socket_timeout=settings.redis_socket_timeout_s)
    replicated = None
    if settings.redis_replicas_ack and is_cluster_url(redis_url):
        # On one server the queue's WAIT, after the admission, covers it too (replication is
        # in write order); on a Cluster the event's primary is another node: its own WAIT.
        replicated = acknowledged_by(
            redis, url=redis_url, password=None,
            options={"socket_timeout": settings.redis_socket_timeout_s},
            wanted=settings.redis_replicas_ack, timeout_ms=settings.redis_replicas_ack_timeout_ms,
        )  # fmt: skip
    queue = BrokerQueue(
        queue_adapter(
            settings.queue_engine,
            redis_url,
            replicas_ack=settings.redis_replicas_ack,
            replicas_ack_timeout_ms=settings.redis_replicas_ack_timeout_ms,
        )
    )
    resources: Resources | None = None
    try:
        resources = Resources(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=redis,
            queue=queue,
            channel=reservation_channel(queue, shards=settings.reservation_channel_shards),
            gate=AdmissionGate(redis, replicated=replicated),
            holds=hold_channel(queue),
        )
        yield resources
    finally:
        if resources is not None and resources.limiter is not None:
            await resources.limiter.close()
        await queue.close()
        if replicated is not None:
            await replicated.close()
        await redis.close()
        await engine.dispose()
