"""Telling a client that a server we depend on is down (503) from a bug of ours (500)."""

from __future__ import annotations

from sqlalchemy import exc as sa_errors

from brokerq import LoadingError, RedisConnectionError

__all__ = ["OUTAGE_ERRORS", "outage_of"]

OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    # brokerq's errors for Redis unreachable, lost, timed out, refusing the password, or
    # loading its data (the gate and the queue both talk to Redis through brokerq).
    RedisConnectionError,
    LoadingError,
    sa_errors.DBAPIError,  # OperationalError and InterfaceError among them
    sa_errors.TimeoutError,
    OSError,
)


def outage_of(exc: BaseException) -> str | None:
    """``"Redis"`` or ``"PostgreSQL"`` when ``exc`` says that server cannot be reached or used
    right now, else None. The exception's text is not used: it may carry a URL with a password."""
    if isinstance(exc, RedisConnectionError | LoadingError):
        return "Redis"
    if isinstance(
        exc, sa_errors.OperationalError | sa_errors.InterfaceError | sa_errors.TimeoutError
    ):
        return "PostgreSQL"
    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return "PostgreSQL"
    if isinstance(exc, OSError):  # refused or timed out before any driver wrapped it
        return _driver_in(exc) or "a server the API depends on"
    return None


def _driver_in(exc: BaseException) -> str | None:
    """Which client library raised ``exc``, from the modules its traceback passed through."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(("asyncpg", "sqlalchemy")):
            found = "PostgreSQL"
        elif module.startswith(("redis", "brokerq")):
            found = "Redis"
        tb = tb.tb_next
    return found
