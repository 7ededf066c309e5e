"""What the routers receive: the app's shared resources and one database session per request."""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        limit = self.settings.rate_limit()
        self.limiter = None if limit is None else RateLimiter(limit)


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
