"""The reservation POST without the framework's per-request machinery.

``POST /reservation/{eventId}/{userId}`` is where load arrives, and the work it needs is two Redis
calls; FastAPI's exception middleware, exit-stack middleware, routing, dependency solving and
parameter validation cost about as much CPU again. This ASGI middleware answers that one request
shape directly, with the same code and the same responses as the documented FastAPI route, which
still serves anything this does not match (ids out of range, malformed paths), so validation
errors keep their usual 422.

It sits innermost among the middlewares, so the ones added after it (metrics, tracing) still see
every request; an unexpected error propagates to the app's 500 handler as from any route.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from reservations.camel import MAX_ID
from reservations.errors import DomainError, error_response
from reservations.reservation.router import (
    accept_reservation,
    request_reservation,
    router,
)

__all__ = ["ReservationFastLane"]

_PATH = re.compile(r"/reservation/([0-9]{1,10})/([0-9]{1,10})")
_DOCUMENTED_ROUTE = next(
    r for r in router.routes if getattr(r, "endpoint", None) is request_reservation
)


class ReservationFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        if match is None or scope.get("query_string"):
            # Parameters (a quantity) are the documented route's to validate.
            await self.app(scope, receive, send)
            return
        event_id, user_id = int(match[1]), int(match[2])
        if not (1 <= event_id <= MAX_ID and 1 <= user_id <= MAX_ID):
            await self.app(scope, receive, send)
            return
        # As the router would: middlewares outside label the request by its route template.
        scope["route"] = _DOCUMENTED_ROUTE
        scope["endpoint"] = request_reservation
        try:
            client = scope.get("client")
            response = await accept_reservation(
                event_id, user_id, scope["app"].state.resources, client[0] if client else None
            )
        except DomainError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
