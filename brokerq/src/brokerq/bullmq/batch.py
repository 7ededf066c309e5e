"""One Lua call that runs many BullMQ scripts: the batched loop around BullMQ's own scripts.

The bundled BullMQ scripts (``bullmq/commands`` of the PyPI package, includes expanded) are
each wrapped, unchanged, in a Lua function taking ``KEYS`` and ``ARGV``, and put in front of
the dispatcher ``batch.lua``, which runs a whole batch of operations in one ``EVALSHA``: a
consumer step's acknowledgements, retries, releases, the stalled-jobs check and up to N
fetches, or a batch of adds. ``batch.lua`` describes its arguments and replies.
"""

from __future__ import annotations

from ..redis.lua import Script, resource_text
from .scripts import (
    ADD_DELAYED,
    ADD_PRIORITIZED,
    ADD_STANDARD,
    MOVE_ACTIVE_TO_WAIT,
    MOVE_STALLED,
    MOVE_TO_ACTIVE,
    MOVE_TO_DELAYED,
    MOVE_TO_FINISHED,
    RETRY_JOB,
)

__all__ = ["BATCH"]

_WRAPPED = {
    "addStandard": ADD_STANDARD,
    "addDelayed": ADD_DELAYED,
    "addPrioritized": ADD_PRIORITIZED,
    "moveToActive": MOVE_TO_ACTIVE,
    "moveToFinished": MOVE_TO_FINISHED,
    "moveToDelayed": MOVE_TO_DELAYED,
    "retryJob": RETRY_JOB,
    "moveJobFromActiveToWait": MOVE_ACTIVE_TO_WAIT,
    "moveStalledJobsToWait": MOVE_STALLED,
}


def _batch() -> Script:
    # Each script unchanged, as the body of a function: its locals, includes and returns stay
    # its own.
    functions = "".join(
        f"local bq_{fn} = function(KEYS, ARGV)\n{script.text}\nend\n"
        for fn, script in _WRAPPED.items()
    )
    return Script("brokerq-bullmq-batch", functions + resource_text("brokerq", "bullmq/batch.lua"))


BATCH = _batch()
