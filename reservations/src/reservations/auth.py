"""The admin bearer token: who may change more than their own reservation.

Creating events, cancelling reservations, the queue dashboard's data and actions, and ``/metrics``
need ``Authorization: Bearer <ADMIN_TOKEN>``. With no ``ADMIN_TOKEN`` configured these operations
are refused rather than open: a forgotten setting must not leave a public server writable
(``reservations-tools up`` makes a token of its own when none is configured). The comparison runs in
constant time and the token is never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import DomainError

__all__ = [
    "ADMIN_RESPONSES",
    "AdminAuthError",
    "AdminDep",
    "is_admin",
    "require_admin",
]

REALM = "reservations-admin"
NOT_CONFIGURED = "admin operations are disabled: the server has no ADMIN_TOKEN configured"
MISSING = "this endpoint needs the admin token: send 'Authorization: Bearer <ADMIN_TOKEN>'"
MALFORMED = "expected 'Authorization: Bearer <ADMIN_TOKEN>'"
INVALID = "the admin token is not valid"

# Declared for the OpenAPI schema (Swagger UI's "Authorize" button); the header is read below so
# that each way of getting it wrong has its own message.
_bearer = HTTPBearer(auto_error=False, description="the server's ADMIN_TOKEN")


class AdminAuthError(DomainError):
    """A request to an admin endpoint without the right token; answered 401."""

    status_code = 401
    code = "UNAUTHORIZED"
    headers = {"WWW-Authenticate": f'Bearer realm="{REALM}"'}


def _expected_token(request: Request) -> bytes | None:
    # No resources (the lifespan has not run) is an error, not an open door.
    secret = request.app.state.resources.settings.admin_token
    if secret is None:
        return None
    value = secret.get_secret_value()
    return value.encode() if value else None


async def require_admin(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """FastAPI dependency: pass only when the configured token is sent."""
    expected = _expected_token(request)
    if expected is None:
        raise AdminAuthError(NOT_CONFIGURED)
    header = request.headers.get("authorization")
    if header is None:
        raise AdminAuthError(MISSING)
    scheme, _sep, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AdminAuthError(MALFORMED)
    if not hmac.compare_digest(given.strip().encode(), expected):
        raise AdminAuthError(INVALID)


def is_admin(request: Request) -> bool:
    """Whether the request carries the configured admin token (for routes open to others too)."""
    expected = _expected_token(request)
    scheme, _sep, given = request.headers.get("authorization", "").partition(" ")
    return (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected)
    )


AdminDep = Annotated[None, Depends(require_admin)]
ADMIN_RESPONSES: dict[int | str, dict[str, str]] = {401: {"description": "Without the admin token"}}
"""The OpenAPI ``responses`` entry of a route that takes ``AdminDep``."""
