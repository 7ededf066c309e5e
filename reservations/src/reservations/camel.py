"""The base of every request and response model: the seed's JSON is camelCase."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "MAX_ID",
    "CamelModel",
    "IdField",
    "IdPath",
    "Integer",
    "Text",
    "UtcDateTime",
]

# Ids are PostgreSQL integers; a larger number cannot exist, and must not reach the database.
MAX_ID = 2_147_483_647

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def _not_a_bool(value: Any) -> Any:
    # JSON true is not the number 1, though lax integer parsing would take it as such.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


# A JSON integer (or a string or float holding one), never a boolean.
Integer = Annotated[int, BeforeValidator(_not_a_bool)]
IdField = Annotated[Integer, Field(ge=1, le=MAX_ID)]

# Python's datetimes span years 1 to 9999, and asyncpg stores the first and the last microsecond
# of that span as PostgreSQL's -infinity and infinity: a date must lie strictly between them.
_DATE_AFTER = datetime.min.replace(tzinfo=UTC)
_DATE_BEFORE = datetime.max.replace(tzinfo=UTC)
_DATE_RANGE = "after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z"


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        # UTC, as the seed's JavaScript reads a date alone (and a date and time in a container
        # with no TZ set); never the server's local time, which asyncpg would otherwise assume.
        value = value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 once the offset is applied
        utc = None
    if utc is None or not _DATE_AFTER < utc < _DATE_BEFORE:
        raise ValueError(f"must be {_DATE_RANGE} once converted to UTC")
    return utc


UtcDateTime = Annotated[
    datetime,
    AfterValidator(_in_utc),
    Field(
        description=f"ISO 8601 date and time, {_DATE_RANGE} in UTC; one without an offset "
        "(`2030-05-01T19:00:00`, `2030-05-01`) is read as UTC",
        examples=["2030-05-01T19:00:00+09:00"],
    ),
]


def _no_control_characters(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and the others (escapes, newlines) have no place in
    # a one-line name: refused with a clear 422 rather than a 500 or stored.
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters (NUL, newline, tab, escape ...)")
    return value


# A one-line text field: no control characters.
Text = Annotated[str, AfterValidator(_no_control_characters)]


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        extra="forbid",
    )
