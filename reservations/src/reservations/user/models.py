from __future__ import annotations

from sqlalchemy import Identity, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from reservations.db import Base, Timestamps


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)
