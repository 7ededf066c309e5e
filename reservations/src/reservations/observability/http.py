"""One ASGI middleware for every HTTP request: a latency histogram and, when on, a SERVER span.

Requests are labelled by route template (``/event/{event_id}``), never by raw path, so the number
of series stays bounded; requests that match no route share the label ``<unmatched>``. A pure ASGI
middleware (not ``BaseHTTPMiddleware``): the reservation POST is the hot path, and this adds a
clock read and a histogram observation to it.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import tracing

__all__ = ["REQUEST_SECONDS", "UNMATCHED", "RequestObservation"]


class LatencyHistogram(Collector):
    """A histogram by (method, route, status) that costs a bisect and two additions to observe.

    ``prometheus_client.Histogram`` takes a lock per bucket and per sum on every observation
    (about 4 µs); this one is read and written on the event loop's thread only (``/metrics`` runs
    there too), so it needs none. Registered in the default registry like any other metric.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self._labels: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._counts: dict[tuple[str, str, str], list[int]] = {}
        self._sums: dict[tuple[str, str, str], float] = {}

    def observe(self, labels: tuple[str, str, str], seconds: float) -> None:
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self.bounds) + 1)
            self._sums[labels] = 0.0
        # Buckets are "less than or equal": the first bound >= seconds.
        counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self._sums[labels] += seconds

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            self.name, self.documentation, labels=["method", "route", "status"]
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels, counts in list(self._counts.items()):
            cumulative = list(itertools.accumulate(counts))
            buckets = list(zip(self._labels, cumulative, strict=False))
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric(list(labels), buckets, self._sums[labels])
        yield family


REQUEST_SECONDS = LatencyHistogram(
    "http_request_duration_seconds",
    "API request latency by method, route template and status code.",
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
