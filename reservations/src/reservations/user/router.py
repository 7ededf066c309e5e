from __future__ import annotations

from fastapi import APIRouter, status

from reservations.camel import IdPath
from reservations.deps import ResourcesDep, SessionDep
from reservations.log import get_logger
from reservations.reservation.gate import remember_user

from .schemas import UserCreate, UserRead
from .service import UserService

router = APIRouter(prefix="/user", tags=["user"])
log = get_logger(__name__)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserRead)
async def create_user(data: UserCreate, session: SessionDep, resources: ResourcesDep) -> UserRead:
    user = await UserService(session).create(data)
    await session.commit()
    try:
        await remember_user(resources.redis, user.id)
    except Exception as exc:
        # Only a cache: the reservation path falls back to PostgreSQL.
        log.warning("user_cache_write_failed", user_id=user.id, error=type(exc).__name__)
    return UserRead.model_validate(user)


@router.get("/{user_id}", response_model=UserRead)
async def get_user(user_id: IdPath, session: SessionDep) -> UserRead:
    return UserRead.model_validate(await UserService(session).get(user_id))
