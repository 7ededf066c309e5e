"""What the routers receive: the app's shared resources and one database session per request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .ratelimit import RateLimiter
from .settings import Settings

if TYPE_CHECKING:
    from brokerq import BrokerQueue
    from brokerq.channel import Channel

    from .channels import ReserveEvent
    from .reservations.admission import AdmissionGate
    from .reservations.request_ids import RequestIds


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis
    queue: BrokerQueue
    channel: Channel[ReserveEvent]
    gate: AdmissionGate
    limiter: RateLimiter | None = field(init=False)
    _request_ids: RequestIds | None = field(init=False, default=None)
    _request_ids_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        limit = self.settings.rate_limit()
        self.limiter = None if limit is None else RateLimiter(limit)

    async def request_ids(self) -> RequestIds:
        """The signer of request ids, its key read from PostgreSQL on first use."""
        if self._request_ids is None:
            async with self._request_ids_lock:
                if self._request_ids is None:
                    from .reservations.service import load_request_ids

                    self._request_ids = await load_request_ids(self.session_factory)
        return self._request_ids


# async, so FastAPI calls it on the loop instead of a thread pool: it runs on every request.
async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_session(
    resources: Annotated[Resources, Depends(get_resources)],
) -> AsyncIterator[AsyncSession]:
    # The endpoint commits; leaving the block without a commit rolls back.
    async with resources.session_factory() as session:
        yield session


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
