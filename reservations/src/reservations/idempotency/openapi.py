"""The ``Idempotency-Key`` header and its answers, declared on every POST of the OpenAPI document.

Added to the generated document rather than to each route as a FastAPI ``Header`` parameter: the
middleware reads the header before any route runs, and a POST added later is covered without
anyone remembering to declare it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .store import KEY_TTL_S

__all__ = ["PARAMETER", "document_idempotency"]

PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the request safe to retry: a retry with the same key gets the first answer again "
        "(with `Idempotent-Replayed: true`) instead of running a second time. Use a new random "
        "value (a UUID) for each new request, and the same one for its retries. The same key "
        "with another request (method, path, query or body, byte for byte) is refused with "
        "422; a retry while the first still runs gets 409 with `Retry-After`. Answers of 500 "
        "and above, 401, 408 and 429 are not kept: a retry runs again. Keys are kept "
        f"{KEY_TTL_S // 3600} h, per `Authorization` header."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_REPLAYED_HEADER = {
    "description": "`true` when this is the recorded answer to an earlier request with the "
    "same Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}
_ANSWERS = {
    "400": "The Idempotency-Key header is not 1 to 255 visible ASCII characters, or is sent "
    "more than once",
    "409": "A request with this Idempotency-Key is still in progress "
    "(`IDEMPOTENCY_KEY_IN_PROGRESS`); retry after `Retry-After`",
    "422": "The Idempotency-Key was already used with a different request "
    "(`IDEMPOTENCY_KEY_REUSED`)",
}


def document_idempotency(app: FastAPI) -> None:
    """Have ``app.openapi()`` declare the header on every POST operation."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("parameters", {})["IdempotencyKey"] = PARAMETER
    for item in document.get("paths", {}).values():
        operation = item.get("post")
        if operation is None:
            continue
        operation.setdefault("parameters", []).append(
            {"$ref": "#/components/parameters/IdempotencyKey"}
        )
        responses = operation.setdefault("responses", {})
        for status, response in responses.items():
            if status.startswith("2"):
                response.setdefault("headers", {})["Idempotent-Replayed"] = _REPLAYED_HEADER
        for status, description in _ANSWERS.items():
            if status in responses:
                # The route's own meaning of the status stays first.
                responses[status]["description"] += f"; or: {description}"
            else:
                responses[status] = {"description": description}
