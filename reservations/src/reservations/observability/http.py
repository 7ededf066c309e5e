"""One ASGI middleware for every HTTP request: a latency histogram and, when on, a SERVER span.

Requests are labelled by route template (``/event/{event_id}``), never by raw path, so the number
of series stays bounded; requests that match no route share the label ``<unmatched>``. A pure ASGI
middleware (not ``BaseHTTPMiddleware``): the reservation POST is the hot path, and this adds a
clock read and a histogram observation to it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokerq.metrics import FastHistogram

from . import tracing

__all__ = ["REQUEST_SECONDS", "UNMATCHED", "RequestObservation"]


# brokerq's histogram: an observation is a bisection and two additions, where
# ``prometheus_client.Histogram`` takes a lock per bucket and per sum (about 4 us a request).
REQUEST_SECONDS = FastHistogram(
    "http_request_duration_seconds",
    "API request latency by method, route template and status code.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
REGISTRY.register(REQUEST_SECONDS)
UNMATCHED = "<unmatched>"
_STATUS = {code: str(code) for code in range(100, 600)}
_CONVERTOR = re.compile(r"{(\w+):[^}]*}")


@functools.lru_cache(maxsize=1024)
def _template(path: str) -> str:
    """``/reservation/{event_id:int}/{user_id}`` -> ``/reservation/{event_id}/{user_id}``."""
    return _CONVERTOR.sub(r"{\1}", path)


class RequestObservation:
    def __init__(self, app: ASGIApp, *, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self._routes = routes
        # Routes that do not put themselves in the scope (bare Starlette routes) are found by
        # their endpoint; filled on first use, when every route of the app exists.
        self._by_endpoint: dict[int, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if not tracing.tracing_enabled():
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                self._observe(scope, status, time.perf_counter() - started)
            return

        parent = propagate.extract(_headers(scope))
        method = scope.get("method", "GET")
        with tracing.tracer().start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, record_exception=True
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = self._route(scope)
                self._observe(scope, status, time.perf_counter() - started, route)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("url.path", scope.get("path", ""))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None) if route is not None else None
        if isinstance(path, str):
            return _template(path)
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        if self._by_endpoint is None:
            self._by_endpoint = {
                id(r.endpoint): _template(r.path)
                for r in self._routes()
                if hasattr(r, "endpoint") and isinstance(getattr(r, "path", None), str)
            }
        return self._by_endpoint.get(id(endpoint), UNMATCHED)

    def _observe(self, scope: Scope, status: int, seconds: float, route: str | None = None) -> None:
        code = _STATUS.get(status) or str(status)
        labels = (scope.get("method", "GET"), route or self._route(scope), code)
        REQUEST_SECONDS.observe(labels, seconds)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
