"""The admission gate: each request's fate, in arrival order, decided in Redis before the queue.

``gate.py`` holds the gate (its Lua scripts are the ``lua/*.lua`` files), ``snapshot.py`` what
PostgreSQL knows to build it, ``users.py`` the cache of users that exist.
"""

from .gate import (
    EVENTS_KEY,
    LOSS_SEQ_GAP,
    AdmissionGate,
    EventKeys,
    EventSnapshot,
    GateCounters,
    GateResult,
    PendingRequest,
    Place,
    Verdict,
    event_keys,
    request_of,
    settle_rate,
)
from .snapshot import event_snapshot, opening_sale
from .users import KEY_PREFIX, KnownUsers, remember_user, user_key

__all__ = [
    "EVENTS_KEY",
    "KEY_PREFIX",
    "LOSS_SEQ_GAP",
    "AdmissionGate",
    "EventKeys",
    "EventSnapshot",
    "GateCounters",
    "GateResult",
    "KnownUsers",
    "PendingRequest",
    "Place",
    "Verdict",
    "event_keys",
    "event_snapshot",
    "opening_sale",
    "remember_user",
    "request_of",
    "settle_rate",
    "user_key",
]
