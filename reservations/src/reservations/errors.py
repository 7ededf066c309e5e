"""Errors the domains raise; the app maps each to an HTTP status and a clear message."""

from __future__ import annotations

from starlette.responses import JSONResponse

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "Gone",
    "NotFound",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "error_response",
]


class DomainError(Exception):
    status_code = 400
    code = "BAD_REQUEST"
    headers: dict[str, str] | None = None
    # More fields of the error body, beside statusCode, error and message.
    details: dict[str, object] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(DomainError):
    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    status_code = 403
    code = "FORBIDDEN"


class NotFound(DomainError):
    status_code = 404
    code = "NOT_FOUND"


class Gone(DomainError):
    status_code = 410
    code = "GONE"


class Conflict(DomainError):
    status_code = 409
    code = "CONFLICT"


class TooManyRequests(DomainError):
    status_code = 429
    code = "TOO_MANY_REQUESTS"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(DomainError):
    status_code = 503
    code = "UNAVAILABLE"
    headers = {"Retry-After": "1"}


def error_response(exc: DomainError) -> JSONResponse:
    body: dict[str, object] = {
        "statusCode": exc.status_code,
        "error": exc.code,
        "message": exc.message,
    }
    if exc.details:
        body.update(exc.details)
    return JSONResponse(
        body,
        status_code=exc.status_code,
        headers=exc.headers,
    )
