"""BullMQ's own Lua scripts, loaded from the installed PyPI ``bullmq`` package.

The package bundles the scripts of BullMQ with their includes expanded (``bullmq/commands``):
the same scripts Node BullMQ runs, so a job written or moved here is exactly what a Node worker
or Bull Board expects. Nothing is copied into brokerq; the pinned ``bullmq`` version decides the
script version (see docs/bullmq.md for the tested Node pair).
"""

from __future__ import annotations

from importlib import resources

from ..errors import ConfigError
from ..redis.lua import Script

__all__ = ["SCRIPTS", "bundled"]


def bundled(name: str) -> Script:
    """BullMQ's script ``name`` (its file is ``commands/<name>-<number of keys>.lua``)."""
    commands = resources.files("bullmq") / "commands"
    found = [f for f in commands.iterdir() if f.name.startswith(f"{name}-")]
    if len(found) != 1:
        names = sorted(f.name for f in found)
        raise ConfigError(f"the installed bullmq package bundles not one {name} script: {names}")
    return Script(name, found[0].read_text(encoding="utf-8"))


ADD_STANDARD = bundled("addStandardJob")
ADD_DELAYED = bundled("addDelayedJob")
ADD_PRIORITIZED = bundled("addPrioritizedJob")
MOVE_TO_ACTIVE = bundled("moveToActive")
MOVE_TO_FINISHED = bundled("moveToFinished")
MOVE_TO_DELAYED = bundled("moveToDelayed")
RETRY_JOB = bundled("retryJob")
MOVE_ACTIVE_TO_WAIT = bundled("moveJobFromActiveToWait")
EXTEND_LOCKS = bundled("extendLocks")
MOVE_STALLED = bundled("moveStalledJobsToWait")
REPROCESS_JOB = bundled("reprocessJob")
REMOVE_JOB = bundled("removeJob")

SCRIPTS = (
    ADD_STANDARD, ADD_DELAYED, ADD_PRIORITIZED, MOVE_TO_ACTIVE, MOVE_TO_FINISHED,
    MOVE_TO_DELAYED, RETRY_JOB, MOVE_ACTIVE_TO_WAIT, EXTEND_LOCKS, MOVE_STALLED, REPROCESS_JOB,
    REMOVE_JOB,
)  # fmt: skip
