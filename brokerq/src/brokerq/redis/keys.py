"""Every Redis key of a channel, built in one place.

All keys of a channel share the hash tag ``{<channel>}`` so that a channel lives in one Redis
Cluster slot and every script can touch all of them atomically.
"""

from __future__ import annotations

import hashlib

from ..options import check_channel_name

PREFIX = "bq:"


class ChannelKeys:
    __slots__ = (
        "dd_a",
        "dd_b",
        "dd_meta",
        "dead",
        "delayed",
        "err",
        "lease",
        "msg",
        "ready",
        "seq",
        "stats",
        "tag",
        "wake",
    )

    def __init__(self, channel: str) -> None:
        check_channel_name(channel)
        self.tag = f"{PREFIX}{{{channel}}}"
        self.seq = f"{self.tag}:seq"
        self.msg = f"{self.tag}:msg"
        self.ready = f"{self.tag}:ready"
        self.delayed = f"{self.tag}:delayed"
        self.lease = f"{self.tag}:lease"
        self.dead = f"{self.tag}:dead"
        self.err = f"{self.tag}:err"
        self.wake = f"{self.tag}:wake"
        self.stats = f"{self.tag}:stats"
        # Exactly-once state: two generations of entries and which one is current.
        self.dd_a = f"{self.tag}:dd:a"
        self.dd_b = f"{self.tag}:dd:b"
        self.dd_meta = f"{self.tag}:dd:meta"

    @staticmethod
    def dedup_field(key: str) -> str:
        """The field of a dedup key in the generation hashes, of bounded length."""
        if len(key) > 100:
            return "b:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return key

    def all(self) -> list[str]:
        return [
            self.msg,
            self.ready,
            self.delayed,
            self.lease,
            self.dead,
            self.err,
            self.wake,
            self.stats,
            self.dd_a,
            self.dd_b,
            self.dd_meta,
        ]


def channel_of(key: str) -> str | None:
    """The channel a ``...:seq`` key belongs to (used to list channels)."""
    if key.startswith(PREFIX + "{") and key.endswith("}:seq"):
        return key[len(PREFIX) + 1 : -len("}:seq")]
    return None
