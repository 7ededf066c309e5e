from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from reservations.camel import CamelModel, Text


class UserCreate(CamelModel):
    name: Text = Field(min_length=1, max_length=200)
    email: Text = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: str) -> str:
        return value.strip().lower()


class UserRead(CamelModel):
    id: int
    name: str
    email: str
    created_at: datetime
    updated_at: datetime
