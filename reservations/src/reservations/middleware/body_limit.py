"""A cap on request body size, checked before the body is read.

A request whose ``Content-Length`` is over the limit is answered 413 at once, without reading a
byte of it; one that sends more than it declared, or streams without a length, is cut off with
413 as soon as it passes the limit, so no request body larger than the limit is ever held in
memory. A pure ASGI middleware: it costs the reservation POST one header look-up.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; the app answers it as any 413.

    An ``HTTPException``, so that FastAPI's body parsing lets it through instead of turning it
    into a 400 "error parsing the body".
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=_too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than the limit of {max_bytes} bytes"


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": status, "error": error, "message": message},
        status_code=status,
        headers={"Connection": "close"},
    )


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                await _error(400, "BAD_REQUEST", "the Content-Length header is not a number")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await _error(413, "PAYLOAD_TOO_LARGE", _too_large(self.max_bytes))(
                    scope, receive, send
                )
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Read outside the app's exception handlers (another middleware): answered here.
            if started:
                raise
            await _error(413, "PAYLOAD_TOO_LARGE", _too_large(self.max_bytes))(scope, receive, send)
