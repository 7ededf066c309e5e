"""``GET /metrics`` in the Prometheus text format, and a metrics port for worker processes.

What a scrape of the API shows:

- ``brokerq_channel_messages{channel,state}``: queue depths (waiting, in_flight, delayed, dead),
  read from the broker at scrape time (``brokerq.metrics.export_channel_stats``);
- ``brokerq_channel_events{channel,event}``: the broker's counters (produced, processed, retried,
  redelivered, dead_lettered), also read at scrape time: ``rate()`` of them is the produce and
  processing rate of the whole deployment, whichever process did the work;
- ``brokerq_channel_lag_seconds{channel}``: age of the oldest waiting message;
- ``brokerq_produced_messages_total``, ``brokerq_deduplicated_messages_total``: this process's
  produces;
- ``http_request_duration_seconds{method,route,status}``: API latency by route template;
- ``reservations_requests_lost``: accepted requests that Redis lost before they were processed
  (a flush, a restart without its append-only file, a failover to a replica that missed writes),
  over the events that took requests in the last day; read at scrape time. Their clients learn it
  from their status URLs (410) and must send them again.

Handler durations (``brokerq_handler_duration_seconds{channel,outcome}``) and lost leases are
recorded in the process that ran the handler, the worker: each worker serves its own registry
with ``start_worker_metrics(port)``.
"""

from __future__ import annotations

import logging
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Gauge,
    generate_latest,
    start_http_server,
)

from brokerq.metrics import export_channel_stats
from reservations.auth import AdminDep

__all__ = ["router", "start_worker_metrics"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["observability"])

REQUESTS_LOST = Gauge(
    "reservations_requests_lost",
    "Accepted reservation requests lost with Redis's data before they were processed, over the "
    "events that took requests in the last day",
)


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(request: Request, _: AdminDep) -> Response:
    """Prometheus metrics (needs the admin token when one is configured)."""
    resources = getattr(request.app.state, "resources", None)
    if resources is not None:
        try:
            await export_channel_stats(resources.queue)
        except Exception as exc:
            # A scrape still answers with the process's own metrics; the depths go stale.
            log.warning("channel stats for /metrics failed: %s", type(exc).__name__)
        try:
            REQUESTS_LOST.set(await _lost(resources))
        except Exception as exc:
            log.warning("lost requests for /metrics failed: %s", type(exc).__name__)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _lost(resources: Any) -> int:
    from reservations.reservation.service import ReservationService

    async with resources.session_factory() as session:
        return await ReservationService(session, resources.gate).lost_recently()


def start_worker_metrics(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve this process's metrics on ``http://addr:port/metrics`` from a background thread.

    For worker processes: their handler durations and lost leases live in their own memory.
    Give each worker its own port (e.g. ``WORKER_METRICS_PORT + worker index``). Returns the
    server and its daemon thread (``server.shutdown()`` stops it; a process exit does too).
    """
    return start_http_server(port, addr=addr)
