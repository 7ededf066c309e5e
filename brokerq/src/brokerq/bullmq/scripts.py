"""BullMQ's own Lua scripts, loaded from the installed PyPI ``bullmq`` package.

The package bundles the scripts of BullMQ with their includes expanded (``bullmq/commands``):
the same scripts Node BullMQ runs, so a job written or moved here is exactly what a Node worker
or Bull Board expects. Nothing is copied into brokerq; the pinned ``bullmq`` version decides the
script version (see docs/bullmq.md for the tested Node pair).
"""

from __future__ import annotations

import hashlib
from importlib import resources

__all__ = ["SCRIPTS", "Script"]


class Script:
    __slots__ = ("name", "sha", "text")

    def __init__(self, name: str) -> None:
        commands = resources.files("bullmq") / "commands"
        found = [f for f in commands.iterdir() if f.name.startswith(f"{name}-")]
        if len(found) != 1:
            raise RuntimeError(f"bullmq does not bundle exactly one {name} script: {found}")
        self.name = name
        self.text = found[0].read_text()
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()


ADD_STANDARD = Script("addStandardJob")
ADD_DELAYED = Script("addDelayedJob")
ADD_PRIORITIZED = Script("addPrioritizedJob")
MOVE_TO_ACTIVE = Script("moveToActive")
MOVE_TO_FINISHED = Script("moveToFinished")
MOVE_TO_DELAYED = Script("moveToDelayed")
RETRY_JOB = Script("retryJob")
MOVE_ACTIVE_TO_WAIT = Script("moveJobFromActiveToWait")
EXTEND_LOCKS = Script("extendLocks")
MOVE_STALLED = Script("moveStalledJobsToWait")
REPROCESS_JOB = Script("reprocessJob")
REMOVE_JOB = Script("removeJob")

SCRIPTS = (
    ADD_STANDARD, ADD_DELAYED, ADD_PRIORITIZED, MOVE_TO_ACTIVE, MOVE_TO_FINISHED,
    MOVE_TO_DELAYED, RETRY_JOB, MOVE_ACTIVE_TO_WAIT, EXTEND_LOCKS, MOVE_STALLED, REPROCESS_JOB,
    REMOVE_JOB,
)  # fmt: skip
