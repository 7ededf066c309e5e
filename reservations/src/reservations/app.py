"""The HTTP API: ``create_app(settings)`` builds it; connections open in the lifespan only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from .deps import ResourcesDep
from .errors import DomainError, Unavailable, error_response
from .event.router import router as events_router
from .idempotency.openapi import document_idempotency
from .log import get_logger
from .middleware.body_limit import BodySizeLimit
from .middleware.fast_lane import ReservationFastLane
from .middleware.idempotency import IdempotencyKeys
from .observability import install
from .observability.logs import configure_logging, secrets_of
from .observability.tracing import configure_tracing
from .outage import OUTAGE_ERRORS, outage_of
from .reservation.router import router as reservations_router
from .resources import Resources, open_resources
from .runtime import freeze_startup_objects
from .settings import Settings
from .user.router import router as users_router

__all__ = ["app_from_env", "create_app"]

log = get_logger(__name__)

_HEALTH_TIMEOUT_S = 2.0
# Where Swagger UI's assets are served; the page is at /api and the document at /api-json, as in
# the seed.
DOCS_ASSETS_URL = "/api/assets"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            app.state.resources = resources
            freeze_startup_objects()
            log.info("api_started", environment=settings.environment)
            yield
        log.info("api_stopped")

    # FastAPI's own Swagger UI page loads its JavaScript and CSS from public CDNs, and is blank
    # without internet access; this one serves them from the installed package.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_URL,
        title="Event reservations",
        description="Reservation requests go through a durable queue to PostgreSQL; first come, "
        "first served, never oversold.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api",
        openapi_url="/api-json",
        redoc_url=None,
        telemetry=_telemetry(settings),
    )
    app.include_router(users_router)
    app.include_router(events_router)
    app.include_router(reservations_router)
    # Added first, so it is the innermost middleware: any added later (observability) still see
    # the requests it serves.
    app.add_middleware(ReservationFastLane)
    # Outside the fast lane, so that the reservation POST takes Idempotency-Key too.
    app.add_middleware(IdempotencyKeys)
    # Outside both, so that their requests are capped too (the body the keys middleware reads).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    document_idempotency(app)
    _install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health(resources: ResourcesDep) -> JSONResponse:
        checks = {
            "redis": await _check(resources.redis.call("PING")),
            "postgres": await _check(_pg_ping(resources)),
        }
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "checks": checks},
            status_code=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    # The dashboard, /metrics and the request-latency and tracing middleware (outside the fast
    # lane, so they see its requests too).
    install(app)
    return app


def _telemetry(settings: Settings) -> TelemetryConfig:
    # Off unless asked for: FastAPI's OpenTelemetry hook otherwise asks the OpenTelemetry globals
    # on every request whether they are configured (a third of the reservation POST's CPU). Its
    # log signal stays off either way, as it records exception messages that may carry secrets.
    on = settings.otel_enabled
    return TelemetryConfig(tracing=on, metrics=on, logs=False, operation_spans=on)


async def _pg_ping(resources: Resources) -> None:
    async with resources.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, _HEALTH_TIMEOUT_S)
    except Exception as exc:
        # The exception text can contain a URL with a password: report only its kind.
        return f"down ({type(exc).__name__})"
    return "ok"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", "invalid"),
            }
            for err in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(
            {"statusCode": 422, "error": "VALIDATION_ERROR", "message": message, "errors": errors},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own errors (no route, wrong method, unreadable body, a router's
        # HTTPException) in the same body shape as ours, with a message that says what is wrong.
        return JSONResponse(
            {
                "statusCode": exc.status_code,
                "error": _error_code(exc.status_code),
                "message": _http_error_message(request, exc),
            },
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        server = outage_of(exc)
        if server is None:
            return await unexpected(request, exc)
        log.warning("dependency_unavailable", path=request.url.path, error=type(exc).__name__)
        return error_response(Unavailable(f"{server} is unavailable right now; try again"))

    # Handled where the route's other errors are, so the server does not also log a traceback
    # and drop the connection as it does for a 500.
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if outage_of(exc) is not None:  # from a middleware, outside the route's handlers
            return await unavailable(request, exc)
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"statusCode": 500, "error": "INTERNAL", "message": "internal error"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )


def _error_code(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).name
    except ValueError:
        return "ERROR"


def _http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = ""
    detail = exc.detail if isinstance(exc.detail, str) else ""
    if detail and detail != phrase:
        if detail == "There was an error parsing the body":
            return "the request body could not be read: it is not valid UTF-8 JSON"
        return detail
    # Starlette's bare 404 and 405 say only the status phrase.
    if exc.status_code == 404:
        return f"no route matches {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}"
        return f"{message}; allowed: {allowed}" if allowed else message
    return phrase or f"HTTP error {exc.status_code}"


def app_from_env() -> FastAPI:
    """Zero-argument factory for ``uvicorn --factory reservations.app:app_from_env``."""
    settings = Settings()
    configure_logging(
        json=settings.json_logs, level=settings.log_level, secrets=secrets_of(settings)
    )
    configure_tracing("reservations-api")
    return create_app(settings)
