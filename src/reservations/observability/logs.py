"""Log lines that tie into traces and messages.

``reservations.log.configure_logging`` already renders JSON in production and readable lines in
development, and merges the structlog context into every line. This adds:

- ``add_trace_context``: ``trace_id`` and ``span_id`` on every line written inside a recorded span,
  so a log line leads to its trace and back;
- ``ExtraAdder`` for standard-library records, so ``extra={"message_id": ...}`` becomes a field;
- ``consume_span`` (in ``tracing``) binds ``message_id``, ``channel`` and ``tries`` for the time a
  handler works on a message: every line about the message carries its id.

``configure_logging`` here is the base one plus these processors; the two processors can as well
go straight into the base one's shared list.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from reservations.log import configure_logging as configure_base_logging

__all__ = ["add_trace_context", "configure_logging"]


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id``, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def configure_logging(*, json: bool, level: str = "INFO") -> None:
    configure_base_logging(json=json, level=level)
    processors = list(structlog.get_config()["processors"])
    # Before the renderer, which is last.
    processors.insert(len(processors) - 1, add_trace_context)
    structlog.configure(processors=processors)
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, structlog.stdlib.ProcessorFormatter):
            formatter.foreign_pre_chain = [
                *(formatter.foreign_pre_chain or ()),
                structlog.stdlib.ExtraAdder(),
                add_trace_context,
            ]
