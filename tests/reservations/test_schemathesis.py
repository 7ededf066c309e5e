"""Schemathesis against the served OpenAPI schema: no input a client can send gets a 5xx.

Every operation of ``/api-json`` is fuzzed in process against the real app (its lifespan running,
with real PostgreSQL and Redis), after seeding a user and an event so that generated ids can reach
the code past the lookups; once with data that fits the schema and once with data that does not.
Bounded and reproducible: a fixed number of examples per operation, derandomized, no deadline.
Each response must be no 5xx and match its documented schema, and a 4xx must carry the project's
JSON error body with a message.

Every request carries ``Authorization: Bearer <ADMIN_TOKEN>`` when the settings have one, so the
admin operations are fuzzed past the token check. The cases are Hypothesis strategies from
``schemathesis.openapi.from_dict`` (the served document); each request is sent through the
``api`` fixture's client on the event loop its app's connections belong to, exactly as
schemathesis would send it (its own ``requests`` serialisation).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from reservations.app import create_app
from reservations.settings import Settings

from .conftest import Api
from .helpers import create_event, create_user

MAX_EXAMPLES = 50
_METHODS = {"get", "post", "put", "patch", "delete"}


def _date_times() -> st.SearchStrategy[str]:
    """RFC 3339 date-times, often at the edges: the first or last day of years 1 to 9999, the
    first or last microsecond of a day, the widest offsets.

    Schemathesis's own draws a day of those years, a time and an offset up to 23:59 at random,
    so it almost never lands where the offset carries the instant out of that range in UTC; and
    JSON Schema has no keyword that could declare the range in the document instead.
    """
    day = st.sampled_from(["0001-01-01", "9999-12-31"]) | st.dates().map(str)
    clock = st.sampled_from(["00:00:00", "23:59:59.999999"]) | st.times().map(str)
    offset = st.sampled_from(["Z", "+14:00", "-14:00", "+23:59", "-23:59"]) | st.builds(
        lambda sign, minutes: f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
        st.sampled_from("+-"),
        st.integers(0, 23 * 60 + 59),
    )
    return st.builds("{}T{}{}".format, day, clock, offset)


# Process-wide, for every "date-time" in a document; this module is the suite's only user.
schemathesis.openapi.format("date-time", _date_times())


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(path, method, mode) for one test id each; negative data only where there is input.

    Listed from the app's document at collection; the schema under test is the one the running
    app serves.
    """
    document = create_app(Settings(_env_file=None, ENVIRONMENT="test")).openapi()
    cases = []
    for path, item in sorted(document["paths"].items()):
        for method, operation in sorted(item.items()):
            if method not in _METHODS:
                continue
            cases.append((path, method.upper(), GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((path, method.upper(), GenerationMode.NEGATIVE))
    return cases


_OPERATIONS = _operations()


@pytest.fixture
async def loop() -> asyncio.AbstractEventLoop:
    """The loop the ``api`` fixture's app and its connections live on."""
    return asyncio.get_running_loop()


def _auth_headers(settings_: Settings) -> dict[str, str]:
    token = settings_.admin_token
    if token is None or not token.get_secret_value():
        return {}
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


@pytest.fixture
async def api_schema(api: Api) -> Any:
    """The served schema, after seeding a user and an event for the generated ids to find."""
    await create_user(api.client, 1)
    await create_event(api.client, "Seeded", 5)
    r = await api.client.get("/api-json")
    assert r.status_code == 200, r.text
    document: dict[str, Any] = r.json()
    return schemathesis.openapi.from_dict(document)


def error_body_has_message(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 4xx is JSON in the project's error shape, with a message that is not empty."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError as exc:
            raise AssertionError(
                f"{response.status_code} without a JSON body: {response.text[:200]!r}"
            ) from exc
        assert isinstance(body, dict), f"error body is not an object: {body!r}"
        assert body.get("statusCode") == response.status_code, body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str) and body["message"].strip(), body
    return None


@pytest.mark.parametrize(
    ("path", "method", "mode"), _OPERATIONS, ids=[f"{m} {p} {g}" for p, m, g in _OPERATIONS]
)
def test_no_server_error_and_clear_client_errors(
    path: str,
    method: str,
    mode: GenerationMode,
    api: Api,
    api_schema: Any,
    loop: asyncio.AbstractEventLoop,
) -> None:
    operation = api_schema[path][method]
    headers = _auth_headers(api.resources.settings)
    # An unknown channel is a 404 before anything else is read: the dashboard's paging
    # parameters are fuzzed on a channel that exists.
    channel = any(p.name == "channel" for p in operation.query)
    fixed = {"query": {"channel": api.resources.channel.name}} if channel else {}
    # Event names are unique, and generated ones shrink to the same few: without a number of
    # their own, most new events would stop at the 409 before their dates reach the database.
    numbers = itertools.count()
    number_names = (path, method, mode) == ("/event", "POST", GenerationMode.POSITIVE)

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def check(case: Case[Any]) -> None:
        if number_names and isinstance(case.body, dict) and isinstance(case.body.get("name"), str):
            case.body["name"] = f"{case.body['name'][:190]} {next(numbers)}"
        # Generated Idempotency-Keys shrink to the same few as well: a valid one is made unique,
        # or most bodies would stop at the 422 of a key reused with another request.
        key = (case.headers or {}).get("Idempotency-Key")
        if mode is GenerationMode.POSITIVE and isinstance(key, str) and case.headers is not None:
            case.headers["Idempotency-Key"] = f"{key[:240]}-{next(numbers)}"
        kwargs = case.as_transport_kwargs(base_url="http://test", headers=headers)
        prepared = requests.Request(**kwargs).prepare()
        assert prepared.method is not None and prepared.url is not None
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        assert body is None or isinstance(body, bytes), type(body)
        headers_sent = {
            k: v if isinstance(v, str) else v.decode("latin-1") for k, v in prepared.headers.items()
        }
        # The test is synchronous, so the fixtures' loop is idle here and can run the request.
        response = loop.run_until_complete(
            api.client.request(prepared.method, prepared.url, headers=headers_sent, content=body)
        )
        case.validate_response(
            response,
            checks=[not_a_server_error, response_schema_conformance, error_body_has_message],
        )

    check()
