"""The Redis engine's Lua scripts: ``brokerq/lua/<name>.lua`` with the shared ``_lib.lua``."""

from __future__ import annotations

from .lua import Script


def _script(name: str) -> Script:
    return Script.from_resource("brokerq", f"lua/{name}.lua", prelude="lua/_lib.lua")


PRODUCE = _script("produce")
EXCHANGE = _script("exchange")
RENEW = _script("renew")
STATS = _script("stats")
DEAD_LETTERS = _script("dead_letters")
REDRIVE = _script("redrive")
DELETE_DEAD = _script("delete_dead")
