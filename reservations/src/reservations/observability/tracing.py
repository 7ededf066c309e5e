"""OpenTelemetry traces from the API request through the queue to the worker's database write.

One reservation request becomes one trace:

    POST /reservation/{event_id}/{user_id}     SERVER    (the HTTP middleware of ``install``)
      reservation-queue publish                PRODUCER  (``produce_span``: its context travels
                                                          in the message's ``traceparent`` header)
        reservation-queue process              CONSUMER  (``consume_spans`` in the worker)
          reservations.db.write                INTERNAL  (``db_write_span``: the batch
                                                          transaction that wrote the outcome)

The worker writes many requests in one transaction, so that transaction is one span of its own
(``reservations.db.write_batch``, linked to every message in it) and each message's trace gets a
child span with the same start and end, linked back to the batch span.

Tracing is off until ``configure_tracing`` installs an SDK tracer provider; until then every
helper here is a cheap no-op (the hot path pays one boolean test), except that ``consume_span``
still binds the message id to the log context.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from brokerq import Message

__all__ = [
    "TRACER_NAME",
    "configure_tracing",
    "consume_span",
    "consume_spans",
    "db_write_span",
    "disable_tracing",
    "produce_span",
    "trace_headers",
    "tracer",
    "tracing_enabled",
]

TRACER_NAME = "reservations"
_enabled = False
# Spans of the messages this process is handling, by message id: ``db_write_span`` finds the
# traces of the messages in a batch here.
_active: dict[str, Span] = {}
_exporters: list[SpanExporter] = []
_writing: ContextVar[Span | None] = ContextVar("reservations_db_write_span", default=None)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def tracing_enabled() -> bool:
    return _enabled


def configure_tracing(
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = True,
) -> TracerProvider | None:
    """Install the process's tracer provider; call once at process start (API and each worker).

    ``exporter`` wins; without one the standard variables decide: ``OTEL_TRACES_EXPORTER``
    (``otlp``, ``console``, ``none``), and ``otlp`` is the default when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. With no
    exporter at all tracing stays off and None is returned. ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` are honoured by the SDK; ``OTEL_TRACES_SAMPLER`` too. Calling it
    again with an exporter already attached only turns the helpers back on (after
    ``disable_tracing``).
    """
    global _enabled
    if exporter is None:
        exporter = _exporter_from_env()
    if exporter is None:
        return None
    current = trace.get_tracer_provider()
    if any(e is exporter for e in _exporters) and isinstance(current, TracerProvider):
        _enabled = True  # already attached: only turn the helpers back on
        return current
    _exporters.append(exporter)
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    if isinstance(current, TracerProvider):
        # The global provider can be set once per process; later calls add their exporter.
        current.add_span_processor(processor)
        _enabled = True
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _enabled = True
    return provider


def disable_tracing() -> None:
    """Turn the helpers and the middleware back into no-ops (the provider stays installed)."""
    global _enabled
    _enabled = False


def _exporter_from_env() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    has_endpoint = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp" or (kind == "" and has_endpoint):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


# -- producing -----------------------------------------------------------------------------------


def trace_headers() -> dict[str, str]:
    """The current trace context as message headers (``traceparent``, ``tracestate``)."""
    if not _enabled:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def produce_span(channel: str, **attributes: Any) -> Iterator[dict[str, str]]:
    """A PRODUCER span around a produce; yields the headers to pass as ``produce(headers=...)``.

    ``with produce_span(ch.name) as headers: await ch.produce(message, headers=headers)``
    """
    if not _enabled:
        yield {}
        return
    with tracer().start_as_current_span(
        f"{channel} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "brokerq",
            "messaging.operation.type": "send",
            "messaging.destination.name": channel,
            **attributes,
        },
    ):
        yield trace_headers()


# -- consuming -----------------------------------------------------------------------------------


@contextmanager
def consume_span(message: Message[Any]) -> Iterator[Span | None]:
    """Wrap a handler's work on one message.

    Binds ``message_id``, ``channel`` and ``tries`` to the structlog context, so every log line
    written while handling the message carries them, and (when tracing is on) runs a CONSUMER
    span whose parent is the producer's context from ``message.headers``. Inside a span of the
    same message (a handler wrapped twice, or a batch's ``consume_spans``) it makes that span
    current and starts no other.
    """
    with structlog.contextvars.bound_contextvars(
        message_id=message.id, channel=message.channel, tries=message.tries
    ):
        if not _enabled:
            yield None
            return
        active = _active.get(message.id)
        if active is not None:
            # Already inside this message's span (a handler wrapped twice, or a batch's
            # ``consume_spans``): make that one current for the log lines, start no other.
            with trace.use_span(active, record_exception=False, set_status_on_exception=False):
                yield active
            return
        with tracer().start_as_current_span(
            f"{message.channel} process",
            context=propagate.extract(dict(message.headers)),
            kind=SpanKind.CONSUMER,
            attributes=_consume_attributes(message),
        ) as span:
            _active[message.id] = span
            try:
                yield span
            finally:
                if _active.get(message.id) is span:
                    del _active[message.id]


@contextmanager
def consume_spans(messages: Sequence[Message[Any]]) -> Iterator[dict[str, Span]]:
    """Wrap a batch handler's work on these messages: ``consume_span`` for a batch.

    When tracing is on, each message gets its CONSUMER span (a child of its producer's), open
    until the batch is done; yields them by message id, so that the handler can mark the ones
    that failed (``mark_failed``); an exception marks them all. No span is made current and no
    message id is bound to the log context: a line about the batch is about no one message.
    Inside, ``consume_span(message)`` makes one message's span current and binds its id, for
    the lines about that message.
    """
    if not _enabled or not messages:
        yield {}
        return
    spans: dict[str, Span] = {}
    for message in messages:
        span = tracer().start_span(
            f"{message.channel} process",
            context=propagate.extract(dict(message.headers)),
            kind=SpanKind.CONSUMER,
            attributes=_consume_attributes(message),
        )
        spans[message.id] = _active[message.id] = span
    try:
        yield spans
    except BaseException as exc:
        for span in spans.values():
            mark_failed(span, exc)
        raise
    finally:
        for message_id, span in spans.items():
            if _active.get(message_id) is span:
                del _active[message_id]
            span.end()


def mark_failed(span: Span | None, error: BaseException) -> None:
    """Record ``error`` on a message's span and set its status, as a span left by it would."""
    if span is None:
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _consume_attributes(message: Message[Any]) -> dict[str, str | int]:
    return {
        "messaging.system": "brokerq",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.channel,
        "messaging.message.id": message.id,
        "messaging.delivery.tries": message.tries,
    }


@contextmanager
def db_write_span(
    message_ids: Iterable[str], name: str = "reservations.db.write"
) -> Iterator[Span | None]:
    """Wrap one database transaction that writes the outcomes of these messages.

    Records a ``<name>_batch`` span linked to every message's CONSUMER span, and on exit one
    ``<name>`` span in each message's trace with the transaction's start and end. Inside another
    write span it does nothing more.
    """
    if not _enabled:
        yield None
        return
    outer = _writing.get()
    if outer is not None:
        yield outer  # already inside a write span: wrapping twice is harmless
        return
    ids = list(message_ids)
    contexts = [_active[i].get_span_context() for i in ids if i in _active]
    started_ns = time.time_ns()
    # A batch span is a root of its own, not a child of whatever happens to be current. It is
    # ended here, so that the per-message spans can have exactly its start and end.
    with tracer().start_as_current_span(
        f"{name}_batch",
        context=otel_context.Context(),
        links=[Link(c) for c in contexts],
        attributes={"messaging.batch.message_count": len(ids)},
        start_time=started_ns,
        end_on_exit=False,
        record_exception=False,
        set_status_on_exception=False,
    ) as batch_span:
        error: BaseException | None = None
        token = _writing.set(batch_span)
        try:
            yield batch_span
        except BaseException as exc:
            error = exc
            raise
        finally:
            _writing.reset(token)
            ended_ns = time.time_ns()
            if error is not None:
                batch_span.record_exception(error)
                batch_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            batch_span.end(end_time=ended_ns)
            batch_link = Link(batch_span.get_span_context())
            for span_context in contexts:
                child = tracer().start_span(
                    name,
                    context=trace.set_span_in_context(trace.NonRecordingSpan(span_context)),
                    start_time=started_ns,
                    links=[batch_link],
                    attributes={"db.system.name": "postgresql", "batch.size": len(ids)},
                )
                if error is not None:
                    child.set_status(Status(StatusCode.ERROR, type(error).__name__))
                child.end(end_time=ended_ns)
