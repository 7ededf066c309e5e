"""The base of every request and response model: the seed's JSON is camelCase."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["MAX_ID", "CamelModel", "IdField", "IdPath", "Text"]

# Ids are PostgreSQL integers; a larger number cannot exist, and must not reach the database.
MAX_ID = 2_147_483_647

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def _not_a_bool(value: Any) -> Any:
    # JSON true is not the id 1, though lax integer parsing would take it as such.
    if isinstance(value, bool):
        raise ValueError("must be an integer id, not a boolean")
    return value


IdField = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=MAX_ID)]


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
