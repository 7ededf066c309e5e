"""CPU used by groups of process trees, from ``/proc/<pid>/stat`` (Linux only).

A group is a set of root pids; its CPU is the user + system time of every live process in the
roots' trees plus the time of the children they have already reaped (``cutime`` + ``cstime``), so
a PostgreSQL backend or a uvicorn worker that exits during the window still counts (its parent,
in the tree, reaps it). Sampled before and after a window, the difference is what the group used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children), None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICKS


def snapshot() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, CPU seconds)."""
    out: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                out[int(entry.name)] = stat
    return out


def group_cpu(
    groups: Mapping[str, Sequence[int]], procs: dict[int, tuple[int, float]] | None = None
) -> dict[str, float]:
    """CPU seconds so far of each group's process trees."""
    procs = snapshot() if procs is None else procs
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    totals: dict[str, float] = {}
    for name, roots in groups.items():
        seen: set[int] = set()
        todo = [r for r in roots if r in procs]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, ()))
        totals[name] = sum(procs[pid][1] for pid in seen)
    return totals


def self_cpu() -> float:
    """This process's own CPU seconds (the load driver)."""
    t = os.times()
    return t.user + t.system
