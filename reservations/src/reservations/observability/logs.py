"""Log lines that tie into traces and messages.

``reservations.log.configure_logging`` already renders JSON in production and readable lines in
development, and merges the structlog context into every line. This adds:

- ``add_trace_context``: ``trace_id`` and ``span_id`` on every line written inside a recorded span,
  so a log line leads to its trace and back;
- ``ExtraAdder`` for standard-library records, so ``extra={"message_id": ...}`` becomes a field;
- ``consume_span`` (in ``tracing``) binds ``message_id``, ``channel`` and ``tries`` for the time a
  handler works on a message: every line about the message carries its id. A batch handler's
  ``consume_spans`` binds none: its lines about one message of the batch name it themselves.

- ``redact_secrets``: no password or token reaches a log line. Exceptions are rendered as plain
  tracebacks (never with their frames' local variables, which hold connection arguments) before
  the secrets are taken out: the password of any ``scheme://user:password@host`` URL, and the
  configured secret values themselves (``configure_logging(secrets=secrets_of(settings))``),
  wherever they appear, in structlog's lines and the standard library's alike.

``configure_logging`` here is the base one plus these processors; the two processors can as well
go straight into the base one's shared list.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import structlog
from opentelemetry import trace

from reservations.log import configure_logging as configure_base_logging

if TYPE_CHECKING:
    from reservations.settings import Settings

__all__ = ["add_trace_context", "configure_logging", "redact_secrets", "secrets_of"]

REDACTED = "***"
# The password of scheme://user:password@host; a URL keeps no unencoded "/" or "@" in it.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/@'\"]+@")
_secrets: tuple[str, ...] = ()


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id``, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def secrets_of(settings: Settings) -> list[str]:
    """The secret values in the settings: the admin token and the Redis and database passwords."""
    values = [settings.admin_token, settings.redis_password]
    found = [v.get_secret_value() for v in values if v is not None]
    for url in (settings.redis_url, settings.database_url):
        if url is not None:
            try:
                password = urlsplit(url.get_secret_value()).password
            except ValueError:
                continue
            if password:
                found += [password, unquote(password)]
    return [v for v in found if v]


def _redact(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: URL passwords and the configured secrets become ``***``; it goes after
    ``format_exc_info``, so that the traceback text is redacted as well."""
    for key, value in event_dict.items():
        if key != "_record":  # the standard library's record: rendered from the fields here
            event_dict[key] = _redact_value(value)
    return event_dict


def configure_logging(*, json: bool, level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    global _secrets
    # Longest first, so that a secret containing another is replaced whole; short ones would
    # only mangle ordinary words.
    _secrets = tuple(
        sorted({v for s in secrets for v in (s, quote(s, safe="")) if len(s) >= 4}, key=len)[::-1]
    )
    configure_base_logging(json=json, level=level)
    processors = list(structlog.get_config()["processors"])
    renderer = processors.pop()
    if isinstance(renderer, structlog.dev.ConsoleRenderer):
        # Plain tracebacks: rich's show the frames' locals, connection passwords included.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    processors = [p for p in processors if p is not structlog.dev.set_exc_info]
    if structlog.processors.format_exc_info not in processors:
        processors.append(structlog.processors.format_exc_info)
    structlog.configure(processors=[*processors, add_trace_context, redact_secrets, renderer])
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, structlog.stdlib.ProcessorFormatter):
            handler.setFormatter(
                structlog.stdlib.ProcessorFormatter(
                    foreign_pre_chain=[
                        *(formatter.foreign_pre_chain or ()),
                        structlog.stdlib.ExtraAdder(),
                        add_trace_context,
                    ],
                    processors=[
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        redact_secrets,
                        renderer,
                    ],
                )
            )
