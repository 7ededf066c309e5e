"""The settle side, run by the workers: a batch of queued requests written to PostgreSQL
(``batch.py``), requests whose processing failed for good (``failed.py``), and the maintenance
pass that recovers requests never queued and keeps the gate in line with PostgreSQL
(``recovery.py``, ``reconcile.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from reservations.channels import ReserveEvent

__all__ = ["first_per_request"]


class _Carries(Protocol):
    @property
    def data(self) -> ReserveEvent: ...


T = TypeVar("T", bound=_Carries)


def first_per_request(items: Iterable[T]) -> list[T]:
    """The first item of each request id, in order: a batch can hold a request twice (one
    queued again by recovery next to its original), and a request has one outcome row."""
    unique: dict[str, T] = {}
    for item in items:
        unique.setdefault(item.data.requestId, item)
    return list(unique.values())
