"""The Lua scripts, loaded from ``brokerq/lua`` with the shared library prepended."""

from __future__ import annotations

import hashlib
from importlib import resources


class Script:
    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str) -> None:
        lua = resources.files("brokerq") / "lua"
        self.name = name
        self.text = (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()


PRODUCE = Script("produce")
EXCHANGE = Script("exchange")
RENEW = Script("renew")
STATS = Script("stats")
DEAD_LETTERS = Script("dead_letters")
REDRIVE = Script("redrive")
DELETE_DEAD = Script("delete_dead")
