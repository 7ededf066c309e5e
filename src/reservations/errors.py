"""Errors the domains raise; the app maps each to an HTTP status and a clear message."""

from __future__ import annotations

__all__ = ["Conflict", "DomainError", "NotFound", "Unavailable"]


class DomainError(Exception):
    status_code = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(DomainError):
    status_code = 409
    code = "CONFLICT"


class Unavailable(DomainError):
    status_code = 503
    code = "UNAVAILABLE"
