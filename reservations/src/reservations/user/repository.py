from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, name: str, email: str) -> User | None:
        """Insert a user in one statement; None when the email is taken."""
        statement = (
            insert(User)
            .values(name=name, email=email)
            .on_conflict_do_nothing(index_elements=[User.email])
            .returning(User)
        )
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def get(self, user_id: int) -> User | None:
        result = await self.session.execute(
            select(User).where(User.id == user_id, User.deleted_at.is_(None))
        )
        return result.scalar_one_or_none()

    async def exists(self, user_id: int) -> bool:
        # A bare id query, skipping the ORM's entity loading: this runs on the reservation path
        # whenever the existence cache misses.
        found = await self.session.scalar(
            select(User.id).where(User.id == user_id, User.deleted_at.is_(None))
        )
        return found is not None
