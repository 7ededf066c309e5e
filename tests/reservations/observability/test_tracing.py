"""One trace from the API request through the queue to the worker's database write, and log
lines that carry the message id and the trace id.

The service's own producer and worker code carry the spans (``produce_span``, ``consume_span``,
``db_write_span``): the test runs the real request, the real Redis round trip and the real
PostgreSQL write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from brokerq import Message
from reservations.observability import consume_span, db_write_span, produce_span
from reservations.observability.logs import configure_logging
from reservations.observability.tracing import (
    _exporter_from_env,
    configure_tracing,
    consume_spans,
    disable_tracing,
    mark_failed,
    trace_headers,
    tracing_enabled,
)
from reservations.worker import consuming

from ..helpers import create_event, create_user, eventually
from ._fixtures import Observed, observed

__all__ = ["observed"]

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    configure_tracing("reservations-test", exporter=_EXPORTER, batch=False)
    _EXPORTER.clear()
    try:
        yield _EXPORTER
    finally:
        disable_tracing()
        _EXPORTER.clear()


@pytest.fixture
async def traced_service(observed: Observed) -> AsyncIterator[Observed]:
    async with consuming(observed.resources, max_parallel=8):
        yield observed


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_one_trace_from_the_request_to_the_database_write(
    spans: InMemorySpanExporter, traced_service: Observed
) -> None:
    client = traced_service.client
    user_id = await create_user(client, 1)
    event_id = await create_event(client, "Traced night", 2)
    r = await client.post(f"/reservation/{event_id}/{user_id}")
    assert r.status_code == 202
    job_id = r.json()["id"]
    message_id = r.json()["messageId"]
    await eventually(
        lambda: client.get(f"/reservation/requests/{job_id}"),
        lambda resp: resp.json()["status"] == "RESERVED",
        what="the request reserved",
    )

    finished = await eventually(
        lambda: _finished(spans), lambda s: len(by_name(s, "reservations.db.write")) == 1,
        what="the write span",
    )  # fmt: skip
    [server] = by_name(finished, "POST /reservation/{event_id}/{user_id}")
    [publish] = by_name(finished, "reservation-queue publish")
    [process] = by_name(finished, "reservation-queue process")
    [write] = by_name(finished, "reservations.db.write")
    [batch] = by_name(finished, "reservations.db.write_batch")

    trace_id = server.context.trace_id
    assert {s.context.trace_id for s in (server, publish, process, write)} == {trace_id}
    assert server.kind is SpanKind.SERVER
    assert publish.kind is SpanKind.PRODUCER and publish.parent.span_id == server.context.span_id
    assert process.kind is SpanKind.CONSUMER and process.parent.span_id == publish.context.span_id
    assert write.parent.span_id == process.context.span_id
    assert server.attributes["http.route"] == "/reservation/{event_id}/{user_id}"
    assert server.attributes["http.response.status_code"] == 202
    assert process.attributes["messaging.message.id"] == message_id
    assert process.attributes["messaging.delivery.tries"] == 1
    # The batch transaction is a trace of its own, linked both ways with the message's trace.
    assert batch.context.trace_id != trace_id
    assert [link.context.span_id for link in batch.links] == [process.context.span_id]
    assert [link.context.span_id for link in write.links] == [batch.context.span_id]
    assert (write.start_time, write.end_time) == (batch.start_time, batch.end_time)
    # Each step starts no earlier than the one before it.
    assert server.start_time <= publish.start_time <= process.start_time <= write.start_time
    assert write.end_time <= process.end_time


async def _finished(spans: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    return spans.get_finished_spans()


async def test_an_incoming_traceparent_is_continued(
    spans: InMemorySpanExporter, observed: Observed
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await observed.client.get("/event/12345", headers={"traceparent": parent})
    assert r.status_code == 404
    [server] = by_name(spans.get_finished_spans(), "GET /event/{event_id}")
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent is not None and format(server.parent.span_id, "016x") == (
        "b7ad6b7169203331"
    )


def test_wrapping_twice_makes_one_span(spans: InMemorySpanExporter) -> None:
    message = Message(data=1, id="1-1", tries=1, channel="c", produced_at_ms=1)
    with consume_span(message) as outer, consume_span(message) as inner:
        assert inner is outer
        with db_write_span(["1-1"]) as write, db_write_span(["1-1"]) as nested:
            assert nested is write
    names = sorted(s.name for s in spans.get_finished_spans())
    assert names == ["c process", "reservations.db.write", "reservations.db.write_batch"]


def test_without_tracing_configured_the_helpers_cost_nothing() -> None:
    assert not tracing_enabled()
    assert trace_headers() == {}
    with produce_span("reservation-queue") as headers:
        assert headers == {}
    with db_write_span(["1-1"]) as span:
        assert span is None


def test_a_batch_has_a_span_per_message_and_marks_the_ones_that_failed(
    spans: InMemorySpanExporter,
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    a = Message(data=1, id="3-1", tries=1, channel="c", produced_at_ms=3,
                headers={"traceparent": parent})  # fmt: skip
    b = Message(data=2, id="3-2", tries=2, channel="c", produced_at_ms=3)
    with consume_spans([a, b]) as by_id:
        assert set(by_id) == {"3-1", "3-2"}
        with consume_span(b) as inner:  # a line about one message of the batch: its span
            assert inner is by_id["3-2"]
        with db_write_span(["3-1", "3-2"]):
            pass
        mark_failed(by_id["3-2"], ValueError("bad request"))
    finished = spans.get_finished_spans()
    process = {s.attributes["messaging.message.id"]: s for s in by_name(finished, "c process")}
    assert set(process) == {"3-1", "3-2"}
    assert format(process["3-1"].context.trace_id, "032x") == parent.split("-")[1]
    assert process["3-2"].attributes["messaging.delivery.tries"] == 2
    assert process["3-1"].status.status_code is StatusCode.UNSET
    assert process["3-2"].status.status_code is StatusCode.ERROR
    assert process["3-2"].status.description == "ValueError: bad request"
    [batch] = by_name(finished, "reservations.db.write_batch")
    assert {link.context.span_id for link in batch.links} == {
        s.context.span_id for s in process.values()
    }
    writes = by_name(finished, "reservations.db.write")
    assert {w.parent.span_id for w in writes} == {s.context.span_id for s in process.values()}

    spans.clear()
    with pytest.raises(RuntimeError), consume_spans([a, b]):
        raise RuntimeError("deadlock detected")
    failed = by_name(spans.get_finished_spans(), "c process")
    assert [s.status.description for s in failed] == ["RuntimeError: deadlock detected"] * 2


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Restores the logging configuration that the test changes."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield capsys
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


async def test_log_lines_about_a_message_carry_its_id_and_trace(
    spans: InMemorySpanExporter, json_logs: pytest.CaptureFixture[str]
) -> None:
    message = Message(
        data={"n": 1}, id="1700000000000-7", tries=2, channel="observability/test",
        produced_at_ms=1700000000000,
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )  # fmt: skip
    # Here, not in a fixture: the loggers write to the sys.stderr of the moment, capsys's.
    configure_logging(json=True, level="INFO")
    with consume_span(message):
        structlog.get_logger("test.logs").info("working_on_it", step=1)
        logging.getLogger("test.stdlib").warning("a library line")
    structlog.get_logger("test.logs").info("after_the_message")
    logging.getLogger("test.stdlib").warning("tagged", extra={"message_id": "1700000000000-8"})

    lines = [json.loads(line) for line in json_logs.readouterr().err.splitlines() if line]
    by_event = {line["event"]: line for line in lines}
    for event in ("working_on_it", "a library line"):
        line = by_event[event]
        assert line["message_id"] == "1700000000000-7"
        assert line["channel"] == "observability/test"
        assert line["tries"] == 2
        assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert len(line["span_id"]) == 16
    assert "message_id" not in by_event["after_the_message"]
    assert "trace_id" not in by_event["after_the_message"]
    assert by_event["tagged"]["message_id"] == "1700000000000-8"


def test_a_failed_write_marks_its_spans(spans: InMemorySpanExporter) -> None:
    message = Message(data=1, id="2-1", tries=3, channel="c", produced_at_ms=2)
    with consume_span(message), pytest.raises(RuntimeError), db_write_span(["2-1", "2-2"]):
        raise RuntimeError("deadlock detected")
    finished = spans.get_finished_spans()
    [batch] = by_name(finished, "reservations.db.write_batch")
    [write] = by_name(finished, "reservations.db.write")  # 2-2 is not being handled here
    assert batch.attributes["messaging.batch.message_count"] == 2
    for span in (batch, write):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "RuntimeError"
    assert [e.name for e in batch.events] == ["exception"]


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, OTLPSpanExporter),
    ],
)
def test_the_exporter_follows_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kind: type | None
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporter = _exporter_from_env()
    if kind is None:
        assert exporter is None
        assert configure_tracing("reservations-test") is None
    else:
        assert isinstance(exporter, kind)
        exporter.shutdown()
