"""Seeing the queue: a live dashboard, Prometheus metrics, traces and log context.

``install(app)`` adds all of it to an app made by ``reservations.app.create_app``:

- ``/admin/queue``: the dashboard (per channel counts, throughput and lag, dead letters with
  redrive and delete; per event capacity, reserved and remaining);
- ``/metrics``: Prometheus text format;
- a middleware recording API latency by route template and status, and a SERVER span per
  request once ``configure_tracing`` has run.

The dashboard's data, its actions and ``/metrics`` need ``Authorization: Bearer <ADMIN_TOKEN>``
when ``ADMIN_TOKEN`` is set.
"""

from __future__ import annotations

from fastapi import FastAPI

from reservations.auth import require_admin

from .dashboard.data import DashboardState
from .dashboard.router import router as dashboard_router
from .http import RequestObservation
from .metrics import router as metrics_router
from .metrics import start_worker_metrics
from .tracing import (
    configure_tracing,
    consume_span,
    consume_spans,
    db_write_span,
    mark_failed,
    produce_span,
    trace_headers,
    tracing_enabled,
)

__all__ = [
    "configure_tracing",
    "consume_span",
    "consume_spans",
    "db_write_span",
    "install",
    "mark_failed",
    "produce_span",
    "require_admin",
    "start_worker_metrics",
    "trace_headers",
    "tracing_enabled",
]


def install(app: FastAPI) -> None:
    """Add the dashboard, ``/metrics`` and the request middleware to ``app``; call once."""
    if getattr(app.state, "observability_installed", False):
        return
    app.state.observability_installed = True
    app.state.queue_dashboard = DashboardState()
    app.include_router(metrics_router)
    app.include_router(dashboard_router)
    app.add_middleware(RequestObservation, routes=lambda: list(app.router.routes))
