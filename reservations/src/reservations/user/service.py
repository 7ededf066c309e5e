"""User rules. Other domains ask here whether a user exists; they never read the users table."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from reservations.errors import Conflict, NotFound

from .models import User
from .repository import UserRepository
from .schemas import UserCreate


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = UserRepository(session)
        self.session = session

    async def create(self, data: UserCreate) -> User:
        user = await self.repository.add(name=data.name, email=data.email)
        if user is None:
            raise Conflict(f"a user with email {data.email!r} already exists")
        return user

    async def get(self, user_id: int) -> User:
        user = await self.repository.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    async def exists(self, user_id: int) -> bool:
        return await self.repository.exists(user_id)
