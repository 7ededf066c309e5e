"""The admin token check for the dashboard's data, its actions and ``/metrics``.

With ``ADMIN_TOKEN`` unset every caller is let through (a development machine); with it set, a
request must carry ``Authorization: Bearer <token>``. The comparison runs in constant time and the
token is never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

__all__ = ["AdminAuthError", "AdminDep", "admin_auth_error_response", "require_admin"]

REALM = "reservations-admin"


class AdminAuthError(Exception):
    """A request to an admin endpoint without the right token; answered 401."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _expected_token(request: Request) -> bytes | None:
    # No resources (the lifespan has not run) is an error, not an open door.
    secret = request.app.state.resources.settings.admin_token
    if secret is None:
        return None
    value = secret.get_secret_value()
    return value.encode() if value else None


async def require_admin(request: Request) -> None:
    """FastAPI dependency: pass when no admin token is configured or the right one is sent."""
    expected = _expected_token(request)
    if expected is None:
        return
    header = request.headers.get("authorization")
    if header is None:
        raise AdminAuthError(
            "this endpoint needs the admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'"
        )
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AdminAuthError("expected 'Authorization: Bearer <ADMIN_TOKEN>'")
    if not hmac.compare_digest(given.strip().encode(), expected):
        raise AdminAuthError("the admin token is not valid")


def admin_auth_error_response(exc: AdminAuthError) -> JSONResponse:
    return JSONResponse(
        {"statusCode": 401, "error": "UNAUTHORIZED", "message": exc.message},
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
    )


AdminDep = Annotated[None, Depends(require_admin)]
